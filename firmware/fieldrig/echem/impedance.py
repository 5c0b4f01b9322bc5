"""Impedance from synchronously sampled cell voltage and current blocks.

Method (docs/echem.md has the derivations):

- Coherent sampling: a tone at ``f_hz`` is measured on a block of ``n`` samples at
  ``fs_hz`` holding exactly ``k = f_hz * n / fs_hz`` whole periods, so the tone falls on
  DFT bin ``k`` and every other coherent tone, and a constant, are exactly orthogonal to
  it: no window, no leakage.
- Operando (on top of a running DC current) the voltage drifts during a block. A ramp is
  *not* orthogonal to bin k (it leaks ~ drift / (pi k) into it), so each channel is fitted
  by least squares to ``b + a*t + sum_j (alpha_j cos w_j t + beta_j sin w_j t)`` jointly:
  the fit needs only sum x, sum t*x and the bin sums, and with integer bins its normal
  equations have a closed form (one scalar solve for the slope).
- Z = V(f) / I(f). V and I are sampled simultaneously by the ADS131M04 through identical
  digital filters, so the filters cancel in the ratio; the analog front ends do not, and
  the ratiometric calibration against a reference resistor removes what is left.

Hot path. MicroPython boxes floats (each float operation allocates), and the RP2350 floats
are single precision, in which a Goertzel resonator at low k/n loses most of its digits.
The board path therefore works on the raw 24-bit ADC codes (array('i')) in fixed point:
a Q15 cosine table of the block length and a correlation per bin, in viper (machine
words, no allocation) with a bit-identical plain-bytecode fallback (``_dft_py``).
A float path (Goertzel on array('f') or lists) serves CPython cross-checks and
synthetic data; it allocates and is not meant for the sampling loop.
"""

import math
import sys
from array import array

from fieldrig.echem import _dft_py

try:
    from fieldrig.echem import _dft_viper
except (ImportError, ValueError):
    # CPython, a port without the viper emitter, or a .mpy whose native code was built
    # for another architecture (ValueError "incompatible .mpy"): the plain kernels.
    _dft_viper = None

TWO_PI = 2.0 * math.pi
Q15 = 32767
Q_MAX = 16383  # |q| bound of the fixed-point contract (see _dft_py)
N_LIMIT = 16384  # the contract's block-length bound (t * q < 2**28)
# ptr32 loads are zero-extended on 64-bit ports: shift left then right by this.
SIGN_SHIFT = 32 if sys.maxsize > 0xFFFFFFFF else 0

# ADS131M04 output data rates with the 8.192 MHz clock (f_MOD = 4.096 MHz / OSR,
# OSR 128 .. 16256), highest first.
ADS131M04_RATES_HZ = (32000.0, 16000.0, 8000.0, 4000.0, 2000.0, 1000.0, 500.0,
                      4096000.0 / 16256)


class CoherenceError(ValueError):
    pass


def bin_for(f_hz, fs_hz, n):
    """DFT bin k of f_hz in a block of n samples at fs_hz; raises CoherenceError unless
    the block holds a whole number of periods (1 <= k < n/2)."""
    kf = f_hz * n / fs_hz
    k = int(kf + 0.5)
    if abs(kf - k) > 1e-6 * (kf if kf > 1.0 else 1.0):
        raise CoherenceError("f_hz %g is not coherent with n=%d at fs_hz %g (k=%g)"
                             % (f_hz, n, fs_hz, kf))
    if k < 1 or 2 * k >= n:
        raise CoherenceError("bin %d outside 1..n/2 (n=%d)" % (k, n))
    return k


