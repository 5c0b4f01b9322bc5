"""End to end through real processes: micropython firmware -> TCP link -> gateway ->
Mosquitto (QoS 1) -> ingester -> influxd. Protects "nothing lost, nothing doubled,
values intact" for the walking skeleton."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

import httpx

from fieldrig_hil.pipeline import run_thin_path
from fieldrig_hil.services import REPO_ROOT, FirmwareRig, InfluxDB, Mosquitto


def load_synthetic_board():  # type: ignore[no-untyped-def]
    # The board module is plain Python that also runs under CPython: reuse its formula
    # so the expected values come from the firmware's own definition.
    spec = importlib.util.spec_from_file_location(
        "unix_synthetic", REPO_ROOT / "firmware" / "boards" / "unix_synthetic.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_sample_arrives_once_with_its_values(
    mosquitto: Mosquitto, influxdb: InfluxDB, start_rig: Callable[..., FirmwareRig]
) -> None:
    n = 300
    rigs = [start_rig(rig_id="rig-a", samples=n, period_ms=5),
            start_rig(rig_id="rig-b", samples=n // 2, period_ms=5)]
    accounts = asyncio.run(run_thin_path(mosquitto, influxdb, rigs, site="lab-1"))
    for acc in accounts:
        assert acc.complete, acc

    r = httpx.post(f"{influxdb.url}/query", params={
        "db": "fieldrig", "q": "SELECT seq, cell_voltage_v, cell_current_ma, cell_temp_c, "
        "stack_pressure_mpa, rig_state, cell FROM cell_sample WHERE rig = 'rig-a'"}).json()
    rows = r["results"][0]["series"][0]["values"]
    board = load_synthetic_board()
    assert len(rows) == n
    times = [row[0] for row in rows]
    assert times == sorted(times)
    for _t, seq, v, i_ma, t_c, p_mpa, state, cell in rows:
        assert (v, i_ma, t_c, p_mpa) == board.synthetic_sample(seq)
        assert state == 1
        assert cell == "cell-rig-a"
