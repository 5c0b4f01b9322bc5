"""Maxim MAX31865 model: RTD-to-digital converter on SPI.

Datasheet 19-6478 (MAX31865), sections "Internal Registers", "Configuration Register",
"RTD Resistance Registers", "Fault Threshold Registers", "Fault Status Register",
"Serial Interface", "Decoding RTD and Cable Fault Conditions" (Tables 10-12).

* Registers 00h-07h: configuration (POR 00h), RTD MSB/LSB (00h), high fault threshold
  MSB/LSB (FFh), low fault threshold MSB/LSB (00h), fault status (00h). Read at address
  0Xh, write at 8Xh; the address auto-increments through a multi-byte transfer. Writes to
  read-only registers are ignored. SPI modes 1 and 3, SCLK up to 5 MHz.
* RTD data: 15-bit ratio code = R_rtd / R_ref x 2^15 (clipped at 7FFFh: an open element
  reads full scale), left-justified in 01h/02h with D0 of 02h = fault bit.
  A PT100 at 100 ohm with a 400 ohm reference gives 2000h, i.e. registers 40h 00h.
* Threshold faults on every conversion: D7 if code >= high threshold, D6 if code <= low
  threshold (threshold registers use the same left-justified format).
* Fault detection cycle (config D3:D2): 01 automatic (100 us delays, the bits self-clear),
  10/11 manual; it checks D5 REFIN- > 0.85 VBIAS (open RTD element), D4 REFIN- <
  0.85 VBIAS with FORCE- open, D3 RTDIN- < 0.85 VBIAS with FORCE- open; D2 over/under
  voltage is reported whenever an input is out of range. Status bits latch until
  config D1 (fault status clear, self-clearing) is written.
* Conversions: 1-shot (config D5, self-clearing) starts when CS goes high and takes 52 ms
  (60 Hz filter) / 62.5 ms (50 Hz); automatic mode (D6) converts every 16.7 ms / 20 ms
  (21 ms max). A conversion needs VBIAS (D7): without it the result is 0 (counted in
  ``conversions_without_vbias``) -- the RTD sees no excitation. DRDY goes low when a result
  is ready and high when the RTD registers are read.

Not modelled: 3-wire lead compensation (the bench gives the resistance the ADC sees),
VBIAS settling time, the 100 us timing of the manual fault cycle.
"""

from chips import ManualClock, _noop_drive

CONFIG = 0x00
RTD_MSB = 0x01
RTD_LSB = 0x02
HFT_MSB = 0x03
HFT_LSB = 0x04
LFT_MSB = 0x05
LFT_LSB = 0x06
FAULT_STATUS = 0x07

CFG_VBIAS = 0x80
CFG_AUTO = 0x40
CFG_1SHOT = 0x20
CFG_3WIRE = 0x10
CFG_FAULT_CYCLE = 0x0C
CFG_FAULT_CLEAR = 0x02
CFG_50HZ = 0x01

FAULT_HIGH = 0x80
FAULT_LOW = 0x40
FAULT_REFIN_HIGH = 0x20
FAULT_REFIN_LOW_FORCE_OPEN = 0x10
FAULT_RTDIN_LOW_FORCE_OPEN = 0x08
FAULT_OVUV = 0x04

T_1SHOT_60HZ_NS = 52_000_000
T_1SHOT_50HZ_NS = 62_500_000
T_AUTO_60HZ_NS = 16_700_000
T_AUTO_50HZ_NS = 20_000_000


