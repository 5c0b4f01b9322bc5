"""Maxim MAX31865 RTD-to-digital converter: the cell temperature (PT100 or PT1000).

Datasheet: Maxim MAX31865, "Serial Interface", "Registers" (Table 1),
"Configuration Register", "Fault Status Register" (Table 7), "RTD Resistance
Register", "Fault Detection" and "Converting RTD Data Register Values to Temperature":

- SPI mode 1 or 3 (CPHA 1), up to 5 MHz, CS active low. The first byte is the register
  address: bit 7 = 0 reads (0x00..0x07), bit 7 = 1 writes (0x80..0x86); further bytes in
  the same CS-low period auto-increment the address.
- Registers: 0x00 configuration, 0x01/0x02 RTD MSB/LSB, 0x03/0x04 high fault threshold
  MSB/LSB, 0x05/0x06 low fault threshold MSB/LSB, 0x07 fault status.
- Configuration bits: D7 VBIAS on, D6 conversion mode auto, D5 1-shot, D4 3-wire,
  D3:D2 fault detection cycle control, D1 fault status clear, D0 50 Hz filter (0 = 60 Hz).
  The filter must not be changed while in auto conversion mode.
- RTD register: 15-bit ratio code in D15..D1, D0 = fault flag. R_RTD = code * R_REF / 2^15.
  The fault thresholds use the same 15-bit left-justified layout.
- Fault status: D7 RTD high threshold, D6 RTD low threshold, D5 REFIN- > 0.85 x VBIAS,
  D4 REFIN- < 0.85 x VBIAS (FORCE- open), D3 RTDIN- < 0.85 x VBIAS (FORCE- open),
  D2 overvoltage/undervoltage.

Temperature from resistance with the Callendar-Van Dusen equation (IEC 60751 coefficients):
R(T) = R0 (1 + A T + B T^2 + C (T - 100) T^3), where the C term applies below 0 degC only.
Above 0 degC the quadratic is solved exactly; below it, Newton steps on the full equation.
"""

import math

from micropython import const

REG_CONFIG = const(0x00)
REG_RTD_MSB = const(0x01)
REG_RTD_LSB = const(0x02)
REG_HFT_MSB = const(0x03)
REG_HFT_LSB = const(0x04)
REG_LFT_MSB = const(0x05)
REG_LFT_LSB = const(0x06)
REG_FAULT_STATUS = const(0x07)
WRITE = const(0x80)

CFG_VBIAS = const(0x80)
CFG_AUTO = const(0x40)
CFG_1SHOT = const(0x20)
CFG_3WIRE = const(0x10)
CFG_FAULT_CYCLE_MASK = const(0x0C)
CFG_FAULT_AUTO_DELAY = const(0x04)
CFG_FAULT_MANUAL_1 = const(0x08)
CFG_FAULT_MANUAL_2 = const(0x0C)
CFG_FAULT_CLEAR = const(0x02)
CFG_FILTER_50HZ = const(0x01)

FAULT_RTD_HIGH = const(0x80)
FAULT_RTD_LOW = const(0x40)
FAULT_REFIN_HIGH = const(0x20)
FAULT_REFIN_LOW_FORCE_OPEN = const(0x10)
FAULT_RTDIN_LOW_FORCE_OPEN = const(0x08)
FAULT_OVER_UNDER_VOLTAGE = const(0x04)

FAULT_NAMES = (
    (FAULT_RTD_HIGH, "rtd_high_threshold"),
    (FAULT_RTD_LOW, "rtd_low_threshold"),
    (FAULT_REFIN_HIGH, "refin_above_0.85_vbias"),
    (FAULT_REFIN_LOW_FORCE_OPEN, "refin_below_0.85_vbias_force_open"),
    (FAULT_RTDIN_LOW_FORCE_OPEN, "rtdin_below_0.85_vbias_force_open"),
    (FAULT_OVER_UNDER_VOLTAGE, "over_under_voltage"),
)

CODE_FULL_SCALE = const(32768)  # 2^15: R_RTD = code * R_REF / 2^15
CODE_MAX = const(0x7FFF)

# IEC 60751 Callendar-Van Dusen coefficients for platinum (alpha = 0.00385).
CVD_A = 3.9083e-3
CVD_B = -5.775e-7
CVD_C = -4.183e-12

# Auto-conversion period per filter (datasheet "Electrical Characteristics": 20 ms at
# 50 Hz, 16.7 ms at 60 Hz) and one-shot conversion time (62.5 ms / 52 ms).
AUTO_PERIOD_MS = {50: 20, 60: 17}
# From VBIAS + auto-conversion on to the first result (datasheet: about 66 ms at 50 Hz,
# 55 ms at 60 Hz, VBIAS settling included); until then RTD reads 0 (``read_code`` -1).
FIRST_CONVERSION_MS = const(70)
ONE_SHOT_MS = {50: 63, 60: 52}


