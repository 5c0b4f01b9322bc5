"""Analytics on stored runs (docs/cloud.md): EIS fits, critical current density, run
summaries, events as Grafana annotations.

Pure functions on arrays (testable without a database) plus ``analyze_run``, which
reads a run from InfluxDB and writes its results back as points keyed by the run's or
spectrum's own time, so re-running an analysis overwrites instead of duplicating.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fieldrig_cloud import lineproto, schema
from fieldrig_cloud.influx import InfluxHttp, quote_str

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

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


# --- the run's clock -------------------------------------------------------------------

def run_elapsed_s(time_ns: Sequence[int] | IntArray, uptime_ns: Sequence[int] | None = None,
                  boot: Sequence[str] | None = None) -> FloatArray:
    """Seconds since the run's first sample, per sample (samples in time order).

    Within a rig boot the firmware's own clock (SAMPLE uptime): the UTC times the edge
    gives samples are its mapping of that clock, kept strictly increasing, and where the
    rig's clock runs ahead of the gateway's (an accelerated bench) the edge clamps them
    1 ns apart (docs/edge.md, "Time"), so differences of ``time_ns`` are no durations.
    Between boots (uptime restarts) the UTC time from the last sample of one boot to the
    first of the next: the rig was off or restarting. Without uptimes: UTC throughout.
    """
    t = np.asarray(time_ns, dtype=np.int64)
    if len(t) == 0:
        return np.zeros(0)
    if uptime_ns is None or len(uptime_ns) != len(t):
        return np.asarray((t - t[0]) / 1e9, dtype=np.float64)
    up = np.asarray(uptime_ns, dtype=np.int64)
    boots = list(boot) if boot is not None and len(boot) == len(t) else [""] * len(t)
    starts = [0] + [k for k in range(1, len(t))
                    if boots[k] != boots[k - 1] or up[k] < up[k - 1]] + [len(t)]
    out = np.empty(len(t))
    base = 0.0
    for a, b in itertools.pairwise(starts):
        if a:
            base = out[a - 1] + max(0, int(t[a] - t[a - 1])) / 1e9
        out[a:b] = base + (up[a:b] - up[a]) / 1e9
    return out


# --- CCD ---------------------------------------------------------------------------------

# No current is told from none below 1 nA: a few steps of the galvanostat's finest range
# (10 uA over a 16-bit DAC: 0.3 nA; firmware/fieldrig/galvanostat.py).
MIN_CURRENT_MA = 1e-6
# A step carries current when its |I| level stands this far above the reading noise of
# its own samples. A rest reads noise around zero (its median |I| is ~0.7 sigma; on the
# bench ~1e-4 mA against steps of 0.8 to 3 mA), so its |V|/|I| is no cell resistance.
CURRENT_SNR = 5.0
# ... and it is not a rest's offset: at least this fraction of the run's largest step.
REST_FRACTION = 1e-3
# A polarity held for fewer samples than this is not a half-cycle (run summaries).
MIN_HALF_CYCLE_SAMPLES = 5

# Where a stored CCD comes from (``ccd_result.source``).
SOURCE_RECIPE = "firmware_recipe"   # the firmware's CCD-ladder result (recipe_done)
SOURCE_ALARM = "firmware_alarm"     # the firmware's short alarm, placed on the samples
SOURCE_SAMPLES = "analytics"        # found here, in the samples' V and |Z|
SHORT_KINDS = ("soft_short", "hard_short")


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    start: int  # sample index, inclusive
    end: int    # exclusive
    current_ma: float  # |I| level
    carries_current: bool = True  # False: a rest (the level is reading noise)


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
    source: str = SOURCE_SAMPLES
    # The firmware's recipe reports densities: kept as reported (the area may be unknown).
    reported_ccd_ma_cm2: float | None = None
    reported_last_safe_ma_cm2: float | None = None

    def _density(self, reported: float | None, current_ma: float | None) -> float | None:
        if reported is not None:
            return reported
        if current_ma is None or not self.area_cm2:
            return None
        return current_ma / self.area_cm2

    @property
    def ccd_ma_cm2(self) -> float | None:
        return self._density(self.reported_ccd_ma_cm2, self.ccd_ma)

    @property
    def last_safe_ma_cm2(self) -> float | None:
        return self._density(self.reported_last_safe_ma_cm2, self.last_safe_ma)


def reading_noise_ma(current_ma: FloatArray) -> float:
    """1-sigma noise of current readings, from successive differences: robust (median
    absolute deviation), so a level change or a polarity flip inside the samples hardly
    moves it, and blind to a slow drift."""
    if len(current_ma) < 3:
        return 0.0
    d = np.diff(current_ma)
    return float(np.median(np.abs(d - np.median(d)))) / 0.6745 / math.sqrt(2)


def segment_steps(current_ma: FloatArray, step: Sequence[int] | None = None,
                  rel_tol: float = 0.05, abs_tol_ma: float = 1e-3) -> list[Step]:
    """Current steps: by the ``step`` field when the rig reports it, otherwise where
    |I| moves to a new level (|I|, because ladders often alternate plating/stripping).
    Each is classified: a step whose level is reading noise (``CURRENT_SNR``), or a
    sliver of the run's largest level (``REST_FRACTION``), is a rest."""
    i_ma = np.asarray(current_ma, dtype=float)
    n = len(i_ma)
    mag = np.abs(i_ma)
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
    spans = [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
    levels = [float(np.median(mag[a:b])) for a, b in spans]
    rest_below = REST_FRACTION * max(levels, default=0.0)
    return [Step(k, a, b, lvl, lvl > max(MIN_CURRENT_MA, rest_below,
                                         CURRENT_SNR * reading_noise_ma(i_ma[a:b])))
            for k, ((a, b), lvl) in enumerate(zip(spans, levels, strict=True))]


def current_mask(current_ma: FloatArray, steps: list[Step]) -> npt.NDArray[np.bool_]:
    """Samples where current flows: in a step that carries current, at its level (the
    samples of a transition, or of a polarity flip inside the step, are left out)."""
    mag = np.abs(np.asarray(current_ma, dtype=float))
    mask = np.zeros(len(mag), dtype=bool)
    for st in steps:
        if st.carries_current:
            mask[st.start:st.end] = mag[st.start:st.end] > 0.5 * st.current_ma
    return mask


def half_cycles(signs: FloatArray, min_run: int = MIN_HALF_CYCLE_SAMPLES) -> int:
    """Half-cycles in the polarity of the flowing samples: runs of one sign of at least
    ``min_run`` samples, neighbours of the same sign merged. The samples of an EIS
    sweep's or a tracking block's excitation, or of short reverse pulses, alternate
    sign sample to sample: they are not cycles."""
    sg = np.asarray(signs, dtype=float)
    if len(sg) == 0:
        return 0
    edges = np.flatnonzero(np.diff(sg)) + 1
    starts = np.r_[0, edges]
    ends = np.r_[edges, len(sg)]
    kept = [sg[a] for a, b in zip(starts, ends, strict=True) if b - a >= min_run]
    return sum(1 for k in range(len(kept)) if k == 0 or kept[k] != kept[k - 1])


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
                area_cm2: float | None = None,
                elapsed_s: Sequence[float] | FloatArray | None = None) -> CcdResult:
    """CCD of a ladder run: the first step in which the cell shorts.

    A short shows as (a) voltage collapse: |V| falls below ``collapse_ratio`` of what
    the cell's resistance so far predicts (|I|·R, R the median |V|/|I| of the healthy
    steps before, or of this step's first samples for the first step) for ``persist``
    samples in a row while current flows; or (b) an impedance drop: |Z| below
    (1 − ``z_drop``) of its healthy baseline for ``persist`` samples. ``persist``
    keeps single noisy samples (a soft short's flicker) from counting as the short.
    Rests (``segment_steps``) are neither judged nor a reference: their |V|/|I| is
    relaxation over noise. ``elapsed_s``: the run's clock per sample (``run_elapsed_s``)
    for ``time_to_short_s``; UTC differences by default.
    """
    t = np.asarray(time_ns, dtype=np.int64)
    clock = (np.asarray(elapsed_s, dtype=float) if elapsed_s is not None
             else (t - t[0]) / 1e9 if len(t) else np.zeros(0))
    i_ma = np.asarray(current_ma, dtype=float)
    v = np.abs(np.asarray(voltage_v, dtype=float))
    z = np.asarray(z_mag_ohm, dtype=float) if z_mag_ohm is not None else None
    steps = segment_steps(i_ma, step)
    flowing_all = current_mask(i_ma, steps)
    r_ref: float | None = None
    z_ref: float | None = None
    last_safe: float | None = None
    for st in steps:
        a, b = st.start, st.end
        flowing = flowing_all[a:b]
        if not flowing.any():
            continue
        if r_ref is None:
            head = slice(a, a + max(3, (b - a) // 5))
            ok = flowing_all[head]
            if not ok.any():
                ok = flowing
                head = slice(a, b)
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
            return CcdResult(st.current_ma, st.index, int(t[k]), float(clock[k]),
                             last_safe, how, len(steps), area_cm2)
        # Healthy step: its resistance becomes the reference for the next one.
        r_ref = float(np.median(v[a:b][flowing] / np.abs(i_ma[a:b][flowing])))
        last_safe = st.current_ma
    return CcdResult(None, None, None, None, last_safe, "none", len(steps), area_cm2)


def event_body(event: dict[str, Any]) -> dict[str, Any]:
    """A stored ``event`` row's firmware body: its ``detail`` JSON, whose ``data`` holds
    a rig EVENT's body as the gateway publishes it (docs/mqtt.md, "Events")."""
    try:
        detail = json.loads(str(event.get("detail") or "{}"))
    except ValueError:
        return {}
    if not isinstance(detail, dict):
        return {}
    data = detail.get("data")
    return data if isinstance(data, dict) else detail


def _number(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


@dataclass(frozen=True, slots=True)
class _PlacedAlarm:
    kind: str
    sample: int  # the last sample taken at or before the alarm
    step: Step   # the current step it counts against
    event_ns: int


def _place_short_alarm(events: list[dict[str, Any]], uptime_ns: Sequence[int] | None,
                       boot: Sequence[str] | None, steps: list[Step]) -> _PlacedAlarm | None:
    """The first short alarm of the firmware (events in time order) that falls during or
    after a current step, placed on the samples by its ``t_s`` (the firmware's uptime,
    in s: rounded to 5 significant digits, so to 0.1 s up to a day of uptime, to 10 s
    after one: finer than any CCD step)."""
    if uptime_ns is None or not steps:
        return None
    n = steps[-1].end
    if len(uptime_ns) != n:
        return None
    up = np.asarray(uptime_ns, dtype=np.int64)
    boots = np.asarray(list(boot) if boot is not None and len(boot) == n else [""] * n)
    step_of = np.empty(n, dtype=np.int64)
    for st in steps:
        step_of[st.start:st.end] = st.index
    for e in events:
        if e.get("event") != "echem_alarm":
            continue
        body = event_body(e)
        kind, t_s = body.get("kind"), _number(body.get("t_s"))
        if kind not in SHORT_KINDS or t_s is None:
            continue
        idx = np.flatnonzero(boots == str(e.get("boot") or ""))
        pos = int(np.searchsorted(up[idx], round(t_s * 1e9), side="right")) - 1
        if pos < 0:
            continue  # before this boot's first sample
        k = int(idx[pos])
        current = [st for st in steps[:int(step_of[k]) + 1] if st.carries_current]
        if current:
            return _PlacedAlarm(str(kind), k, current[-1], int(e["time"]))
    return None


def firmware_ccd(events: list[dict[str, Any]], time_ns: Sequence[int],
                 current_ma: Sequence[float], *, uptime_ns: Sequence[int] | None = None,
                 boot: Sequence[str] | None = None, step: Sequence[int] | None = None,
                 area_cm2: float | None = None,
                 elapsed_s: Sequence[float] | FloatArray | None = None) -> CcdResult | None:
    """The firmware's own CCD, where it has one (None: it has none; extract_ccd decides).
    ``events``: the run's stored ``event`` rows; the samples as for ``extract_ccd``.

    In order of preference:

    1. A CCD-ladder recipe that stopped on a short reports ``ccd_ma_cm2`` and
       ``last_passed_ma_cm2`` in its ``recipe_done`` event (source ``firmware_recipe``).
    2. Otherwise the firmware's first short alarm (``echem_alarm``, kind soft_short or
       hard_short) during or after a current step: that step's level is the CCD, as the
       firmware's recipe engine itself counts it (a short seen in a rest grew in the
       current step before). The alarm's ``t_s`` is the firmware's uptime, placed on the
       samples by their ``uptime_ns`` (source ``firmware_alarm``).
    3. A recipe that ended without a short but reports ``last_passed_ma_cm2``: no CCD,
       that density passed (source ``firmware_recipe``).

    The short's time and step come from the alarm as in 2 when it can be placed (for 1:
    an alarm before the ``recipe_done``), else from the ``recipe_done`` event's time.
    """
    t = np.asarray(time_ns, dtype=np.int64)
    if len(t) == 0:
        return None
    clock = (np.asarray(elapsed_s, dtype=float) if elapsed_s is not None
             else (t - t[0]) / 1e9)
    steps = segment_steps(np.asarray(current_ma, dtype=float), step)
    in_time = sorted(events, key=lambda e: int(e["time"]))
    placed = _place_short_alarm(in_time, uptime_ns, boot, steps)
    done = [(e, b) for e in in_time if e.get("event") == "recipe_done"
            for b in [event_body(e)]
            if _number(b.get("ccd_ma_cm2")) is not None
            or _number(b.get("last_passed_ma_cm2")) is not None]
    recipe = done[-1] if done else None

    def ma(density: float | None) -> float | None:
        return None if density is None or not area_cm2 else density * area_cm2

    if recipe is not None and _number(recipe[1].get("ccd_ma_cm2")) is not None:
        e, b = recipe
        ccd, passed = _number(b.get("ccd_ma_cm2")), _number(b.get("last_passed_ma_cm2"))
        reason = str(b.get("reason") or "")
        kind = reason.split(":", 1)[1] if reason.startswith("stop_on:") else "recipe_done"
        if placed is not None and placed.event_ns <= int(e["time"]):
            when_ns, when_s = int(t[placed.sample]), float(clock[placed.sample])
            short_step: int | None = placed.step.index
        else:
            when_ns, short_step = int(e["time"]), None
            when_s = max(0.0, (when_ns - int(t[0])) / 1e9)
        return CcdResult(ma(ccd), short_step, when_ns, when_s, ma(passed), kind, len(steps),
                         area_cm2, SOURCE_RECIPE, ccd, passed)
    if placed is not None:
        before = [st for st in steps[:placed.step.index] if st.carries_current]
        return CcdResult(placed.step.current_ma, placed.step.index,
                         int(t[placed.sample]), float(clock[placed.sample]),
                         before[-1].current_ma if before else None, placed.kind,
                         len(steps), area_cm2, SOURCE_ALARM)
    if recipe is not None:
        passed = _number(recipe[1].get("last_passed_ma_cm2"))
        return CcdResult(None, None, None, None, ma(passed), "none", len(steps), area_cm2,
                         SOURCE_RECIPE, None, passed)
    return None


# --- run summaries ----------------------------------------------------------------------

# Events that report telemetry numbers lost for good, each with its range first_seq..
# last_seq (docs/mqtt.md, "Events"): the rig's ring overflowed, the gateway found them
# missing, or its spool dropped them.
TELEMETRY_LOSS_EVENTS = ("telemetry_dropped", "telemetry_gap", "spool_dropped")


@dataclass(frozen=True, slots=True)
class RunSummary:
    start_ns: int
    duration_s: float       # on the firmware's clock (run_elapsed_s)
    samples: int
    charge_mah: float       # ∫|I| dt: charge moved either way
    net_charge_mah: float   # ∫I dt
    cycles: int
    max_temp_c: float
    mean_pressure_mpa: float
    missing_samples: int    # telemetry seqs (per boot) neither stored nor reported lost
    time_to_short_s: float | None
    dropped_samples: int = 0  # telemetry seqs the rig or the gateway reported lost


def summarize_run(time_ns: Sequence[int], current_ma: Sequence[float],
                  temp_c: Sequence[float], pressure_mpa: Sequence[float],
                  seq: Sequence[int], cycle: Sequence[int] | None = None,
                  boot: Sequence[str] | None = None,
                  time_to_short_s: float | None = None, *,
                  uptime_ns: Sequence[int] | None = None,
                  other_seqs: Mapping[str, Sequence[int]] | None = None,
                  reported_lost: Mapping[str, Sequence[tuple[int, int]]] | None = None
                  ) -> RunSummary:
    """A run's summary from its samples in time order.

    Durations and charge are on the firmware's clock (``uptime_ns``, see
    ``run_elapsed_s``), never across a boot, and not across a gap in the samples (rig
    paused, link down: more than 10 sample periods). Accounting is per boot over the
    telemetry sequence numbers, which the rig's impedance points share with its samples
    (``other_seqs``: boot -> their seqs): a seq in neither is missing, unless a loss
    report names it (``reported_lost``: boot -> (first_seq, last_seq) ranges), then it
    is dropped.
    """
    t = np.asarray(time_ns, dtype=np.int64)
    i_ma = np.asarray(current_ma, dtype=float)
    if len(t) == 0:
        raise ValueError("no samples")
    boots = list(boot) if boot is not None and len(boot) == len(t) else [""] * len(t)
    clock = run_elapsed_s(t, uptime_ns, boots)
    dt = np.diff(clock)
    same_boot = np.array([boots[k] == boots[k - 1] for k in range(1, len(t))], dtype=bool)
    if uptime_ns is not None and len(uptime_ns) == len(t):
        up = np.asarray(uptime_ns, dtype=np.int64)
        same_boot &= up[1:] >= up[:-1]  # the uptime restarted: a reboot under the same id
    usual = float(np.median(dt[same_boot])) if same_boot.any() else 0.0
    ok = same_boot & (dt <= 10 * usual) if usual > 0 else same_boot
    mid = (i_ma[1:] + i_ma[:-1]) / 2
    charge = float(np.sum(np.abs(mid[ok]) * dt[ok])) / 3600
    net = float(np.sum(mid[ok] * dt[ok])) / 3600
    if cycle is not None and len(cycle) == len(t):
        cycles = int(max(cycle) - min(cycle) + 1)
    else:
        # A cycle is plating then stripping: count polarity changes of the current where
        # it flows (a rest's readings change sign with their noise).
        signs = np.sign(i_ma[current_mask(i_ma, segment_steps(i_ma))])
        cycles = (half_cycles(signs) + 1) // 2
    missing = dropped = 0
    seq_arr = np.asarray(seq, dtype=np.int64)
    boot_arr = np.asarray(boots)
    for b in sorted(set(boots)):
        got = np.unique(np.concatenate([seq_arr[boot_arr == b],
                                        np.asarray((other_seqs or {}).get(b, []),
                                                   dtype=np.int64)]))
        absent = np.setdiff1d(np.arange(got[0], got[-1] + 1), got, assume_unique=True)
        reported = np.zeros(len(absent), dtype=bool)
        for first, last in (reported_lost or {}).get(b, []):
            reported |= (absent >= first) & (absent <= last)
        dropped += int(np.count_nonzero(reported))
        missing += len(absent) - int(np.count_nonzero(reported))
    return RunSummary(int(t[0]), float(clock[-1]), len(t), charge, net, cycles,
                      float(np.max(temp_c)), float(np.mean(pressure_mpa)), missing,
                      time_to_short_s, dropped)


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


def _impedance_seqs(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Telemetry seqs of the rig's impedance points (tagged with their ``source``), by
    boot: they share the samples' sequence space (docs/influxdb.md)."""
    out: dict[str, list[int]] = {}
    for r in rows:
        if r.get("source") and r.get("seq") is not None:
            out.setdefault(str(r.get("boot") or ""), []).append(int(r["seq"]))
    return out


def _reported_losses(events: list[dict[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    """Telemetry ranges the rig or the gateway reported lost, by boot."""
    out: dict[str, list[tuple[int, int]]] = {}
    for e in events:
        if e.get("event") not in TELEMETRY_LOSS_EVENTS:
            continue
        body = event_body(e)
        first, last = body.get("first_seq"), body.get("last_seq")
        if type(first) is int and type(last) is int and first <= last:
            out.setdefault(str(e.get("boot") or ""), []).append((first, last))
    return out


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
        # Impedance points of the rig's link have their own times (and a source tag):
        # only sample-borne |Z| lines up with the samples.
        z_by_t = {int(r["time"]): float(r["z_mag_ohm"]) for r in data.impedance
                  if r.get("z_mag_ohm") is not None and not r.get("source")}
        # Optional columns count only when every sample has them.
        zs = [z_by_t[tt] for tt in t] if all(tt in z_by_t for tt in t) else None
        steps = ([int(r["step"]) for r in s] if all(r.get("step") is not None for r in s)
                 else None)
        cycles = ([int(r["cycle"]) for r in s] if all(r.get("cycle") is not None for r in s)
                  else None)
        uptimes = ([int(r["uptime_ns"]) for r in s]
                   if all(r.get("uptime_ns") is not None for r in s) else None)
        boots = [str(r.get("boot") or "") for r in s]
        current = [float(r["cell_current_ma"]) for r in s]
        clock = run_elapsed_s(t, uptimes, boots)
        ccd = (firmware_ccd(data.events, t, current, uptime_ns=uptimes, boot=boots,
                            step=steps, area_cm2=area_cm2, elapsed_s=clock)
               or extract_ccd(t, current, [r["cell_voltage_v"] for r in s], steps, zs,
                              area_cm2=area_cm2, elapsed_s=clock))
        summary = summarize_run(
            t, current, [r["cell_temp_c"] for r in s],
            [r["stack_pressure_mpa"] for r in s], [int(r["seq"]) for r in s],
            cycles, boots, ccd.time_to_short_s, uptime_ns=uptimes,
            other_seqs=_impedance_seqs(data.impedance),
            reported_lost=_reported_losses(data.events))
        cf: dict[str, lineproto.FieldValue] = {"detection": ccd.detection, "steps": ccd.steps,
                                               "source": ccd.source}
        for name in ("ccd_ma", "time_to_short_s", "last_safe_ma", "ccd_ma_cm2",
                     "last_safe_ma_cm2", "area_cm2"):
            fval: float | None = getattr(ccd, name)
            if fval is not None:
                cf[name] = float(fval)
        if ccd.short_step is not None:
            cf["short_step"] = ccd.short_step
        if ccd.short_time_ns is not None:
            cf["short_time_ns"] = ccd.short_time_ns
        lines.append(lineproto.point(schema.CCD_RESULT, tags, cf, t[0]))
        sf: dict[str, lineproto.FieldValue] = {
            "duration_s": summary.duration_s, "samples": summary.samples,
            "charge_mah": summary.charge_mah, "net_charge_mah": summary.net_charge_mah,
            "cycles": summary.cycles, "max_temp_c": summary.max_temp_c,
            "mean_pressure_mpa": summary.mean_pressure_mpa,
            "missing_samples": summary.missing_samples,
            "dropped_samples": summary.dropped_samples,
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
