"""Equivalent circuit of the cell: closed-form Z(f) and its time-domain realisation.

Circuit (all values in ohm, seconds, farad-like CPE units)::

    p( R_bulk - p(R_gb, CPE_gb) - p(R_int, CPE_int) - Ws , R_par )

``R_par`` is the electronic path: electrolyte electronic leakage ∥ filament short.

Time domain. A CPE (and hence each R‖CPE "ZARC" arc) and the finite-length Warburg are
irrational; the time-domain system realises a *Foster* form R0 + Σ R_k/(1 + s·τ_k):

* ZARC arcs: trapezoid quadrature of the analytic Cole-Cole distribution of relaxation
  times in u = ln(τ/τ0). The integrand is analytic in a strip of half-width
  d = min(π/2, (1-α)π/α), so the quadrature error decays like exp(-2πd/h); the step h
  and truncation range are chosen from ``tol`` (default 5e-4 of the arc's R). Truncated
  tails are lumped so the DC resistance is exact.
* Finite-length Warburg: the exact partial-fraction series
  tanh(√x)/√x = Σ 2/(x + ((2n-1)π/2)²), the first terms kept exactly, the tail grouped
  in geometric bins and the unresolvably fast remainder lumped as a series resistance.
* The parallel path is folded in exactly by diagonalising the (symmetrisable) state
  matrix, giving again a Foster form with real poles.

``realised_impedance`` returns Z(f) of exactly what the time-domain system simulates;
``closed_form_impedance`` returns the ideal circuit. ``realisation_error`` measures the
difference (documented bound: < 1e-3 relative to |Z| from 1 mHz to 1 MHz, tested).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter
from scipy.special import polygamma

from .materials import CellParameterError, check_finite

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]

_TAU_MIN_S = 1e-10  # relaxations faster than this are pure resistance at any rig frequency


@dataclass(frozen=True)
class Arc:
    """A resistor in parallel with a constant-phase element: Z = R / (1 + R·Q·(jω)^α)."""

    name: str
    r_ohm: float
    q: float  # CPE coefficient, F·s^(α-1)
    alpha: float

    def __post_init__(self) -> None:
        check_finite(f"{self.name}.r_ohm", self.r_ohm, non_negative=True)
        check_finite(f"{self.name}.q", self.q, positive=True)
        a = check_finite(f"{self.name}.alpha", self.alpha)
        if not 0.3 <= a <= 1.0:
            raise CellParameterError(f"{self.name}.alpha must be in [0.3, 1], got {a}")

    @property
    def tau0_s(self) -> float:
        """Characteristic time (R·Q)^(1/α)."""
        return float((self.r_ohm * self.q) ** (1.0 / self.alpha))


@dataclass(frozen=True)
class CircuitElements:
    """Element values of the equivalent circuit for one cell state."""

    r_bulk_ohm: float
    arcs: tuple[Arc, ...]
    warburg_r_ohm: float
    warburg_tau_s: float
    r_parallel_ohm: float = math.inf

    def __post_init__(self) -> None:
        check_finite("r_bulk_ohm", self.r_bulk_ohm, non_negative=True)
        check_finite("warburg_r_ohm", self.warburg_r_ohm, non_negative=True)
        check_finite("warburg_tau_s", self.warburg_tau_s, positive=True)
        if not (self.r_parallel_ohm > 0.0):  # also rejects NaN
            raise CellParameterError(f"r_parallel_ohm must be > 0, got {self.r_parallel_ohm}")

    def dc_resistance_ohm(self) -> float:
        """Z(0): the series path's resistance in parallel with R_par."""
        r_ion = self.r_bulk_ohm + sum(a.r_ohm for a in self.arcs) + self.warburg_r_ohm
        if math.isinf(self.r_parallel_ohm):
            return r_ion
        return r_ion * self.r_parallel_ohm / (r_ion + self.r_parallel_ohm)

    def parallel_matters(self) -> bool:
        """False when R_par > 1e5·R_ion: it changes |Z| by < 1e-5 and is left out."""
        r_ion = self.r_bulk_ohm + sum(a.r_ohm for a in self.arcs) + self.warburg_r_ohm
        return math.isfinite(self.r_parallel_ohm) and self.r_parallel_ohm <= 1e5 * max(
            r_ion, 1e-12)

    def impedance_py(self) -> tuple[str, list[float]]:
        """Circuit string and parameter vector for ``impedance.py``'s CustomCircuit.

        Arcs with equal α and τ0 (e.g. the two pristine Li interfaces of a symmetric cell) are
        one arc with the summed R: R/(1+(jωτ0)^α) adds exactly. The arcs use ``p(R, CPE)``
        (CPE Z = 1/(Q (jω)^α)), the diffusion its ``Ws`` (Z0·tanh√(jωτ)/√(jωτ)); an R_par
        that matters (``parallel_matters``) wraps everything in ``p(..., R9)``.
        """
        parts = ["R0"]
        params: list[float] = [self.r_bulk_ohm]
        for i, arc in enumerate(merged_arcs(self.arcs), start=1):
            parts.append(f"p(R{i},CPE{i})")
            params += [arc.r_ohm, arc.q, arc.alpha]
        if self.warburg_r_ohm > 0.0:
            parts.append("Ws1")
            params += [self.warburg_r_ohm, self.warburg_tau_s]
        circuit = "-".join(parts)
        if self.parallel_matters():
            circuit = f"p({circuit},R9)"
            params.append(self.r_parallel_ohm)
        return circuit, params


