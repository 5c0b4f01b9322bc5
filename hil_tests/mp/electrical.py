"""The cell's small-signal response inside the rig process (bench only).

The plant (CPython) integrates the cell once per lockstep step, with the stage current the
firmware commanded at the step start. What the firmware plays *inside* a step -- an
impedance excitation written to the DAC sample by sample -- would reach the plant only at
the next step end, so the firmware would never see its own perturbation. This module
closes that gap by superposition. Around its operating point the cell is linear for small
signals, so each ADC conversion gets, on top of the plant's value, the response of the
cell's Foster network ``Z(s) = r0 + sum r_k / (1 + s tau_k)`` (sent by the bench in the
NETWORK message, reduced to a few relaxations per decade) to

    delta_i(t) = i_stage(t) - i_held

the difference between the current the V->I stage drives now and the one the plant holds
for this step. At every step end ``held`` makes the plant's current the reference again;
the states carry on, so a transient started inside a step decays across the next ones
exactly as in a linear cell.

Between DAC updates the current is constant, so the states advance exactly (ZOH). The
cell voltage of a conversion is the *average* over the conversion interval -- the ADC's
decimation filter averages both channels -- which makes V/I at a tone equal Z(f), not Z
with a half-sample lag. The current channel gets delta_i itself.

Cost: nothing while delta_i is 0 and the states have decayed (the common case under DC);
one pass over the relaxations per conversion otherwise, and while delta_i is 0 only over
those still charged: relaxations are kept slowest first and the fast tail, once below
its share of the quiet level, is zeroed and skipped (after an impedance block the slow
ones take minutes to decay, the fast ones milliseconds).
"""

import math
from array import array

_QUIET_V = 1e-10  # states below this (V) are zero: the path returns to its free case


