"""TI DAC8551 16-bit voltage-output DAC: the galvanostat set-point.

Datasheet: TI DAC8551 (SBAS429), "Serial Interface" and "Input Shift Register":

- 3-wire SPI (SYNC = chip select, active low; SCLK; DIN). DIN is sampled on the falling
  edge of SCLK: SPI mode 1 (CPOL 0, CPHA 1), MSB first, up to 30 MHz.
- One write is 24 bits: DB23..DB18 don't care (sent as 0), DB17..DB16 = PD1, PD0,
  DB15..DB0 = the DAC code, straight binary. The DAC updates on the 24th falling SCLK
  edge; raising SYNC earlier aborts the write (so CS stays low for exactly 3 bytes).
- "Power-Down Modes" (PD1, PD0): 00 normal, 01 output 1 kOhm to GND, 10 100 kOhm to
  GND, 11 high impedance.
- VOUT = VREF * D / 65536; at power-on the output is at zero scale.

Safe output: the rig's V->I stage is bipolar, so which output means "no current" is a
property of the stage, not of the DAC. The board passes ``safe_code`` (mid-scale for the
bipolar stage); without one, ``safe()`` powers the DAC down with 1 kOhm to GND.
"""

from micropython import const

PD_NORMAL = const(0)
PD_1K_TO_GND = const(1)
PD_100K_TO_GND = const(2)
PD_HIGH_Z = const(3)

CODE_MAX = const(0xFFFF)
CODES = const(65536)


class DAC8551:
    def __init__(self, spi, cs, vref_v=2.5, safe_code=None):
        if not vref_v > 0:
            raise ValueError("vref_v must be > 0")
        if safe_code is not None and not 0 <= safe_code <= CODE_MAX:
            raise ValueError("safe_code out of range")
        self._spi = spi
        self._cs = cs
        self.vref_v = vref_v
        self.safe_code = safe_code
        self._buf = bytearray(3)
        self.code = 0  # power-on reset value (zero scale)
        self.power_mode = PD_NORMAL
        cs.value(1)

    def _write(self, pd, code):
        buf = self._buf
        buf[0] = pd  # DB23..DB18 zero, DB17..DB16 = PD1, PD0
        buf[1] = code >> 8
        buf[2] = code & 0xFF
        self._cs.value(0)
        try:
            self._spi.write(buf)
        finally:
            self._cs.value(1)
        self.code = code
        self.power_mode = pd

    def set_code(self, code):
        """Write a 16-bit code in normal mode (leaves any power-down). Allocation-free."""
        if not 0 <= code <= CODE_MAX:
            raise ValueError("DAC code out of range")
        self._write(PD_NORMAL, code)

    def code_for_voltage(self, v):
        """Nearest code for output voltage v, clamped to the DAC's range 0..65535."""
        if not v > 0.0:  # also NaN: the bottom of the range rather than an exception
            return 0
        code = int(v * CODES / self.vref_v + 0.5)
        return CODE_MAX if code > CODE_MAX else code

    def set_voltage(self, v):
        """Set the output to v volts (clamped to 0..VREF*65535/65536); returns the code."""
        code = self.code_for_voltage(v)
        self._write(PD_NORMAL, code)
        return code

    def code_for_fraction(self, x):
        """Code for a bipolar fraction x of full scale, -1..1 about mid-scale (clamped;
        NaN gives mid-scale, which is zero current on the bipolar stage)."""
        if not -1.0 < x:  # also NaN
            return 0x8000 if x != x else 0
        if x >= 1.0:
            return CODE_MAX
        code = 0x8000 + int(x * 0x8000 + (0.5 if x >= 0.0 else -0.5))
        return CODE_MAX if code > CODE_MAX else code

    def set_fraction(self, x):
        """Set a bipolar set-point: x in -1..1 of the V->I stage's full scale, 0 at
        mid-scale (code 0x8000). Returns the code written."""
        code = self.code_for_fraction(x)
        self._write(PD_NORMAL, code)
        return code

    def voltage(self):
        """The output voltage the present code gives (normal mode)."""
        return self.code * self.vref_v / CODES

    def power_down(self, mode=PD_1K_TO_GND):
        """Enter a power-down mode (PD_1K_TO_GND, PD_100K_TO_GND or PD_HIGH_Z)."""
        if mode not in (PD_1K_TO_GND, PD_100K_TO_GND, PD_HIGH_Z):
            raise ValueError("not a power-down mode")
        self._write(mode, 0)

    def safe(self):
        """Drive the output to the state that means 'no cell current' for this rig."""
        if self.safe_code is None:
            self.power_down(PD_1K_TO_GND)
        else:
            self._write(PD_NORMAL, self.safe_code)
