"""Scenario library (ground truth, determinism) and the plants around the cell."""

import math

import numpy as np
import pytest

from fieldrig_hil.cell import Cell
from fieldrig_hil.cell.plants import HeaterPlant, RtdSensor, ScrewPress
from fieldrig_hil.cell.scenarios import build_scenario, list_scenarios, run_scenario

REQUIRED = {"healthy_cycling", "voids_low_pressure", "dendrite_over_ccd", "soft_to_hard_short",
            "pulsed_polycrystal", "pulsed_single_crystal", "ccd_ladder",
            "creep_short_high_pressure", "heater_stuck_on", "sensor_faults",
            "false_alarm_steps"}


def test_registry_lists_required_scenarios() -> None:
    names = list_scenarios()
    assert REQUIRED <= set(names)
    assert all(isinstance(d, str) and d for d in names.values())
    with pytest.raises(ValueError, match="bad parameter"):
        build_scenario("healthy_cycling", nonsense=1)


def test_ccd_ladder_ground_truth_within_20_percent() -> None:
    res = run_scenario(build_scenario("ccd_ladder"), seed=0)
    tr = res.truth
    assert not math.isnan(tr.hard_short_s)
    assert tr.nucleation_current_ma_cm2 == pytest.approx(tr.true_plating_ccd_ma_cm2, rel=0.2)
    assert tr.nucleation_s < tr.soft_short_s < tr.hard_short_s


@pytest.mark.parametrize("name,kw", [
    ("healthy_cycling", {"hours": 6.0}),
    ("false_alarm_steps", {"hours": 2.0}),
    ("pulsed_polycrystal", {"hours": 0.2}),
])
def test_no_damage_scenarios(name: str, kw: dict[str, float]) -> None:
    res = run_scenario(build_scenario(name, **kw), seed=0)
    assert math.isnan(res.truth.nucleation_s) and math.isnan(res.truth.soft_short_s)
    assert math.isnan(res.truth.void_onset_s)
    assert not res.scenario.expect_short


def test_false_alarm_steps_really_step() -> None:
    res = run_scenario(build_scenario("false_alarm_steps", hours=2.0), seed=0)
    assert res.temperature_c.max() > 40.0 and res.temperature_c[0] < 27.0
    assert res.pressure_mpa[-1] == pytest.approx(8.0, abs=0.2)
    assert np.abs(res.current_a).max() > 1.5 * np.abs(res.current_a[:100]).max()


@pytest.mark.parametrize("name,kw", [
    ("dendrite_over_ccd", {}),
    ("soft_to_hard_short", {"hours": 1.5}),
    ("pulsed_single_crystal", {"hours": 1.0}),
    ("voids_low_pressure", {"hours": 12.0}),
])
def test_damage_scenarios_short(name: str, kw: dict[str, float]) -> None:
    res = run_scenario(build_scenario(name, **kw), seed=0)
    tr = res.truth
    assert res.scenario.expect_short
    assert tr.nucleation_s < tr.soft_short_s < tr.hard_short_s
    # a detector has a lead time between the soft and the hard short
    assert tr.hard_short_s - tr.soft_short_s > 30.0


def test_voids_precede_dendrite_at_low_pressure() -> None:
    res = run_scenario(build_scenario("voids_low_pressure", hours=12.0), seed=0)
    assert res.truth.void_onset_s < res.truth.nucleation_s
    # the applied current at nucleation is far below the pristine plating CCD: voids focus it
    assert res.truth.nucleation_current_ma_cm2 < 0.5 * res.truth.true_plating_ccd_ma_cm2


def test_sensor_faults_appear_in_codes() -> None:
    res = run_scenario(build_scenario("sensor_faults", hours=0.5), seed=0)
    d = res.scenario.duration_s
    assert not res.rtd_fault[res.t_s < 0.2 * d].any() and res.rtd_fault[res.t_s > 0.3 * d].all()
    assert (res.load_code[res.t_s > 0.55 * d] == 0x7FFFFF).all()
    assert (res.load_code[res.t_s < 0.45 * d] < 0x7FFFFF).all()


def test_deterministic_for_seed() -> None:
    a = run_scenario(build_scenario("dendrite_over_ccd"), seed=7)
    b = run_scenario(build_scenario("dendrite_over_ccd"), seed=7)
    c = run_scenario(build_scenario("dendrite_over_ccd"), seed=8)
    assert np.array_equal(a.voltage_v, b.voltage_v)
    assert not np.array_equal(a.voltage_v, c.voltage_v)


def test_heater_plant() -> None:
    h = HeaterPlant(ambient_c=25.0, temperature_c=25.0)
    for _ in range(200):
        h.step(10.0, 0.5)
    assert h.temperature_c == pytest.approx(25.0 + 0.5 * 20.0 * 4.0, abs=0.1)
    stuck = HeaterPlant(stuck_on_after_s=100.0)
    for _ in range(100):
        stuck.step(10.0, 0.0)
    assert stuck.temperature_c > 70.0
    with pytest.raises(ValueError, match="duty"):
        h.step(1.0, 1.5)


def test_press_relaxes_as_li_creeps_and_faster_when_hot() -> None:
    cold, hot = ScrewPress.at_pressure(10.0), ScrewPress.at_pressure(10.0)
    for _ in range(60):
        cold.step(60.0, 25.0)
        hot.step(60.0, 80.0)
    assert 9.0 < cold.pressure_mpa < 10.0
    assert hot.pressure_mpa < cold.pressure_mpa
    p = cold.pressure_mpa
    cold.move(100)
    assert cold.pressure_mpa > p


def test_rtd_roundtrip_and_faults() -> None:
    rng = np.random.default_rng(0)
    rtd = RtdSensor(noise_c=0.0)
    code, fault = rtd.read(60.0, rng)
    assert not fault and rtd.code_to_c(code) == pytest.approx(60.0, abs=0.05)
    assert rtd.read(60.0, rng, open_circuit=True) == (0x7FFF, True)
    assert rtd.read(60.0, rng, short_circuit=True) == (0, True)


def test_cathode_cell_voltage_and_soc() -> None:
    from fieldrig_hil.cell import CellGeometry

    cell = Cell("lpscl", CellGeometry(counter="cathode"))
    v0 = cell.step(10.0, 1e-3 * 0.785, n_samples=6).voltage_v
    assert 3.4 < v0[-1] < 4.5
    soc0 = cell.state.soc
    cell.step(60.0, 1e-3 * 0.785, n_samples=60)
    assert cell.state.soc > soc0  # charging
