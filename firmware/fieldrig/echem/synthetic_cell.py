"""A synthetic Li|SE|Li cell behind the galvanostat stage and the ADS131M04, for the unix
board's plant mode and the firmware tests: R_b + (R_i || C) behind an open-circuit
voltage, optionally shunted by a filament R_f (an electronic path through the
electrolyte: a soft short). It answers the interfaces the rig uses: DAC
(``set_fraction``), range switch (``select``), ADC (``read_cell`` and the block read
``read_block_codes_into`` with ``cell_v_per_code``, ``cell_i_a_per_code``,
``data_rate_sps``). Not firmware: nothing imports it on a board.
"""

import math


class RcCell:
    """Galvanostat stage + cell. DAC (``set_fraction``), range switch (``select``), ADC
    (``read_cell``; blocks: ``read_block_codes_into`` with the ADS131M04's interface).

    The cell is R_b + (R_i || C) behind an open-circuit voltage, optionally shunted by
    a filament R_f (an electronic path through the electrolyte: a soft short). With
    r_int_ohm = 0 it is the plain resistor ``resistance_ohm`` (= R_b). ``read_cell`` is
    the quasi-static value (the RC has long settled at the loop rates); a block is
    simulated sample by sample at ``data_rate_sps``: the current ramps linearly from the
    previous DAC set-point to the new one over each sample period (a first-order hold:
    the stage's output filter) and the RC state is integrated exactly for that ramp, so
    an excitation written one set-point per sample gives the circuit's impedance to
    within (w T)^2 / 12."""

    # ADS131M04 at gain 1 behind the pico2w front end's 5:1 divider; the current channel
    # at gain 1 across 10 ohm (+-120 mA full scale, so every range fits).
    V_PER_CODE = 1.2 / 8388608 * 5.0
    A_PER_CODE = 1.2 / 8388608 / 10.0
    CODE_MAX = 8388607

    def __init__(self, ranges_ma=(0.01, 1.0, 100.0), ocv_v=0.0, resistance_ohm=20.0,
                 r_int_ohm=0.0, c_dl_f=0.0, filament_ohm=None, data_rate_sps=32000,
                 v_noise_v=0.0, i_noise_a=0.0, seed=1):
        self.ranges_ma = ranges_ma
        self.ocv_v = ocv_v
        self.resistance_ohm = resistance_ohm
        self.r_int_ohm = r_int_ohm
        self.c_dl_f = c_dl_f
        self.filament_ohm = filament_ohm
        self.data_rate_sps = data_rate_sps
        self.v_noise_v = v_noise_v
        self.i_noise_a = i_noise_a
        self._rng = seed & 0xFFFFFFFF or 1
        self.fraction = 0.0
        self.range_index = -1
        self.crc_errors = 0
        self.frames = 0
        self.v_c = 0.0  # voltage across R_i || C
        self._i_prev_a = None  # terminal current at the previous block sample
        self.log = []  # ("dac", x) / ("range", i): order matters for glitch-free switching

    def set_fraction(self, x):
        self.fraction = x
        if len(self.log) < 64:
            self.log.append(("dac", x))

    def select(self, index):
        self.range_index = index
        if len(self.log) < 64:
            self.log.append(("range", index))

    def current_ma(self):
        if self.range_index < 0:
            return 0.0
        return self.fraction * self.ranges_ma[self.range_index]

    # -- the circuit ----------------------------------------------------------------

    def _rc(self):
        """(K, tau): the RC state obeys dv_c/dt = (K i - v_c) / tau for terminal current
        i; with the filament, R_i sees the current the filament does not take."""
        rb = self.resistance_ohm
        ri = self.r_int_ohm
        rf = self.filament_ohm
        if rf is None:
            k = ri
            tau = ri * self.c_dl_f
        else:
            k = rf * ri / (ri + rf + rb)
            tau = self.c_dl_f * ri * (rf + rb) / (ri + rf + rb)
        return k, tau

    def _terminal_v(self, i_a, v_c):
        rb = self.resistance_ohm
        rf = self.filament_ohm
        v = rb * i_a + v_c
        if rf is not None:
            v = v * rf / (rf + rb)
        return self.ocv_v + v

    def impedance(self, f_hz):
        """The circuit's impedance at f_hz (complex): the tests' reference."""
        import cmath

        w = 2 * cmath.pi * f_hz
        z = complex(self.resistance_ohm, 0.0)
        if self.r_int_ohm > 0:
            z += self.r_int_ohm / complex(1.0, w * self.r_int_ohm * self.c_dl_f)
        if self.filament_ohm is not None:
            z = z * self.filament_ohm / (z + self.filament_ohm)
        return z

    def read_cell(self):
        i_ma = self.current_ma()
        k, _ = self._rc()
        self.frames += 1
        return self._terminal_v(i_ma / 1000.0, k * i_ma / 1000.0), i_ma

    # -- ADS131M04 block interface -------------------------------------------------

    def cell_v_per_code(self):
        return self.V_PER_CODE

    def cell_i_a_per_code(self):
        return self.A_PER_CODE

    def _gauss(self):
        # xorshift32 + Box-Muller: the same noise on every port for the same seed.
        u = []
        for _ in range(2):
            x = self._rng
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            self._rng = x
            u.append((x + 0.5) / 4294967296.0)
        return math.sqrt(-2.0 * math.log(u[0])) * math.cos(2.0 * math.pi * u[1])

    def _code(self, x, per_code):
        c = round(x / per_code)
        if c > self.CODE_MAX:
            return self.CODE_MAX
        if c < -self.CODE_MAX - 1:
            return -self.CODE_MAX - 1
        return c

    def read_block_codes_into(self, codes_v, codes_i, n, codes_ref=None):
        t = 1.0 / self.data_rate_sps
        k, tau = self._rc()
        i1 = self.current_ma() / 1000.0
        i0 = self._i_prev_a
        if i0 is None:
            i0 = i1
            self.v_c = k * i1  # first block: the DC state has long settled
        v_c = self.v_c
        a = 0.0
        ramp = 0.0
        if tau > 0:
            a = math.exp(-t / tau)
            ramp = tau / t * (1.0 - a)
        for j in range(n):
            if tau > 0:
                # Exact solution over one period for a current ramping i0 -> i1.
                v_c = a * v_c + k * (i1 - a * i0 - (i1 - i0) * ramp)
            else:
                v_c = k * i1
            v = self._terminal_v(i1, v_c)
            i = i1
            if self.v_noise_v:
                v += self.v_noise_v * self._gauss()
            if self.i_noise_a:
                i += self.i_noise_a * self._gauss()
            codes_v[j] = self._code(v, self.V_PER_CODE)
            codes_i[j] = self._code(i, self.A_PER_CODE)
            if codes_ref is not None:
                codes_ref[j] = 0
            i0 = i1
        self.v_c = v_c
        self._i_prev_a = i1
        self.frames += n
        return n