def merged_arcs(arcs: tuple[Arc, ...], rtol: float = 1e-9) -> list[Arc]:
    """Arcs with R > 0, those with equal α and τ0 merged (an exact identity)."""
    out: list[Arc] = []
    for arc in arcs:
        if arc.r_ohm <= 0.0:
            continue
        for k, o in enumerate(out):
            if o.alpha == arc.alpha and abs(o.tau0_s - arc.tau0_s) <= rtol * o.tau0_s:
                r = o.r_ohm + arc.r_ohm
                out[k] = Arc(o.name, r, o.tau0_s ** o.alpha / r, o.alpha)
                break
        else:
            out.append(arc)
    return out


def _check_freq(f_hz: npt.ArrayLike) -> FloatArray:
    f = np.atleast_1d(np.asarray(f_hz, dtype=np.float64))
    if not np.all(np.isfinite(f)) or np.any(f < 0.0):
        raise CellParameterError("f_hz must be finite and >= 0")
    return f


def closed_form_impedance(el: CircuitElements, f_hz: npt.ArrayLike) -> ComplexArray:
    """Ideal Z(f), ohm, of the circuit (CPEs and Warburg exact)."""
    f = _check_freq(f_hz)
    jw = 1j * 2.0 * np.pi * f
    z = np.full(f.shape, el.r_bulk_ohm, dtype=np.complex128)
    for arc in el.arcs:
        if arc.r_ohm > 0.0:
            z = z + arc.r_ohm / (1.0 + arc.r_ohm * arc.q * jw ** arc.alpha)
    if el.warburg_r_ohm > 0.0:
        x = np.sqrt(jw * el.warburg_tau_s)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(np.abs(x) < 1e-8, 1.0 + 0j, np.tanh(x) / np.where(x == 0, 1, x))
        z = z + el.warburg_r_ohm * w
    if math.isfinite(el.r_parallel_ohm):
        z = z * el.r_parallel_ohm / (z + el.r_parallel_ohm)
    return z


# ---------------------------------------------------------------------------------------
# Foster realisation
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Foster:
    """Z(s) = r0_ohm + Σ r_ohm[k] / (1 + s·tau_s[k]) with all r, τ > 0."""

    r0_ohm: float
    r_ohm: FloatArray
    tau_s: FloatArray

    def impedance(self, f_hz: npt.ArrayLike) -> ComplexArray:
        f = _check_freq(f_hz)
        jw = 1j * 2.0 * np.pi * f
        terms = self.r_ohm[None, :] / (1.0 + jw[:, None] * self.tau_s[None, :])
        return np.asarray(self.r0_ohm + np.sum(terms, axis=1), dtype=np.complex128)

    @property
    def n_states(self) -> int:
        return int(self.r_ohm.size)


