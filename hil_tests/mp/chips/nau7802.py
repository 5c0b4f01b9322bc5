"""Nuvoton NAU7802 model: 24-bit bridge-sensor ADC (load cell) on I2C address 2Ah.

Datasheet NAU7802 Rev 1.7: "Register Map", "Power-On Sequence", "Calibration"
(8.6: "ADC Output Value = Gain_Calibration x (ADC measurement - Offset_Calibration)",
8.6.3 "Calibration Error").

* Registers 00h-1Fh with power-on values; register pointer written first, reads and writes
  auto-increment. PU_CTRL (00h): RR, PUD, PUA, PUR (read-only), CS, CR (read-only), OSCS,
  AVDDS. CTRL1 (01h): GAINS (x1..x128), VLDO (4.5 V - 0.3 V x code), DRDY_SEL, CRP.
  CTRL2 (02h): CALMOD, CALS, CAL_ERR (read-only), CRS (10/20/40/80/320 SPS), CHS.
  OCAL1 03h-05h, GCAL1 06h-09h (1.0 = 00800000h), OCAL2 0Ah-0Ch, GCAL2 0Dh-10h,
  ADCO B2..B0 12h-14h (24-bit two's complement), revision ID 1Fh reads 0Fh.
* Power-up: RR=1 resets the registers; RR=0 + PUD=1 powers the digital core and PUR
  reads 1 after ``T_PUR_NS``; conversions run with PUD, PUA and CS set, one per 1/CRS.
  CR goes 1 when a result is ready and clears when ADCO B0 (14h) is read.
* Conversion: raw = round(Vin x gain / (0.5 x VREF) x 2^23) + intrinsic offset, VREF =
  LDO (AVDDS=1) or AVDD; output = GCAL x (raw - OCAL) / 2^23, saturated at -2^23 and
  2^23-1 (``saturations`` counts).
* Calibration (CALS=1, self-clearing after one conversion period): CALMOD 00 internal
  offset (measures the intrinsic offset), 10 system offset (present input -> OCAL),
  11 system gain (GCAL maps the present offset-corrected input to full scale). CAL_ERR
  is set when the gain would not fit (>= 256) or the corrected input is <= 0.

Not modelled: the temperature sensor, the PGA bypass/chopper registers (stored only),
conversion settling after a configuration change, I2C clock stretching.
"""

from chips import ManualClock, _noop_drive

PU_CTRL = 0x00
CTRL1 = 0x01
CTRL2 = 0x02
OCAL1_B2 = 0x03
GCAL1_B3 = 0x06
OCAL2_B2 = 0x0A
GCAL2_B3 = 0x0D
I2C_CONTROL = 0x11
ADCO_B2 = 0x12
ADCO_B1 = 0x13
ADCO_B0 = 0x14
ADC_CTRL = 0x15
PGA = 0x1B
PWR_CTRL = 0x1C
REVISION_ID = 0x1F

PU_RR = 0x01
PU_PUD = 0x02
PU_PUA = 0x04
PU_PUR = 0x08
PU_CS = 0x10
PU_CR = 0x20
PU_AVDDS = 0x80
CTRL2_CALS = 0x04
CTRL2_CAL_ERR = 0x08

ADDRESS = 0x2A
T_PUR_NS = 200_000  # power-up of the digital core (model value)
SPS = (10, 20, 40, 80, 10, 10, 10, 320)  # CRS codes; 100-110 are reserved
FULL = 1 << 23


def _default_regs():
    regs = bytearray(0x20)
    regs[GCAL1_B3 + 1] = 0x80  # GCAL1 = 0x00800000 (1.0)
    regs[GCAL2_B3 + 1] = 0x80
    regs[REVISION_ID] = 0x0F
    return regs


def _get24(regs, at):
    v = (regs[at] << 16) | (regs[at + 1] << 8) | regs[at + 2]
    return v - (1 << 24) if v & 0x800000 else v


def _put24(regs, at, value):
    value &= 0xFFFFFF
    regs[at] = value >> 16
    regs[at + 1] = (value >> 8) & 0xFF
    regs[at + 2] = value & 0xFF


