"""pytest fixtures for the HIL bench (to be registered in the ``fieldrig`` plugin; until
then ``hil_tests/tests/hil/conftest.py`` imports them).

``bench_rig`` is a factory: ``bench_rig(scenario="sensor_faults", seed=3, drive=True,
step_ms=100, ...)`` starts a ``BenchRig`` in the test's temp folder (the arguments are
``BenchRig``'s) and stops it afterwards, whatever happened. ``bench_report`` writes the
per-scenario report of a rig into the test's temp folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .report import write_report
from .rig import BenchRig


def _register_markers(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fast: HIL bench tests of a few seconds each")


@pytest.fixture
def bench_rig(tmp_path: Path) -> Iterator[Callable[..., BenchRig]]:
    started: list[BenchRig] = []

    def _start(**kwargs: object) -> BenchRig:
        rig = BenchRig(tmp_path / f"bench{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(rig)
        return rig.start()

    try:
        yield _start
    finally:
        for rig in reversed(started):
            rig.stop()


@pytest.fixture
def bench_report(tmp_path: Path) -> Callable[[BenchRig, str], Path]:
    def _write(rig: BenchRig, name: str) -> Path:
        return write_report(rig, tmp_path / "report", name)

    return _write


pytest_configure = _register_markers
