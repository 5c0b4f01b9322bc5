"""Synthetic runs for analytics and dashboard tests: a CCD ladder on a symmetric Li
cell whose dendrite bridges the electrolyte at a chosen step, and EIS spectra of the
equivalent circuit with known parameters. The tests know the injected truth; the code
under test has to find it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fieldrig_cloud import analytics

TRUE_EIS = [20.0, 150.0, 5e-8, 0.9, 400.0, 5e-6, 0.85, 100.0, 10.0]
FREQS = list(np.logspace(6, -2, 40))


def ladder(t0_ns: int, steps_ma: list[float], short_step: int | None, per_step: int = 100,
           period_ns: int = 100_000_000, r_cell_ohm: float = 60.0, r_short_ohm: float = 2.0,
           short_at: int = 30, alternate: bool = True, seed: int = 3
           ) -> list[dict[str, Any]]:
    """Samples of a ladder: each step's current alternates polarity each half (plating
    then stripping); from sample ``short_at`` of ``short_step`` a dendrite path of
    ``r_short_ohm`` parallels the cell, so V and |Z| collapse."""
    rng = np.random.default_rng(seed)
    out = []
    seq = 0
    for k, i_ma in enumerate(steps_ma):
        for j in range(per_step):
            sign = -1.0 if alternate and j >= per_step // 2 else 1.0
            shorted = short_step is not None and (k > short_step or
                                                  (k == short_step and j >= short_at))
            r = (r_cell_ohm * r_short_ohm / (r_cell_ohm + r_short_ohm)) if shorted else r_cell_ohm
            noise = 1 + 0.01 * rng.standard_normal()
            v = sign * i_ma * 1e-3 * r * noise
            out.append({"seq": seq, "time_ns": t0_ns + seq * period_ns,
                        "cell_voltage_v": float(v), "cell_current_ma": sign * i_ma,
                        "cell_temp_c": 60.0 + 0.1 * rng.standard_normal(),
                        "stack_pressure_mpa": 5.0, "rig_state": 3 if shorted else 1,
                        "step": k, "cycle": k, "current_setpoint_ma": sign * i_ma,
                        "temp_setpoint_c": 60.0, "pressure_setpoint_mpa": 5.0,
                        "heater_duty": 0.3, "z_freq_hz": 1000.0,
                        "z_mag_ohm": float(r * noise), "z_phase_deg": -10.0})
            seq += 1
    return out


def spectrum(params: list[float] = TRUE_EIS, noise: float = 0.005, seed: int = 5
             ) -> tuple[list[float], list[float], list[float]]:
    z = analytics.simulate_spectrum(params, FREQS)
    rng = np.random.default_rng(seed)
    z = z * (1 + noise * rng.standard_normal(len(z)))
    return FREQS, [float(x) for x in z.real], [float(x) for x in z.imag]


def bench_ladder(t0_ns: int, levels_ma: list[float], short_level: int | None = None,
                 rest_s: float = 10.0, half_s: float = 40.0, period_s: float = 0.25,
                 r_cell_ohm: float = 83.0, r_short_ohm: float = 2.0,
                 rest_noise_ma: float = 2e-4, clamp_after: int | None = None,
                 boot: str = "7", seed: int = 11) -> list[dict[str, Any]]:
    """Samples of a CCD ladder as the bench's firmware runs one (docs/demo.md): a rest,
    then per level plate ``half_s``, rest ``rest_s``, strip ``half_s``, rest ``rest_s``.
    At rest the current reads noise around zero (``rest_noise_ma``) while the voltage
    relaxes from the last half's overpotential. From the start of level
    ``short_level`` a dendrite of ``r_short_ohm`` parallels the cell.

    Every sample carries the firmware's ``uptime_ns``; ``time_ns`` is the edge's UTC
    mapping of it, which from sample ``clamp_after`` on runs into a clamp (the rig's
    clock ahead of the gateway's: docs/demo.md, "Limits"): 1 ns apart."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    up = 1_000_000_000
    last_v = 0.0
    seq = 0

    def add(i_ma: float, v: float) -> None:
        nonlocal seq, up
        t = t0_ns + (up - 1_000_000_000)
        if clamp_after is not None and seq >= clamp_after > 0:
            t = out[clamp_after - 1]["time_ns"] + (seq - clamp_after + 1)
        out.append({"seq": seq, "time_ns": t, "uptime_ns": up, "boot": boot,
                    "cell_voltage_v": float(v), "cell_current_ma": float(i_ma),
                    "cell_temp_c": 25.0, "stack_pressure_mpa": 12.0, "rig_state": 1})
        seq += 1
        up += round(period_s * 1e9)

    def rest() -> None:
        nonlocal last_v
        for k in range(round(rest_s / period_s)):
            add(rest_noise_ma * rng.standard_normal(), last_v * math.exp(-k * period_s / 3))
        last_v = 0.0

    rest()
    for k, i_ma in enumerate(levels_ma):
        shorted = short_level is not None and k >= short_level
        r = r_cell_ohm * r_short_ohm / (r_cell_ohm + r_short_ohm) if shorted else r_cell_ohm
        for sign in (1.0, -1.0):
            for _ in range(round(half_s / period_s)):
                i = sign * i_ma * (1 + 1e-4 * rng.standard_normal())
                last_v = i * 1e-3 * r * (1 + 0.002 * rng.standard_normal())
                add(i, last_v)
            rest()
    return out
