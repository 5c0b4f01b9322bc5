"""Analytics on stored runs (docs/cloud.md): EIS fits, critical current density, run
summaries, events as Grafana annotations.

Pure functions on arrays (testable without a database) plus ``analyze_run``, which
reads a run from InfluxDB and writes its results back as points keyed by the run's or
spectrum's own time, so re-running an analysis overwrites instead of duplicating.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fieldrig_cloud import lineproto, schema
from fieldrig_cloud.influx import InfluxHttp, quote_str

FloatArray = npt.NDArray[np.float64]

# --- EIS -------------------------------------------------------------------------------

# The simulated cell's circuit (docs/cell_model.md, fieldrig_hil.cell.circuit
# ``impedance_py``): bulk electrolyte (R0), grain boundaries (R1 || CPE1), Li/electrolyte
# interface (R2 || CPE2, both electrodes' arcs merged when equal), and finite-length
# (transmissive, "short") Warburg diffusion in the near-interface Li (Ws1).
CIRCUIT = "R0-p(R1,CPE1)-p(R2,CPE2)-Ws1"
CIRCUIT_TAG = "2rcpe_ws"
PARAM_NAMES = ("R0", "R1", "CPE1_0", "CPE1_1", "R2", "CPE2_0", "CPE2_1", "Ws1_0", "Ws1_1")
PHYSICAL = {"R0": "r_bulk_ohm", "R1": "r_gb_ohm", "R2": "r_interface_ohm",
            "Ws1_0": "r_diffusion_ohm", "Ws1_1": "tau_diffusion_s"}


@dataclass(frozen=True, slots=True)
class EisFit:
    params: dict[str, float]
    rmse_rel: float
    circuit: str = CIRCUIT

    @property
    def physical(self) -> dict[str, float]:
        return {PHYSICAL[k]: v for k, v in self.params.items() if k in PHYSICAL}


def _peaks(f: FloatArray, neg_im: FloatArray) -> list[float]:
    """Frequencies of local maxima of −Z″, highest −Z″ first."""
    idx = [i for i in range(1, len(f) - 1)
           if neg_im[i] >= neg_im[i - 1] and neg_im[i] >= neg_im[i + 1] and neg_im[i] > 0]
    idx.sort(key=lambda i: -neg_im[i])
    return [float(f[i]) for i in idx]


def initial_guesses(f: FloatArray, z: npt.NDArray[np.complex128]) -> list[list[float]]:
    """Start points from the spectrum's own shape (intercept, span, arc frequencies)."""
    order = np.argsort(-f)
    f, z = f[order], z[order]
    r0 = max(float(np.min(z.real)), 1e-6)
    span = max(float(np.max(z.real)) - r0, 1e-6)
    peaks = _peaks(f, -z.imag)
    f_hi = max(peaks[:2]) if len(peaks) >= 2 else (peaks[0] * 100 if peaks else float(f[0]) / 10)
    f_lo = min(peaks[:2]) if len(peaks) >= 2 else (peaks[0] if peaks else float(f[-1]) * 10)
    guesses = []
    for share1, share2 in ((0.25, 0.5), (0.5, 0.3), (0.15, 0.7)):
        r1, r2 = share1 * span, share2 * span
        rw = max(span - r1 - r2, 1e-3 * span)
        a1, a2 = 0.9, 0.8
        q1 = 1 / (r1 * (2 * math.pi * f_hi) ** a1)
        q2 = 1 / (r2 * (2 * math.pi * f_lo) ** a2)
        tau = 1 / (2 * math.pi * max(float(f[-1]), 1e-6))
        guesses.append([r0, r1, q1, a1, r2, q2, a2, rw, tau])
    return guesses


