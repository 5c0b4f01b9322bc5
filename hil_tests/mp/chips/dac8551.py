"""TI DAC8551 model: 16-bit voltage-output DAC with a 24-bit SPI-compatible input register.

Datasheet SBAS379 ("Serial Interface", "Input Shift Register", "SYNC Interrupt",
"Power-Down Modes").

* Input shift register (24 bits, MSB first): DB23..DB18 don't care, DB17..DB16 = PD1..PD0,
  DB15..DB0 = data. Data are clocked on SCLK falling edges (SPI mode 1, or mode 2); the DAC
  is updated on the 24th falling edge; further clocks while SYNC stays low are ignored.
* SYNC interrupt: SYNC (the chip select) taken high before the 24th falling edge aborts
  the write -- neither the DAC register nor the power-down mode changes
  (``aborted_writes`` counts them). The model sees whole bytes, so an abort shows after
  8 or 16 bits.
* VOUT = VREF x D / 65536 in normal mode. Power-down PD1..PD0: 01 -> 1 kOhm to GND,
  10 -> 100 kOhm to GND, 11 -> high impedance; VOUT reads 0 V and ``pd_mode`` records which.
* Power-on reset: code 0, normal mode, VOUT = 0 V. No read-back (there is no SDO pin): the
  host reads a floating MISO (0xFF).
"""

PD_NORMAL = 0
PD_1K = 1
PD_100K = 2
PD_HIZ = 3
PD_NAMES = ("normal", "1k_to_gnd", "100k_to_gnd", "hi_z")


class DAC8551:
    SPI_MODES = ((0, 1), (1, 0))  # input latched on the SCLK falling edge
    SPI_MAX_HZ = 30_000_000

    def __init__(self, vref_v=2.5):
        self.vref_v = vref_v
        self.code = 0
        self.pd_mode = PD_NORMAL
        self.writes = 0
        self.aborted_writes = 0
        self._bits = 0
        self._shift = 0
        self.on_update = None  # bench hook: called after each VOUT update (24th bit)

    @property
    def vout_v(self):
        if self.pd_mode != PD_NORMAL:
            return 0.0
        return self.vref_v * self.code / 65536

    @property
    def pd_name(self):
        return PD_NAMES[self.pd_mode]

    def spi_select(self):
        self._bits = 0
        self._shift = 0

    def spi_xfer(self, tx, rx):
        bits = self._bits
        for b in tx:
            if bits >= 24:
                break
            self._shift = (self._shift << 8) | b
            bits += 8
            if bits == 24:
                self.pd_mode = (self._shift >> 16) & 3
                self.code = self._shift & 0xFFFF
                self.writes += 1
                if self.on_update is not None:
                    self.on_update()
        self._bits = bits
        if rx is not None:
            for i in range(len(tx)):
                rx[i] = 0xFF

    def spi_deselect(self):
        if 0 < self._bits < 24:
            self.aborted_writes += 1
        self._bits = 0