def _zarc_foster(arc: Arc, tol: float) -> tuple[float, FloatArray, FloatArray]:
    """Foster terms (series R, R_k, τ_k) approximating one R‖CPE arc."""
    r, a = arc.r_ohm, arc.alpha
    tau0 = arc.tau0_s
    if r <= 0.0:
        return 0.0, np.zeros(0), np.zeros(0)
    if a >= 0.995:  # ideal RC within the tolerance: one exact relaxation
        return 0.0, np.array([r]), np.array([tau0])
    theta = (1.0 - a) * math.pi
    d = min(math.pi / 2.0, theta / a) * 0.9  # stay inside the analytic strip
    h = 2.0 * math.pi * d / math.log(20.0 / tol)  # x20: margin for the error prefactor
    # tails of g(u) ~ (sinθ/π)·exp(-α|u|): the window reaches where each tail's mass is
    # < tol/4 of R; the tails themselves are added in closed form below.
    u_max = math.log(4.0 * 2.0 * math.sin(theta) / (math.pi * a * tol)) / a
    # α > 0.95 would need ever finer steps; cap the arc at 401 relaxations (documented)
    h = max(h, u_max / 200.0)
    n = math.ceil(u_max / h)
    u = h * np.arange(-n, n + 1, dtype=np.float64)
    g = math.sin(theta) / (2.0 * math.pi * (np.cosh(a * u) - math.cos(theta)))
    rk = r * g * h
    tau = tau0 * np.exp(u)
    # tail masses beyond the window (closed form, _cole_tail); the window's quadrature is
    # rescaled so that the DC resistance is exact
    fast_tail = r * _cole_tail(-u[0] + 0.5 * h, a, theta)
    slow_tail = r * _cole_tail(u[-1] + 0.5 * h, a, theta)
    rk *= (r - fast_tail - slow_tail) / float(rk.sum())
    # the fast tail is resistance at any rig frequency; the slow tail one slow relaxation
    rk = np.append(rk, slow_tail)
    tau = np.append(tau, tau0 * math.exp(u[-1] + 0.5 * h + 1.0 / a))
    series = fast_tail
    fast = tau < _TAU_MIN_S
    return series + float(rk[fast].sum()), rk[~fast], tau[~fast]


def _cole_tail(u0: float, a: float, theta: float) -> float:
    """∫_{u0}^{∞} g(u) du of the Cole-Cole distribution (u0 > 0), closed form.

    With x = e^{-αu}: g du = (sinθ/πα)·dx/(1 - 2x·cosθ + x²)... integrates to
    (1/πα)·atan(x·sinθ / (1 - x·cosθ)).
    """
    x = math.exp(-a * u0)
    return math.atan2(x * math.sin(theta), 1.0 - x * math.cos(theta)) / (math.pi * a)


def _warburg_foster(r_w: float, tau_w: float, tol: float) -> tuple[float, FloatArray, FloatArray]:
    """Foster terms of R_w·tanh(√(sτ))/√(sτ) = Σ (2R_w/λ_n)/(1 + sτ/λ_n), λ_n=((2n-1)π/2)²."""
    if r_w <= 0.0:
        return 0.0, np.zeros(0), np.zeros(0)
    n_exact = 16
    n = np.arange(1, n_exact + 1, dtype=np.float64)
    lam = ((2.0 * n - 1.0) * math.pi / 2.0) ** 2
    r_list = [2.0 * r_w / lam]
    t_list = [tau_w / lam]
    # tail n > n_exact in geometric bins of n (ratio 1.3 -> ~1.7 in τ), each one relaxation
    # with the bin's exact resistance (trigamma sums: Σ 1/(2n-1)² = ψ'(n - 1/2)/4 telescoped)
    # at the geometric-mean τ of the bin. Stop where τ_n < _TAU_MIN_S: the rest is series R.
    n_max = math.sqrt(tau_w / 1e-7) / math.pi * 2.0 + 1.0  # tail mass beyond: < 1e-5 R_w
    if n_max > n_exact + 1:
        edges = np.unique(np.round(np.geomspace(n_exact + 1, n_max, 30)))
        lo, hi = edges[:-1], edges[1:]
        rb = 2.0 * r_w * 4.0 / math.pi ** 2 * (polygamma(1, lo - 0.5) - polygamma(1, hi - 0.5)) / 4
        n_mid = np.sqrt(lo * (hi - 1.0))
        r_list.append(rb)
        t_list.append(tau_w / ((2.0 * n_mid - 1.0) * math.pi / 2.0) ** 2)
    rk = np.concatenate(r_list)
    tau = np.concatenate(t_list)
    series = r_w - float(rk.sum())  # remainder of the series (all faster than _TAU_MIN_S)
    fast = tau < _TAU_MIN_S
    return series + float(rk[fast].sum()), rk[~fast], tau[~fast]