class DftEngine:
    """Preallocated state of the integer estimator: the Q15 cosine table for the current
    block length (rebuilt only when n changes: the only allocation is at construction)
    and the kernels' result words."""

    def __init__(self, n_max=4096, native=True):
        if n_max % 4 or n_max > N_LIMIT or n_max < 8:
            raise ValueError("n_max must be a multiple of 4 in 8..%d" % N_LIMIT)
        self.n_max = n_max
        self.table = array("h", bytes(2 * n_max))
        self.n = 0
        self.out = array("i", bytes(4 * 8))
        k = _dft_viper if (native and _dft_viper is not None) else _dft_py
        self.kernels = k
        self.native = k is _dft_viper
        # Last channel scan, read by the solver: x0, shift, sum q, sum t*q (hi, lo).
        self.x0 = 0
        self.shift = 0

    def prepare(self, n):
        """Fill the cosine table for block length n (n % 4 == 0, n <= n_max)."""
        if n == self.n:
            return
        if n % 4 or n < 8 or n > self.n_max:
            raise ValueError("block length must be a multiple of 4 in 8..%d" % self.n_max)
        tab = self.table
        quarter = n >> 2
        half = n >> 1
        # Build one quarter wave and mirror it, so the table has the exact symmetries
        # of cos (c[n/2 - i] = -c[i], c[n - i] = c[i]): a constant then sums to exactly
        # zero against it and a large DC offset cannot leak into any bin.
        for i in range(quarter + 1):
            c = int(Q15 * math.cos(TWO_PI * i / n) + 0.5)
            tab[i] = c
            if i:
                tab[n - i] = c
            tab[half - i] = -c
            tab[half + i] = -c
        tab[quarter] = 0
        tab[n - quarter] = 0
        self.n = n

    def scan(self, buf, n):
        """Per-channel pass: pick x0 and the shift, sum q and sum t*q (into out[4:7])."""
        kern = self.kernels
        out = self.out
        kern.span(buf, n, SIGN_SHIFT, out)
        lo = out[0]
        hi = out[1]
        x0 = (lo + hi) >> 1
        dev = hi - x0
        if x0 - lo > dev:
            dev = x0 - lo
        s = 0
        while (dev >> s) > Q_MAX - 1:
            s += 1
        self.x0 = x0
        self.shift = s
        kern.moments(buf, n, x0, s, SIGN_SHIFT, out)
        out[4] = out[0]
        out[5] = out[1]
        out[6] = out[2]

    def bin(self, buf, n, k):
        """Bin sums of the last scanned channel into out[0:4] (no allocation)."""
        self.kernels.bin_sums(buf, n, self.x0, self.shift, SIGN_SHIFT, self.table, k,
                              self.out)


_engine = None


def engine(n_max=4096):
    """The module's shared engine (allocated on first use, grown when needed)."""
    global _engine
    if _engine is None or _engine.n_max < n_max:
        _engine = DftEngine(n_max if n_max > 4096 else 4096)
    return _engine


def _is_int_buffer(buf):
    return isinstance(buf[0], int)


def _channel_fit(eng, buf, n, bins):
    """Least-squares fit of one channel; returns (re, im lists per bin, dc, slope per
    sample), amplitudes in the buffer's units (codes or floats)."""
    nb = len(bins)
    cs = [0.0] * nb
    ss = [0.0] * nb
    if _is_int_buffer(buf):
        eng.prepare(n)
        eng.scan(buf, n)
        out = eng.out
        scale = float(1 << eng.shift)
        m0 = out[4] * scale
        m1 = (out[5] * 65536.0 + out[6]) * scale
        x0 = float(eng.x0)
        qs = scale / Q15
        for j in range(nb):
            eng.bin(buf, n, bins[j])
            cs[j] = (out[0] * 65536.0 + out[1]) * qs
            ss[j] = (out[2] * 65536.0 + out[3]) * qs
    else:
        x0, m0, m1 = _float_moments(buf, n)
        for j in range(nb):
            cs[j], ss[j] = _goertzel(buf, n, bins[j], x0)
    # Centre time (t' = t - (n-1)/2): the constant decouples from the slope, and with
    # integer bins sum t' cos = -n/2, sum t' sin = -(n/2) cot(pi k/n).
    m1c = m1 - 0.5 * (n - 1) * m0
    num = m1c
    den = n * (n * n - 1.0) / 12.0
    cots = [0.0] * nb
    for j in range(nb):
        ct = 1.0 / math.tan(math.pi * bins[j] / n)
        cots[j] = ct
        num += cs[j] + ct * ss[j]
        den -= 0.5 * n * (1.0 + ct * ct)
    a = num / den  # slope per sample
    re = [0.0] * nb
    im = [0.0] * nb
    for j in range(nb):
        # x ~ alpha cos + beta sin = Re((alpha - j beta) e^{jwt})
        re[j] = 2.0 * cs[j] / n + a
        im[j] = -(2.0 * ss[j] / n + a * cots[j])
    dc = x0 + m0 / n  # value at the block centre
    return re, im, dc, a


