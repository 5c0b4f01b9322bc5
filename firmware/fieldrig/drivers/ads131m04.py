"""TI ADS131M04 4-channel simultaneous-sampling 24-bit delta-sigma ADC.

Channels on the rig: cell voltage (through an attenuator), cell current (across a shunt)
and the reference electrode; the fourth is spare.

Datasheet: TI ADS131M04 (SBAS890), "Programming": "Interface" (SPI frames, word length),
"Commands" (opcodes and responses), "SPI CRC" (input and output CRC); "Register Map":

- SPI mode 1 (CPOL 0, CPHA 1), CS active low, up to 25 MHz. DRDY (active low) falls when
  a new set of conversions is ready.
- Every frame is 6 words. Out (DOUT): response word, 4 channel words, CRC word.
  In (DIN): command word, register data words (WREG only), input CRC word, zeros.
- Word length 16, 24 (default) or 32 bits (MODE.WLENGTH). Commands, responses, register
  data and CRC are 16 bits, MSB-aligned and zero-padded. Channel data: 24-bit two's
  complement (16-bit mode: its 16 MSBs; 32-bit: zero-padded LSBs or sign-extended MSBs).
- A command's response comes in the *next* frame. NULL 0x0000 -> STATUS; RESET 0x0011
  -> 0xFF24 (0xFF20 | channel count); STANDBY 0x0022, WAKEUP 0x0033, LOCK 0x0555,
  UNLOCK 0x0655 -> echoed; RREG 101a aaaa annn nnnn (a = 6-bit address, n = registers
  - 1) -> the register (one register); WREG 011a aaaa annn nnnn -> 010a aaaa ammm mmmm.
- CRC: CRC-CCITT, polynomial 0x1021, initial value 0xFFFF (MODE.CRC_TYPE = 0), over
  every byte of the words before the CRC word, padding included. The output CRC is in
  every frame; the input CRC is checked when MODE.RX_CRC_EN = 1 (a command with a bad
  CRC is not executed and STATUS.CRC_ERR is set). This driver always sends the input CRC,
  so enabling RX_CRC_EN changes nothing on the wire.
- Full scale: +-VREF / gain with VREF = 1.2 V, so one code is 1.2 V / gain / 2^23.
- Data rate: fDATA = fCLKIN / 2 / OSR (8.192 MHz CLKIN, high-resolution mode: 32 kSPS at
  OSR 128, 1 kSPS at OSR 4096).

Hot path: ``read_frame`` and ``read_block_codes_into`` use only preallocated buffers and
small ints: they allocate nothing. ``read_block_into`` stores volts and amps in
array('f') and creates one transient float per stored value (MicroPython boxes floats).
A frame whose output CRC fails is counted in ``crc_errors``, flagged (``last_frame_ok``
False; ``CODE_INVALID`` / NaN in block buffers) and its values are not used.
"""

import math
import time
from array import array

import micropython
from micropython import const

# -- commands ------------------------------------------------------------------------
CMD_NULL = const(0x0000)
CMD_RESET = const(0x0011)
CMD_STANDBY = const(0x0022)
CMD_WAKEUP = const(0x0033)
CMD_LOCK = const(0x0555)
CMD_UNLOCK = const(0x0655)
CMD_RREG = const(0xA000)
CMD_WREG = const(0x6000)
RSP_RESET = const(0xFF24)
RSP_WREG = const(0x4000)

# -- registers ------------------------------------------------------------------------
REG_ID = const(0x00)
REG_STATUS = const(0x01)
REG_MODE = const(0x02)
REG_CLOCK = const(0x03)
REG_GAIN1 = const(0x04)
REG_CFG = const(0x06)
REG_THRSHLD_MSB = const(0x07)
REG_THRSHLD_LSB = const(0x08)
REG_CH0_CFG = const(0x09)  # channel n: CFG 0x09 + 5n, OCAL_MSB +1, OCAL_LSB +2,
REG_CH_STRIDE = const(5)  # GCAL_MSB +3, GCAL_LSB +4
REG_REGMAP_CRC = const(0x3E)

