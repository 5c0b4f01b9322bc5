"""Failure detection: dendrite / soft short, hard short, void growth, crack.

Each update takes one ``Observation`` (typically per impedance measurement: a high- and
a low-frequency point, the cell's voltage, current, temperature and stack pressure) and
returns events ``{"event": "echem_alarm", "kind": ..., "confidence": ..., "evidence":
[...]}`` when a diagnosis starts, and ``echem_alarm_cleared`` when it ends.

Three layers, each a table:

1. SIGNALS: derived quantities and their baseline model.
   - ``arrhenius``: y = ln(value) against ln R(T, P) = ln R0 + (Ea/R)(1/T - 1/T0)
     - beta ln(P/P0). The reference state (R0, T0, P0) is the mean of the first n_learn
     observations. Ea and beta start at the preset value and are learned online from
     *changes*: each pair of consecutive observations whose temperature or pressure moved
     enough contributes dy = (Ea/R) d(1/T) - beta d(ln P) to a least-squares fit (with the
     preset as a weak prior, clamped to the preset range). A failure at constant T and P
     moves y with no excitation, so it is never learned away; heating or a pressure step
     is. The reference level tracks slow healthy drift with time constant drift_tau_s,
     only while the residual is quiet.
   - ``level``: a plain baseline (mean, sigma of n_learn observations), re-learned after
     the temperature, pressure or current changes (settle_s later): for signals whose
     dependence on those is not modelled (phase, voltage noise, overpotential per mA).
   - ``absolute``: the raw value, no baseline (hard-short limits in ohms and volts).
   Standardised residual z = (y - prediction) / sigma, sigma floored at sigma_floor.

2. ROWS: a statistic per signal with a threshold, like the safety diagnosis table:
   one-sided CUSUM (Page) on z, g = max(0, g + z - k) for "up" (and on -z for "down"),
   active once g > h for min_duration_s; a jump (the largest rise of z between two
   consecutive observations, held); or an absolute level below a limit. Each row's
   confidence is c_at_h at g = h rising linearly to c_max at g = 2h.

3. DIAGNOSES: which rows make a kind. soft_short needs impedance falling at both
   frequencies, or one of them plus two corroborating rows (phase toward 0 deg, voltage
   noise up, plating overpotential down). Confidence = 1 - prod(1 - c_row).
"""

import math

R_GAS = 8.314462618  # J/(mol K)
T_ZERO_K = 273.15
P_FLOOR_MPA = 0.1  # ln P of an unpressurised fixture stays finite

# Baseline models
ARRHENIUS = "arrhenius"
LEVEL = "level"
ABSOLUTE = "absolute"

# Row statistics
CUSUM_UP = "cusum_up"
CUSUM_DOWN = "cusum_down"
JUMP_UP = "jump_up"
BELOW = "below"


class SignalSpec:
    """A derived signal and its baseline model (see module doc). ea_* in kJ/mol."""

    def __init__(self, name, model, sigma_floor, ea_kj_mol=0.0, ea_range=(0.0, 0.0), beta=0.0,
                 beta_range=(0.0, 0.0), rebase_on_current=False, noise_in_ohm=False):
        self.name = name
        self.model = model
        self.sigma_floor = sigma_floor
        self.ea_kj_mol = ea_kj_mol
        self.ea_range = ea_range
        self.beta = beta
        self.beta_range = beta_range
        self.rebase_on_current = rebase_on_current
        # The value's noise is a fixed number of ohms, not a fixed fraction: the sigma of
        # its ln scales with 1 / level, and a kept sigma is rescaled at every re-anchor.
        self.noise_in_ohm = noise_in_ohm


