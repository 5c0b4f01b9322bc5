"""Nuvoton NAU7802 24-bit bridge-sensor ADC: the load cell under the screw press.

Datasheet: Nuvoton NAU7802, "Power-On Sequence", "Calibration" and the
register map ("Register Descriptions"):

- I2C, 7-bit address 0x2A, up to 400 kHz; one register address byte then data; reads
  auto-increment (ADCO_B2, B1, B0 come in one 3-byte read).
- 0x00 PU_CTRL: RR (bit 0, register reset), PUD (1, power up digital), PUA (2, power up
  analog), PUR (3, power-up ready, read-only), CS (4, cycle start), CR (5, cycle ready,
  read-only), OSCS (6), AVDDS (7, 1 = AVDD from the internal LDO).
- 0x01 CTRL1: GAINS (2:0, x1..x128 as 0..7), VLDO (5:3, 4.5 V..2.4 V in 0.3 V steps as
  0..7), DRDY_SEL (6), CRP (7).
- 0x02 CTRL2: CALMOD (1:0: 00 internal offset, 10 system offset, 11 system gain), CALS
  (2, start; reads 1 until done), CAL_ERR (3), CRS (6:4: 10/20/40/80/320 SPS as
  0/1/2/3/7), CHS (7, 0 = channel 1).
- 0x12..0x14 ADCO_B2..B0: the conversion, 24-bit two's complement, MSB first.
- Power-on: RR = 1, then RR = 0 with PUD = 1, then PUA = 1; wait for PUR (about 200 us);
  then LDO, gain, rate, cycle start and an internal offset calibration (needed after
  power-up and after any gain, rate or channel change).

Force and stack pressure: force_n = (code - zero_offset_code) * n_per_code, with the
two-point calibration of the load cell (tare, then a known force); stack pressure
MPa = N / mm^2 over the cell's area. A reading at either rail of the 24-bit range
(0x7FFFFF, 0x800000) means the bridge signal is beyond full scale (overload, broken
bridge wire): it is counted and reported as NaN, never as a force.
"""

import math
import time

from micropython import const

I2C_ADDR = const(0x2A)

REG_PU_CTRL = const(0x00)
REG_CTRL1 = const(0x01)
REG_CTRL2 = const(0x02)
REG_OCAL1_B2 = const(0x03)
REG_GCAL1_B3 = const(0x06)
REG_I2C_CONTROL = const(0x11)
REG_ADCO_B2 = const(0x12)
REG_ADCO_B1 = const(0x13)
REG_ADCO_B0 = const(0x14)
REG_ADC = const(0x15)
REG_PGA = const(0x1B)
REG_POWER = const(0x1C)
REG_REVISION_ID = const(0x1F)

PU_RR = const(0x01)
PU_PUD = const(0x02)
PU_PUA = const(0x04)
PU_PUR = const(0x08)
PU_CS = const(0x10)
PU_CR = const(0x20)
PU_OSCS = const(0x40)
PU_AVDDS = const(0x80)

CTRL2_CALMOD_MASK = const(0x03)
CALMOD_INTERNAL_OFFSET = const(0x00)
CALMOD_SYSTEM_OFFSET = const(0x02)
CALMOD_SYSTEM_GAIN = const(0x03)
CTRL2_CALS = const(0x04)
CTRL2_CAL_ERR = const(0x08)
CTRL2_CHS = const(0x80)

GAIN_CODES = {1: 0, 2: 1, 4: 2, 8: 3, 16: 4, 32: 5, 64: 6, 128: 7}
LDO_CODES = {4.5: 0, 4.2: 1, 3.9: 2, 3.6: 3, 3.3: 4, 3.0: 5, 2.7: 6, 2.4: 7}
RATE_CODES = {10: 0, 20: 1, 40: 2, 80: 3, 320: 7}

CODE_POS_FULL_SCALE = const(0x7FFFFF)
CODE_NEG_FULL_SCALE = const(-0x800000)