def realise(el: CircuitElements, tol: float = 5e-4) -> Foster:
    """The Foster network the time-domain simulation integrates for these elements."""
    r0 = el.r_bulk_ohm
    rs: list[FloatArray] = []
    ts: list[FloatArray] = []
    for arc in el.arcs:
        s0, rk, tk = _zarc_foster(arc, tol)
        r0 += s0
        rs.append(rk)
        ts.append(tk)
    s0, rk, tk = _warburg_foster(el.warburg_r_ohm, el.warburg_tau_s, tol)
    r0 += s0
    rs.append(rk)
    ts.append(tk)
    r = np.concatenate(rs) if rs else np.zeros(0)
    tau = np.concatenate(ts) if ts else np.zeros(0)
    # relaxations with the same τ (e.g. two identical Li interfaces) are one relaxation
    tau, inv = np.unique(tau, return_inverse=True)
    r = np.bincount(inv, weights=r, minlength=tau.size).astype(np.float64)
    rp = el.r_parallel_ohm
    # R_par above 1e5·R_ion changes |Z| by < 1e-5: left out (as in impedance_py)
    if not el.parallel_matters():
        return Foster(r0, r, tau)
    # Fold R_par in exactly. States v_k (RC voltages), i_ion = (Rp·i - Σv)/(Rp + R0):
    # A = -diag(1/τ) - (1/C)1ᵀ/ρ, symmetrised by w = √C·v -> A' = -diag(1/τ) - u uᵀ/ρ.
    rho = rp + r0
    d_ohm = r0 * rp / rho
    if r.size == 0:
        return Foster(d_ohm, r, tau)
    lam, w = _rank_one_spectrum(-1.0 / tau, r / tau, -1.0 / rho)
    res = (rp / rho) ** 2 * w  # residues r_k/(s - λ_k), all >= 0
    tau_new = -1.0 / lam
    r_new = res * tau_new
    return Foster(d_ohm, r_new, tau_new)


def _rank_one_spectrum(d: FloatArray, u2: FloatArray, sigma: float
                       ) -> tuple[FloatArray, FloatArray]:
    """Eigenvalues λ_j of diag(d) + σ·u uᵀ (σ < 0, d < 0) and the weights (q_jᵀu)².

    Secular equation 1 + σ Σ u_k²/(d_k - λ) = 0: one root below each d_k (interlacing),
    found by vectorised bisection in log|λ| (the poles span many decades). The weights
    follow from the normalised eigenvectors q_j ∝ (diag(d) - λ_j)⁻¹u:
    (q_jᵀu)² = 1 / (σ²·Σ u_k²/(d_k - λ_j)²). Equivalent to numpy.linalg.eigh on the
    symmetrised state matrix, ~10x faster for the ~100 states used here.
    """
    order = np.argsort(d)
    d = d[order]
    u2 = u2[order]
    hi = d.copy()
    lo = np.empty_like(d)
    lo[1:] = d[:-1]
    lo[0] = d[0] + sigma * float(u2.sum()) * 1.0001  # σ < 0: lowest root below d_0
    # bisection on the geometric mean (all values negative); a midpoint landing exactly on
    # a pole gives ±inf, which still orders correctly
    np_err = np.seterr(divide="ignore", invalid="ignore")
    for _ in range(44):  # ~1e-12 relative in the interlaced intervals
        mid = -np.sqrt(lo * hi)
        g = 1.0 + sigma * np.sum(u2[None, :] / (d[None, :] - mid[:, None]), axis=1)
        right = g > 0.0  # g decreases across the interval: root lies to the right
        lo = np.where(right, mid, lo)
        hi = np.where(right, hi, mid)
    lam = -np.sqrt(lo * hi)
    w = 1.0 / (sigma ** 2 * np.sum(u2[None, :] / (d[None, :] - lam[:, None]) ** 2, axis=1))
    np.seterr(**np_err)
    w[~np.isfinite(w)] = 0.0
    return lam, w