# fmt: off
SIGNALS = (
    # name        model      sigma floor  Ea prior  Ea range (kJ/mol)  beta  beta range
    # ln Re Z at the high frequency: the electrolyte (bulk + grain boundary); Arrhenius,
    # nearly pressure-independent once the stack is consolidated.
    SignalSpec("ln_z_hf", ARRHENIUS, 0.002, 35.0, (15.0, 80.0), 0.0, (-0.3, 0.3)),
    # ln Re Z at the low frequency: bulk + interface.
    SignalSpec("ln_z_lf", ARRHENIUS, 0.002, 40.0, (15.0, 80.0), 0.3, (0.0, 1.5),
               rebase_on_current=True),
    # ln(Re Z_lf - |Z_hf|): the interfacial (charge transfer + contact) resistance; the
    # empirical contact term is the power law in P (contact area grows with pressure).
    # A small difference of two large measured values: its noise is the impedance
    # estimates' noise in ohms (heating 25 -> 45 C shrinks it 7x on Li|LPSCl|Li, and the
    # sigma of its ln grows 7x).
    SignalSpec("ln_r_int", ARRHENIUS, 0.005, 40.0, (15.0, 80.0), 0.3, (0.0, 1.5),
               rebase_on_current=True, noise_in_ohm=True),
    SignalSpec("phase_mid_deg", LEVEL, 0.3),        # |phase| mid-arc (interface), deg
    SignalSpec("ln_v_noise", LEVEL, 0.05),          # ln(voltage noise rms, mV)
    # ln(|V| / |I|) while plating and settled: the plating overpotential per mA.
    SignalSpec("ln_r_dc", ARRHENIUS, 0.005, 40.0, (15.0, 80.0), 0.3, (0.0, 1.5),
               rebase_on_current=True),
    SignalSpec("z_hf_ohm", ABSOLUTE, 0.0),
    SignalSpec("v_abs_v", ABSOLUTE, 0.0),           # |V| while current flows
)
# fmt: on


class Row:
    """One detection rule. k, h in sigma units for CUSUM rows; h in the signal's unit
    for BELOW rows. gate: None, "plating", "stripping" or "current" (|I| > i_min)."""

    def __init__(self, row_id, signal, stat, k, h, min_duration_s, gate, c_at_h, c_max, unit=""):
        self.row_id = row_id
        self.signal = signal
        self.stat = stat
        self.k = k
        self.h = h
        self.min_duration_s = min_duration_s
        self.gate = gate
        self.c_at_h = c_at_h
        self.c_max = c_max
        self.unit = unit


# fmt: off
# id, signal, statistic, k (sigma), h (sigma | unit), min duration s, gate, conf at h, conf max
ROWS = (
    Row("z_fall_hf",          "ln_z_hf",       CUSUM_DOWN, 0.5, 8.0,  60,  None,       0.5, 0.9),
    Row("z_fall_lf",          "ln_z_lf",       CUSUM_DOWN, 0.5, 8.0,  60,  None,       0.5, 0.9),
    Row("phase_to_zero",      "phase_mid_deg", CUSUM_DOWN, 0.5, 8.0,  60,  None,       0.3, 0.6),
    Row("v_noise_rise",       "ln_v_noise",    CUSUM_UP,   1.0, 8.0,  60,  "current",  0.3, 0.6),
    Row("overpotential_drop", "ln_r_dc",       CUSUM_DOWN, 0.5, 8.0,  60,  "plating",  0.3, 0.6),
    # A crack is a step: the residual jumps by h sigma from one observation to the next
    # (a fracture severs a share of the cross-section at once: x2.4 is ~400 sigma). A
    # rise spread over many observations (contact loss from voids at low stack
    # pressure: a few sigma each) is not one.
    Row("z_hf_step",          "ln_z_hf",       JUMP_UP,    0.0, 20.0, 0,   None,       0.6, 0.95),
    # Voids: interfacial resistance creeping up while Li is stripped from an interface.
    # Gated on any current: in a Li|SE|Li cell one electrode is always being stripped
    # (the counter electrode while the working one plates), and the cell's impedance,
    # measured across both, holds both interfaces.
    Row("r_int_rise",         "ln_r_int",      CUSUM_UP,   0.5, 10.0, 120, "current",  0.5, 0.9),
    Row("short_z_abs",        "z_hf_ohm",      BELOW,      0.0, 5.0,  0,   None,       0.9, 1.0,
        "ohm"),
    Row("short_v_collapse",   "v_abs_v",       BELOW,      0.0, 0.002, 30, "current",  0.8, 1.0,
        "V"),
)
# fmt: on