def _float_moments(buf, n):
    lo = buf[0]
    hi = lo
    for t in range(n):
        x = buf[t]
        if x < lo:
            lo = x
        if x > hi:
            hi = x
    x0 = 0.5 * (lo + hi)
    m0 = 0.0
    m1 = 0.0
    for t in range(n):
        q = buf[t] - x0
        m0 += q
        m1 += t * q
    return x0, m0, m1


def _goertzel(buf, n, k, x0):
    """(sum q cos wt, sum q sin wt) of q = x - x0 by the Goertzel recurrence."""
    w = TWO_PI * k / n
    coeff = 2.0 * math.cos(w)
    s1 = 0.0
    s2 = 0.0
    for t in range(n):
        s0 = (buf[t] - x0) + coeff * s1 - s2
        s2 = s1
        s1 = s0
    s0 = coeff * s1 - s2  # one more step with x = 0: X = s[n] - e^{-jw} s[n-1]
    xr = s0 - math.cos(w) * s1
    xi = math.sin(w) * s1
    # X = sum q e^{-jwt}: C = Re X, S = -Im X
    return xr, -xi


def _mag(re, im):
    return math.sqrt(re * re + im * im)  # no math.hypot on MicroPython


def _cdiv(ar, ai, br, bi):
    d = br * br + bi * bi
    if d == 0.0:
        return float("inf"), 0.0
    return (ar * br + ai * bi) / d, (ai * br - ar * bi) / d


def estimate(v_buf, i_buf, n, fs_hz, f_hz, scale_ohm=1.0, eng=None):
    """Z at f_hz from n synchronously sampled V and I values: (z_re, z_im).

    Buffers are ADC codes (array('i'), the allocation-free fixed-point path) or floats.
    ``scale_ohm`` = (volts per V code) / (amps per I code) turns the code ratio into
    ohms. f_hz must be coherent (see ``bin_for``)."""
    k = bin_for(f_hz, fs_hz, n)
    if eng is None:
        eng = engine(n)
    bins = (k,)
    vr, vi, _, _ = _channel_fit(eng, v_buf, n, bins)
    ir, ii, _, _ = _channel_fit(eng, i_buf, n, bins)
    zr, zi = _cdiv(vr[0], vi[0], ir[0], ii[0])
    return zr * scale_ohm, zi * scale_ohm


class Estimate:
    """One impedance point with its quality figures.

    rel_err: 1-sigma relative uncertainty of Z from the noise in neighbouring empty
    bins (also the phase uncertainty in radians); snr_db: tone over that noise (the
    worse channel); thd_v/thd_i: 2nd+3rd harmonic over the fundamental, ratio."""

    def __init__(self, f_hz, z_re_ohm, z_im_ohm, v_amp, i_amp, v_dc, i_dc, v_drift_per_s,
                 i_drift_per_s, snr_db, rel_err, thd_v, thd_i, v_noise_rms=0.0,
                 i_noise_rms=0.0):
        self.f_hz = f_hz
        self.z_re_ohm = z_re_ohm
        self.z_im_ohm = z_im_ohm
        self.mag_ohm = math.sqrt(z_re_ohm * z_re_ohm + z_im_ohm * z_im_ohm)
        self.phase_deg = math.degrees(math.atan2(z_im_ohm, z_re_ohm))
        self.v_amp = v_amp
        self.i_amp = i_amp
        self.v_dc = v_dc
        self.i_dc = i_dc
        self.v_drift_per_s = v_drift_per_s
        self.i_drift_per_s = i_drift_per_s
        self.snr_db = snr_db
        self.rel_err = rel_err
        self.thd_v = thd_v
        self.thd_i = thd_i
        # Per-sample rms noise of each channel (V, A), from the empty bins next to the
        # tones: white noise of variance s^2 gives a fitted bin amplitude |X|^2 of
        # 4 s^2 / n on average. With the tones and the drift fitted out, this is the
        # voltage noise a filament's flicker raises (detect: v_noise_mv).
        self.v_noise_rms = v_noise_rms
        self.i_noise_rms = i_noise_rms

    def quality(self, max_rel_err=0.01, max_thd=0.05):
        """'good' within both limits, 'fair' within 3x, else 'poor' (unreliable)."""
        thd = self.thd_v if self.thd_v > self.thd_i else self.thd_i
        if self.rel_err <= max_rel_err and thd <= max_thd:
            return "good"
        if self.rel_err <= 3 * max_rel_err and thd <= 3 * max_thd:
            return "fair"
        return "poor"

    def as_dict(self):
        return {"f_hz": self.f_hz, "z_re_ohm": self.z_re_ohm, "z_im_ohm": self.z_im_ohm,
                "mag_ohm": self.mag_ohm, "phase_deg": self.phase_deg,
                "snr_db": self.snr_db, "rel_err": self.rel_err, "thd_v": self.thd_v,
                "thd_i": self.thd_i, "quality": self.quality()}