class NAU7802:
    def __init__(self, i2c, addr=I2C_ADDR, gain=128, ldo_v=3.3, rate_sps=80, channel=1,
                 zero_offset_code=0.0, n_per_code=1.0, area_mm2=1.0):
        if gain not in GAIN_CODES:
            raise ValueError("gain must be 1, 2, 4, ..., 128")
        if ldo_v not in LDO_CODES:
            raise ValueError("ldo_v must be 2.4..4.5 in 0.3 V steps")
        if rate_sps not in RATE_CODES:
            raise ValueError("rate_sps must be 10, 20, 40, 80 or 320")
        if channel not in (1, 2):
            raise ValueError("channel must be 1 or 2")
        self._i2c = i2c
        self.addr = addr
        self.gain = gain
        self.ldo_v = ldo_v
        self.rate_sps = rate_sps
        self.channel = channel
        self.ctrl1 = (LDO_CODES[ldo_v] << 3) | GAIN_CODES[gain]
        self.ctrl2 = (RATE_CODES[rate_sps] << 4) | (CTRL2_CHS if channel == 2 else 0)
        self.zero_offset_code = zero_offset_code
        self.n_per_code = n_per_code
        self.area_mm2 = area_mm2
        self.saturated = False
        self.saturations = 0
        self._b1 = bytearray(1)
        self._b3 = bytearray(3)

    # -- register access -------------------------------------------------------------

    def read_reg(self, reg):
        self._i2c.readfrom_mem_into(self.addr, reg, self._b1)
        return self._b1[0]

    def write_reg(self, reg, value):
        b = self._b1
        b[0] = value
        self._i2c.writeto_mem(self.addr, reg, b)

    def _poll(self, reg, mask, want, max_polls, delay_us, what):
        for _ in range(max_polls):
            value = self.read_reg(reg)
            if value & mask == want:
                return value
            time.sleep_us(delay_us)
        raise OSError("NAU7802: timed out waiting for " + what)

    # -- set-up ----------------------------------------------------------------------

    def init(self, max_polls=100):
        """The datasheet power-on sequence, configuration and an internal offset
        calibration. Raises OSError when the part does not answer or calibrate."""
        self.write_reg(REG_PU_CTRL, PU_RR)  # reset every register
        self.write_reg(REG_PU_CTRL, PU_PUD)  # leave reset, power up digital
        self.write_reg(REG_PU_CTRL, PU_PUD | PU_PUA)  # power up analog
        self._poll(REG_PU_CTRL, PU_PUR, PU_PUR, max_polls, 100, "power-up ready (PUR)")
        self.write_reg(REG_CTRL1, self.ctrl1)  # LDO voltage and PGA gain
        self.write_reg(REG_PU_CTRL, PU_PUD | PU_PUA | PU_AVDDS)  # AVDD from the LDO
        self.write_reg(REG_CTRL2, self.ctrl2)  # rate and channel
        self.write_reg(REG_PU_CTRL, PU_PUD | PU_PUA | PU_AVDDS | PU_CS)  # start cycles
        self.calibrate(CALMOD_INTERNAL_OFFSET, max_polls)

    def calibrate(self, calmod=CALMOD_INTERNAL_OFFSET, max_polls=1000):
        """Run one on-chip calibration (CALMOD internal offset, system offset with the
        inputs at zero load, or system gain at full-scale load); waits for CALS to clear
        and raises OSError when CAL_ERR is set."""
        if calmod not in (CALMOD_INTERNAL_OFFSET, CALMOD_SYSTEM_OFFSET, CALMOD_SYSTEM_GAIN):
            raise ValueError("not a CALMOD value")
        self.write_reg(REG_CTRL2, self.ctrl2 | calmod | CTRL2_CALS)
        # A calibration takes a few conversion periods (tens of ms at 80 SPS).
        ctrl2 = self._poll(REG_CTRL2, CTRL2_CALS, 0, max_polls, 1000, "calibration (CALS)")
        if ctrl2 & CTRL2_CAL_ERR:
            raise OSError("NAU7802 calibration error (CAL_ERR)")

    # -- readings --------------------------------------------------------------------

    def data_ready(self):
        """True when a new conversion is waiting (PU_CTRL.CR)."""
        return bool(self.read_reg(REG_PU_CTRL) & PU_CR)

    def read_code(self):
        """The latest conversion, signed 24-bit. Sets ``saturated`` (and counts it) when
        it sits on either rail. Allocation-free."""
        b = self._b3
        self._i2c.readfrom_mem_into(self.addr, REG_ADCO_B2, b)
        code = (b[0] << 16) | (b[1] << 8) | b[2]
        if code & 0x800000:
            code -= 0x1000000
        sat = code >= CODE_POS_FULL_SCALE or code <= CODE_NEG_FULL_SCALE
        self.saturated = sat
        if sat:
            self.saturations = (self.saturations + 1) & 0x3FFFFFFF
        return code

    def wait_code(self, max_polls=100, delay_us=500):
        """Wait for cycle ready (CR), then read the conversion."""
        self._poll(REG_PU_CTRL, PU_CR, PU_CR, max_polls, delay_us, "conversion (CR)")
        return self.read_code()

    def force_n_for_code(self, code):
        return (code - self.zero_offset_code) * self.n_per_code

    def read_force_n(self):
        """Stack force in newtons from the latest conversion; NaN when saturated."""
        code = self.read_code()
        if self.saturated:
            return math.nan
        return self.force_n_for_code(code)

    def read_pressure_mpa(self):
        """Stack pressure (MPa = N/mm^2) over the cell area; NaN when saturated."""
        return self.read_force_n() / self.area_mm2

    # -- load-cell calibration ---------------------------------------------------------

    def _mean_code(self, n):
        total = 0
        for _ in range(n):
            total += self.wait_code()
            if self.saturated:
                raise OSError("NAU7802 saturated during calibration")
        return total / n

    def tare(self, n=16):
        """Zero point: mean of n conversions with no load becomes zero_offset_code."""
        self.zero_offset_code = self._mean_code(n)
        return self.zero_offset_code

    def calibrate_span(self, known_force_n, n=16):
        """Scale from n conversions under a known force (after ``tare``)."""
        delta = self._mean_code(n) - self.zero_offset_code
        if delta == 0:
            raise ValueError("no change in reading under the calibration force")
        self.n_per_code = known_force_n / delta
        return self.n_per_code
