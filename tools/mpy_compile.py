"""Compile every firmware module with mpy-cross (as for deployment to a Pico 2 W):
proves the firmware is valid MicroPython. Output goes to a temp folder unless --out."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
# CPython-side test harness files that never go to the board.
SKIP = {"tests/conftest.py"}


def firmware_sources() -> list[Path]:
    return sorted(p for p in FIRMWARE.rglob("*.py")
                  if "typings" not in p.parts and str(p.relative_to(FIRMWARE)) not in SKIP)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, help="folder for the .mpy files")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="fieldrig-mpy-"))
    failed = 0
    sources = firmware_sources()
    for src in sources:
        rel = src.relative_to(FIRMWARE)
        dst = out / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        # The RP2350 (Cortex-M33 with single-precision FPU) takes armv7emsp native/viper code.
        cmd = ["mpy-cross", "-march=armv7emsp", "-o", str(dst), "-s", str(rel), str(src)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            failed += 1
            print(f"mpy-cross failed on {rel}:\n{r.stderr}", file=sys.stderr)
    print(f"mpy-cross: {len(sources) - failed}/{len(sources)} firmware modules compiled to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
