"""The firmware's detector against the scenario library, judged by its own EVENTs.

Every dendrite scenario (sized to short within about 1.5 h: ``DENDRITE_SCENARIOS``) must
raise ``soft_short`` before the cell's hard short, with the lead time printed; the
healthy scenarios with temperature, pressure and current steps must raise nothing. The
full-length defaults run under ``-m slow`` and in bench/bench_detection.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from fieldrig_hil.bench.detection import (
    CCD_LADDERS,
    DENDRITE_SCENARIOS,
    FALSE_ALARM_SCENARIOS,
    DetectionRun,
    LadderRun,
    ladder,
    mitigated_dendrite,
    play,
)
from fieldrig_hil.cell.scenarios import build_scenario, list_scenarios


def test_the_detection_sets_cover_every_short_of_the_library() -> None:
    shorts = {n for n in list_scenarios() if build_scenario(n).expect_short}
    # creep_short_high_pressure is refused by the firmware (40 MPa > the press's limit:
    # test_bench_scenarios); pulsed_polycrystal does not short under its pulses.
    assert shorts - set(DENDRITE_SCENARIOS) == {"creep_short_high_pressure"}
    for name, params in {**DENDRITE_SCENARIOS, **FALSE_ALARM_SCENARIOS}.items():
        build_scenario(name, **params)  # valid parameters


def _play_without_reset(tmp_path: Path, name: str, params: dict[str, Any], until: str
                        ) -> DetectionRun:
    """One run, its line printed; a firmware reset fails it (a rebooted detector has
    forgotten its baselines: the run would prove nothing)."""
    run = play(tmp_path, name, params, until=until)
    print("\n" + run.line())
    assert run.resets == [], run.line()
    return run


@pytest.mark.parametrize("name", list(DENDRITE_SCENARIOS))
def test_dendrite_scenario_raises_soft_short_before_the_hard_short(
    tmp_path: Path, name: str,
) -> None:
    run = _play_without_reset(tmp_path, name, DENDRITE_SCENARIOS[name], "alarm")
    assert run.caught, run.line()
    # Not a lucky guess: the cell's filament had bridged (soft short) before the alarm...
    assert run.soft_short_s <= run.first("soft_short"), run.line()
    # ...and the warning leaves time to act (mitigation needs a few tracking periods).
    assert run.lead_s >= 120.0, run.line()
    # No fracture: at 2 MPa (voids_low_pressure) the contact loss raises the electrolyte
    # intercept over many observations, which is no crack (a jump).
    assert "crack" not in [k for _, k, _ in run.alarms], run.line()
    if name == "voids_low_pressure":
        # Its voids (from the first half, on the counter electrode) are seen as voids
        # before the filament they lead to is seen as a soft short.
        assert run.first("void") < run.first("soft_short"), run.line()


@pytest.mark.parametrize("name", list(FALSE_ALARM_SCENARIOS))
def test_healthy_scenario_with_condition_steps_raises_no_alarm(
    tmp_path: Path, name: str,
) -> None:
    run = _play_without_reset(tmp_path, name, FALSE_ALARM_SCENARIOS[name], "end")
    assert run.alarms == [], run.line()
    assert math.isnan(run.hard_short_s)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DENDRITE_SCENARIOS))
def test_full_length_dendrite_scenario_alarms_before_the_hard_short(
    tmp_path: Path, name: str,
) -> None:
    run = play(tmp_path, name, {}, until="short")
    print("\n" + run.line())
    assert run.caught, run.line()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FALSE_ALARM_SCENARIOS))
def test_full_length_healthy_scenario_raises_no_alarm(tmp_path: Path, name: str) -> None:
    run = _play_without_reset(tmp_path, name, {"hours": 4.0}, "end")
    assert run.alarms == [], run.line()


def test_mitigation_keeps_a_dendrite_scenario_from_the_hard_short(tmp_path: Path) -> None:
    run = mitigated_dendrite(tmp_path)
    print("\n" + run.line())
    # Without mitigation the cell shorts; with it, not even 10 min later.
    assert math.isfinite(run.expected_hard_short_s)
    assert math.isnan(run.hard_short_s), run.line()
    assert run.virtual_s >= run.expected_hard_short_s + 600.0
    # The alarm came before the short would have, and every response is an EVENT: stop,
    # rest, a tenth of the current; the alarm stays raised (a bridged filament does not
    # heal), so the policy responds again and then takes the safe state.
    assert run.alarm_s < run.expected_hard_short_s, run.line()
    names = [a for _, a, _ in run.actions]
    assert names[:3] == ["stop_plating", "rest", "lower_current"], run.line()
    assert names[-1] == "safe_state" and run.result == "aborted:safe_state:soft_short", run.line()


def test_ccd_ladder_recipe_reports_the_cells_ccd_within_20_percent(tmp_path: Path) -> None:
    # The firmware's built-in ccd_ladder recipe (0.1 mA/cm2 rungs, 0.02 mAh/cm2 halves)
    # on polycrystalline LLZO: the recipe stops at its soft_short alarm.
    run = ladder(tmp_path / "poly-dc", **CCD_LADDERS["llzo_poly_dc"])
    print("\n" + run.line())
    _within_20_percent(run)


def _within_20_percent(run: LadderRun) -> None:
    assert run.reason == "stop_on:soft_short", run.line()
    assert abs(run.error) <= 0.20, run.line()
    assert run.last_passed_ma_cm2 < run.true_ccd_ma_cm2 <= run.ccd_ma_cm2 + 1e-9, run.line()


@pytest.mark.timeout(1200)
def test_pulses_raise_the_ccd_of_a_polycrystal_but_not_of_a_single_crystal(
    tmp_path: Path,
) -> None:
    # 1 MHz PIO pulses (50 %), CCD in pulse amplitude: grain-boundary relaxation between
    # pulses raises polycrystalline LLZO's about 6x (0.65 -> 3.9 mA/cm2, Reisecker 2023);
    # a single crystal has no grain boundaries and gains nothing (0.5 either way). Each
    # pulsed ladder must find the cell's pulsed CCD within 20 %; the polycrystal's is then
    # well above its DC CCD (measured by the test above), the single crystal's not above
    # its DC one.
    poly = ladder(tmp_path / "poly-pulsed", **CCD_LADDERS["llzo_poly_pulsed"])
    single = ladder(tmp_path / "single-pulsed", **CCD_LADDERS["llzo_single_pulsed"])
    for r in (poly, single):
        print("\n" + r.line())
        _within_20_percent(r)
    assert poly.ccd_ma_cm2 > 3 * poly.true_dc_ccd_ma_cm2, poly.line()
    assert single.ccd_ma_cm2 <= 1.2 * single.true_dc_ccd_ma_cm2, single.line()