STATUS_LOCK = const(1 << 15)
STATUS_F_RESYNC = const(1 << 14)
STATUS_REG_MAP = const(1 << 13)
STATUS_CRC_ERR = const(1 << 12)
STATUS_CRC_TYPE = const(1 << 11)
STATUS_RESET = const(1 << 10)
STATUS_DRDY_MASK = const(0x000F)

MODE_REGCRC_EN = const(1 << 13)
MODE_RX_CRC_EN = const(1 << 12)
MODE_CRC_TYPE_ANSI = const(1 << 11)
MODE_RESET = const(1 << 10)
MODE_WLENGTH_SHIFT = const(8)
MODE_TIMEOUT = const(1 << 4)
MODE_DRDY_SEL_SHIFT = const(2)
MODE_DRDY_HIZ = const(1 << 1)
MODE_DRDY_FMT_PULSE = const(1 << 0)
MODE_DEFAULT = const(0x0510)

WLENGTH_16 = const(0)
WLENGTH_24 = const(1)
WLENGTH_32_ZERO_PAD = const(2)
WLENGTH_32_SIGN_EXT = const(3)

CLOCK_CH_EN_SHIFT = const(8)  # CH0_EN bit 8 .. CH3_EN bit 11
CLOCK_TBM = const(1 << 5)
CLOCK_OSR_SHIFT = const(2)
PWR_VERY_LOW = const(0)
PWR_LOW = const(1)
PWR_HIGH_RES = const(2)
CLOCK_DEFAULT = const(0x0F0E)

CH_CFG_MUX_NORMAL = const(0)
CH_CFG_MUX_SHORTED = const(1)
CH_CFG_MUX_TEST_POS = const(2)
CH_CFG_MUX_TEST_NEG = const(3)

OSR_CODES = {128: 0, 256: 1, 512: 2, 1024: 3, 2048: 4, 4096: 5, 8192: 6, 16256: 7}
GAIN_CODES = {1: 0, 2: 1, 4: 2, 8: 3, 16: 4, 32: 5, 64: 6, 128: 7}
WORD_BYTES = (2, 3, 4, 4)  # by WLENGTH code

N_CHANNELS = const(4)
FRAME_WORDS = const(6)
VREF_V = 1.2
CODES_PER_FS = const(0x800000)  # 2^23 codes per +-full scale
CODE_INVALID = const(-0x1000000)  # outside the 24-bit range: 'no value' in code buffers
# Counters wrap below 2^30: beyond it a 32-bit port's int becomes a heap-allocated bigint
# (after 12 days of frames at 1 kSPS), and the hot path would start allocating.
COUNTER_MASK = const(0x3FFFFFFF)


def _crc_table():
    table = array("H", [0] * 256)
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table[i] = crc & 0xFFFF
    return table


_CRC_TABLE = _crc_table()


@micropython.native
def crc16_ccitt(buf, n, crc=0xFFFF):
    """CRC-CCITT (poly 0x1021, init 0xFFFF, MSB first) of buf[0:n]. Table-driven: the
    per-frame check is 15..20 table steps, not 120..160 bit steps."""
    table = _CRC_TABLE
    for i in range(n):
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ buf[i]) & 0xFF]
    return crc


def rreg_opcode(addr, count=1):
    return CMD_RREG | ((addr & 0x3F) << 7) | ((count - 1) & 0x7F)


def wreg_opcode(addr, count=1):
    return CMD_WREG | ((addr & 0x3F) << 7) | ((count - 1) & 0x7F)


def wreg_response(addr, count=1):
    return RSP_WREG | ((addr & 0x3F) << 7) | ((count - 1) & 0x7F)


def ch_cfg_reg(ch):
    return REG_CH0_CFG + REG_CH_STRIDE * ch