class Diagnosis:
    """kind is raised when any row of ``any_of`` is active and at least ``min_rows`` rows
    of any_of + ``support`` are (``exclude``: rows that veto it). A row of ``alone``
    (active, statistic >= alone_at x its threshold) is enough by itself: overwhelming
    evidence on one signal while the others are still re-learning after a current step."""

    def __init__(self, kind, any_of, support=(), min_rows=1, exclude=(), alone=(),
                 alone_at=3.0):
        self.kind = kind
        self.any_of = any_of
        self.support = support
        self.min_rows = min_rows
        self.exclude = exclude
        self.alone = alone
        self.alone_at = alone_at


DIAGNOSES = (
    Diagnosis("hard_short", ("short_z_abs", "short_v_collapse")),
    # The electrolyte intercept does not fall on a healthy cell at constant temperature
    # (and it is not re-learned on current steps): far past its threshold it is enough.
    Diagnosis("soft_short", ("z_fall_hf", "z_fall_lf"),
              ("phase_to_zero", "v_noise_rise", "overpotential_drop"), min_rows=2,
              alone=("z_fall_hf",), alone_at=3.0),
    Diagnosis("crack", ("z_hf_step",)),
    Diagnosis("void", ("r_int_rise",), exclude=("z_hf_step", "z_fall_lf")),
)


class Observation:
    """One set of measurements. Missing values are None. current_ma is signed (+ =
    plating on the working electrode); z_hf_ohm = Re Z at the high frequency (the HF
    intercept: electrolyte), z_lf_ohm = Re Z at the low frequency (electrolyte +
    interface, below the interfacial arc), phase_mid_deg the phase near the interfacial
    arc's apex; v_noise_mv the rms of the voltage residual over the last block;
    current_changed_s the time of the last set-point change (the overpotential waits
    settle_s after it)."""

    def __init__(self, t_s, temp_c, pressure_mpa=None, current_ma=0.0, voltage_v=None,
                 z_hf_ohm=None, z_lf_ohm=None, phase_mid_deg=None, v_noise_mv=None,
                 current_changed_s=None):
        self.t_s = t_s
        self.temp_c = temp_c
        self.pressure_mpa = pressure_mpa
        self.current_ma = current_ma
        self.voltage_v = voltage_v
        self.z_hf_ohm = z_hf_ohm
        self.z_lf_ohm = z_lf_ohm
        self.phase_mid_deg = phase_mid_deg
        self.v_noise_mv = v_noise_mv
        self.current_changed_s = current_changed_s


def _ln(v):
    return math.log(v) if v is not None and v > 0 else None


