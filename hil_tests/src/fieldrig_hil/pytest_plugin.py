"""pytest fixtures for the real services (registered as the ``fieldrig`` pytest plugin).

Each test gets its own private broker / database in its own temp folder, so tests
never share state and never touch a system service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fieldrig_hil import mptest
from fieldrig_hil.services import FirmwareRig, InfluxDB, Mosquitto, Service


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[InfluxDB]:
    db = InfluxDB(tmp_path / "influxdb").start()
    try:
        yield db
    finally:
        db.stop()


@pytest.fixture
def start_rig(tmp_path: Path) -> Iterator[Callable[..., FirmwareRig]]:
    """Factory: ``start_rig(rig_id=..., samples=..., period_ms=...)`` -> running firmware."""
    started: list[Service] = []

    def _start(**kwargs: object) -> FirmwareRig:
        rig = FirmwareRig(tmp_path / "rigs", **kwargs)  # type: ignore[arg-type]
        started.append(rig)
        return rig.start()

    try:
        yield _start
    finally:
        for s in reversed(started):
            s.stop()


SERVICE_FIXTURES = {"mosquitto", "influxdb", "start_rig"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that starts real services is an integration test, wherever it lives.
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_pycollect_makemodule(
    module_path: Path, parent: pytest.Collector
) -> pytest.Collector | None:
    # firmware/tests and hil_tests/mp/tests hold MicroPython modules, not CPython ones.
    return mptest.make_module(module_path, parent)