def fault_names(status):
    """Names of the faults set in a fault status byte (empty tuple when none)."""
    return tuple(name for bit, name in FAULT_NAMES if status & bit)


def rtd_temperature_c(r_ohm, r0_ohm):
    """Temperature (degC) of a platinum RTD of nominal r0_ohm at resistance r_ohm."""
    ratio = r_ohm / r0_ohm
    # Quadratic branch (exact for T >= 0 degC): B T^2 + A T + (1 - ratio) = 0.
    disc = CVD_A * CVD_A - 4.0 * CVD_B * (1.0 - ratio)
    t = (-CVD_A + math.sqrt(disc)) / (2.0 * CVD_B) if disc >= 0.0 else -273.15
    if ratio >= 1.0:
        return t
    # Below 0 degC the C (T - 100) T^3 term matters (0.26 degC at -200 degC): Newton on
    # f(T) = 1 + A T + B T^2 + C (T - 100) T^3 - ratio, starting from the quadratic root.
    for _ in range(6):
        t2 = t * t
        f = 1.0 + CVD_A * t + CVD_B * t2 + CVD_C * (t - 100.0) * t2 * t - ratio
        df = CVD_A + 2.0 * CVD_B * t + CVD_C * (4.0 * t2 * t - 300.0 * t2)
        step = f / df
        t -= step
        if -1e-7 < step < 1e-7:
            break
    return t


def rtd_resistance_ohm(t_c, r0_ohm):
    """Resistance of a platinum RTD of nominal r0_ohm at t_c (Callendar-Van Dusen)."""
    r = 1.0 + CVD_A * t_c + CVD_B * t_c * t_c
    if t_c < 0.0:
        r += CVD_C * (t_c - 100.0) * t_c * t_c * t_c
    return r0_ohm * r