class _Baseline:
    """Baseline of one signal (model per SignalSpec)."""

    def __init__(self, spec, n_learn, drift_tau_s, min_dx_t, min_dx_p, settle_s, n_relearn):
        self.spec = spec
        self.n_relearn = n_relearn
        self.settle_s = settle_s
        self.reanchor_at = None
        self.n_learn = n_learn
        self.drift_tau_s = drift_tau_s
        self.min_dx_t = min_dx_t
        self.min_dx_p = min_dx_p
        self.b = spec.ea_kj_mol * 1000.0 / R_GAS  # Ea / R, kelvin
        self.c = -spec.beta
        self.b_lo = spec.ea_range[0] * 1000.0 / R_GAS
        self.b_hi = spec.ea_range[1] * 1000.0 / R_GAS
        self.c_lo = -spec.beta_range[1]
        self.c_hi = -spec.beta_range[0]
        # Prior weights: the preset's uncertainty (a quarter of its range) against the
        # residual noise floor, in units of (d(1/T))^2 and (d ln P)^2.
        fl = spec.sigma_floor if spec.sigma_floor > 0 else 1e-3
        sb = (self.b_hi - self.b_lo) / 4.0
        sc = (self.c_hi - self.c_lo) / 4.0
        self.wb = (fl / sb) ** 2 if sb > 0 else 1e30
        self.wc = (fl / sc) ** 2 if sc > 0 else 1e30
        self.sxx_t = 0.0
        self.sxx_p = 0.0
        self.sx_tp = 0.0
        self.sxy_t = 0.0
        self.sxy_p = 0.0
        self.prev = None
        self.sigma = None
        self.y0 = None
        self.restart()

    def restart(self, keep_sigma=False):
        """(Re)learn the reference level (and sigma unless keep_sigma)."""
        self.n = 0
        # Sums of the learning window, about its first observation (the anchor a):
        # 1/T is ~3.4e-3 and b ~5000 K, so raw sums would cancel in single precision.
        self.a = None
        self.sy = 0.0
        self.st = 0.0
        self.sp = 0.0
        self.syy = 0.0
        self.syt = 0.0
        self.syp = 0.0
        self.stt = 0.0
        self.stp = 0.0
        self.spp = 0.0
        # The level the kept sigma belongs to (noise_in_ohm: rescaled to the new one).
        self.sigma_y0 = self.y0 if keep_sigma else None
        self.y0 = None
        self.keep_sigma = keep_sigma and self.sigma is not None
        self.settle_until = None

    def learning(self):
        return self.y0 is None

    def _learn_coeffs(self, y, xt, xp, t_s):
        # One difference to the previous observation, if it carries excitation.
        p = self.prev
        self.prev = (y, xt, xp)
        if p is None:
            return
        dy = y - p[0]
        dxt = xt - p[1]
        dxp = xp - p[2]
        if abs(dxt) < self.min_dx_t and abs(dxp) < self.min_dx_p:
            return
        # Conditions moved: Ea / beta carry the prediction through the transition, and
        # settle_s after the last move the reference level is re-anchored at the new
        # conditions, so neither the noise absorbed by a one-step fit nor a slightly
        # non-Arrhenius cell leaves a permanent bias for the CUSUM to integrate.
        self.reanchor_at = t_s + self.settle_s
        self.sxx_t += dxt * dxt
        self.sxx_p += dxp * dxp
        self.sx_tp += dxt * dxp
        self.sxy_t += dxt * dy
        self.sxy_p += dxp * dy
        a11 = self.wb + self.sxx_t
        a22 = self.wc + self.sxx_p
        a12 = self.sx_tp
        r1 = self.wb * self._b0() + self.sxy_t
        r2 = self.wc * self._c0() + self.sxy_p
        det = a11 * a22 - a12 * a12
        if det <= 0:
            return
        b = (r1 * a22 - r2 * a12) / det
        c = (a11 * r2 - a12 * r1) / det
        self.b = min(max(b, self.b_lo), self.b_hi)
        self.c = min(max(c, self.c_lo), self.c_hi)

    def _b0(self):
        return self.spec.ea_kj_mol * 1000.0 / R_GAS

    def _c0(self):
        return -self.spec.beta

    def update(self, y, xt, xp, t_s, quiet, learn_coeffs):
        """Standardised residual of y, or None while (re)learning."""
        if self.settle_until is not None:
            if t_s < self.settle_until:
                self.prev = None
                return None
            self.settle_until = None
        if self.spec.model == ARRHENIUS and learn_coeffs:
            self._learn_coeffs(y, xt, xp, t_s)
        if self.reanchor_at is not None and t_s >= self.reanchor_at and self.y0 is not None:
            self.reanchor_at = None
            self.restart(keep_sigma=True)
        if self.y0 is None:
            # The level is the window's mean y at its mean conditions: exact whatever Ea
            # and beta are (they may still be learning during the window, on a ramp),
            # since the prediction carries it by b (xt - xt0) + c (xp - xp0) afterwards.
            if self.a is None:
                self.a = (y, xt, xp)
            dy = y - self.a[0]
            dt = xt - self.a[1]
            dp = xp - self.a[2]
            self.n += 1
            self.sy += dy
            self.st += dt
            self.sp += dp
            self.syy += dy * dy
            self.syt += dy * dt
            self.syp += dy * dp
            self.stt += dt * dt
            self.stp += dt * dp
            self.spp += dp * dp
            # Re-learning with a kept sigma only re-anchors the level: fewer observations.
            if self.n < (self.n_relearn if self.keep_sigma else self.n_learn):
                return None
            n = self.n
            my = self.sy / n
            mt = self.st / n
            mp = self.sp / n
            self.y0 = self.a[0] + my
            self.xt0 = self.a[1] + mt
            self.xp0 = self.a[2] + mp
            if (self.keep_sigma and self.spec.noise_in_ohm and self.sigma is not None
                    and self.sigma_y0 is not None):
                sd = self.sigma * math.exp(self.sigma_y0 - self.y0)
                self.sigma = sd if sd > self.spec.sigma_floor else self.spec.sigma_floor
            if not self.keep_sigma:
                # Variance of the compensated value y - b xT - c xP (temperature and
                # pressure noise then counts in sigma, as it does in every residual).
                b = c = 0.0
                if self.spec.model == ARRHENIUS:
                    b = self.b
                    c = self.c
                vyy = self.syy / n - my * my
                vyt = self.syt / n - my * mt
                vyp = self.syp / n - my * mp
                vtt = self.stt / n - mt * mt
                vtp = self.stp / n - mt * mp
                vpp = self.spp / n - mp * mp
                var = (vyy - 2.0 * b * vyt - 2.0 * c * vyp + b * b * vtt + 2.0 * b * c * vtp
                       + c * c * vpp)
                sd = math.sqrt(var * n / (n - 1)) if var > 0 and n > 1 else 0.0
                self.sigma = sd if sd > self.spec.sigma_floor else self.spec.sigma_floor
            self.last_t = t_s
            return None
        pred = self.y0
        if self.spec.model == ARRHENIUS:
            pred += self.b * (xt - self.xt0) + self.c * (xp - self.xp0)
        r = y - pred
        sd = self.sigma if self.sigma is not None else self.spec.sigma_floor
        if self.spec.model == ARRHENIUS:
            # Carrying the reference to other conditions adds the uncertainty of Ea and
            # beta: var = sigma^2 (1 + d' A^-1 d), A the fit's normal matrix (in units of
            # the noise), d the distance from the reference. Large while only the prior
            # is known, small once a move has taught the coefficients, nil at constant T
            # and P: a heating ramp's slight Ea error is not mistaken for a failure.
            dt = xt - self.xt0
            dp = xp - self.xp0
            a11 = self.wb + self.sxx_t
            a22 = self.wc + self.sxx_p
            a12 = self.sx_tp
            det = a11 * a22 - a12 * a12
            if det > 0:
                q = (a22 * dt * dt - 2.0 * a12 * dt * dp + a11 * dp * dp) / det
                sd *= math.sqrt(1.0 + q)
        z = r / sd
        if quiet and -2.0 < z < 2.0 and self.drift_tau_s > 0:
            # Follow slow healthy drift (interphase growth) only while nothing is brewing.
            dt = t_s - self.last_t
            self.y0 += r * (dt / self.drift_tau_s if dt < self.drift_tau_s else 1.0)
        self.last_t = t_s
        return z


