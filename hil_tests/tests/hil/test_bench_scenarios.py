"""The scenario library (``fieldrig_hil.cell.scenarios``) played through the real firmware:
the bench drives each scenario's current, temperature and pressure program with the
firmware's own commands and judges the firmware's link output. Short variants run by
default; the full-length ones are ``slow``. Detection (dendrite scenarios alarm before
the hard short, healthy ones raise nothing) is in test_bench_detection.py."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from fieldrig_hil.bench import BenchRig
from fieldrig_hil.bench.detection import DENDRITE_SCENARIOS
from fieldrig_hil.bench.report import track_impedance, write_report
from fieldrig_hil.cell.scenarios import list_scenarios

FATAL_TRIPS = {"rtd_open", "rtd_short", "loadcell_sat", "over_temp", "heater_runaway",
               "over_current", "over_voltage", "over_pressure", "watchdog"}
# Not playable through the firmware yet: the MHz pulse protocol needs a recipe with a PIO
# pulse step (the bench already reads the PIO waveform: Outputs.gate_*).
NOT_PLAYABLE = {"pulsed_polycrystal"}


def trips(rig: BenchRig) -> list[str]:
    return [str(b.get("row")) for b in rig.event_bodies("limit_tripped")]


def test_every_registered_scenario_is_classified() -> None:
    covered = {"healthy_cycling", "false_alarm_steps", "sensor_faults", "heater_stuck_on",
               "creep_short_high_pressure", *DENDRITE_SCENARIOS, *NOT_PLAYABLE}
    assert set(list_scenarios()) == covered


@pytest.mark.fast
def test_healthy_cycling_short_runs_clean_and_follows_the_program(
    bench_rig: Callable[..., BenchRig], tmp_path: Path,
) -> None:
    rig = bench_rig(scenario="healthy_cycling", seed=51, drive=True, step_ms=250,
                    scenario_params={"hours": 0.05, "half_s": 60.0})
    track = track_impedance(rig, every_s=10.0)
    rig.run_for(180.0)
    assert trips(rig) == [] and rig.event_bodies("echem_alarm") == []
    sc = rig.scenario
    assert sc is not None
    i_set = 0.3 * sc.geometry.area_cm2  # mA
    # Telemetry follows the plate/strip program: +I for 60 s, -I for 60 s, ...
    for t, s in rig.samples():
        phase = math.fmod(t, 120.0)
        if 2.0 < phase < 58.0:
            assert s.cell_current_ma == pytest.approx(i_set, abs=0.01)
        elif 62.0 < phase < 118.0:
            assert s.cell_current_ma == pytest.approx(-i_set, abs=0.01)
    folder = write_report(rig, tmp_path / "report", "healthy_cycling_short", track)
    assert (folder / "healthy_cycling_short.png").stat().st_size > 10_000
    text = (folder / "healthy_cycling_short.txt").read_text()
    assert "trips: none" in text and "alarms: none" in text


@pytest.mark.fast
def test_sensor_faults_scenario_trips_on_the_open_rtd(bench_rig: Callable[..., BenchRig]) -> None:
    rig = bench_rig(scenario="sensor_faults", seed=52, drive=True, step_ms=250,
                    scenario_params={"hours": 0.05})  # RTD opens at 45 s
    rig.run_until(lambda: "rtd_open" in trips(rig), 60.0, "rtd_open trip")
    ev = rig.first_event("limit_tripped", row="rtd_open")
    assert ev is not None and ev.t_s >= 45.0
    assert trips(rig)[0] == "rtd_open"
    rig.step()
    assert rig.outputs is not None and rig.outputs.safe


@pytest.mark.fast
def test_creep_short_pressure_is_refused_by_the_firmware(
    bench_rig: Callable[..., BenchRig],
) -> None:
    rig = bench_rig(scenario="creep_short_high_pressure", seed=53, drive=True,
                    scenario_params={"hours": 0.01})
    rig.run_for(5.0)
    replies = [e.body for e in rig.events if "cmd_seq" in e.body]
    refused = [r for r in replies if r.get("ok") is False]
    assert refused and refused[0]["error"] == "out_of_range"  # 40 MPa > 90 % of 30 MPa
    assert rig.samples()[-1][1].stack_pressure_mpa < 30.0


@pytest.mark.slow
def test_heater_stuck_on_scenario_ends_safe(bench_rig: Callable[..., BenchRig]) -> None:
    rig = bench_rig(scenario="heater_stuck_on", seed=55, drive=True, step_ms=250,
                    scenario_params={"after_s": 120.0, "hours": 0.25})
    rig.run_until(lambda: "heater_runaway" in trips(rig) or "over_temp" in trips(rig),
                  600.0, "heater trip")
    rig.step()
    assert rig.outputs is not None and rig.outputs.safe