class SmallSignalCell:
    def __init__(self, stage_current_a, conversion_period_ns, kv, ki):
        """``stage_current_a()``: the stage current commanded now (A), or None while
        the plant models the current itself (a PIO pulse train gates the stage).
        ``conversion_period_ns()``: the ADC's present conversion period.
        ``kv``: ADC volts per cell volt; ``ki``: ADC volts per cell amp (shunt)."""
        self._stage_current_a = stage_current_a
        self._conversion_period_ns = conversion_period_ns
        self.kv = kv
        self.ki = ki
        self.enabled = False
        self.r0_ohm = 0.0
        self.n = 0
        self.r_ohm = array("d")
        self.tau_s = array("d")
        self.x_v = array("d")  # voltage across each relaxation
        self.i_held_a = 0.0
        self.u_a = 0.0  # delta_i since t_ns
        self.t_ns = 0
        self.period_ns = 0
        self._a_t = array("d")  # exp(-T / tau) for one conversion period T
        self._g_t = array("d")  # tau / T * (1 - exp(-T / tau)): mean over one period
        self.active = False
        self.evaluations = 0
        # Relaxations 0 .. n_live-1 (slowest first) may be charged; the rest are zero.
        self.n_live = 0
        self._quiet_each_v = _QUIET_V

    # -- the bench side ------------------------------------------------------------------
    def set_network(self, now_ns, enabled, r0_ohm, r_ohm, tau_s):
        """New network (the cell's state moved): states carry over when the number of
        relaxations is unchanged (their time constants move slowly), else restart."""
        self._advance(now_ns)
        n = len(r_ohm)
        if n != self.n:
            self.x_v = array("d", [0.0] * n)
            self._a_t = array("d", [0.0] * n)
            self._g_t = array("d", [0.0] * n)
            self.n = n
            self.n_live = n
        # Slowest first (states carry over by rank of tau): the fast tail decays first.
        order = sorted(range(n), key=lambda k: -tau_s[k])
        self.r_ohm = array("d", [r_ohm[k] for k in order])
        self.tau_s = array("d", [tau_s[k] for k in order])
        self._quiet_each_v = _QUIET_V / n if n else _QUIET_V
        self.r0_ohm = r0_ohm
        self.enabled = bool(enabled)
        self.period_ns = 0  # recompute the one-period factors
        if not self.enabled:
            for k in range(n):
                self.x_v[k] = 0.0
            self.u_a = 0.0
            self.active = False

    def held(self, now_ns):
        """Step end: the plant takes the present stage current for the next step."""
        self._advance(now_ns)
        i = self._stage_current_a()
        if i is not None:
            self.i_held_a = i
        self.u_a = 0.0
        self._settle()

    def current_changed(self, now_ns):
        """The DAC or the range moved: delta_i changes from this instant."""
        if not self.enabled:
            return
        self._advance(now_ns)
        i = self._stage_current_a()
        self.u_a = 0.0 if i is None else i - self.i_held_a
        if self.u_a != 0.0:
            self.active = True
            self.n_live = self.n  # a drive charges every relaxation

    # -- the ADC hook --------------------------------------------------------------------
    def adjust(self, t_ns, v0, v1):
        """Channel inputs (ADC volts) of the conversion ending at ``t_ns``."""
        if not self.active:
            return v0, v1
        self.evaluations += 1
        u = self.u_a
        if t_ns <= self.t_ns:
            # A conversion replayed after a later DAC update (coalesced, unobserved).
            v = self.r0_ohm * u
            for k in range(self.n):
                v += self.x_v[k]
            return v0 + self.kv * v, v1 + self.ki * u
        period = self._period()
        start = t_ns - period
        if self.t_ns < start:
            self._advance(start)
        # Mean over [t_ns - seg, t_ns] with u held (the current changed at most at the
        # interval start, right after the previous conversion was read), then advance.
        seg_ns = t_ns - self.t_ns
        seg_s = seg_ns * 1e-9
        r = self.r_ohm
        tau = self.tau_s
        x = self.x_v
        one_period = seg_ns == period
        a_t = self._a_t
        g_t = self._g_t
        v = self.r0_ohm * u
        big = 0.0
        live = self.n if u != 0.0 else self.n_live
        for k in range(live):
            ru = r[k] * u
            d = x[k] - ru
            if one_period:
                a = a_t[k]
                g = g_t[k]
            else:
                a = math.exp(-seg_s / tau[k])
                g = tau[k] / seg_s * (1.0 - a)
            v += ru + d * g
            xk = ru + d * a
            x[k] = xk
            if xk > big:
                big = xk
            elif -xk > big:
                big = -xk
        self.t_ns = t_ns
        if u == 0.0:
            if big < _QUIET_V:
                self._settle()
            else:
                self._trim(live)
        return v0 + self.kv * v, v1 + self.ki * u

    # -- internals -----------------------------------------------------------------------
    def _period(self):
        # The factors for one conversion period are cached: nearly every evaluation
        # spans exactly one period.
        p = self._conversion_period_ns()
        if p != self.period_ns:
            self.period_ns = p
            t_s = p * 1e-9
            for k in range(self.n):
                a = math.exp(-t_s / self.tau_s[k])
                self._a_t[k] = a
                self._g_t[k] = self.tau_s[k] / t_s * (1.0 - a)
        return p

    def _advance(self, t_ns):
        dt_ns = t_ns - self.t_ns
        if dt_ns <= 0:
            return
        self.t_ns = t_ns
        if not self.active:
            return
        u = self.u_a
        dt_s = dt_ns * 1e-9
        r = self.r_ohm
        tau = self.tau_s
        x = self.x_v
        for k in range(self.n if u != 0.0 else self.n_live):
            ru = r[k] * u
            x[k] = ru + (x[k] - ru) * math.exp(-dt_s / tau[k])

    def _trim(self, live):
        """Zero the fast tail of decayed relaxations (each below its share of the quiet
        level, so together they are below it): later passes skip them."""
        x = self.x_v
        eps = self._quiet_each_v
        while live > 0 and -eps < x[live - 1] < eps:
            live -= 1
            x[live] = 0.0
        self.n_live = live

    def _settle(self):
        if self.u_a != 0.0:
            self.active = True
            return
        big = 0.0
        for k in range(self.n):
            xk = self.x_v[k]
            if xk > big:
                big = xk
            elif -xk > big:
                big = -xk
        if big < _QUIET_V:
            for k in range(self.n):
                self.x_v[k] = 0.0
            self.active = False
            self.n_live = 0
        else:
            self.active = True
            self._trim(self.n)
