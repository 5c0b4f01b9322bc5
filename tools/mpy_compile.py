"""Compile every firmware module with mpy-cross for the Pico 2 W (RP2350): proves the
firmware is valid MicroPython, and --out gives the files to deploy with mpremote."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from fieldrig_hil.firmware_build import BOARD_MARCH, compile_tree, firmware_sources


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, help="folder for the .mpy files")
    ap.add_argument("--march", default=BOARD_MARCH, help="mpy-cross architecture")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="fieldrig-mpy-"))
    n = len(firmware_sources(include_tests=True))
    errors = compile_tree(out, args.march, include_tests=True)
    for e in errors:
        print(f"mpy-cross failed on {e}", file=sys.stderr)
    print(f"mpy-cross: {n - len(errors)}/{n} firmware modules compiled to {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