class MAX31865:
    def __init__(self, spi, cs, r_ref_ohm=430.0, r0_ohm=100.0, wires=3, filter_hz=50):
        if wires not in (2, 3, 4):
            raise ValueError("wires must be 2, 3 or 4")
        if filter_hz not in (50, 60):
            raise ValueError("filter_hz must be 50 or 60")
        self._spi = spi
        self._cs = cs
        self.r_ref_ohm = r_ref_ohm
        self.r0_ohm = r0_ohm
        self.wires = wires
        self.filter_hz = filter_hz
        # Configuration without the conversion-mode bits: 3-wire and filter selection.
        self._cfg_base = (CFG_3WIRE if wires == 3 else 0) | (
            CFG_FILTER_50HZ if filter_hz == 50 else 0)
        self.config = 0
        self.fault_status = 0
        self.faults = 0  # count of conversions that came back with the fault flag
        # One buffer pair per transfer length: slicing a buffer would allocate.
        self._tx2 = bytearray(2)
        self._rx2 = bytearray(2)
        self._tx3 = bytearray(3)
        self._rx3 = bytearray(3)
        self._tx5 = bytearray(5)
        self._rx5 = bytearray(5)
        cs.value(1)

    # -- register access -------------------------------------------------------------

    def _xfer(self, tx, rx):
        # One register access = one CS-low period (the address byte starts each access).
        cs = self._cs
        cs.value(0)
        try:
            self._spi.write_readinto(tx, rx)
        finally:
            cs.value(1)

    def read_reg(self, reg):
        tx = self._tx2
        tx[0] = reg
        tx[1] = 0
        self._xfer(tx, self._rx2)
        return self._rx2[1]

    def write_reg(self, reg, value):
        tx = self._tx2
        tx[0] = WRITE | reg
        tx[1] = value
        self._xfer(tx, self._rx2)

    def _write_config(self, cfg):
        self.write_reg(REG_CONFIG, cfg)
        # Fault-clear and 1-shot bits clear themselves in the part; don't remember them.
        self.config = cfg & ~(CFG_FAULT_CLEAR | CFG_1SHOT)

    # -- set-up ----------------------------------------------------------------------

    def init(self, low_ohm=None, high_ohm=None):
        """Configure for continuous conversion: filter first with conversions off (the
        datasheet forbids changing it in auto mode), then VBIAS + auto; set the fault
        thresholds; clear faults. Raises OSError when the part does not read back."""
        base = self._cfg_base
        self._write_config(base)
        self._write_config(base | CFG_VBIAS | CFG_AUTO)
        # Default thresholds bracket every real platinum reading (-200..850 degC is
        # 0.185..3.9 x R0): below 0.15 x R0 is a shorted RTD (low-threshold fault), above
        # 4 x R0 (or R_REF) an open one (high-threshold fault).
        if low_ohm is None:
            low_ohm = 0.15 * self.r0_ohm
        if high_ohm is None:
            high_ohm = min(4.0 * self.r0_ohm, self.r_ref_ohm)
        self.set_thresholds_ohm(low_ohm, high_ohm)
        self.clear_fault()
        got = self.read_reg(REG_CONFIG)
        if got != base | CFG_VBIAS | CFG_AUTO:
            raise OSError("MAX31865 config read back 0x%02x" % got)

    def code_for_ohm(self, r_ohm):
        code = int(r_ohm * CODE_FULL_SCALE / self.r_ref_ohm + 0.5)
        return 0 if code < 0 else (CODE_MAX if code > CODE_MAX else code)

    def set_thresholds_ohm(self, low_ohm, high_ohm):
        """Fault thresholds as resistances; conversions outside them flag a fault."""
        hi = self.code_for_ohm(high_ohm) << 1
        lo = self.code_for_ohm(low_ohm) << 1
        tx = self._tx5
        # One auto-incrementing write: 0x83 HFT MSB, HFT LSB, LFT MSB, LFT LSB.
        tx[0] = WRITE | REG_HFT_MSB
        tx[1] = hi >> 8
        tx[2] = hi & 0xFF
        tx[3] = lo >> 8
        tx[4] = lo & 0xFF
        self._xfer(tx, self._rx5)

    def clear_fault(self):
        """Clear the fault status. D5, D3 and D2 must be written as 0 with D1 = 1."""
        cfg = self.config & ~(CFG_1SHOT | CFG_FAULT_CYCLE_MASK)
        self._write_config(cfg | CFG_FAULT_CLEAR)
        self.fault_status = 0

    def run_fault_detection(self, max_polls=100):
        """Automatic-delay fault detection cycle (config 100X010Xb, conversions off);
        returns the fault status byte and restores the previous configuration."""
        previous = self.config
        self._write_config(CFG_VBIAS | CFG_FAULT_AUTO_DELAY | self._cfg_base)
        for _ in range(max_polls):
            if self.read_reg(REG_CONFIG) & CFG_FAULT_CYCLE_MASK == 0:
                break
        else:
            raise OSError("MAX31865 fault detection did not finish")
        status = self.read_reg(REG_FAULT_STATUS)
        self.fault_status = status
        self._write_config(previous)
        return status

    def start_one_shot(self):
        """Start a single conversion (needs VBIAS on; result after ONE_SHOT_MS)."""
        cfg = self._cfg_base | CFG_VBIAS
        self.write_reg(REG_CONFIG, cfg | CFG_1SHOT)
        self.config = cfg

    # -- readings --------------------------------------------------------------------

    def read_code(self):
        """The 15-bit RTD code, or -1 when the fault flag is set (``fault_status`` then
        holds the fault status register) or no conversion has finished yet (result 0,
        ``fault_status`` 0). Allocation-free when there is no fault."""
        tx = self._tx3
        rx = self._rx3
        tx[0] = REG_RTD_MSB
        tx[1] = 0
        tx[2] = 0
        self._xfer(tx, rx)
        raw = (rx[1] << 8) | rx[2]
        if raw == 0:
            # Before the first conversion after power-up (VBIAS settling + one auto
            # conversion, FIRST_CONVERSION_MS) the result registers read 0 (= -242 degC)
            # with no fault bit; a real element never converts to 0 without the fault
            # flag (a short trips the low threshold). No value, not a fault.
            return -1
        if raw & 1:
            self.faults = (self.faults + 1) & 0x3FFFFFFF
            self.fault_status = self.read_reg(REG_FAULT_STATUS)
            return -1
        return raw >> 1

    def fault(self):
        """The fault status register (FAULT_* bits; 0 = no fault). Reads the part."""
        self.fault_status = self.read_reg(REG_FAULT_STATUS)
        return self.fault_status

    def ohm_for_code(self, code):
        return code * self.r_ref_ohm / CODE_FULL_SCALE

    def temp_c_for_code(self, code):
        return rtd_temperature_c(self.ohm_for_code(code), self.r0_ohm)

    def read_resistance_ohm(self):
        """RTD resistance, NaN on a fault."""
        code = self.read_code()
        return math.nan if code < 0 else self.ohm_for_code(code)

    def read_temperature_c(self):
        """Cell temperature in degC, NaN on a fault (see ``fault_status``): NaN fails
        every comparison, so an interlock written as 'stop unless t < limit' trips.
        NaN with ``fault_status`` 0: no conversion yet (just after ``init``)."""
        code = self.read_code()
        return math.nan if code < 0 else self.temp_c_for_code(code)
