"""What the bench's MicroPython process runs: the firmware and the bench's machine/rp2
stand-ins and chip models, all compiled with mpy-cross (as deployed), cached by content.

MICROPYPATH order matters: ``vtime`` first (its ``time.py`` shadows the built-in, so the
drivers' ``ticks_us``/``sleep_us`` run on virtual time), then the stand-ins (a
``machine.py`` on the path replaces the unix port's built-in ``machine``), then the
firmware.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import tempfile
from pathlib import Path

from fieldrig_hil.firmware_build import (
    HOST_MARCH,
    FirmwareBuildError,
    compile_tree,
    firmware_sources,
    host_build,
)

REPO_ROOT = Path(__file__).resolve().parents[4]
MP_DIR = REPO_ROOT / "hil_tests" / "mp"


# The bench's own modules (chip models, stand-ins, vtime) are compiled to machine code:
# they are not firmware (nothing of theirs is deployed), they run in the firmware's
# process on every bus transfer, and native code runs them ~2x faster. The firmware
# itself stays bytecode, as deployed.
MP_EMIT = "native"


def mp_build(cache_root: Path | None = None, emit: str = MP_EMIT) -> Path:
    """hil_tests/mp compiled for this host (tests/ excluded), cached by content hash."""
    march = HOST_MARCH.get(platform.machine())
    if march is None:
        raise FirmwareBuildError(f"no mpy-cross architecture known for {platform.machine()}")
    h = hashlib.sha256(b"mp:" + march.encode() + b":" + emit.encode())
    for src in firmware_sources(MP_DIR):
        h.update(str(src.relative_to(MP_DIR)).encode())
        h.update(src.read_bytes())
    root = cache_root or Path(tempfile.gettempdir()) / "fieldrig-firmware-builds"
    out = root / ("mp-" + h.hexdigest()[:16])
    if (out / ".complete").exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="build-mp-", dir=root))
    errors = compile_tree(tmp, march, root=MP_DIR, emit=emit)
    if errors:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FirmwareBuildError("mpy-cross failed on the bench modules:\n" + "\n".join(errors))
    (tmp / ".complete").write_text("ok\n")
    try:
        tmp.rename(out)
    except OSError:  # another process built the same hash first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def micropypath(precompiled: bool = True) -> str:
    """The MICROPYPATH of a bench run."""
    if precompiled:
        mp = mp_build()
        fw = host_build()
    else:
        mp = MP_DIR
        fw = REPO_ROOT / "firmware"
    return ":".join([str(mp / "vtime"), str(mp), str(fw), ".frozen"])
