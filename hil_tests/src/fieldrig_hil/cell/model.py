"""The simulated cell: a stateful device stepped in (virtual) time.

``Cell.step(dt_s, current_a)`` advances the cell by ``len(current_a)`` samples of ``dt_s``
and returns the terminal voltage at the end of each sample interval. The slow physics
(voids, filaments, shorts, interphase, cracks) is integrated once per *physics tick*
(``physics_dt_s``, default 60 s, or per call when calls are shorter), and the equivalent
circuit is re-realised whenever an element value has moved by more than ``retarget_rtol``.

Sign convention: positive current plates Li on electrode A (and strips electrode B / charges
the cathode); the voltage is V_terminal = OCV + Z·i (passive sign convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

from . import degradation as dg
from .circuit import (
    Arc,
    CircuitElements,
    ComplexArray,
    FloatArray,
    Foster,
    FosterSimulator,
    closed_form_impedance,
    realise,
)
from .materials import (
    FARADAY_C_MOL,
    GAS_J_MOL_K,
    LITHIUM,
    CellGeometry,
    CellParameterError,
    MaterialPreset,
    arrhenius,
    check_finite,
    get_preset,
    with_overrides,
)

#: cathode (NMC-like composite) charge-transfer arc and OCV, used when counter == "cathode".
CATHODE_R_CT_OHM_CM2 = 30.0
CATHODE_C_F_CM2 = 5e-4
CATHODE_ALPHA = 0.8
#: correlation time and log-amplitude of a soft short's flicker (filament contacts making and
#: breaking: "the cell voltage gets noisy").
SHORT_FLICKER_TAU_S = 0.5
SHORT_FLICKER_SIGMA = 0.35


def cathode_ocv_v(soc: float) -> float:
    """Open-circuit voltage of an NMC-like cathode vs Li, V (smooth, monotonic in SOC)."""
    s = min(max(soc, 1e-4), 1 - 1e-4)
    return 3.45 + 0.75 * s + 0.04 * math.log(s / (1.0 - s))


@dataclass(frozen=True)
class CellState:
    """Snapshot of the physical state (ground truth; a real rig cannot see most of it)."""

    t_s: float
    temperature_c: float
    pressure_mpa: float
    contact_fraction: tuple[float, float]
    void_um: tuple[float, float]
    dead_li_um: tuple[float, float]
    filament_um: tuple[float, float]
    creep_um: float
    interphase_nm: tuple[float, float]
    crack_count: int
    soft_short: bool
    hard_short: bool
    r_short_ohm: float
    r_electronic_ohm: float
    soc: float
    ocv_v: float


@dataclass(frozen=True)
class StepResult:
    """One block of samples: times at the end of each interval, current, terminal voltage."""

    t_s: FloatArray
    current_a: FloatArray
    voltage_v: FloatArray


class Cell:
    """Li | solid electrolyte | Li (or | cathode) cell under pressure, temperature and current.

    Parameters are validated: bad values raise :class:`CellParameterError` (a ValueError)
    naming the parameter.
    """

    def __init__(self, preset: str | MaterialPreset = "lpscl",
                 geometry: CellGeometry | None = None, *, temperature_c: float = 25.0,
                 pressure_mpa: float = 5.0, seed: int = 0, physics_dt_s: float = 60.0,
                 retarget_rtol: float = 2e-3, realisation_tol: float = 5e-4,
                 overrides: dict[str, float] | None = None,
                 flicker_sigma: float = SHORT_FLICKER_SIGMA) -> None:
        base = get_preset(preset) if isinstance(preset, str) else preset
        self.preset: MaterialPreset = with_overrides(base, **overrides) if overrides else base
        self.geometry = geometry or CellGeometry()
        self.cathode = self.geometry.counter == "cathode"
        self._temperature_c = check_finite("temperature_c", temperature_c)
        if self._temperature_c < -100.0 or self._temperature_c > 600.0:
            raise CellParameterError(f"temperature_c out of range [-100, 600]: {temperature_c}")
        self._pressure_mpa = check_finite("pressure_mpa", pressure_mpa, non_negative=True)
        self.physics_dt_s = check_finite("physics_dt_s", physics_dt_s, positive=True)
        self.retarget_rtol = check_finite("retarget_rtol", retarget_rtol, positive=True)
        self.realisation_tol = check_finite("realisation_tol", realisation_tol, positive=True)
        if not isinstance(seed, (int, np.integer)):
            raise CellParameterError(f"seed must be an int, got {seed!r}")
        self.rng = np.random.default_rng(int(seed))
        self.t_s = 0.0
        self.deg = dg.DegradationState()
        self.deg.li_um[:] = self.geometry.li_um
        self._flicker = 0.0
        self.flicker_sigma = check_finite("flicker_sigma", flicker_sigma, non_negative=True)
        self._if_state = 0.0  # low-passed faradaic current for the Butler-Volmer correction
        # the rig may start above the plastic-flow pressure: penetration begins at once
        el = self.elements()
        self._realised_elements = el
        self._sim = FosterSimulator(realise(el, self.realisation_tol))

    # ------------------------------------------------------------------ conditions
    @property
    def temperature_c(self) -> float:
        return self._temperature_c

    @property
    def pressure_mpa(self) -> float:
        return self._pressure_mpa

    def set_conditions(self, *, temperature_c: float | None = None,
                       pressure_mpa: float | None = None) -> None:
        """Set the cell temperature (°C) and stack pressure (MPa) seen from now on."""
        if temperature_c is not None:
            t = check_finite("temperature_c", temperature_c)
            if t < -100.0 or t > 600.0:
                raise CellParameterError(f"temperature_c out of range [-100, 600]: {t}")
            self._temperature_c = t
        if pressure_mpa is not None:
            self._pressure_mpa = check_finite("pressure_mpa", pressure_mpa, non_negative=True)

    # ------------------------------------------------------------------ circuit
    def contact_fraction(self) -> FloatArray:
        return np.asarray(dg.contact_fraction(self.deg, self._pressure_mpa), dtype=np.float64)

    def _interface_parts(self) -> tuple[FloatArray, FloatArray]:
        """(R_ct, R_interphase) per electrode, ohm, at the present state."""
        p, g = self.preset, self.geometry
        c = self.contact_fraction()
        a_eff = g.area_cm2 * c
        r_ct = p.r_int_ohm_cm2 / arrhenius(p.ea_int_ev, self._temperature_c) / a_eff
        r_ip = p.interphase_resistivity_ohm_cm * self.deg.interphase_nm * 1e-7 / a_eff
        return r_ct * self.deg.crack_factor, r_ip * self.deg.crack_factor

    def r_electronic_ohm(self) -> float:
        """Electronic leakage through the electrolyte (Arrhenius; decomposition raises it)."""
        p, g = self.preset, self.geometry
        sigma = p.sigma_e_s_cm * arrhenius(p.ea_e_ev, self._temperature_c) * self.deg.sigma_e_factor
        return g.electrolyte_um * 1e-4 / (sigma * g.area_cm2)

    def r_short_ohm(self) -> float:
        """Filament path resistance (inf before bridging), without flicker."""
        gs = self.deg.short_conductance_s
        return math.inf if gs <= 0.0 else 1.0 / gs

    def elements(self, *, include_flicker: bool = False) -> CircuitElements:
        """Equivalent-circuit element values for the present state."""
        p, g, t = self.preset, self.geometry, self._temperature_c
        r_bulk25 = g.electrolyte_um * 1e-4 / (p.sigma_bulk_s_cm * g.area_cm2)
        cf = self.deg.crack_factor
        r_bulk = r_bulk25 / arrhenius(p.ea_bulk_ev, t) * cf
        arcs: list[Arc] = []
        if p.gb_ratio > 0.0:
            r_gb25 = p.gb_ratio * r_bulk25
            tau_gb25 = 1.0 / (2.0 * math.pi * p.gb_peak_hz)
            q_gb = tau_gb25 ** p.gb_alpha / r_gb25  # CPE fixed; τ follows R with T
            arcs.append(Arc("gb", p.gb_ratio * r_bulk25 / arrhenius(p.ea_gb_ev, t) * cf,
                            q_gb, p.gb_alpha))
        c = self.contact_fraction()
        r_ct, r_ip = self._interface_parts()
        n_li = 1 if self.cathode else 2
        for e in range(n_li):
            q = p.int_capacitance_f_cm2 * g.area_cm2 * c[e]
            arcs.append(Arc("int_a" if e == 0 else "int_b", float(r_ct[e] + r_ip[e]), q,
                            p.int_alpha))
        if self.cathode:
            arcs.append(Arc("cathode", CATHODE_R_CT_OHM_CM2 / arrhenius(0.5, t) / g.area_cm2,
                            CATHODE_C_F_CM2 * g.area_cm2, CATHODE_ALPHA))
        arr_d = arrhenius(LITHIUM.self_diffusion_ea_ev, t)
        c_mean = float(np.mean(c[:n_li]))
        r_w = p.warburg_ohm_cm2 * n_li / 2.0 / (g.area_cm2 * c_mean) / arr_d
        tau_w = p.warburg_tau_s / arr_d
        r_par = self.r_electronic_ohm()
        r_sh = self.r_short_ohm()
        if include_flicker and math.isfinite(r_sh) and not self.deg.hard_short:
            r_sh *= math.exp(self._flicker)
        if math.isfinite(r_sh):
            r_par = r_par * r_sh / (r_par + r_sh)
        return CircuitElements(r_bulk, tuple(arcs), r_w, tau_w, r_par)

    def impedance(self, f_hz: npt.ArrayLike) -> ComplexArray:
        """Closed-form Z(f), ohm, of the present state (ideal CPEs and Warburg)."""
        return closed_form_impedance(self.elements(), f_hz)

    def realised_impedance(self, f_hz: npt.ArrayLike) -> ComplexArray:
        """Z(f) of the rational network the time-domain simulation integrates now."""
        return self._sim.foster.impedance(f_hz)

    @property
    def foster(self) -> Foster:
        return self._sim.foster

    def ocv_v(self) -> float:
        return cathode_ocv_v(self.deg.soc) if self.cathode else 0.0

    def ccd(self, protocol: dg.PulseProtocol | None = None) -> dg.CcdResult:
        """Ground-truth CCDs at the present temperature and pressure (pristine contact)."""
        return dg.critical_current_density(self.preset, self._pressure_mpa,
                                           self._temperature_c, protocol)

    @property
    def events(self) -> list[dg.Event]:
        return self.deg.events

    @property
    def state(self) -> CellState:
        d = self.deg
        c = self.contact_fraction()
        return CellState(
            t_s=self.t_s, temperature_c=self._temperature_c, pressure_mpa=self._pressure_mpa,
            contact_fraction=(float(c[0]), float(c[1])),
            void_um=(float(d.void_um[0]), float(d.void_um[1])),
            dead_li_um=(float(d.dead_li_um[0]), float(d.dead_li_um[1])),
            filament_um=(float(d.filament_um[0]), float(d.filament_um[1])),
            creep_um=d.creep_um,
            interphase_nm=(float(d.interphase_nm[0]), float(d.interphase_nm[1])),
            crack_count=d.crack_count, soft_short=d.bridged, hard_short=d.hard_short,
            r_short_ohm=self.r_short_ohm(), r_electronic_ohm=self.r_electronic_ohm(),
            soc=d.soc, ocv_v=self.ocv_v())

    # ------------------------------------------------------------------ stepping
    def step(self, dt_s: float, current_a: npt.ArrayLike | float, *,
             pulse: dg.PulseProtocol | None = None, hold: str = "zoh",
             n_samples: int | None = None) -> StepResult:
        """Advance the cell; return the voltage at the end of every sample interval.

        ``current_a`` is an array (one value per sample of ``dt_s``) or a scalar held for
        ``n_samples`` samples (default 1). ``pulse`` declares a hardware pulse gate (e.g.
        MHz PIO gating) applied to the given current, which is then the pulse amplitude: the
        electrical response uses the gated mean (what an anti-aliased ADC sees), the
        degradation uses amplitude and protocol. ``hold``: 'zoh' (DAC steps, default) or
        'foh' (current linear between samples, for sampled smooth waveforms).
        """
        dt = check_finite("dt_s", dt_s, positive=True)
        if hold not in ("zoh", "foh"):
            raise CellParameterError(f"hold must be 'zoh' or 'foh', got {hold!r}")
        if np.ndim(current_a) == 0:
            n = 1 if n_samples is None else int(n_samples)
            if n < 1:
                raise CellParameterError(f"n_samples must be >= 1, got {n_samples}")
            i = np.full(n, float(current_a))  # type: ignore[arg-type]
        else:
            i = np.asarray(current_a, dtype=np.float64).ravel()
            if i.size == 0:
                raise CellParameterError("current_a must not be empty")
        if not np.all(np.isfinite(i)):
            raise CellParameterError("current_a must be finite (got NaN or inf)")
        if pulse is not None and not isinstance(pulse, dg.PulseProtocol):
            raise CellParameterError(f"pulse must be a PulseProtocol, got {pulse!r}")
        i_el = i * pulse.duty if pulse is not None else i
        n = i.size
        chunk = max(1, int(self.physics_dt_s / dt))
        v = np.empty(n)
        t0 = self.t_s
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            self._physics_tick(dt, i[s:e], i_el[s:e], pulse)
            v[s:e] = self._electrical(dt, i_el[s:e], hold)
            self.t_s = t0 + e * dt
        t = np.asarray(t0 + dt * np.arange(1, n + 1), dtype=np.float64)
        return StepResult(t, np.asarray(i_el, dtype=np.float64), v)

    def _physics_tick(self, dt: float, i_amp: FloatArray, i_el: FloatArray,
                      pulse: dg.PulseProtocol | None) -> None:
        g = self.geometry
        span = dt * i_amp.size
        if pulse is not None:
            protocol = pulse
            on = np.abs(i_amp) > 0
            j_amp = float(np.mean(i_amp[on])) if np.any(on) else 0.0
        else:
            peak = float(np.max(np.abs(i_amp)))
            on = np.abs(i_amp) > 1e-6 * peak if peak > 0 else np.zeros(i_amp.size, bool)
            protocol, j_amp = _detect_pulses(on, i_amp, dt)
        # share of the current that flows ionically (a short bypasses the electrolyte)
        el = self._realised_elements
        r_ion = el.r_bulk_ohm + sum(a.r_ohm for a in el.arcs) + el.warburg_r_ohm
        ion_share = el.r_parallel_ohm / (el.r_parallel_ohm + r_ion) \
            if math.isfinite(el.r_parallel_ohm) else 1.0
        j_mean = float(np.mean(i_el)) * 1e3 / g.area_cm2 * ion_share
        j_amp_cd = j_amp * 1e3 / g.area_cm2 * ion_share
        # fast processes (growing filaments, fusing shorts) get sub-steps of <= 1 s
        fast = bool(np.any(self.deg.nucleated)) or self.deg.bridged
        n_sub = max(1, math.ceil(span / 1.0)) if fast else 1
        for k in range(n_sub):
            d = dg.Drive(span / n_sub, j_mean, j_amp_cd, protocol, self._temperature_c,
                         self._pressure_mpa)
            dg.advance(self.deg, self.preset, g, d, self.t_s + (k + 1) * span / n_sub,
                       self.cathode)
        # soft-short flicker: AR(1) in log-resistance, dt-consistent
        if self.deg.bridged and not self.deg.hard_short:
            a = math.exp(-span / SHORT_FLICKER_TAU_S)
            self._flicker = a * self._flicker + self.flicker_sigma * math.sqrt(
                1 - a * a) * float(self.rng.standard_normal())
        self._maybe_retarget()

    def _maybe_retarget(self) -> None:
        new = self.elements(include_flicker=True)
        old = self._realised_elements
        if _elements_close(new, old, self.retarget_rtol):
            return
        self._realised_elements = new
        self._sim.retarget(realise(new, self.realisation_tol))

    def _electrical(self, dt: float, i: FloatArray, hold: str) -> FloatArray:
        v = self._sim.run(dt, i, hold)
        el = self._realised_elements
        # Butler-Volmer: the interface arcs are linearised charge-transfer resistances
        # R_ct = RT/(F i0); at large current the overpotential is (2RT/F)·asinh(i/2i0) instead.
        # Applied as a correction on the low-passed faradaic current; it is O(i³), so the
        # small-signal impedance is untouched.
        r_ct, _ = self._interface_parts()
        int_arcs = [a for a in el.arcs if a.name.startswith("int")]
        if int_arcs:
            tau = float(np.mean([a.tau0_s for a in int_arcs]))
            a_f = math.exp(-dt / max(tau, 1e-12))
            i_f, _ = lfilter([1.0 - a_f], [1.0, -a_f], i, zi=[a_f * self._if_state])
            self._if_state = float(i_f[-1])
            vt = GAS_J_MOL_K * (self._temperature_c + 273.15) / FARADAY_C_MOL
            for r in r_ct[: len(int_arcs)]:
                x = i_f * r / (2.0 * vt)
                v = v + 2.0 * vt * (np.arcsinh(x) - x)
        return np.asarray(v + self.ocv_v(), dtype=np.float64)

    def copy_conditions(self) -> dict[str, float]:
        return {"temperature_c": self._temperature_c, "pressure_mpa": self._pressure_mpa}


def _detect_pulses(on: npt.NDArray[np.bool_], i: FloatArray, dt: float
                   ) -> tuple[dg.PulseProtocol, float]:
    """Protocol and amplitude of the current inside one physics tick (run lengths)."""
    if not np.any(on):
        return dg.PulseProtocol.dc(), 0.0
    amp = float(np.mean(i[on]))
    if np.all(on):
        return dg.PulseProtocol.dc(), amp
    edges = np.flatnonzero(np.diff(on.astype(np.int8)))
    runs = np.diff(np.concatenate(([0], edges + 1, [on.size])))
    starts_on = bool(on[0])
    is_on = np.zeros(runs.size, bool)
    is_on[0 if starts_on else 1::2] = True
    on_runs, off_runs = runs[is_on], runs[~is_on]
    if off_runs.size == 0 or on_runs.size == 0:
        return dg.PulseProtocol.dc(), amp
    # a single rest inside a long DC tick is not a pulse protocol: require >= 2 pulses
    if on_runs.size < 2:
        return dg.PulseProtocol.dc(), amp
    return dg.PulseProtocol(float(np.mean(on_runs)) * dt, float(np.mean(off_runs)) * dt), amp


def _elements_close(a: CircuitElements, b: CircuitElements, rtol: float) -> bool:
    def close(x: float, y: float) -> bool:
        if math.isinf(x) or math.isinf(y):
            return x == y
        return abs(x - y) <= rtol * max(abs(x), abs(y), 1e-300)

    if len(a.arcs) != len(b.arcs):
        return False
    if not (close(a.r_bulk_ohm, b.r_bulk_ohm) and close(a.warburg_r_ohm, b.warburg_r_ohm)
            and close(a.warburg_tau_s, b.warburg_tau_s)):
        return False
    # R_par only matters relative to the ionic path
    r_ion = a.dc_resistance_ohm()
    ga, gb = 1.0 / a.r_parallel_ohm, 1.0 / b.r_parallel_ohm
    if abs(ga - gb) * r_ion > rtol:
        return False
    return all(close(x.r_ohm, y.r_ohm) and close(x.q, y.q) and x.alpha == y.alpha
               for x, y in zip(a.arcs, b.arcs, strict=True))


__all__ = ["Cell", "CellState", "StepResult", "cathode_ocv_v"]