def realised_impedance(el: CircuitElements, f_hz: npt.ArrayLike, tol: float = 5e-4
                       ) -> ComplexArray:
    """Z(f) of the rational network that the time-domain system actually simulates."""
    return realise(el, tol).impedance(f_hz)


def realisation_error(el: CircuitElements, f_hz: npt.ArrayLike, tol: float = 5e-4) -> float:
    """max |Z_realised - Z_closed| / |Z_closed| over ``f_hz``."""
    zc = closed_form_impedance(el, f_hz)
    zr = realised_impedance(el, f_hz, tol)
    return float(np.max(np.abs(zr - zc) / np.abs(zc)))


# ---------------------------------------------------------------------------------------
# Time-domain integration
# ---------------------------------------------------------------------------------------

MAX_PIECEWISE_RUNS = 8


def _constant_runs(u1: FloatArray, u0: FloatArray) -> npt.NDArray[np.int64] | None:
    """Boundaries [0, ..., n] of the stretches where (u1, u0) stay constant, or None when
    there are more than ``MAX_PIECEWISE_RUNS`` (a waveform: the general paths)."""
    n = u1.size
    if n == 0:
        return None
    change = np.flatnonzero((u1[1:] != u1[:-1]) | (u0[1:] != u0[:-1])) + 1
    if change.size >= MAX_PIECEWISE_RUNS:
        return None
    return np.concatenate(([0], change, [n])).astype(np.int64)