def fit_spectrum(freq_hz: Sequence[float], z_real: Sequence[float],
                 z_imag: Sequence[float]) -> EisFit:
    """Fit ``CIRCUIT`` (impedance.py), weighting each point by 1/|Z| so the small
    high-frequency intercept counts as much as the large low-frequency tail; the best
    of a few data-derived start points wins."""
    from impedance.models.circuits import CustomCircuit

    f = np.asarray(freq_hz, dtype=float)
    z = np.asarray(z_real, dtype=float) + 1j * np.asarray(z_imag, dtype=float)
    if len(f) < len(PARAM_NAMES) + 1:
        raise ValueError(f"{len(f)} points cannot determine {len(PARAM_NAMES)} parameters")
    lower = [0, 0, 0, 0.3, 0, 0, 0.3, 0, 0]
    upper = [np.inf, np.inf, np.inf, 1, np.inf, np.inf, 1, np.inf, np.inf]
    best: EisFit | None = None
    for guess in initial_guesses(f, z):
        c = CustomCircuit(CIRCUIT, initial_guess=guess)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                c.fit(f, z, bounds=(lower, upper), weight_by_modulus=True, maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        pred = c.predict(f)
        rmse = float(np.sqrt(np.mean(np.abs(pred - z) ** 2 / np.abs(z) ** 2)))
        if best is None or rmse < best.rmse_rel:
            best = EisFit(dict(zip(PARAM_NAMES, map(float, c.parameters_), strict=True)), rmse)
    if best is None:
        raise ValueError("no start point converged")
    return best


def simulate_spectrum(params: Sequence[float], freq_hz: Sequence[float]
                      ) -> npt.NDArray[np.complex128]:
    """Impedance of ``CIRCUIT`` with the given parameters (for tests and plots)."""
    from impedance.models.circuits import CustomCircuit

    c = CustomCircuit(CIRCUIT, initial_guess=list(params))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z: npt.NDArray[np.complex128] = c.predict(np.asarray(freq_hz, dtype=float),
                                                  use_initial=True)
    return z


# --- CCD ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Step:
    index: int
    start: int  # sample index, inclusive
    end: int    # exclusive
    current_ma: float  # |I| level


@dataclass(frozen=True, slots=True)
class CcdResult:
    """The current step during which the cell shorted (None: no short seen)."""

    ccd_ma: float | None
    short_step: int | None
    short_time_ns: int | None
    time_to_short_s: float | None
    last_safe_ma: float | None
    detection: str
    steps: int
    area_cm2: float | None = None

    @property
    def ccd_ma_cm2(self) -> float | None:
        if self.ccd_ma is None or not self.area_cm2:
            return None
        return self.ccd_ma / self.area_cm2


def segment_steps(current_ma: FloatArray, step: Sequence[int] | None = None,
                  rel_tol: float = 0.05, abs_tol_ma: float = 1e-3) -> list[Step]:
    """Current steps: by the ``step`` field when the rig reports it, otherwise where
    |I| moves to a new level (|I|, because ladders often alternate plating/stripping)."""
    n = len(current_ma)
    mag = np.abs(current_ma)
    bounds = [0]
    if step is not None and len(step) == n:
        bounds += [i for i in range(1, n) if step[i] != step[i - 1]]
    else:
        level = mag[0]
        for i in range(1, n):
            if abs(mag[i] - level) > max(rel_tol * level, abs_tol_ma):
                # A new level only if the next samples agree (not a single glitch).
                nxt = mag[i:i + 3]
                if np.all(np.abs(nxt - mag[i]) <= max(rel_tol * mag[i], abs_tol_ma)):
                    bounds.append(i)
                    level = mag[i]
    bounds.append(n)
    return [Step(k, a, b, float(np.median(mag[a:b])))
            for k, (a, b) in enumerate(itertools.pairwise(bounds)) if b > a]


def _first_persistent(mask: npt.NDArray[np.bool_], persist: int) -> int | None:
    run = 0
    for i, m in enumerate(mask):
        run = run + 1 if m else 0
        if run >= persist:
            return i - persist + 1
    return None


def extract_ccd(time_ns: Sequence[int], current_ma: Sequence[float],
                voltage_v: Sequence[float], step: Sequence[int] | None = None,
                z_mag_ohm: Sequence[float] | None = None, *, collapse_ratio: float = 0.5,
                z_drop: float = 0.5, persist: int = 5,
                area_cm2: float | None = None) -> CcdResult:
    """CCD of a ladder run: the first step in which the cell shorts.

    A short shows as (a) voltage collapse: |V| falls below ``collapse_ratio`` of what
    the cell's resistance so far predicts (|I|·R, R the median |V|/|I| of the healthy
    steps before, or of this step's first samples for the first step) for ``persist``
    samples in a row while current flows; or (b) an impedance drop: |Z| below
    (1 − ``z_drop``) of its healthy baseline for ``persist`` samples. ``persist``
    keeps single noisy samples (a soft short's flicker) from counting as the short.
    """
    t = np.asarray(time_ns, dtype=np.int64)
    i_ma = np.asarray(current_ma, dtype=float)
    v = np.abs(np.asarray(voltage_v, dtype=float))
    z = np.asarray(z_mag_ohm, dtype=float) if z_mag_ohm is not None else None
    steps = segment_steps(i_ma, step)
    r_ref: float | None = None
    z_ref: float | None = None
    last_safe: float | None = None
    for st in steps:
        a, b = st.start, st.end
        flowing = np.abs(i_ma[a:b]) > 1e-9
        if not flowing.any():
            continue
        if r_ref is None:
            head = slice(a, a + max(3, (b - a) // 5))
            ok = np.abs(i_ma[head]) > 1e-9
            r_ref = float(np.median(v[head][ok] / np.abs(i_ma[head][ok])))
        if z is not None and z_ref is None:
            z_ref = float(np.median(z[a:a + max(3, (b - a) // 5)]))
        expected = np.abs(i_ma[a:b]) * r_ref
        hit = _first_persistent(flowing & (v[a:b] < collapse_ratio * expected), persist)
        how = "voltage_collapse"
        if z is not None and z_ref is not None:
            zhit = _first_persistent(z[a:b] < (1 - z_drop) * z_ref, persist)
            if zhit is not None and (hit is None or zhit < hit):
                hit, how = zhit, "impedance_drop"
        if hit is not None:
            k = a + hit
            return CcdResult(st.current_ma, st.index, int(t[k]), float(t[k] - t[0]) / 1e9,
                             last_safe, how, len(steps), area_cm2)
        # Healthy step: its resistance becomes the reference for the next one.
        ok = flowing
        r_ref = float(np.median(v[a:b][ok] / np.abs(i_ma[a:b][ok])))
        last_safe = st.current_ma
    return CcdResult(None, None, None, None, last_safe, "none", len(steps), area_cm2)


# --- run summaries ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RunSummary:
    start_ns: int
    duration_s: float
    samples: int
    charge_mah: float       # ∫|I| dt: charge moved either way
    net_charge_mah: float   # ∫I dt
    cycles: int
    max_temp_c: float
    mean_pressure_mpa: float
    missing_samples: int    # seq gaps (per boot) not explained
    time_to_short_s: float | None


def summarize_run(time_ns: Sequence[int], current_ma: Sequence[float],
                  temp_c: Sequence[float], pressure_mpa: Sequence[float],
                  seq: Sequence[int], cycle: Sequence[int] | None = None,
                  boot: Sequence[str] | None = None,
                  time_to_short_s: float | None = None) -> RunSummary:
    t = np.asarray(time_ns, dtype=np.int64)
    i_ma = np.asarray(current_ma, dtype=float)
    if len(t) == 0:
        raise ValueError("no samples")
    dt = np.diff(t) / 1e9
    # Do not integrate across gaps (rig off, link down): > 10× the usual period.
    usual = float(np.median(dt)) if len(dt) else 0.0
    ok = dt <= 10 * usual if usual > 0 else np.ones_like(dt, dtype=bool)
    mid = (i_ma[1:] + i_ma[:-1]) / 2
    charge = float(np.sum(np.abs(mid[ok]) * dt[ok])) / 3600
    net = float(np.sum(mid[ok] * dt[ok])) / 3600
    if cycle is not None and len(cycle) == len(t):
        cycles = int(max(cycle) - min(cycle) + 1)
    else:
        # A cycle is plating then stripping: count polarity changes of the current.
        signs = np.sign(i_ma[np.abs(i_ma) > 1e-9])
        cycles = int(np.count_nonzero(np.diff(signs)) + 1) // 2 if len(signs) else 0
    missing = 0
    boots = list(boot) if boot is not None and len(boot) == len(t) else [""] * len(t)
    for b in set(boots):
        s = [sq for sq, bb in zip(seq, boots, strict=True) if bb == b]
        missing += (max(s) - min(s) + 1) - len(set(s))
    return RunSummary(int(t[0]), float(t[-1] - t[0]) / 1e9, len(t), charge, net, cycles,
                      float(np.max(temp_c)), float(np.mean(pressure_mpa)), missing,
                      time_to_short_s)


# --- events -> Grafana annotations --------------------------------------------------------

def events_to_annotations(events: list[dict[str, Any]],
                          dashboard_uid: str = "fieldrig-rig") -> list[dict[str, Any]]:
    """Grafana annotation API bodies (POST /api/annotations) for stored ``event`` rows
    (time in ns, rig, event, severity, text)."""
    out = []
    for e in events:
        tags = ["fieldrig", str(e.get("rig", "")), str(e.get("event", "")),
                str(e.get("severity", "info"))]
        if e.get("run"):
            tags.append(f"run:{e['run']}")
        out.append({"dashboardUID": dashboard_uid, "time": int(e["time"]) // 1_000_000,
                    "tags": [t for t in tags if t], "text": str(e.get("text") or e.get("event"))})
    return out


# --- against InfluxDB ------------------------------------------------------------------

@dataclass(slots=True)
class Sweep:
    """The stored points of one EIS sweep (``eis_spectrum`` rows), in sweep order.

    A rig's sweep arrives in chunks (MSG_EIS) and is named by ``(boot, sweep_seq)``;
    it is complete once every chunk ``0..chunks-1`` is stored. A spectrum posted as
    arrays (one message) is named by its ``spectrum_ns`` and always complete."""

    start_ns: int
    rows: list[dict[str, Any]]
    boot: str = ""
    sweep_seq: int | None = None
    eis_seq: int | None = None
    chunks: int = 1
    chunks_stored: int = 1

    @property
    def complete(self) -> bool:
        return self.chunks_stored == self.chunks

    @property
    def measured(self) -> list[dict[str, Any]]:
        """Points with an impedance (skipped ones have only their frequency)."""
        return [r for r in self.rows if r.get("z_real_ohm") is not None
                and r.get("z_imag_ohm") is not None]


def group_sweeps(rows: list[dict[str, Any]]) -> list[Sweep]:
    """``eis_spectrum`` rows (InfluxQL ``SELECT *``) -> sweeps, oldest first."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("sweep_seq") is not None:
            key: tuple[Any, ...] = ("sweep", str(r.get("boot") or ""), int(r["sweep_seq"]))
        else:
            key = ("spectrum", int(r["spectrum_ns"]))
        groups.setdefault(key, []).append(r)
    out = []
    for key, rs in groups.items():
        if key[0] == "sweep":
            rs.sort(key=lambda r: (int(r["chunk"]), int(r["point"])))
            out.append(Sweep(min(int(r["time"]) for r in rs), rs, key[1], key[2],
                             int(rs[0]["eis_seq"]), int(rs[0]["chunks"]),
                             len({int(r["chunk"]) for r in rs})))
        else:
            rs.sort(key=lambda r: int(r["idx"]))
            out.append(Sweep(key[1], rs, str(rs[0].get("boot") or "")))
    out.sort(key=lambda sw: sw.start_ns)
    return out


@dataclass(slots=True)
class RunData:
    site: str
    rig: str
    run: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    impedance: list[dict[str, Any]] = field(default_factory=list)
    actuator: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    # Complete sweeps by start time; incomplete ones (chunks still missing) are counted.
    spectra: dict[int, Sweep] = field(default_factory=dict)
    incomplete_sweeps: int = 0
    cell: str = ""


def run_filter(site: str, rig: str, run: str) -> str:
    return f'"site" = {quote_str(site)} AND "rig" = {quote_str(rig)} AND "run" = {quote_str(run)}'


async def load_run(influx: InfluxHttp, site: str, rig: str, run: str) -> RunData:
    w = run_filter(site, rig, run)
    data = RunData(site, rig, run)
    data.samples = await influx.rows(f'SELECT * FROM "raw"."cell_sample" WHERE {w}')
    data.impedance = await influx.rows(f'SELECT * FROM "raw"."impedance" WHERE {w}')
    data.actuator = await influx.rows(f'SELECT * FROM "raw"."actuator_state" WHERE {w}')
    data.events = await influx.rows(f'SELECT * FROM "keep"."event" WHERE {w}')
    for sw in group_sweeps(await influx.rows(f'SELECT * FROM "keep"."eis_spectrum" WHERE {w}')):
        if sw.complete:
            data.spectra[sw.start_ns] = sw
        else:
            data.incomplete_sweeps += 1
    if data.samples:
        data.cell = str(data.samples[0].get("cell") or "")
    return data


@dataclass(frozen=True, slots=True)
class RunAnalysis:
    fits: dict[int, EisFit]
    ccd: CcdResult | None
    summary: RunSummary | None
    lines: list[str]


def analyze(data: RunData, area_cm2: float | None = None) -> RunAnalysis:
    tags = {"site": data.site, "rig": data.rig, "run": data.run, "cell": data.cell}
    lines: list[str] = []
    fits: dict[int, EisFit] = {}
    for t0, sw in sorted(data.spectra.items()):
        rows = sw.measured
        try:
            fit = fit_spectrum([r["freq_hz"] for r in rows], [r["z_real_ohm"] for r in rows],
                               [r["z_imag_ohm"] for r in rows])
        except ValueError:
            continue
        fits[t0] = fit
        fields: dict[str, lineproto.FieldValue] = {
            **fit.params, **fit.physical, "rmse_rel": fit.rmse_rel, "spectrum_ns": t0,
            "n_points": len(rows), "circuit": fit.circuit}
        if sw.sweep_seq is not None and sw.eis_seq is not None:
            fields.update({"sweep_seq": sw.sweep_seq, "eis_seq": sw.eis_seq,
                           "n_skipped": len(sw.rows) - len(rows)})
        fit_tags = {**tags, "circuit": CIRCUIT_TAG}
        if sw.boot:
            fit_tags["boot"] = sw.boot
        lines.append(lineproto.point(schema.EIS_FIT, fit_tags, fields, t0))
    ccd = summary = None
    # Samples with a null reading (failed sensor) carry no value to analyse.
    needed = ("cell_current_ma", "cell_voltage_v", "cell_temp_c", "stack_pressure_mpa")
    complete = [r for r in data.samples if all(r.get(k) is not None for k in needed)]
    if complete:
        s = sorted(complete, key=lambda r: int(r["time"]))
        t = [int(r["time"]) for r in s]
        z_by_t = {int(r["time"]): float(r["z_mag_ohm"]) for r in data.impedance
                  if r.get("z_mag_ohm") is not None}
        # Optional columns count only when every sample has them.
        zs = [z_by_t[tt] for tt in t] if all(tt in z_by_t for tt in t) else None
        steps = ([int(r["step"]) for r in s] if all(r.get("step") is not None for r in s)
                 else None)
        cycles = ([int(r["cycle"]) for r in s] if all(r.get("cycle") is not None for r in s)
                  else None)
        ccd = extract_ccd(t, [r["cell_current_ma"] for r in s],
                          [r["cell_voltage_v"] for r in s], steps, zs, area_cm2=area_cm2)
        summary = summarize_run(
            t, [r["cell_current_ma"] for r in s], [r["cell_temp_c"] for r in s],
            [r["stack_pressure_mpa"] for r in s], [int(r["seq"]) for r in s],
            cycles,
            [str(r.get("boot") or "") for r in s], ccd.time_to_short_s)
        cf: dict[str, lineproto.FieldValue] = {"detection": ccd.detection, "steps": ccd.steps}
        for name in ("ccd_ma", "time_to_short_s", "last_safe_ma", "ccd_ma_cm2", "area_cm2"):
            fval: float | None = getattr(ccd, name)
            if fval is not None:
                cf[name] = float(fval)
        if ccd.short_step is not None and ccd.short_time_ns is not None:
            cf["short_step"] = ccd.short_step
            cf["short_time_ns"] = ccd.short_time_ns
        lines.append(lineproto.point(schema.CCD_RESULT, tags, cf, t[0]))
        sf: dict[str, lineproto.FieldValue] = {
            "duration_s": summary.duration_s, "samples": summary.samples,
            "charge_mah": summary.charge_mah, "net_charge_mah": summary.net_charge_mah,
            "cycles": summary.cycles, "max_temp_c": summary.max_temp_c,
            "mean_pressure_mpa": summary.mean_pressure_mpa,
            "missing_samples": summary.missing_samples,
            "eis_spectra": len(data.spectra), "alarms": sum(
                1 for e in data.events if e.get("severity") == "alarm")}
        if summary.time_to_short_s is not None:
            sf["time_to_short_s"] = summary.time_to_short_s
        lines.append(lineproto.point(schema.RUN_SUMMARY, tags, sf, t[0]))
    return RunAnalysis(fits, ccd, summary, lines)


async def analyze_run(influx: InfluxHttp, site: str, rig: str, run: str,
                      area_cm2: float | None = None) -> RunAnalysis:
    """Load, analyze and store (``keep`` policy) one run; idempotent."""
    result = analyze(await load_run(influx, site, rig, run), area_cm2)
    await influx.write_lines(result.lines, rp="keep")
    return result
