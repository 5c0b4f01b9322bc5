"""pytest collection of MicroPython test modules (part of the ``fieldrig`` pytest plugin).

MicroPython has no pytest, so firmware and chip-model tests are plain MicroPython
modules: top-level ``test_*`` functions with ``assert`` (firmware/tests/mpunit.py).
pytest only collects and reports: each test function becomes one item that runs in a
fresh ``micropython`` process with a bounded heap and the suite's module path. A suite
with a CPython runner also runs every module not marked ``MICROPYTHON_ONLY = True``
under CPython, as a second item.

This lives here, not in conftest.py files under firmware/, so that nothing in firmware/
is CPython code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fieldrig_hil.services import REPO_ROOT, micropython_binary

FIRMWARE = REPO_ROOT / "firmware"
MPUNIT = FIRMWARE / "tests" / "mpunit.py"
TIMEOUT_S = 120


@dataclass(frozen=True)
class MicroPythonSuite:
    folder: Path
    module_path: tuple[Path, ...]  # MICROPYPATH ahead of .frozen
    heap: str
    cpython_runner: Path | None = None  # runs the same module under CPython
    cpython_path: tuple[Path, ...] = ()  # PYTHONPATH for the CPython runner

    def run_micropython(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ,
                   MICROPYPATH=":".join([*(str(p) for p in self.module_path), ".frozen"]))
        return subprocess.run(
            [micropython_binary(), "-X", "heapsize=" + self.heap, str(MPUNIT), *args],
            cwd=self.folder, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
        )

    def run_cpython(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        assert self.cpython_runner is not None
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in self.cpython_path))
        env.pop("PYTHONSTARTUP", None)
        return subprocess.run(
            [sys.executable, str(self.cpython_runner), *args],
            cwd=self.folder, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
        )


_FIRMWARE_TESTS = FIRMWARE / "tests"
_CHIP_TESTS = REPO_ROOT / "hil_tests" / "mp" / "tests"

SUITES = {
    # The firmware as deployed to the board, inside the heap it is budgeted for
    # (docs/firmware.md).
    _FIRMWARE_TESTS: MicroPythonSuite(
        _FIRMWARE_TESTS, (_FIRMWARE_TESTS, FIRMWARE),
        os.environ.get("FIELDRIG_MP_HEAP", "256K")),
    # Chip models and machine/rp2 stand-ins, in the order the bench uses; the models
    # also run on CPython (the bench's own code imports them).
    _CHIP_TESTS: MicroPythonSuite(
        _CHIP_TESTS, (_CHIP_TESTS.parent, _CHIP_TESTS, _FIRMWARE_TESTS, FIRMWARE),
        os.environ.get("FIELDRIG_HIL_MP_HEAP", "2M"), _CHIP_TESTS / "cpyunit.py",
        (_CHIP_TESTS.parent, _CHIP_TESTS)),
}


class MicroPythonFailure(Exception):
    pass


class MicroPythonFile(pytest.File):
    suite: MicroPythonSuite

    def collect(self) -> Iterator[pytest.Item]:
        proc = self.suite.run_micropython(["list", str(self.path)])
        if proc.returncode != 0:
            raise MicroPythonFailure(
                f"cannot import {self.path.name} under micropython:\n{proc.stdout}{proc.stderr}"
            )
        dual = (self.suite.cpython_runner is not None
                and "MICROPYTHON_ONLY = True" not in self.path.read_text())
        for test in proc.stdout.split():
            if self.suite.cpython_runner is None:
                yield MicroPythonItem.from_parent(self, name=test, test=test,
                                                  runtime="micropython")
                continue
            yield MicroPythonItem.from_parent(self, name=f"{test}[micropython]", test=test,
                                              runtime="micropython")
            if dual:
                yield MicroPythonItem.from_parent(self, name=f"{test}[cpython]", test=test,
                                                  runtime="cpython")


class MicroPythonItem(pytest.Item):
    def __init__(self, *, test: str, runtime: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.test = test
        self.runtime = runtime

    def runtest(self) -> None:
        suite = self.parent.suite  # type: ignore[union-attr]
        args = ["run", str(self.path), self.test]
        proc = (suite.run_micropython(args) if self.runtime == "micropython"
                else suite.run_cpython(args))
        if proc.returncode != 0 or "MPUNIT PASS" not in proc.stdout:
            raise MicroPythonFailure(proc.stdout + proc.stderr)

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, MicroPythonFailure):
            return f"{self.runtime}: {self.path.name}::{self.test}\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"[{self.runtime}] {self.test}"


def make_module(module_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collector for a MicroPython test module, or None for ordinary CPython tests."""
    suite = SUITES.get(module_path.resolve().parent)
    if suite is None:
        return None
    node = MicroPythonFile.from_parent(parent, path=module_path)
    node.suite = suite
    return node