class Detector:
    def __init__(self, rows=ROWS, signals=SIGNALS, diagnoses=DIAGNOSES, n_learn=20,
                 n_relearn=8, drift_tau_s=86400.0, i_min_ma=1e-3, settle_s=120.0, min_dt_k=0.2,
                 min_dp_rel=0.02, rebase_dt_k=0.5, rebase_dp_rel=0.03, rebase_di_rel=0.1):
        self.rows = rows
        self.diagnoses = diagnoses
        self.i_min_ma = i_min_ma
        self.settle_s = settle_s
        self.rebase_dt_k = rebase_dt_k
        self.rebase_dp_rel = rebase_dp_rel
        self.rebase_di_rel = rebase_di_rel
        # An excitation step of min_dt_k kelvin around room temperature in 1/T units.
        min_dx_t = min_dt_k / (298.15 * 298.15)
        self.base = {}
        for s in signals:
            self.base[s.name] = _Baseline(s, n_learn, drift_tau_s, min_dx_t, min_dp_rel,
                                          settle_s, n_relearn)
        n = len(rows)
        self.g = [0.0] * n
        self.since = [None] * n  # time the row's condition started to hold
        self.active = [False] * n
        self.last_z = [None] * n
        self.last_value = [None] * n
        self.raised = {}  # kind -> confidence while raised
        # Conditions the level baselines were learned at.
        self.ref_t = None
        self.ref_p = None
        self.ref_i = None

    def status(self):
        """{row id: (statistic, active)} for telemetry."""
        return {self.rows[j].row_id: (self.g[j], self.active[j]) for j in range(len(self.rows))}

    def coefficients(self):
        """Learned Ea (kJ/mol) and beta per Arrhenius signal."""
        out = {}
        for name in self.base:
            b = self.base[name]
            if b.spec.model == ARRHENIUS:
                out[name] = (b.b * R_GAS / 1000.0, -b.c)
        return out

    def _signals(self, o):
        vals = {}
        vals["ln_z_hf"] = _ln(o.z_hf_ohm)
        vals["ln_z_lf"] = _ln(o.z_lf_ohm)
        if o.z_lf_ohm is not None and o.z_hf_ohm is not None:
            vals["ln_r_int"] = _ln(o.z_lf_ohm - o.z_hf_ohm)
        vals["phase_mid_deg"] = abs(o.phase_mid_deg) if o.phase_mid_deg is not None else None
        vals["ln_v_noise"] = _ln(o.v_noise_mv)
        cur = o.current_ma if o.current_ma is not None else 0.0
        flowing = abs(cur) > self.i_min_ma
        settled = o.current_changed_s is None or o.t_s - o.current_changed_s >= self.settle_s
        if flowing and settled and cur > 0 and o.voltage_v is not None:
            vals["ln_r_dc"] = _ln(abs(o.voltage_v) / (abs(cur) * 1e-3))
        vals["z_hf_ohm"] = o.z_hf_ohm
        if flowing and o.voltage_v is not None:
            vals["v_abs_v"] = abs(o.voltage_v)
        return vals

    def _rebase_levels(self, o):
        # Level baselines hold only at the conditions they were learned at.
        t = o.temp_c
        p = o.pressure_mpa if o.pressure_mpa else P_FLOOR_MPA
        cur = o.current_ma if o.current_ma is not None else 0.0
        if self.ref_t is None or self.ref_p is None or self.ref_i is None:
            self.ref_t, self.ref_p, self.ref_i = t, p, cur
            return
        moved_t = abs(t - self.ref_t) > self.rebase_dt_k
        moved_p = abs(math.log(p / self.ref_p)) > self.rebase_dp_rel
        moved_i = abs(cur - self.ref_i) > self.rebase_di_rel * abs(self.ref_i) + self.i_min_ma
        if not (moved_t or moved_p or moved_i):
            return
        self.ref_t, self.ref_p, self.ref_i = t, p, cur
        for name in self.base:
            b = self.base[name]
            if b.spec.model == LEVEL or (moved_i and b.spec.rebase_on_current):
                b.restart(keep_sigma=True)
                b.settle_until = o.t_s + self.settle_s

    def _gate(self, gate, o):
        if gate is None:
            return True
        cur = o.current_ma if o.current_ma is not None else 0.0
        if gate == "plating":
            return cur > self.i_min_ma
        if gate == "stripping":
            return cur < -self.i_min_ma
        return abs(cur) > self.i_min_ma

    def update(self, o):
        """Feed one Observation; returns a list of event dicts (possibly empty)."""
        vals = self._signals(o)
        self._rebase_levels(o)
        xt = 1.0 / (o.temp_c + T_ZERO_K)
        p = o.pressure_mpa if o.pressure_mpa and o.pressure_mpa > P_FLOOR_MPA else P_FLOOR_MPA
        xp = math.log(p)
        # Slow drift is followed only while no row of the signal is building up. Ea and
        # beta always learn: they learn only from temperature / pressure moves, which a
        # failure at constant conditions does not make.
        busy = {}
        for j in range(len(self.rows)):
            row = self.rows[j]
            if row.stat != BELOW and self.g[j] > 0.5 * row.h:
                busy[row.signal] = True
        zs = {}
        for name in self.base:
            b = self.base[name]
            y = vals.get(name)
            if y is None or b.spec.model == ABSOLUTE:
                continue
            quiet = name not in busy
            zs[name] = b.update(y, xt, xp, o.t_s, quiet, True)
        for j in range(len(self.rows)):
            self._row(j, o, vals, zs)
        return self._diagnose(o)

    def _row(self, j, o, vals, zs):
        row = self.rows[j]
        if not self._gate(row.gate, o):
            if row.stat == BELOW:
                self.since[j] = None
                self.active[j] = False
            return  # CUSUM rows hold their statistic outside the gate
        if row.stat == BELOW:
            v = vals.get(row.signal)
            if v is None:
                return
            self.last_value[j] = v
            cond = v < row.h
            self.g[j] = row.h / v if v > 0 else 1e9  # how far past the limit (>1: past)
            level = 1.0
        else:
            z = zs.get(row.signal)
            if z is None:
                if row.stat == JUMP_UP:
                    self.last_z[j] = None  # a re-anchored reference is no jump
                return  # learning or not measured: statistic frozen
            prev = self.last_z[j]
            self.last_z[j] = z
            self.last_value[j] = vals.get(row.signal)
            if row.stat == JUMP_UP:
                # The largest jump seen, held: a fracture does not heal (rebaseline()
                # forgets it, with the cell). Only the part above the baseline counts: a
                # shorting cell's intercept, far below it and noisy, is not cracking.
                jump = z - (prev if prev > 0.0 else 0.0) - row.k if prev is not None else 0.0
                if jump > self.g[j]:
                    self.g[j] = jump
            else:
                step = z - row.k if row.stat == CUSUM_UP else -z - row.k
                g = self.g[j] + step
                self.g[j] = g if g > 0 else 0.0
            cond = self.g[j] > row.h
            level = row.h
        if cond:
            if self.since[j] is None:
                self.since[j] = o.t_s
            if o.t_s - self.since[j] >= row.min_duration_s:
                self.active[j] = True
        else:
            self.since[j] = None
            # Clear with hysteresis: a CUSUM row clears below half its threshold.
            if row.stat == BELOW or self.g[j] < 0.5 * level:
                self.active[j] = False

    def _confidence(self, j):
        row = self.rows[j]
        ratio = self.g[j] if row.stat == BELOW else self.g[j] / row.h
        x = ratio - 1.0
        if x < 0:
            x = 0.0
        if x > 1:
            x = 1.0
        return row.c_at_h + (row.c_max - row.c_at_h) * x

    def _index(self, row_id):
        for j in range(len(self.rows)):
            if self.rows[j].row_id == row_id:
                return j
        return -1

    def _diagnose(self, o):
        events = []
        for d in self.diagnoses:
            act = []
            for rid in d.any_of + d.support:
                j = self._index(rid)
                if j >= 0 and self.active[j]:
                    act.append(j)
            core = False
            for j in act:
                if self.rows[j].row_id in d.any_of:
                    core = True
            vetoed = False
            for rid in d.exclude:
                j = self._index(rid)
                if j >= 0 and self.active[j]:
                    vetoed = True
            strong = False
            for j in act:
                if self.rows[j].row_id in d.alone and self.g[j] >= d.alone_at * self.rows[j].h:
                    strong = True
            on = core and (len(act) >= d.min_rows or strong) and not vetoed
            if on and d.kind not in self.raised:
                keep = 1.0
                ev = []
                for j in act:
                    c = self._confidence(j)
                    keep *= 1.0 - c
                    row = self.rows[j]
                    item = {"row": row.row_id, "signal": row.signal, "stat": row.stat,
                            "value": self.g[j], "threshold": row.h}
                    if self.last_z[j] is not None:
                        item["z"] = self.last_z[j]
                    if self.last_value[j] is not None:
                        item["signal_value"] = self.last_value[j]
                    ev.append(item)
                conf = 1.0 - keep
                self.raised[d.kind] = conf
                events.append({"event": "echem_alarm", "kind": d.kind,
                               "confidence": conf, "t_s": o.t_s, "evidence": ev})
            elif not on and d.kind in self.raised:
                del self.raised[d.kind]
                events.append({"event": "echem_alarm_cleared", "kind": d.kind, "t_s": o.t_s})
        return events

    def rebaseline(self):
        """Forget all baselines and statistics (new cell, or after an acknowledged fault)."""
        for name in self.base:
            b = self.base[name]
            b.restart()
            b.prev = None
        for j in range(len(self.rows)):
            self.g[j] = 0.0
            self.since[j] = None
            self.active[j] = False
            self.last_z[j] = None
        self.raised = {}
        self.ref_t = None


def voltage_noise_mv(buf, n, v_per_code):
    """RMS (mV) of a voltage block after removing its least-squares line: the platform's
    v_noise_mv from one ADC block at constant current (a filament's flicker shows here)."""
    sx = 0.0
    stx = 0.0
    for t in range(n):
        x = buf[t] * v_per_code
        sx += x
        stx += t * x
    tm = (n - 1) / 2.0
    stt = n * (n * n - 1) / 12.0
    slope = (stx - tm * sx) / stt
    mean = sx / n
    ss = 0.0
    for t in range(n):
        r = buf[t] * v_per_code - mean - slope * (t - tm)
        ss += r * r
    return 1000.0 * math.sqrt(ss / n)