def noise_bins(tone_bins, n, count=2):
    """Empty bins to estimate noise from: the nearest bins to each tone that are not a
    tone, not a 2nd/3rd harmonic of one, not 0 and below n/2. ``count`` per tone."""
    taken = {}
    for k in tone_bins:
        taken[k] = 1
        taken[2 * k] = 1
        taken[3 * k] = 1
    out = []
    for k in tone_bins:
        found = 0
        d = 1
        while found < count and d < n:
            for cand in (k + d, k - d):
                if found < count and 0 < cand < n // 2 and cand not in taken:
                    taken[cand] = 1
                    out.append(cand)
                    found += 1
            d += 1
    return out


def measure_bins(v_buf, i_buf, n, fs_hz, tone_bins, v_scale=1.0, i_scale=1.0, eng=None,
                 harmonics=True):
    """Estimates for each tone bin of a (multi)sine block, fitted jointly with the tones'
    2nd/3rd harmonics and neighbouring noise bins. v_scale: V per code, i_scale: A per
    code (1.0 leaves amplitudes in codes). Returns a list of Estimate."""
    if eng is None:
        eng = engine(n)
    half = n // 2
    tones = list(tone_bins)
    harm = []
    if harmonics:
        for k in tones:
            for h in (2 * k, 3 * k):
                if h < half and h not in tones and h not in harm:
                    harm.append(h)
    noise = noise_bins(tones, n)
    bins = tones + harm + noise
    vr, vi, vdc, va = _channel_fit(eng, v_buf, n, bins)
    ir, ii, idc, ia = _channel_fit(eng, i_buf, n, bins)
    nt = len(tones)
    nh = len(harm)

    def pwr(re, im, j):
        return re[j] * re[j] + im[j] * im[j]

    # Noise power per bin, each channel (mean over the noise bins; floor avoids 0/0 on
    # noise-free data).
    nv = 0.0
    ni = 0.0
    for j in range(nt + nh, len(bins)):
        nv += pwr(vr, vi, j)
        ni += pwr(ir, ii, j)
    cnt = len(bins) - nt - nh
    if cnt:
        nv /= cnt
        ni /= cnt
    v_noise = math.sqrt(n * nv / 4.0) * v_scale
    i_noise = math.sqrt(n * ni / 4.0) * i_scale
    result = []
    for j in range(nt):
        k = tones[j]
        zr, zi = _cdiv(vr[j], vi[j], ir[j], ii[j])
        pv = pwr(vr, vi, j)
        pi = pwr(ir, ii, j)
        # The fitted amplitude of an empty bin has the same per-component variance as the
        # error of a tone's amplitude: |X_noise|^2 / 2 per component -> rel. error.
        uv = nv / (2.0 * pv) if pv > 0 else 1.0
        ui = ni / (2.0 * pi) if pi > 0 else 1.0
        rel = math.sqrt(uv + ui)
        rv = nv / pv if pv > 0 else 1.0
        ri = ni / pi if pi > 0 else 1.0
        worst = rv if rv > ri else ri
        snr = -10.0 * math.log10(worst) if worst > 0 else 300.0
        hv = 0.0
        hi_ = 0.0
        for h in (2 * k, 3 * k):
            if h in harm:
                m = nt + harm.index(h)
                hv += pwr(vr, vi, m)
                hi_ += pwr(ir, ii, m)
        thd_v = math.sqrt(hv / pv) if pv > 0 else 0.0
        thd_i = math.sqrt(hi_ / pi) if pi > 0 else 0.0
        result.append(Estimate(k * fs_hz / n, zr * v_scale / i_scale, zi * v_scale / i_scale,
                               math.sqrt(pv) * v_scale, math.sqrt(pi) * i_scale,
                               vdc * v_scale, idc * i_scale, va * fs_hz * v_scale,
                               ia * fs_hz * i_scale, snr, rel, thd_v, thd_i, v_noise,
                               i_noise))
    return result