class NAU7802:
    I2C_MAX_HZ = 400_000

    def __init__(self, clock=None, avdd_v=3.3):
        self.clock = clock if clock is not None else ManualClock()
        self.avdd_v = avdd_v
        self.vin_v = [0.0, 0.0]  # differential input of channel 1 and 2 (V)
        # A bridge excited from the reference (ratiometric load cell): when set, channel 1
        # sees bridge_v_per_v x VREF instead of vin_v[0].
        self.bridge_v_per_v = None
        self.intrinsic_offset_code = 0
        self.regs = _default_regs()
        self._ptr = 0
        self._pur_at_ns = None
        self._conv_at_ns = None
        self._cal_at_ns = None
        self._drive_drdy = _noop_drive
        self.conversions = 0
        self.saturations = 0

    def attach_drdy(self, drive):
        self._drive_drdy = drive
        self._update_drdy()

    def _update_drdy(self):
        ready = 1 if self.regs[PU_CTRL] & PU_CR else 0
        active_low = self.regs[CTRL1] & 0x80  # CRP
        self._drive_drdy(1 - ready if active_low else ready)

    # -- analog -------------------------------------------------------------------------
    def ref_v(self):
        if self.regs[PU_CTRL] & PU_AVDDS:
            return 4.5 - 0.3 * ((self.regs[CTRL1] >> 3) & 7)
        return self.avdd_v

    def gain(self):
        return 1 << (self.regs[CTRL1] & 7)

    def _channel(self):
        return (self.regs[CTRL2] >> 7) & 1

    def raw_code(self):
        ch = self._channel()
        if ch == 0 and self.bridge_v_per_v is not None:
            vin = self.bridge_v_per_v * self.ref_v()
        else:
            vin = self.vin_v[ch]
        return round(vin * self.gain() / (0.5 * self.ref_v()) * FULL) + self.intrinsic_offset_code

    def _cal_regs(self):
        return (OCAL2_B2, GCAL2_B3) if self._channel() else (OCAL1_B2, GCAL1_B3)

    def _gcal(self):
        regs = self.regs
        g = self._cal_regs()[1]
        return (regs[g] << 24) | (regs[g + 1] << 16) | (regs[g + 2] << 8) | regs[g + 3]

    def output_code(self):
        o_at, _ = self._cal_regs()
        code = ((self.raw_code() - _get24(self.regs, o_at)) * self._gcal()) >> 23
        if code > FULL - 1:
            self.saturations += 1
            return FULL - 1
        if code < -FULL:
            self.saturations += 1
            return -FULL
        return code

    def _period_ns(self):
        return 1_000_000_000 // SPS[(self.regs[CTRL2] >> 4) & 7]

    def _running(self):
        pu = self.regs[PU_CTRL]
        return pu & (PU_PUD | PU_PUA | PU_CS | PU_PUR) == PU_PUD | PU_PUA | PU_CS | PU_PUR

    # -- virtual time --------------------------------------------------------------------
    def next_event_ns(self):
        # No tuple to loop over: the board asks every source after each bus access.
        best = self._conv_at_ns
        t = self._pur_at_ns
        if t is not None and (best is None or t < best):
            best = t
        t = self._cal_at_ns
        if t is not None and (best is None or t < best):
            best = t
        return best

    def on_event(self, now_ns):
        regs = self.regs
        if self._pur_at_ns is not None and self._pur_at_ns <= now_ns:
            self._pur_at_ns = None
            regs[PU_CTRL] |= PU_PUR
            self._schedule()
        if self._cal_at_ns is not None and self._cal_at_ns <= now_ns:
            self._cal_at_ns = None
            self._calibrate()
        if self._conv_at_ns is not None and self._conv_at_ns <= now_ns:
            self._conv_at_ns = now_ns + self._period_ns()
            _put24(regs, ADCO_B2, self.output_code())
            regs[PU_CTRL] |= PU_CR
            self.conversions += 1
            self._update_drdy()

    def _schedule(self):
        if self._running():
            if self._conv_at_ns is None:
                self._conv_at_ns = self.clock.now_ns + self._period_ns()
        else:
            self._conv_at_ns = None

    def _calibrate(self):
        regs = self.regs
        o_at, g_at = self._cal_regs()
        mode = regs[CTRL2] & 3
        err = False
        if mode == 0:
            _put24(regs, o_at, self.intrinsic_offset_code)
        elif mode == 2:
            _put24(regs, o_at, self.raw_code())
        elif mode == 3:
            corrected = self.raw_code() - _get24(regs, o_at)
            if corrected <= 0:
                err = True
            else:
                gcal = (FULL - 1) * FULL // corrected
                if gcal >= 256 * FULL:
                    err = True
                else:
                    regs[g_at] = (gcal >> 24) & 0xFF
                    regs[g_at + 1] = (gcal >> 16) & 0xFF
                    regs[g_at + 2] = (gcal >> 8) & 0xFF
                    regs[g_at + 3] = gcal & 0xFF
        regs[CTRL2] &= ~(CTRL2_CALS | CTRL2_CAL_ERR) & 0xFF
        if err:
            regs[CTRL2] |= CTRL2_CAL_ERR

    # -- I2C --------------------------------------------------------------------------------
    def i2c_write(self, data):
        if not data:
            return 0
        self._ptr = data[0] & 0x1F
        for b in data[1:]:
            self._write_reg(self._ptr, b)
            self._ptr = (self._ptr + 1) & 0x1F
        return len(data)

    def _write_reg(self, addr, value):
        regs = self.regs
        if addr == PU_CTRL:
            if value & PU_RR:
                self.regs = regs = _default_regs()
                regs[PU_CTRL] = PU_RR
                self._pur_at_ns = None
                self._conv_at_ns = None
                self._cal_at_ns = None
                return
            old = regs[PU_CTRL]
            keep = old & (PU_PUR | PU_CR)
            regs[PU_CTRL] = (value & ~(PU_PUR | PU_CR) & 0xFF) | keep
            if value & PU_PUD and not old & PU_PUD:
                self._pur_at_ns = self.clock.now_ns + T_PUR_NS
            if not value & PU_PUD:
                regs[PU_CTRL] &= ~(PU_PUR | PU_CR) & 0xFF
                self._pur_at_ns = None
            self._schedule()
        elif addr == CTRL2:
            old_crs = regs[CTRL2] & 0x70
            regs[CTRL2] = (value & ~CTRL2_CAL_ERR & 0xFF) | (regs[CTRL2] & CTRL2_CAL_ERR)
            if value & 0x70 != old_crs and self._conv_at_ns is not None:
                self._conv_at_ns = self.clock.now_ns + self._period_ns()  # new rate
            if value & CTRL2_CALS:
                self._cal_at_ns = self.clock.now_ns + self._period_ns()
        elif addr in (ADCO_B2, ADCO_B1, ADCO_B0, REVISION_ID):
            return  # read-only
        else:
            regs[addr] = value
            if addr == CTRL1:
                self._update_drdy()

    def i2c_read(self, n):
        out = bytearray(n)
        regs = self.regs
        for i in range(n):
            a = self._ptr
            out[i] = regs[a]
            if a == ADCO_B0 and regs[PU_CTRL] & PU_CR:
                regs[PU_CTRL] &= ~PU_CR & 0xFF
                self._update_drdy()
            self._ptr = (a + 1) & 0x1F
        return out