class MAX31865:
    SPI_MODES = ((0, 1), (1, 1))  # modes 1 and 3
    SPI_MAX_HZ = 5_000_000

    def __init__(self, clock=None, rref_ohm=400.0):
        self.clock = clock if clock is not None else ManualClock()
        self.rref_ohm = rref_ohm
        self.rtd_ohm = 100.0  # None = open RTD element
        self.force_minus_open = False  # FORCE- lead broken
        self.overvoltage = False  # an input beyond VDD/GND
        self.regs = bytearray(8)
        self.regs[HFT_MSB] = 0xFF
        self.regs[HFT_LSB] = 0xFF
        self._drive_drdy = _noop_drive
        self.drdy_level = 1
        self._addr = None
        self._write = False
        self._start_1shot = False
        self._conv_done_ns = None
        self.conversions = 0
        self.conversions_without_vbias = 0

    def attach_drdy(self, drive):
        self._drive_drdy = drive
        drive(self.drdy_level)

    def _set_drdy(self, level):
        if level != self.drdy_level:
            self.drdy_level = level
            self._drive_drdy(level)

    # -- measurement ------------------------------------------------------------------
    def ratio_code(self):
        """15-bit conversion result for the present inputs (7FFFh for an open element)."""
        if self.rtd_ohm is None:
            return 0x7FFF
        code = int(self.rtd_ohm / self.rref_ohm * 32768 + 0.5)
        return max(0, min(0x7FFF, code))

    def _convert(self):
        regs = self.regs
        self.conversions += 1
        if regs[CONFIG] & CFG_VBIAS:
            code = self.ratio_code()
        else:
            code = 0
            self.conversions_without_vbias += 1
        hft = ((regs[HFT_MSB] << 8) | regs[HFT_LSB]) >> 1
        lft = ((regs[LFT_MSB] << 8) | regs[LFT_LSB]) >> 1
        fault = regs[FAULT_STATUS]
        if code >= hft:
            fault |= FAULT_HIGH
        if code <= lft:
            fault |= FAULT_LOW
        if self.overvoltage:
            fault |= FAULT_OVUV
        regs[FAULT_STATUS] = fault
        regs[RTD_MSB] = (code >> 7) & 0xFF
        regs[RTD_LSB] = ((code << 1) & 0xFE) | (1 if fault else 0)
        self._set_drdy(0)

    def _fault_cycle(self):
        fault = self.regs[FAULT_STATUS]
        if self.rtd_ohm is None:
            fault |= FAULT_REFIN_HIGH
        if self.force_minus_open:
            fault |= FAULT_REFIN_LOW_FORCE_OPEN | FAULT_RTDIN_LOW_FORCE_OPEN
        if self.overvoltage:
            fault |= FAULT_OVUV
        self.regs[FAULT_STATUS] = fault

    # -- virtual time ---------------------------------------------------------------------
    def next_event_ns(self):
        return self._conv_done_ns

    def on_event(self, now_ns):
        cfg = self.regs[CONFIG]
        self._convert()
        if cfg & CFG_AUTO:
            period = T_AUTO_50HZ_NS if cfg & CFG_50HZ else T_AUTO_60HZ_NS
            self._conv_done_ns = now_ns + period
        else:
            self._conv_done_ns = None
            self.regs[CONFIG] = cfg & ~CFG_1SHOT

    # -- SPI --------------------------------------------------------------------------------
    def spi_select(self):
        self._addr = None

    def spi_xfer(self, tx, rx):
        regs = self.regs
        for i in range(len(tx)):
            b = tx[i]
            out = 0x00
            if self._addr is None:
                self._write = bool(b & 0x80)
                self._addr = b & 0x7F
            else:
                a = self._addr
                if self._write:
                    if a == CONFIG:
                        self._write_config(b)
                    elif HFT_MSB <= a <= LFT_LSB:
                        regs[a] = b
                elif a < 8:
                    out = regs[a]
                    if a == RTD_LSB:
                        self._set_drdy(1)
                self._addr = a + 1
            if rx is not None:
                rx[i] = out

    def _write_config(self, value):
        regs = self.regs
        old = regs[CONFIG]
        if value & CFG_FAULT_CLEAR:
            regs[FAULT_STATUS] = 0
            regs[RTD_LSB] &= 0xFE
        cycle = value & CFG_FAULT_CYCLE
        if cycle:
            self._fault_cycle()
            if cycle == 0x04:  # automatic cycle: D3:D2 self-clear on completion
                value &= ~CFG_FAULT_CYCLE
        if value & CFG_1SHOT and not value & CFG_AUTO:
            self._start_1shot = True
        regs[CONFIG] = value & ~CFG_FAULT_CLEAR
        if value & CFG_AUTO and not old & CFG_AUTO:
            period = T_AUTO_50HZ_NS if value & CFG_50HZ else T_AUTO_60HZ_NS
            self._conv_done_ns = self.clock.now_ns + period
        elif not value & CFG_AUTO and old & CFG_AUTO:
            self._conv_done_ns = None

    def spi_deselect(self):
        if self._start_1shot:
            # The 1-shot conversion starts when CS goes high after the write.
            self._start_1shot = False
            t = T_1SHOT_50HZ_NS if self.regs[CONFIG] & CFG_50HZ else T_1SHOT_60HZ_NS
            self._conv_done_ns = self.clock.now_ns + t
        self._addr = None