def measure(v_buf, i_buf, n, fs_hz, f_hz, v_scale=1.0, i_scale=1.0, eng=None):
    """Single-frequency Estimate with quality figures (see measure_bins)."""
    k = bin_for(f_hz, fs_hz, n)
    return measure_bins(v_buf, i_buf, n, fs_hz, (k,), v_scale, i_scale, eng)[0]


# ---------------------------------------------------------------- multisine design

def log_bins(k_min, k_max, count, odd=True):
    """``count`` distinct integer bins log-spaced from k_min to k_max. With odd=True only
    odd bins are used, so the even harmonics of every tone fall on unexcited bins (a
    nonlinear cell shows there instead of biasing another tone)."""
    if k_min < 1 or k_max <= k_min or count < 1:
        raise ValueError("need 1 <= k_min < k_max and count >= 1")
    out = []
    r = math.log(k_max / k_min)
    for j in range(count):
        x = k_min * math.exp(r * j / (count - 1)) if count > 1 else float(k_min)
        k = int(x + 0.5)
        if odd and k % 2 == 0:
            # nearest odd neighbour of x
            k = k + 1 if x >= k or k == 0 else k - 1
        while out and k <= out[-1]:
            k += 2 if odd else 1
        out.append(k)
    if out[-1] > k_max + (1 if odd else 0):
        raise ValueError("too many tones for the bin range")
    return out


def schroeder_phases(bins):
    """Schroeder's low-crest phases, generalised to any tone grid: each tone gets a group
    delay proportional to the power of the tones below it, so the multisine sweeps
    through its tones like a chirp instead of lining their peaks up:
    phi_j = phi_{j-1} - 2 pi (k_j - k_{j-1}) (j - 1) / count. On consecutive bins this is
    the textbook phi_j = -pi j (j - 1) / count (crest factor ~1.7 against sqrt(2 count)
    for zero phases); sparse log-spaced grids end near 3 and ``improve_phases`` helps."""
    count = len(bins)
    ph = [0.0] * count
    for j in range(1, count):
        p = ph[j - 1] - TWO_PI * (bins[j] - bins[j - 1]) * j / count
        ph[j] = p - TWO_PI * math.floor(p / TWO_PI)
    return ph


def multisine(bins, phases, n, amps=None, out=None):
    """One block (n samples) of sum_j amp_j cos(2 pi k_j t / n + phi_j) in an array('f')
    (``out`` to reuse one: a DAC set-point table lives as long as the program)."""
    if out is None:
        out = array("f", bytes(4 * n))
    for t in range(n):
        out[t] = 0.0
    for j in range(len(bins)):
        a = 1.0 if amps is None else amps[j]
        w = TWO_PI * bins[j] / n
        ph = phases[j]
        for t in range(n):
            out[t] += a * math.cos(w * t + ph)
    return out


def crest_factor(x):
    """Peak over RMS of a sequence."""
    peak = 0.0
    ss = 0.0
    for v in x:
        a = v if v >= 0 else -v
        if a > peak:
            peak = a
        ss += v * v
    rms = math.sqrt(ss / len(x))
    return peak / rms if rms > 0 else 0.0


def improve_phases(bins, phases, n, iterations=10, clip=0.7):
    """Lower the crest factor further by iterative clipping (Van der Ouderaa et al.):
    clip the time signal at ``clip`` x peak, keep the phases of its tone bins, repeat.
    Returns (phases, crest factor); never worse than the start. Design-time only:
    O(iterations * tones * n) float operations, one n-sample array('f')."""
    buf = multisine(bins, phases, n)
    best = list(phases)
    best_cf = crest_factor(buf)
    cur = list(phases)
    for _ in range(iterations):
        multisine(bins, cur, n, out=buf)
        peak = 0.0
        for v in buf:
            if abs(v) > peak:
                peak = abs(v)
        lim = clip * peak
        for t in range(n):
            if buf[t] > lim:
                buf[t] = lim
            elif buf[t] < -lim:
                buf[t] = -lim
        for j in range(len(bins)):
            w = TWO_PI * bins[j] / n
            c = 0.0
            s = 0.0
            for t in range(n):
                c += buf[t] * math.cos(w * t)
                s += buf[t] * math.sin(w * t)
            cur[j] = math.atan2(-s, c)
        cf = crest_factor(multisine(bins, cur, n, out=buf))
        if cf < best_cf:
            best_cf = cf
            best = list(cur)
    return best, best_cf


