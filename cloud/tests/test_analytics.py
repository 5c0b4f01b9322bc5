"""Analytics on synthetic data with a known truth."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest
from synthetic import TRUE_EIS, bench_ladder, ladder, spectrum

from fieldrig_cloud import analytics

T0 = 1_763_750_000_000_000_000
STEPS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def test_eis_fit_recovers_bulk_grain_boundary_interface_and_diffusion() -> None:
    # 40 points 1 MHz..10 mHz with 0.5 % noise: resistances within 10 %, CPE exponent
    # within 0.05 (docs/cloud.md, "EIS fit").
    fit = analytics.fit_spectrum(*spectrum())
    truth = dict(zip(analytics.PARAM_NAMES, TRUE_EIS, strict=True))
    for name in ("R0", "R1", "R2", "Ws1_0"):
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


def test_eis_fit_matches_the_simulated_cells_circuit() -> None:
    # The analytics fit the circuit the HIL cell model simulates (docs/cell_model.md).
    from fieldrig_hil.cell import Cell

    circuit, params = Cell("lpscl", temperature_c=25.0, pressure_mpa=5.0).elements()\
        .impedance_py()
    assert circuit == analytics.CIRCUIT
    z = analytics.simulate_spectrum(params, [1e3])
    # impedance_py leaves out an electronic leakage that changes |Z| by < 1e-5
    assert abs(z[0] - Cell("lpscl", temperature_c=25.0, pressure_mpa=5.0).impedance(1e3)) \
        < 1e-5 * abs(z[0])


def _sig(x: float) -> float:
    """5 significant digits, as the firmware rounds MSG_EIS values (measure._sig)."""
    return round(x, 4 - math.floor(math.log10(abs(x))))


SWEEP_TRUTH = [20.0, 150.0, 9.4e-7, 0.9, 400.0, 1.33e-4, 0.85, 100.0, 10.0]


def sweep_rows(truth: list[float] = SWEEP_TRUTH, t0: int = T0, boot: str = "7",
               sweep_seq: int = 40, drop_chunk: int | None = None,
               skip: tuple[int, ...] = (30,)) -> list[dict[str, Any]]:
    """``eis_spectrum`` rows as a chunked sweep lands in InfluxDB: 10 kHz..10 mHz at 5
    points per decade (31), 6 per chunk, rounded like the firmware; ``skip``: points
    the rig could not measure."""
    f = [float(x) for x in np.logspace(4, -2, 31)]
    z = analytics.simulate_spectrum(truth, f)
    chunks = (len(f) + 5) // 6
    rows = []
    for k, (fk, zk) in enumerate(zip(f, z, strict=True)):
        c, j = divmod(k, 6)
        if c == drop_chunk:
            continue
        r: dict[str, Any] = {"time": t0 + 1000 * c + j, "boot": boot, "sweep_seq": sweep_seq,
                             "eis_seq": 1, "chunk": c, "chunks": chunks, "point": j,
                             "freq_hz": _sig(fk), "quality": "good"}
        if k in skip:
            r["quality"] = "skipped"
        else:
            r.update(z_real_ohm=_sig(zk.real), z_imag_ohm=_sig(zk.imag))
        rows.append(r)
    return rows


def test_chunked_sweeps_group_by_boot_and_sweep_and_only_complete_ones_are_fitted() -> None:
    rows = (sweep_rows() + sweep_rows(t0=T0 + 10**12, sweep_seq=90, drop_chunk=2)
            + sweep_rows(t0=T0 + 2 * 10**12, boot="8", sweep_seq=40))
    random.Random(1).shuffle(rows)  # InfluxDB returns them by time; grouping must not care
    sweeps = analytics.group_sweeps(rows)
    assert [(s.boot, s.sweep_seq, s.complete, len(s.rows)) for s in sweeps] == [
        ("7", 40, True, 31), ("7", 90, False, 25), ("8", 40, True, 31)]
    assert [s.start_ns for s in sweeps] == [T0, T0 + 10**12, T0 + 2 * 10**12]
    assert [r["freq_hz"] for r in sweeps[0].rows] == sorted(
        (r["freq_hz"] for r in sweeps[0].rows), reverse=True)
    assert len(sweeps[0].measured) == 30
    data = analytics.RunData("lab-1", "rig-a", "run-1",
                             spectra={s.start_ns: s for s in sweeps if s.complete})
    result = analytics.analyze(data)
    assert sorted(result.fits) == [T0, T0 + 2 * 10**12]
    fit_line = next(ln for ln in result.lines if ln.startswith("eis_fit,"))
    assert "boot=7," in fit_line and "circuit=2rcpe_ws" in fit_line
    assert "sweep_seq=40i,eis_seq=1i,n_skipped=1i" in fit_line
    assert fit_line.endswith(f" {T0}")


def test_fit_of_a_chunked_sweep_recovers_the_circuit_within_one_percent() -> None:
    # Noise-free apart from the firmware's 5-digit rounding: every parameter within 1 %.
    [sw] = analytics.group_sweeps(sweep_rows())
    rows = sw.measured
    fit = analytics.fit_spectrum([r["freq_hz"] for r in rows], [r["z_real_ohm"] for r in rows],
                                 [r["z_imag_ohm"] for r in rows])
    for name, true in zip(analytics.PARAM_NAMES, SWEEP_TRUTH, strict=True):
        assert fit.params[name] == pytest.approx(true, rel=0.01), name
    assert fit.rmse_rel < 1e-3


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


def test_an_eis_excitation_in_a_rest_is_not_counted_as_cycles() -> None:
    # Two plate/strip cycles at 10 Hz; in the rest after each plating an EIS sweep's
    # excitation is caught sample by sample at alternating sign (+-0.05 mA).
    rng = np.random.default_rng(3)
    i: list[float] = []
    for _ in range(2):
        i += [0.36] * 600
        i += [0.05 * (-1) ** k for k in range(40)] + [0.0] * 60
        i += [-0.36] * 600
    cur = np.asarray(i) + rng.normal(0.0, 1e-5, len(i))
    n = len(cur)
    t = [T0 + k * 100_000_000 for k in range(n)]
    r = analytics.summarize_run(t, cur, np.full(n, 30.0), np.full(n, 5.0), list(range(n)))
    assert r.cycles == 2
    # The excitation alone: no half-cycle of 5 samples or more.
    assert analytics.half_cycles(np.sign(np.asarray(i[600:640]))) == 0


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


# --- bench-like runs: rests, the firmware's clock and its own results ------------------

AREA = 0.785
LEVELS = [0.785, 1.5686, 2.3559, 3.1403]  # 1..4 mA/cm² on 0.785 cm²


def _run_data(samples: list[dict[str, Any]], events: list[dict[str, Any]] = (),  # type: ignore[assignment]
              impedance: list[dict[str, Any]] = ()) -> analytics.RunData:  # type: ignore[assignment]
    """Rows as ``load_run`` reads them from InfluxDB (``time`` in ns, tags as strings)."""
    data = analytics.RunData("lab-1", "rig-a", "run-1")
    data.samples = [dict(r, time=r["time_ns"]) for r in samples]
    data.events = list(events)
    data.impedance = list(impedance)
    return data


def stored_event(event: str, time_ns: int, boot: str = "7", **body: Any) -> dict[str, Any]:
    """An ``event`` row as the ingester stores a rig EVENT: its body in ``detail``'s
    ``data`` (the gateway's envelope, docs/mqtt.md)."""
    return {"time": time_ns, "event": event, "title": event, "boot": boot,
            "severity": "alarm" if event == "echem_alarm" else "info",
            "detail": json.dumps({"data": body, "seq": 12, "source": "rig"})}


def test_rests_are_no_current_steps_so_a_healthy_ladder_has_no_ccd() -> None:
    # On the bench a rest reads ~1e-4 mA of noise, and the voltage relaxes by millivolts:
    # counted as current, its |V|/|I| made a reference resistance of ~kOhm, and the next
    # step "collapsed" against it (a CCD of 1 mA/cm² where the firmware saw no short).
    s = bench_ladder(T0, LEVELS)
    t, i, v = _arrays(s, "time_ns", "cell_current_ma", "cell_voltage_v")
    steps = analytics.segment_steps(np.asarray(i))
    assert [st.carries_current for st in steps] == [False] + [True, False] * 8
    r = analytics.extract_ccd([int(x) for x in t], i, v, area_cm2=AREA)
    assert (r.ccd_ma, r.detection, r.source) == (None, "none", "analytics")
    assert r.last_safe_ma == pytest.approx(LEVELS[-1], rel=1e-3)
    # Cycles: plate then strip per level, whatever sign the rests' noise has.
    summary = analytics.analyze(_run_data(s), AREA).summary
    assert summary is not None and summary.cycles == len(LEVELS)


@pytest.mark.parametrize("short_level", [1, 2, 3])
def test_a_short_after_rests_is_found_at_its_level(short_level: int) -> None:
    s = bench_ladder(T0, LEVELS, short_level)
    t, i, v = _arrays(s, "time_ns", "cell_current_ma", "cell_voltage_v")
    r = analytics.extract_ccd([int(x) for x in t], i, v, area_cm2=AREA)
    assert r.detection == "voltage_collapse"
    assert r.ccd_ma == pytest.approx(LEVELS[short_level], rel=1e-3)
    assert r.short_step == 1 + 4 * short_level  # rest, then (plate, rest, strip, rest)
    assert r.last_safe_ma == pytest.approx(LEVELS[short_level - 1], rel=1e-3)


def test_the_firmwares_ladder_result_is_preferred_and_named() -> None:
    # The firmware's recipe stopped on a soft short at 3 mA/cm² that the samples' voltage
    # does not show: its result wins, and the stored CCD says where it came from.
    s = bench_ladder(T0, LEVELS)
    alarm_up = s[0]["uptime_ns"] + 230 * 10**9  # inside the 3 mA/cm² plating half
    events = [stored_event("echem_alarm", T0 + 10**9, kind="soft_short", confidence=0.9,
                           t_s=round(alarm_up / 1e9, 2), evidence=[]),
              stored_event("recipe_done", T0 + 2 * 10**9, name="ccd ladder",
                           result="stopped", reason="stop_on:soft_short",
                           ccd_ma_cm2=3.0, last_passed_ma_cm2=2.0)]
    a = analytics.analyze(_run_data(s, events), AREA)
    c = a.ccd
    assert c is not None and (c.source, c.detection) == ("firmware_recipe", "soft_short")
    assert (c.ccd_ma_cm2, c.last_safe_ma_cm2) == (3.0, 2.0)
    assert c.ccd_ma == pytest.approx(3.0 * AREA) and c.last_safe_ma == pytest.approx(2.0 * AREA)
    # The short's time and step from the alarm, on the firmware's clock.
    assert c.time_to_short_s == pytest.approx(230.0, abs=0.3)
    assert c.short_step == 1 + 4 * 2
    [line] = [ln for ln in a.lines if ln.startswith("ccd_result")]
    assert 'source="firmware_recipe"' in line and "ccd_ma_cm2=3," in line
    assert 'detection="soft_short"' in line and "last_safe_ma_cm2=2," in line
    # Without the area the densities stay as the firmware reported them.
    c = analytics.analyze(_run_data(s, events)).ccd
    assert c is not None and (c.ccd_ma, c.ccd_ma_cm2, c.last_safe_ma_cm2) == (None, 3.0, 2.0)


def test_the_firmwares_short_alarm_gives_the_ccd_where_no_recipe_reports_one() -> None:
    # A soft short the firmware caught (and mitigated: no recipe_done) while plating at
    # 2 mA/cm²; the UTC times were clamped (an accelerated rig), so only the uptime places
    # the alarm. Its step's level is the CCD, the level before the last safe one.
    s = bench_ladder(T0, LEVELS, clamp_after=300)
    up0 = s[0]["uptime_ns"]
    events = [stored_event("echem_alarm", T0 + 10**9, kind="void", confidence=0.7,
                           t_s=round((up0 + 20 * 10**9) / 1e9, 2), evidence=[]),
              stored_event("echem_alarm", T0 + 10**9 + 1, kind="soft_short", confidence=0.9,
                           t_s=round((up0 + 125 * 10**9) / 1e9, 2), evidence=[]),
              stored_event("recipe_step", T0 + 10**9 + 2, phase="end")]
    c = analytics.analyze(_run_data(s, events), AREA).ccd
    assert c is not None and (c.source, c.detection) == ("firmware_alarm", "soft_short")
    assert c.ccd_ma == pytest.approx(LEVELS[1], rel=1e-3) and c.short_step == 5
    assert c.last_safe_ma == pytest.approx(LEVELS[0], rel=1e-3)
    assert c.time_to_short_s == pytest.approx(125.0, abs=0.3)
    # Seen in a rest: the short grew in the current step before it.
    rest_alarm = [dict(events[1], detail=json.dumps({"data": {
        "kind": "hard_short", "t_s": round((up0 + 205 * 10**9) / 1e9, 2)}}))]
    c = analytics.analyze(_run_data(s, rest_alarm), AREA).ccd
    assert c is not None and c.short_step == 7 and c.detection == "hard_short"
    assert c.ccd_ma == pytest.approx(LEVELS[1], rel=1e-3)
    # An alarm of another boot is not this boot's short.
    other = [dict(events[1], boot="8")]
    c = analytics.analyze(_run_data(s, other), AREA).ccd
    assert c is not None and (c.source, c.ccd_ma) == ("analytics", None)


def test_a_ladder_the_firmware_passed_without_a_short_has_no_ccd() -> None:
    s = bench_ladder(T0, LEVELS, short_level=3)  # the samples would say 4 mA/cm²
    events = [stored_event("recipe_done", T0 + 10**9, result="completed",
                           reason="completed", last_passed_ma_cm2=4.0)]
    c = analytics.analyze(_run_data(s, events), AREA).ccd
    assert c is not None and (c.source, c.ccd_ma, c.detection) == (
        "firmware_recipe", None, "none")
    assert c.last_safe_ma_cm2 == 4.0


def test_charge_and_duration_are_on_the_firmwares_clock_when_times_are_clamped() -> None:
    # From sample 300 on the edge's UTC times are 1 ns apart (the rig's clock ran ahead
    # of the gateway's): the median gap was 1 ns and nearly every interval a "gap".
    s = bench_ladder(T0, LEVELS, clamp_after=300)
    t = [int(x["time_ns"]) for x in s]
    assert np.median(np.diff(t)) == 1
    a = analytics.analyze(_run_data(s), AREA)
    assert a.summary is not None
    # 80 s at each level, rests carry nothing: 80 s × Σ levels.
    assert a.summary.charge_mah == pytest.approx(80 * sum(LEVELS) / 3600, rel=0.01)
    assert abs(a.summary.net_charge_mah) < 0.01 * a.summary.charge_mah
    assert a.summary.duration_s == pytest.approx((len(s) - 1) * 0.25)
    # A real-time rig's times are its uptimes mapped 1:1: the same summary.
    real = [dict(x, time_ns=T0 + x["uptime_ns"]) for x in s]
    b = analytics.analyze(_run_data(real), AREA).summary
    assert b is not None and b.charge_mah == pytest.approx(a.summary.charge_mah)
    assert b.duration_s == pytest.approx(a.summary.duration_s)


def test_charge_is_not_integrated_across_a_reboot() -> None:
    s = bench_ladder(T0, [1.0], rest_s=1.0, half_s=50.0)  # rest, +1 mA, rest, −1 mA, rest
    t_end = s[-1]["time_ns"]
    again = bench_ladder(t_end + 60 * 10**9, [1.0], rest_s=1.0, half_s=50.0, boot="8")
    a = analytics.analyze(_run_data(s + again), AREA).summary
    assert a is not None
    assert a.charge_mah == pytest.approx(2 * 100 * 1.0 / 3600, rel=0.02)
    # The minute between the boots counts in the duration, not in the charge.
    one = (len(s) - 1) * 0.25
    assert a.duration_s == pytest.approx(one + 60 + one)


def test_missing_samples_count_telemetry_seqs_neither_stored_nor_reported() -> None:
    # Impedance points share the samples' sequence numbers (docs/link.md): three per
    # tracking block here, none of them a missing sample.
    s = bench_ladder(T0, [1.0], rest_s=5.0, half_s=20.0)
    seqs, shifted, imp = [], [], []
    k = 0
    for x in s:
        if x["seq"] % 40 == 10:
            imp += [{"time": x["time_ns"] + j, "seq": k + j, "boot": "7",
                     "source": "tracking", "z_mag_ohm": 80.0} for j in range(3)]
            k += 3
        shifted.append(dict(x, seq=k))
        seqs.append(k)
        k += 1
    # Ten samples lost: six reported by the rig (telemetry_dropped), four nowhere.
    lost = shifted[100:110]
    kept = shifted[:100] + shifted[110:]
    events = [stored_event("telemetry_dropped", T0, first_seq=lost[0]["seq"],
                           last_seq=lost[5]["seq"], count=6)]
    a = analytics.analyze(_run_data(kept, events, imp), AREA).summary
    assert a is not None and (a.missing_samples, a.dropped_samples) == (4, 6)
    # A report of another boot explains nothing here.
    other = [dict(events[0], boot="8")]
    a = analytics.analyze(_run_data(kept, other, imp), AREA).summary
    assert a is not None and (a.missing_samples, a.dropped_samples) == (10, 0)
    # Sample-borne |Z| (no source tag) takes no seq of its own.
    a = analytics.analyze(_run_data(shifted, (), [dict(z, source=None) for z in imp]),
                          AREA).summary
    assert a is not None and a.missing_samples == len(imp)


def test_events_become_grafana_annotations() -> None:
    [a] = analytics.events_to_annotations([{"time": T0, "rig": "rig-a", "event": "soft_short",
                                            "severity": "alarm", "text": "soft_short: x=1",
                                            "run": "run-1"}])
    assert a == {"dashboardUID": "fieldrig-rig", "time": T0 // 1_000_000,
                 "tags": ["fieldrig", "rig-a", "soft_short", "alarm", "run:run-1"],
                 "text": "soft_short: x=1"}