def ch_ocal_msb_reg(ch):
    return REG_CH0_CFG + REG_CH_STRIDE * ch + 1


def ch_gcal_msb_reg(ch):
    return REG_CH0_CFG + REG_CH_STRIDE * ch + 3


class ADS131M04:
    def __init__(self, spi, cs, drdy, sync_reset=None, word_length=WLENGTH_24, osr=4096,
                 power_mode=PWR_HIGH_RES, gains=(1, 1, 1, 1), rx_crc=True,
                 clkin_hz=8192000, ch_v=0, ch_i=1, ch_ref=2, cell_v_divider=1.0,
                 shunt_ohm=10.0, ref_v_divider=1.0):
        if word_length not in (WLENGTH_16, WLENGTH_24, WLENGTH_32_ZERO_PAD,
                               WLENGTH_32_SIGN_EXT):
            raise ValueError("word_length must be a WLENGTH_* code")
        if osr not in OSR_CODES:
            raise ValueError("osr must be one of %s" % sorted(OSR_CODES))
        if len(gains) != N_CHANNELS or any(g not in GAIN_CODES for g in gains):
            raise ValueError("gains: four of 1, 2, 4, ..., 128")
        if not shunt_ohm > 0:
            raise ValueError("shunt_ohm must be > 0")
        self._spi = spi
        self._cs = cs
        self._drdy = drdy
        self._sync_reset = sync_reset
        self.word_length = word_length
        self.osr = osr
        self.power_mode = power_mode
        self.gains = tuple(gains)
        self.rx_crc = rx_crc
        self.clkin_hz = clkin_hz
        self.ch_v = ch_v
        self.ch_i = ch_i
        self.ch_ref = ch_ref
        self.cell_v_divider = cell_v_divider
        self.shunt_ohm = shunt_ohm
        self.ref_v_divider = ref_v_divider
        # read_cell's scales (gains, divider and shunt are fixed once constructed).
        self._v_per_code = self.cell_v_per_code()
        self._ma_per_code = self.cell_i_a_per_code() * 1000.0
        self.data_rate_sps = clkin_hz // 2 // osr
        # DRDY must fall within a few data periods; beyond that the part is gone.
        self.drdy_timeout_us = 4 * 1000000 // self.data_rate_sps + 2000
        self._period_us = 1000000 // self.data_rate_sps
        # Wake this long before the next DRDY is due (wait_drdy): a few polls' latency in
        # seeing the edge plus 1.5 % of a period, against ~100 ppm between the clocks.
        self._drdy_guard_us = self._period_us // 64 + 20
        self._next_drdy_us = None  # ticks_us of the next DRDY minus the guard (None: unknown)
        self.codes = array("i", [0] * N_CHANNELS)
        self.status = 0
        self.response = 0
        self.frames = 0
        self.crc_errors = 0
        self.input_crc_errors = 0
        self.unexpected_resets = 0
        self.last_frame_ok = False
        self._bus_wlength = WLENGTH_24  # the part's word length now (24 after reset)
        self._buffers(WLENGTH_24)
        cs.value(1)
        if sync_reset is not None:
            sync_reset.value(1)  # SYNC/RESET low would hold the part in reset

    # -- frames ------------------------------------------------------------------------

    def _buffers(self, wlength):
        wb = WORD_BYTES[wlength]
        self._wb = wb
        self._bus_wlength = wlength
        n = FRAME_WORDS * wb
        self._rx = bytearray(n)
        self._tx_cmd = bytearray(n)
        # The NULL frame is constant: build it (with its input CRC) once per word length.
        self._tx_null = bytearray(n)
        self._fill_command(self._tx_null, CMD_NULL, ())
        self._crc_at = (1 + N_CHANNELS) * wb
        # Offset of the 24-bit MSB of channel 0's code, and the stride between channels.
        self._data_at = wb + (1 if wlength == WLENGTH_32_SIGN_EXT else 0)

    def _fill_command(self, tx, cmd, words):
        wb = self._wb
        for i in range(len(tx)):
            tx[i] = 0
        tx[0] = cmd >> 8
        tx[1] = cmd & 0xFF
        k = 1
        for w in words:
            tx[k * wb] = (w >> 8) & 0xFF
            tx[k * wb + 1] = w & 0xFF
            k += 1
        crc = crc16_ccitt(tx, k * wb)
        tx[k * wb] = crc >> 8
        tx[k * wb + 1] = crc & 0xFF

    def _exchange(self, tx):
        cs = self._cs
        cs.value(0)
        try:
            self._spi.write_readinto(tx, self._rx)
        finally:
            cs.value(1)
        self.frames = (self.frames + 1) & COUNTER_MASK
        rx = self._rx
        at = self._crc_at
        self.response = (rx[0] << 8) | rx[1]
        ok = crc16_ccitt(rx, at) == ((rx[at] << 8) | rx[at + 1])
        if not ok:
            self.crc_errors = (self.crc_errors + 1) & COUNTER_MASK
        self.last_frame_ok = ok
        return ok

    def _decode(self):
        rx = self._rx
        codes = self.codes
        wb = self._wb
        at = self._data_at
        if wb == 2:
            for ch in range(N_CHANNELS):
                code = (rx[at] << 8) | rx[at + 1]
                if code & 0x8000:
                    code -= 0x10000
                codes[ch] = code << 8  # 16-bit mode keeps the 16 MSBs: same scale
                at += 2
        else:
            for ch in range(N_CHANNELS):
                code = (rx[at] << 16) | (rx[at + 1] << 8) | rx[at + 2]
                if code & 0x800000:
                    code -= 0x1000000
                codes[ch] = code
                at += wb

    def wait_drdy(self):
        """Wait for DRDY low (new conversions). Raises OSError(ETIMEDOUT) when it does not
        come within ``drdy_timeout_us``.

        Back-to-back frames (a block) sleep through most of the data period before they
        poll: once a poll has seen DRDY fall, the next conversion is due one period later
        (CLKIN and the MCU share a time base to far better than the guard), so the wait
        sleeps until ``_drdy_guard_us`` before it and polls from there. The frames read
        are the same as with a pure poll; the CPU is free (and a virtual clock jumps)
        for the rest of the period."""
        drdy = self._drdy
        if drdy.value() == 0:
            self._next_drdy_us = None  # data was waiting: the conversion phase is unknown
            return
        start = time.ticks_us()
        nxt = self._next_drdy_us
        if nxt is not None:
            ahead = time.ticks_diff(nxt, start)
            if 0 < ahead < self._period_us:
                time.sleep_us(ahead)
        timeout = self.drdy_timeout_us
        while drdy.value():
            if time.ticks_diff(time.ticks_us(), start) > timeout:
                self._next_drdy_us = None
                raise OSError(110)  # ETIMEDOUT
        self._next_drdy_us = time.ticks_add(time.ticks_us(), self._period_us
                                            - self._drdy_guard_us)

    def read_frame(self):
        """Wait for DRDY, read one frame (NULL command) into ``codes``. Returns False,
        with ``codes`` unchanged, when the output CRC fails or the STATUS word shows the
        part reset itself (its gains and rate are then defaults: values would be wrong).
        Allocation-free."""
        self.wait_drdy()
        if not self._exchange(self._tx_null):
            return False
        status = self.response  # the previous frame was a NULL: this is STATUS
        self.status = status
        if status & STATUS_CRC_ERR:
            self.input_crc_errors = (self.input_crc_errors + 1) & COUNTER_MASK
        if status & STATUS_RESET:
            self.unexpected_resets = (self.unexpected_resets + 1) & COUNTER_MASK
            self.last_frame_ok = False
            return False
        self._decode()
        return True

    def read_block_codes_into(self, codes_v, codes_i, n, codes_ref=None):
        """n DRDY-paced frames into int buffers (array('i')): raw codes of the voltage,
        current and (optionally) reference channels; ``CODE_INVALID`` where a frame was
        rejected. Returns the number of good frames. Allocation-free."""
        good = 0
        codes = self.codes
        ch_v = self.ch_v
        ch_i = self.ch_i
        ch_ref = self.ch_ref
        for k in range(n):
            if self.read_frame():
                codes_v[k] = codes[ch_v]
                codes_i[k] = codes[ch_i]
                if codes_ref is not None:
                    codes_ref[k] = codes[ch_ref]
                good += 1
            else:
                codes_v[k] = CODE_INVALID
                codes_i[k] = CODE_INVALID
                if codes_ref is not None:
                    codes_ref[k] = CODE_INVALID
        return good

    def read_block_into(self, buf_v, buf_i, n, buf_ref=None):
        """n DRDY-paced frames into array('f') buffers: cell voltage (V), cell current
        (A) and optionally the reference electrode (V); NaN where a frame was rejected.
        Returns the number of good frames."""
        good = 0
        codes = self.codes
        v_scale = self.cell_v_per_code()
        i_scale = self.cell_i_a_per_code()
        r_scale = self.ref_v_per_code()
        nan = math.nan
        for k in range(n):
            if self.read_frame():
                buf_v[k] = codes[self.ch_v] * v_scale
                buf_i[k] = codes[self.ch_i] * i_scale
                if buf_ref is not None:
                    buf_ref[k] = codes[self.ch_ref] * r_scale
                good += 1
            else:
                buf_v[k] = nan
                buf_i[k] = nan
                if buf_ref is not None:
                    buf_ref[k] = nan
        return good

    def read_cell(self):
        """One DRDY-paced frame as (cell_voltage_v, cell_current_ma); (NaN, NaN) when the
        frame is rejected (CRC error or unexpected reset)."""
        if not self.read_frame():
            return math.nan, math.nan
        codes = self.codes
        return codes[self.ch_v] * self._v_per_code, codes[self.ch_i] * self._ma_per_code

    # -- scaling -------------------------------------------------------------------------

    def input_v_per_code(self, ch):
        """Volts at the ADC input per code on channel ch (full scale +-1.2 V / gain)."""
        return VREF_V / self.gains[ch] / CODES_PER_FS

    def cell_v_per_code(self):
        return self.input_v_per_code(self.ch_v) * self.cell_v_divider

    def cell_i_a_per_code(self):
        return self.input_v_per_code(self.ch_i) / self.shunt_ohm

    def ref_v_per_code(self):
        return self.input_v_per_code(self.ch_ref) * self.ref_v_divider

    # -- commands and registers ------------------------------------------------------------

    def _command(self, cmd, words=()):
        """Send cmd (+ data words) in one frame, then a NULL frame, whose response word is
        cmd's response. Raises OSError if either frame's output CRC fails."""
        self._fill_command(self._tx_cmd, cmd, words)
        ok = self._exchange(self._tx_cmd)
        if cmd == CMD_RESET:
            # The part is back to 24-bit words from the next frame on.
            self._buffers(WLENGTH_24)
            time.sleep_us(10)  # t_REGACQ >= 5 us before the next frame
        elif cmd == wreg_opcode(REG_MODE) and words:
            self._buffers((words[0] >> MODE_WLENGTH_SHIFT) & 3)
        ok = self._exchange(self._tx_null) and ok
        if not ok:
            raise OSError("ADS131M04 frame CRC error during command 0x%04x" % cmd)
        return self.response

    def read_reg(self, addr):
        return self._command(rreg_opcode(addr))

    def write_reg(self, addr, value):
        rsp = self._command(wreg_opcode(addr), (value & 0xFFFF,))
        if rsp != wreg_response(addr):
            raise OSError("ADS131M04 WREG 0x%02x not acknowledged (0x%04x)" % (addr, rsp))

    def _simple(self, cmd, expect):
        rsp = self._command(cmd)
        if rsp != expect:
            raise OSError("ADS131M04 command 0x%04x answered 0x%04x" % (cmd, rsp))

    def reset(self):
        """RESET command; the part must answer 0xFF24 (four channels)."""
        self._simple(CMD_RESET, RSP_RESET)

    def hard_reset(self):
        """Pulse SYNC/RESET low for > 2048 CLKIN periods (250 us at 8.192 MHz)."""
        pin = self._sync_reset
        if pin is None:
            raise OSError("no SYNC/RESET pin wired")
        pin.value(0)
        time.sleep_us(400)
        pin.value(1)
        time.sleep_us(10)
        self._buffers(WLENGTH_24)

    def standby(self):
        self._simple(CMD_STANDBY, CMD_STANDBY)

    def wakeup(self):
        self._simple(CMD_WAKEUP, CMD_WAKEUP)

    def lock(self):
        """Lock the registers: only NULL, UNLOCK and RREG are accepted afterwards."""
        self._simple(CMD_LOCK, CMD_LOCK)

    def unlock(self):
        self._simple(CMD_UNLOCK, CMD_UNLOCK)

    def mode_value(self):
        # RESET bit written 0: STATUS.RESET then reports any later (unexpected) reset.
        return ((MODE_RX_CRC_EN if self.rx_crc else 0) | MODE_TIMEOUT
                | (self.word_length << MODE_WLENGTH_SHIFT))

    def clock_value(self):
        return ((0xF << CLOCK_CH_EN_SHIFT) | (OSR_CODES[self.osr] << CLOCK_OSR_SHIFT)
                | self.power_mode)

    def gain1_value(self):
        value = 0
        for ch in range(N_CHANNELS):
            value |= GAIN_CODES[self.gains[ch]] << (4 * ch)
        return value

    def init(self):
        """Reset, identify, configure MODE / CLOCK / GAIN1, verify by reading them back.
        Raises OSError when the part does not answer as the datasheet says."""
        if self._sync_reset is not None:
            self.hard_reset()
        self.reset()
        ident = self.read_reg(REG_ID)
        if ident >> 8 != 0x24:  # reserved 0010b, CHANCNT 4
            raise OSError("ADS131M04 ID 0x%04x" % ident)
        for addr, value in ((REG_MODE, self.mode_value()), (REG_CLOCK, self.clock_value()),
                            (REG_GAIN1, self.gain1_value())):
            self.write_reg(addr, value)
            got = self.read_reg(addr)
            if got != value:
                raise OSError("ADS131M04 reg 0x%02x reads 0x%04x, wrote 0x%04x"
                              % (addr, got, value))
        self.crc_errors = 0
        self.input_crc_errors = 0
        self.unexpected_resets = 0

    def set_input_mux(self, ch, mux):
        """CHn_CFG.MUX: normal input, shorted (offset), or the +/- DC test signal."""
        cfg = self.read_reg(ch_cfg_reg(ch))
        self.write_reg(ch_cfg_reg(ch), (cfg & ~0x3) | (mux & 0x3))

    def set_offset_cal(self, ch, code):
        """CHn_OCAL (24-bit two's complement, subtracted from the conversion)."""
        code &= 0xFFFFFF
        self.write_reg(ch_ocal_msb_reg(ch), code >> 8)
        self.write_reg(ch_ocal_msb_reg(ch) + 1, (code & 0xFF) << 8)

    def set_gain_cal(self, ch, gain):
        """CHn_GCAL (24-bit unsigned, 0x800000 = 1.0): gain 0..2."""
        code = int(gain * 0x800000 + 0.5)
        if not 0 <= code <= 0xFFFFFF:
            raise ValueError("gain calibration must be 0..2")
        self.write_reg(ch_gcal_msb_reg(ch), code >> 8)
        self.write_reg(ch_gcal_msb_reg(ch) + 1, (code & 0xFF) << 8)