# ---------------------------------------------------------------- excitation amplitude

def auto_amplitude_ma(prev_mag_ohm, target_mv=10.0, min_ma=1e-4, max_ma=10.0, dc_ma=0.0,
                      range_ma=None):
    """Current amplitude (mA) that perturbs the cell by about ``target_mv`` given the
    last |Z| (mV / ohm = mA). Clamped to [min_ma, max_ma] and so that dc + amplitude stays
    inside the galvanostat range (a range switch mid-block would glitch the cell).
    Returns (amplitude_ma, clamped) with clamped True when a limit bound the value."""
    if prev_mag_ohm is None or not prev_mag_ohm > 0:
        amp = min_ma  # unknown cell: start small and let the next estimate grow it
        return amp, True
    amp = target_mv / prev_mag_ohm
    hi = max_ma
    if range_ma is not None:
        room = range_ma - abs(dc_ma)
        if room < hi:
            hi = room
    if hi < min_ma:
        raise ValueError("no room for a perturbation: dc %.4g mA in range %s mA"
                         % (dc_ma, range_ma))
    if amp > hi:
        return hi, True
    if amp < min_ma:
        return min_ma, True
    return amp, False


# ---------------------------------------------------------------- sweep plan

class SweepPoint:
    """One EIS point: the ADC rate, software decimation (sum of ``decimation`` ADC
    samples per stored sample, identical on V and I so it cancels in Z), block length,
    whole periods in the block, the exact coherent frequency and the settle time (one
    period discarded before the block so the transient of the frequency change dies)."""

    def __init__(self, f_target_hz, f_hz, fs_hz, decimation, n, periods):
        self.f_target_hz = f_target_hz
        self.f_hz = f_hz
        self.fs_hz = fs_hz
        self.decimation = decimation
        self.n = n
        self.periods = periods
        self.fs_eff_hz = fs_hz / decimation
        self.block_s = n / self.fs_eff_hz
        self.settle_s = 1.0 / f_hz

    def as_dict(self):
        return {"f_target_hz": self.f_target_hz, "f_hz": self.f_hz, "fs_hz": self.fs_hz,
                "decimation": self.decimation, "n": self.n, "periods": self.periods,
                "block_s": self.block_s, "settle_s": self.settle_s}


def plan_point(f_hz, rates_hz=ADS131M04_RATES_HZ, n_max=4096, min_periods=1,
               target_block_s=1.0, max_periods=None, min_samples_per_period=2.5):
    """Sample rate, decimation, block length and periods for one frequency.

    Highest rate first (more samples per block average more ADC noise), with as many
    whole periods as fit in ``target_block_s`` (at least ``min_periods``) and n <= n_max.
    n is a multiple of 4; the exact frequency is periods * fs / n (within 2/n of the
    target). A rate that gives fewer than ``min_samples_per_period`` is skipped."""
    want = int(f_hz * target_block_s + 0.5)
    if want < min_periods:
        want = min_periods
    if max_periods is not None and want > max_periods:
        want = max_periods
    for fs in rates_hz:
        spp = fs / f_hz
        if spp < min_samples_per_period:
            continue
        if spp * min_periods > n_max:
            continue
        k = want
        if k * spp > n_max:
            k = int(n_max / spp)
        n = 4 * int(k * spp / 4 + 0.5)
        if n > n_max:
            n -= 4
        if 2 * k >= n:
            continue
        return SweepPoint(f_hz, k * fs / n, fs, 1, n, k)
    # Too slow even at the lowest rate: decimate the lowest rate.
    fs = rates_hz[-1]
    spp = fs / f_hz
    if spp < min_samples_per_period:
        raise ValueError("%g Hz is above what the ADC rates can sample" % f_hz)
    d = int(spp * min_periods / n_max) + 1
    spp_d = spp / d
    k = min_periods
    n = 4 * int(k * spp_d / 4 + 0.5)
    return SweepPoint(f_hz, k * (fs / d) / n, fs, d, n, k)