class FosterSimulator:
    """Integrates a Foster network exactly for held (ZOH) or ramped (FOH) current.

    State: the voltage across each RC (physical for an uncoupled network). Outputs are the
    terminal voltage at the *end* of each sample interval.
    """

    def __init__(self, foster: Foster) -> None:
        self.foster = foster
        self.x_v = np.zeros(foster.n_states)
        self.last_current_a = 0.0
        self._cache_key: tuple[float, str] | None = None
        self._cache: tuple[FloatArray, ...] | None = None

    def retarget(self, foster: Foster) -> None:
        """Switch to new element values, keeping the stored charge (mapped by τ order).

        State changes happen slowly compared with the block length, so the voltages of
        relaxations with similar τ are carried over by interpolation in ln τ.
        """
        old = self.foster
        if old.n_states and foster.n_states and np.any(self.x_v != 0.0):
            # carry the charge fraction x/R of each relaxation, interpolated in ln τ
            order = np.argsort(old.tau_s)
            r_old = old.r_ohm[order]
            frac = np.divide(self.x_v[order], r_old, out=np.zeros_like(r_old), where=r_old > 0)
            lt = np.log(old.tau_s[order])
            new_frac = np.interp(np.log(foster.tau_s), lt, frac)
            new_frac[~np.isfinite(new_frac)] = 0.0
            self.x_v = new_frac * foster.r_ohm
        else:
            self.x_v = np.zeros(foster.n_states)
        self.foster = foster
        self._cache_key = None

    def _discretise(self, dt_s: float, hold: str) -> tuple[FloatArray, ...]:
        key = (dt_s, hold)
        if self._cache_key == key and self._cache is not None:
            return self._cache
        f = self.foster
        a = np.exp(-dt_s / f.tau_s)
        x = dt_s / f.tau_s
        # β = (1 - a)/x, with its series near x -> 0 to avoid cancellation
        beta = np.where(x > 1e-6, -np.expm1(-x) / np.maximum(x, 1e-300), 1.0 - 0.5 * x)
        if hold == "zoh":  # x1 = a·x0 + R(1 - a)·u
            w1 = f.r_ohm * -np.expm1(-x)
            w0 = np.zeros_like(a)
        else:  # FOH, current linear over the interval: x1 = a·x0 + R[(1-β)·u1 + (β-a)·u0]
            w1 = f.r_ohm * (1.0 - beta)
            w0 = f.r_ohm * (beta - a)
        static = a < 1e-12  # settled within one sample: algebraic, no recursion
        dyn = np.flatnonzero(~static)
        cache = (a, w1, w0, static.astype(np.float64), dyn.astype(np.float64),
                 np.array([w1[static].sum(), w0[static].sum()]))
        self._cache = cache
        self._cache_key = key
        return cache

    def run(self, dt_s: float, current_a: FloatArray, hold: str = "zoh") -> FloatArray:
        """Advance len(current_a) samples of ``dt_s``; return the terminal voltage, V."""
        f = self.foster
        n = current_a.size
        u1 = current_a
        if hold == "zoh":
            u0 = current_a
        elif hold == "foh":
            u0 = np.empty(n)
            u0[0] = self.last_current_a
            u0[1:] = current_a[:-1]
        else:
            raise CellParameterError(f"hold must be 'zoh' or 'foh', got {hold!r}")
        v = f.r0_ohm * u1
        if f.n_states:
            a, w1, w0, static_f, dyn_f, ssum = self._discretise(dt_s, hold)
            static = static_f > 0.5
            dyn = dyn_f.astype(np.int64)
            if ssum[0] or ssum[1]:
                v = v + u1 * ssum[0] + u0 * ssum[1]
                self.x_v[static] = w1[static] * u1[-1] + w0[static] * u0[-1]
            runs = _constant_runs(u1, u0) if dyn.size else None
            if runs is not None:
                # few stretches of constant input (a held current: the bench's steps):
                # each stretch in closed form, x_j = a^(j+1)·x_s + e·Σ_{i<=j} a^i
                xs = self._run_piecewise(dt_s, runs, u1, u0, dyn, w1, w0)
                v = v + xs.sum(axis=1)
                self.x_v[dyn] = xs[-1]
            elif dyn.size and n <= 64:
                # short block: x[n] = a^(n+1)·x0 + Σ_m a^(n-m)·e[m] as one tensor product
                ad = a[dyn]
                e = u1[:, None] * w1[dyn][None, :] + u0[:, None] * w0[dyn][None, :]
                k = np.arange(n)
                lag = k[:, None] - k[None, :]
                with np.errstate(under="ignore"):
                    powr = np.where(lag[:, :, None] >= 0,
                                    ad[None, None, :] ** np.maximum(lag, 0)[:, :, None], 0.0)
                    xs = np.einsum("nmk,mk->nk", powr, e) + (
                        ad[None, :] ** (k[:, None] + 1)) * self.x_v[dyn][None, :]
                v = v + xs.sum(axis=1)
                self.x_v[dyn] = xs[-1]
            else:
                for kk in dyn:
                    e1 = w1[kk] * u1 + w0[kk] * u0
                    y, _ = lfilter([1.0], [1.0, -a[kk]], e1, zi=[a[kk] * self.x_v[kk]])
                    v = v + y
                    self.x_v[kk] = y[-1]
        self.last_current_a = float(current_a[-1])
        return np.asarray(v, dtype=np.float64)

    def _run_piecewise(self, dt_s: float, runs: npt.NDArray[np.int64], u1: FloatArray,
                       u0: FloatArray, dyn: npt.NDArray[np.int64], w1: FloatArray,
                       w0: FloatArray) -> FloatArray:
        """States of the dynamic relaxations at every sample, input constant over each
        stretch ``runs[r]:runs[r+1]``: O(n·K), where the tensor product is O(n²·K) and
        a recursion per relaxation costs a filter call each."""
        x_dt = dt_s / self.foster.tau_s[dyn]
        w1d = w1[dyn]
        w0d = w0[dyn]
        n = u1.size
        xs = np.empty((n, dyn.size))
        x0 = self.x_v[dyn]
        longest = int(np.max(np.diff(runs)))
        j = np.arange(1, longest + 1, dtype=np.float64)[:, None] * x_dt[None, :]
        with np.errstate(under="ignore"):
            decay = np.exp(-j)  # a^(j+1), j = 0..longest-1
            # Σ_{i<=j} a^i = (1 - a^(j+1)) / (1 - a), both by expm1: exact as a -> 1
            geo = np.expm1(-j) / np.expm1(-x_dt)[None, :]
        for s, e in itertools.pairwise(runs.tolist()):
            m = e - s
            drive = u1[s] * w1d + u0[s] * w0d
            xs[s:e] = decay[:m] * x0[None, :] + geo[:m] * drive[None, :]
            x0 = xs[e - 1]
        return xs
