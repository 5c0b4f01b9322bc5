"""Analytics on synthetic data with a known truth."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import TRUE_EIS, ladder, spectrum

from fieldrig_cloud import analytics

T0 = 1_763_750_000_000_000_000
STEPS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def test_eis_fit_recovers_bulk_grain_boundary_interface_and_diffusion() -> None:
    fit = analytics.fit_spectrum(*spectrum())
    truth = dict(zip(analytics.PARAM_NAMES, TRUE_EIS, strict=True))
    for name in ("R0", "R1", "R2", "Wo1_0"):
        assert fit.params[name] == pytest.approx(truth[name], rel=0.1), name
    assert fit.params["CPE1_1"] == pytest.approx(0.9, abs=0.05)
    assert fit.rmse_rel < 0.02
    assert fit.physical["r_interface_ohm"] == fit.params["R2"]


def test_eis_fit_follows_a_growing_interface_resistance() -> None:
    # Voids at the interface: R2 doubles, the fit must see it (and not move R0 much).
    grown = list(TRUE_EIS)
    grown[4] *= 2
    a = analytics.fit_spectrum(*spectrum())
    b = analytics.fit_spectrum(*spectrum(grown, seed=9))
    assert b.params["R2"] / a.params["R2"] == pytest.approx(2, rel=0.1)
    assert b.params["R0"] == pytest.approx(a.params["R0"], rel=0.1)


def test_eis_fit_refuses_too_few_points() -> None:
    with pytest.raises(ValueError):
        analytics.fit_spectrum([1e3, 1e2], [1.0, 2.0], [-1.0, -1.0])


def _arrays(samples: list[dict[str, float]], *names: str) -> list[list[float]]:
    return [[s[n] for s in samples] for n in names]


@pytest.mark.parametrize("short_step", [0, 2, 4, 5])
def test_ccd_is_the_step_where_the_voltage_collapses(short_step: int) -> None:
    s = ladder(T0, STEPS, short_step)
    t, i, v = _arrays(s, "time_ns", "cell_current_ma", "cell_voltage_v")
    # Without the step field: steps found from |I| levels (polarity alternates).
    r = analytics.extract_ccd([int(x) for x in t], i, v, area_cm2=0.5)
    assert r.detection == "voltage_collapse"
    assert r.short_step == short_step and r.ccd_ma == pytest.approx(STEPS[short_step])
    assert r.ccd_ma_cm2 == pytest.approx(STEPS[short_step] / 0.5)
    assert r.last_safe_ma == (STEPS[short_step - 1] if short_step else None)
    expected_t = (short_step * 100 + 30) * 0.1
    assert r.time_to_short_s == pytest.approx(expected_t)


def test_ccd_from_impedance_drop_and_step_field() -> None:
    s = ladder(T0, STEPS, 3)
    t, i, v, z = _arrays(s, "time_ns", "cell_current_ma", "cell_voltage_v", "z_mag_ohm")
    # The voltage trace alone is ambiguous here (kept at the healthy level): only |Z| tells.
    v_masked = [vv if k < 300 else np.sign(vv) * abs(ii) * 1e-3 * 60 for k, (vv, ii)
                in enumerate(zip(v, i, strict=True))]
    r = analytics.extract_ccd([int(x) for x in t], i, v_masked, [int(x["step"]) for x in s], z)
    assert (r.detection, r.short_step, r.ccd_ma) == ("impedance_drop", 3, pytest.approx(0.4))


def test_healthy_ladder_has_no_ccd_and_noise_does_not_trigger() -> None:
    s = ladder(T0, STEPS, None)
    t, i, v = _arrays(s, "time_ns", "cell_current_ma", "cell_voltage_v")
    v[150] = 0.0  # one glitch sample is not a short
    v[151] = 0.0
    r = analytics.extract_ccd([int(x) for x in t], i, v)
    assert (r.ccd_ma, r.detection, r.steps, r.last_safe_ma) == (None, "none", 6, 0.6)


def test_run_summary_charge_cycles_and_gaps() -> None:
    s = ladder(T0, [0.36] * 2, None, per_step=1000, period_ns=1_000_000_000, alternate=True)
    del s[500:510]  # ten samples lost mid-run (seq gap of 10, time gap of 11 s)
    t, i, temp, p = _arrays(s, "time_ns", "cell_current_ma", "cell_temp_c",
                            "stack_pressure_mpa")
    r = analytics.summarize_run([int(x) for x in t], i, temp, p, [int(x["seq"]) for x in s])
    # 0.36 mA for 2000 s minus the polarity flips and the skipped gap: ~0.2 mAh moved.
    moved_s = 1999 - 11 - 3  # three sign flips integrate to zero across one period each
    assert r.charge_mah == pytest.approx(0.36 * moved_s / 3600, rel=0.01)
    assert abs(r.net_charge_mah) < 0.01
    assert r.cycles == 2 and r.missing_samples == 10 and r.samples == 1990
    assert r.duration_s == pytest.approx(1999)


def test_events_become_grafana_annotations() -> None:
    [a] = analytics.events_to_annotations([{"time": T0, "rig": "rig-a", "event": "soft_short",
                                            "severity": "alarm", "text": "soft_short: x=1",
                                            "run": "run-1"}])
    assert a == {"dashboardUID": "fieldrig-rig", "time": T0 // 1_000_000,
                 "tags": ["fieldrig", "rig-a", "soft_short", "alarm", "run:run-1"],
                 "text": "soft_short: x=1"}