def plan_sweep(f_start_hz=10000.0, f_stop_hz=0.1, points_per_decade=10,
               rates_hz=ADS131M04_RATES_HZ, n_max=4096, min_periods=1, target_block_s=1.0):
    """Log-spaced EIS plan from f_start_hz to f_stop_hz (either order; measured in the
    given order, conventionally high to low), ``points_per_decade`` per decade, both
    ends included. Memory: two array('i') blocks of n_max samples (8 * n_max bytes).
    Returns a list of SweepPoint."""
    if f_start_hz <= 0 or f_stop_hz <= 0 or points_per_decade < 1:
        raise ValueError("frequencies must be > 0 and points_per_decade >= 1")
    decades = math.log10(f_stop_hz / f_start_hz)
    count = int(abs(decades) * points_per_decade + 0.5) + 1
    plan = []
    for j in range(count):
        f = f_start_hz * 10.0 ** (decades * j / (count - 1)) if count > 1 else f_start_hz
        plan.append(plan_point(f, rates_hz, n_max, min_periods, target_block_s))
    return plan


def sweep_duration_s(plan):
    """Measurement time of a plan (blocks plus settling), seconds."""
    t = 0.0
    for p in plan:
        t += p.block_s + p.settle_s
    return t


# ---------------------------------------------------------------- calibration

class Calibration:
    """Ratiometric calibration against a reference resistor.

    Measuring a known, frequency-flat R_ref through the same V and I paths and plan
    gives the complex gain of the measurement at each frequency, G(f) = Z_meas / R_ref
    (V/I front-end gain mismatch, shunt value error, anti-alias filter phase, delays).
    A cell is then corrected by Z = Z_meas / G(f). Between calibrated frequencies
    ln|G| and arg G are interpolated linearly in log f; outside they are held.
    Parasitic series/shunt terms are not modelled: pick R_ref in the decade of the cell.
    """

    def __init__(self, freqs_hz, g_re, g_im, r_ref_ohm=None):
        if not (len(freqs_hz) == len(g_re) == len(g_im)) or not freqs_hz:
            raise ValueError("calibration needs matching, non-empty tables")
        order = sorted(range(len(freqs_hz)), key=lambda j: freqs_hz[j])
        self.freqs_hz = [float(freqs_hz[j]) for j in order]
        self.g_re = [float(g_re[j]) for j in order]
        self.g_im = [float(g_im[j]) for j in order]
        self.r_ref_ohm = r_ref_ohm

    @classmethod
    def from_reference(cls, r_ref_ohm, points):
        """points: (f_hz, z_re_ohm, z_im_ohm) measured on the reference resistor."""
        if not r_ref_ohm > 0:
            raise ValueError("r_ref_ohm must be > 0")
        f = [p[0] for p in points]
        return cls(f, [p[1] / r_ref_ohm for p in points], [p[2] / r_ref_ohm for p in points],
                   r_ref_ohm)

    def gain(self, f_hz):
        """Complex gain (re, im) at f_hz."""
        fs = self.freqs_hz
        if f_hz <= fs[0]:
            return self.g_re[0], self.g_im[0]
        if f_hz >= fs[-1]:
            return self.g_re[-1], self.g_im[-1]
        j = 1
        while fs[j] < f_hz:
            j += 1
        if fs[j] == f_hz:
            return self.g_re[j], self.g_im[j]
        w = math.log(f_hz / fs[j - 1]) / math.log(fs[j] / fs[j - 1])
        m0 = math.log(_mag(self.g_re[j - 1], self.g_im[j - 1]))
        m1 = math.log(_mag(self.g_re[j], self.g_im[j]))
        p0 = math.atan2(self.g_im[j - 1], self.g_re[j - 1])
        p1 = math.atan2(self.g_im[j], self.g_re[j])
        if p1 - p0 > math.pi:  # unwrap
            p1 -= TWO_PI
        elif p0 - p1 > math.pi:
            p1 += TWO_PI
        m = math.exp(m0 + w * (m1 - m0))
        p = p0 + w * (p1 - p0)
        return m * math.cos(p), m * math.sin(p)

    def correct(self, f_hz, z_re_ohm, z_im_ohm):
        """Calibrated (z_re, z_im)."""
        gr, gi = self.gain(f_hz)
        return _cdiv(z_re_ohm, z_im_ohm, gr, gi)

    def as_dict(self):
        return {"r_ref_ohm": self.r_ref_ohm, "f_hz": self.freqs_hz, "g_re": self.g_re,
                "g_im": self.g_im}

    @classmethod
    def from_dict(cls, d):
        return cls(d["f_hz"], d["g_re"], d["g_im"], d.get("r_ref_ohm"))
