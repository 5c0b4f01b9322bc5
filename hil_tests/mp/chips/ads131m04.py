"""TI ADS131M04 model: 4-channel simultaneous-sampling 24-bit delta-sigma ADC on SPI.

Datasheet SBAS890 (ADS131M04); section and table numbers below refer to it (cross-checked
against the ADS131M0x family pages; where unsure, the section title is given).

Covered
* SPI frames (§8.5.1): every frame is words of 16/24/32 bits (MODE.WLENGTH, "Word Length").
  Output frame = response word + 4 channel words + CRC word; input frame = command word
  (+ WREG data words) + CRC word, padded with zeros. The response to a command appears in
  the *next* frame ("Commands"). Commands and responses are 16 bits, MSB-aligned in a word.
* Commands (Table 8-11): NULL 0000h -> STATUS, RESET 0011h -> FF24h (only when a full
  frame is clocked, else the response is 0011h), STANDBY 0022h, WAKEUP 0033h, LOCK 0555h,
  UNLOCK 0655h (echoed), RREG 101a_aaaa_annn_nnnn (one register -> its contents; several
  -> ack 111a_aaaa_annn_nnnn + the registers + CRC and no ADC data in that frame), WREG
  011a_aaaa_annn_nnnn (-> 010a_aaaa_ammm_mmmm). Invalid commands give the NULL response.
  While locked only NULL, UNLOCK and RREG are accepted.
* Register map with reset values (Table 8-12): ID 24xxh, STATUS 0500h, MODE 0510h,
  CLOCK 0F0Eh, GAIN 0000h, CFG 0600h, THRSHLD 0, CHn_CFG 0, CHn_OCAL 0, CHn_GCAL 800000h,
  REGMAP_CRC. ID, STATUS and REGMAP_CRC are read-only; MODE.RESET clears by writing 0.
* CRC (§8.3.12): output CRC word on every frame over all preceding bytes of the frame,
  CRC-16-CCITT (seed FFFFh) or ANSI (MODE.CRC_TYPE). Input CRC checked when
  MODE.RX_CRC_EN = 1: a mismatch drops the command and sets STATUS.CRC_ERR.
* Conversions (§8.3.5/§8.3.7): data rate fCLKIN / 2 / OSR (CLOCK.OSR, TBM turbo at OSR 64),
  i.e. 8.192 MHz -> OSR 128: 32 kSPS ... OSR 1024: 4 kSPS. Code = round(V x gain / 1.2 V x
  2^23) clipped to the 24-bit rails (counted per channel in ``rail_clips``), then
  offset/gain calibration (§8.3.11: (code - OCAL) x GCAL / 2^23), input MUX (shorted, DC
  test signals 2/15 of full scale, §8.3.9), CLOCK.CHn_EN. Data words by WLENGTH: 16-bit
  truncated, 24-bit, 32-bit zero-padded, 32-bit sign-extended.
* DRDY ("DRDY" pin description): falls when a conversion completes; rises when all channel data of a
  frame have been shifted out; if data were not read it pulses high before the next fall;
  MODE.DRDY_FMT = 1 gives a short low pulse instead. Unread conversions are held two deep
  (§8.5.1.9.1: read two frames after a pause); older ones are dropped (``samples_lost``).
* SYNC/RESET pin (§8.4.1.2): a low pulse of >= 2048 CLKIN periods resets the device, a
  shorter one resynchronises the conversions.
* Block acquisition for the bench: ``load_block_v`` queues arrays of channel voltages; each
  conversion consumes one sample, then the inputs hold the last block value.

Not modelled: digital filter settling and group delay (data are the instantaneous input),
phase calibration, global chop, current-detect mode, DC block filter, SPI timeout,
operation with CS tied low (frames are delimited by CS), noise.

Faults: ``corrupt_crc(n)`` flips bits of the output CRC of the next n frames.

Coalescing (opt-in, ``coalesce = True``; the lockstep bench uses it): while two unread
conversions are buffered, DRDY is low in level mode and nobody watches its edges
(``drdy_observed()`` false: no IRQ handler), further conversions change nothing a reader
can see except *which* two are buffered. The model then schedules no events and
``sync()`` -- called on every chip select, block load and input change -- replays the
skipped conversions at once: counters, block position and the two buffered results are
exactly those of converting one by one; only ``rail_clips`` does not count conversions
that were never buffered. At 1 kSPS and one read per 10 ms this turns ten events per read
into one.

Lazy results: a conversion takes its inputs (block value, static inputs) at its instant,
but its codes -- the bench's input hook, gain, rails, calibration -- are worked out only
when a frame reads it, or before anything they depend on changes (``materialize``: a
register write, the stage current or the hook moving; the wiring calls it). Most buffered
results are pushed out unread by newer ones (two of the three per read at 1 kSPS and one
read per 10 ms) and cost nothing. Results and counters are those of converting at once;
``rail_clips`` counts the results worked out.
"""

from chips import ManualClock, _noop_drive
from chips.crc import ANSI_TABLE, CCITT_TABLE, crc16

# Registers (Table 8-12)
ID = 0x00
STATUS = 0x01
MODE = 0x02
CLOCK = 0x03
GAIN = 0x04
CFG = 0x06
THRSHLD_MSB = 0x07
THRSHLD_LSB = 0x08
CH0_CFG = 0x09  # CHn_CFG = 09h + 5n; then OCAL_MSB, OCAL_LSB, GCAL_MSB, GCAL_LSB
REGMAP_CRC = 0x3E

# Commands (Table 8-11)
CMD_NULL = 0x0000
CMD_RESET = 0x0011
CMD_STANDBY = 0x0022
CMD_WAKEUP = 0x0033
CMD_LOCK = 0x0555
CMD_UNLOCK = 0x0655
RSP_RESET = 0xFF24
RSP_RESET_INCOMPLETE = 0x0011

N_CH = 4
FULL_SCALE = 1 << 23
CODE_MAX = FULL_SCALE - 1
CODE_MIN = -FULL_SCALE
TEST_SIGNAL_CODE = (2 * FULL_SCALE + 7) // 15  # 2/15 of full scale (§8.3.9)
_OSR = (128, 256, 512, 1024, 2048, 4096, 8192, 16256)
_WRITABLE = set(range(CH0_CFG, CH0_CFG + 5 * N_CH))
for _a in (MODE, CLOCK, GAIN, CFG, THRSHLD_MSB, THRSHLD_LSB):
    _WRITABLE.add(_a)


def _reset_values(id_low):
    regs = [0] * 64
    regs[ID] = 0x2400 | (id_low & 0xFF)
    regs[MODE] = 0x0510
    regs[CLOCK] = 0x0F0E
    regs[CFG] = 0x0600
    for ch in range(N_CH):
        regs[CH0_CFG + 5 * ch + 3] = 0x8000  # GCAL_MSB: gain 1.0 = 800000h
    return regs


class ADS131M04:
    SPI_MODES = ((0, 1),)  # §8.5.1: SCLK idles low, DIN latched on the falling edge
    SPI_MAX_HZ = 25_000_000  # §6.6: tc(SC) >= 40 ns
    VREF_V = 1.2

    def __init__(self, clock=None, clkin_hz=8_192_000, id_low=0x00):
        self.clock = clock if clock is not None else ManualClock()
        self.clkin_hz = clkin_hz
        self.id_low = id_low
        self._drive_drdy = _noop_drive
        self.drdy_level = 1
        self.inputs_v = [0.0] * N_CH
        self._block = None
        self._block_i = 0
        self._block_n = 0
        self._out = bytearray(4 * 70)
        self._in = bytearray(4 * 70)
        self._crc_corrupt = 0
        self._sync_low_ns = None
        # counters the bench can read
        self.samples_converted = 0
        self.samples_read = 0
        self.samples_lost = 0
        self.frames = 0
        self.block_underruns = 0
        self.rail_clips = [0] * N_CH
        self.rx_crc_errors = 0
        self.coalesce = False
        self.drdy_observed = None  # callable: True when DRDY edges have an observer
        # Bench hook ``fn(t_ns, v0, v1) -> (v0, v1)``: moves the channel 0/1 inputs of a
        # conversion at its instant (the in-rig small-signal cell, docs/hil.md). None: off.
        self.input_hook = None
        self._power_on()

    # -- bench side -------------------------------------------------------------------
    def attach_drdy(self, drive):
        """``drive(level)`` puts the DRDY output on a pin (machine.BENCH.driver_for)."""
        self._drive_drdy = drive
        drive(self.drdy_level)

    def set_inputs_v(self, volts):
        """Static differential input voltages of the 4 channels (V)."""
        self.sync()
        for ch in range(N_CH):
            self.inputs_v[ch] = float(volts[ch])

    def load_block_v(self, channels):
        """Queue one voltage per conversion: ``channels`` = 4 equal-length sequences (V).
        Replaces any block not yet consumed."""
        self.sync()
        n = len(channels[0])
        for c in channels:
            if len(c) != n:
                raise ValueError("channel arrays differ in length")
        self._block = channels
        self._block_i = 0
        self._block_n = n

    def block_remaining(self):
        self.sync()
        return self._block_n - self._block_i if self._block is not None else 0

    def corrupt_crc(self, frames):
        """Fault injection: the output CRC of the next ``frames`` frames is wrong."""
        self._crc_corrupt = frames

    def reg(self, addr):
        self.sync()
        if addr == STATUS:
            return self._status()
        if addr == REGMAP_CRC:
            return self._regmap_crc()
        return self._regs[addr]

    @property
    def word_bytes(self):
        return self._ws

    @property
    def data_rate_hz(self):
        return self.clkin_hz / 2 / self._osr()

    @property
    def standby(self):
        return self._standby

    @property
    def locked(self):
        return self._locked

    def code_to_v(self, code, ch=0):
        """Inverse of the conversion for a channel's current gain (bench helper)."""
        return code * self.VREF_V / self._gain(ch) / FULL_SCALE

    # -- internal state ------------------------------------------------------------------
    def _power_on(self):
        self._regs = _reset_values(self.id_low)
        self._locked = False
        self._standby = False
        self._crc_err = False
        self._fifo = []
        self._latest = (0, 0, 0, 0)  # codes (4-tuple) or a pending result (t_ns, v0..v3)
        self._selected = False
        self._pos = 0
        self._in_len = 0
        self._out_len = 0
        self._data_end = 0
        self._frame_sample = False
        self._pending = RSP_RESET  # first response after power-up/reset (§8.4.1)
        self._apply_config()
        self._next_conv_ns = self.clock.now_ns + self._period_ns
        self._set_drdy(1)

    def _apply_config(self):
        regs = self._regs
        wl = (regs[MODE] >> 8) & 3
        self._wlength = wl
        self._ws = (2, 3, 4, 4)[wl]
        self._crc_table = ANSI_TABLE if regs[MODE] & 0x0800 else CCITT_TABLE
        self._rx_crc = bool(regs[MODE] & 0x1000)
        self._drdy_pulse = bool(regs[MODE] & 0x0001)
        self._period_ns = int(self._osr() * 2 * 1_000_000_000 // self.clkin_hz)
        self._k = [self._gain(ch) / self.VREF_V * FULL_SCALE for ch in range(N_CH)]
        self._enabled = (regs[CLOCK] >> 8) & 0xF
        cal = False
        for ch in range(N_CH):
            base = CH0_CFG + 5 * ch
            if regs[base] & 3 or regs[base + 1] or regs[base + 2] & 0xFF00:
                cal = True
            if regs[base + 3] != 0x8000 or regs[base + 4] & 0xFF00:
                cal = True
        self._cal_or_mux = cal

    def _osr(self):
        clk = self._regs[CLOCK]
        code = (clk >> 2) & 7
        if code == 0 and clk & 0x20:  # TBM: OSR 64 (64 kSPS at 8.192 MHz)
            return 64
        return _OSR[code]

    def _gain(self, ch):
        return 1 << ((self._regs[GAIN] >> (4 * ch)) & 7)

    def _status(self):
        mode = self._regs[MODE]
        st = mode & 0x0F00  # CRC_TYPE, RESET, WLENGTH mirror MODE
        if self._locked:
            st |= 0x8000
        if self._crc_err:
            st |= 0x1000
        if self._fifo:
            st |= self._enabled
        return st

    def _regmap_crc(self):
        buf = bytearray()
        for a in range(MODE, CH0_CFG + 5 * N_CH):
            buf.append(self._regs[a] >> 8)
            buf.append(self._regs[a] & 0xFF)
        return crc16(buf, table=self._crc_table)

    def _set_drdy(self, level):
        if level != self.drdy_level:
            self.drdy_level = level
            self._drive_drdy(level)

    # -- conversions (virtual time) -----------------------------------------------------------
    def next_event_ns(self):
        if self._standby or not self._enabled:
            return None
        if self.coalesce and self._dormant():
            return None  # conversions go on; sync() replays them when someone looks
        return self._next_conv_ns

    def _dormant(self):
        if len(self._fifo) < 2 or self._drdy_pulse or self.drdy_level != 0:
            return False
        obs = self.drdy_observed
        return obs is None or not obs()

    def sync(self):
        """Replay the conversions due up to now that coalescing skipped (no-op otherwise:
        without coalescing none is ever overdue)."""
        if not self.coalesce or self._standby or not self._enabled:
            return
        now = self.clock.now_ns
        t = self._next_conv_ns
        if t > now:
            return
        period = self._period_ns
        k = (now - t) // period + 1
        if k > 2:
            # Only the last two can still be in the buffer: the others just move the
            # block and the counters (each one pushed the oldest buffered result out).
            skip = k - 2
            self._skip(skip)
            self._next_conv_ns = t + skip * period
        while self._next_conv_ns <= now:
            self.on_event(self._next_conv_ns, True)

    def _skip(self, n):
        self.samples_converted += n
        self.samples_lost += n
        blk = self._block
        if blk is None:
            return
        left = self._block_n - self._block_i
        used = n if n < left else left
        if used > 0:
            self._block_i += used
            if self._block_i == self._block_n:
                last = self._block_n - 1
                for ch in range(N_CH):
                    self.inputs_v[ch] = blk[ch][last]
        if n > used:
            self.block_underruns += n - used

    def on_event(self, now_ns, replay=False):
        self._next_conv_ns += self._period_ns
        result = self._sample(now_ns)
        fifo = self._fifo
        if len(fifo) >= 2:
            fifo.pop(0)
            self.samples_lost += 1
        fifo.append(result)
        self._latest = result
        self.samples_converted += 1
        if replay and self.drdy_level == 0 and not self._drdy_pulse:
            return  # coalesced: DRDY stays low, its unwatched high pulse changes nothing
        if self._drdy_pulse:
            self._set_drdy(0)
            self._set_drdy(1)
        else:
            self._set_drdy(1)  # high pulse ahead of the edge when data were left unread
            self._set_drdy(0)

    def materialize(self):
        """Work out every pending result now (before its inputs' meaning changes)."""
        fifo = self._fifo
        for k in range(len(fifo)):
            self._result(k)
        self._latest_codes()

    def _latest_codes(self):
        if len(self._latest) == 5:
            self._latest = self._codes(self._latest)
        return self._latest

    def _result(self, k):
        """Codes of buffered result k, worked out on first use."""
        entry = self._fifo[k]
        if len(entry) == 4:
            return entry
        codes = self._codes(entry)
        self._fifo[k] = codes
        if self._latest is entry:
            self._latest = codes
        return codes

    def _sample(self, t_ns):
        """The conversion's inputs at its instant (the block advances): (t_ns, v0..v3)."""
        blk = self._block
        if blk is not None and self._block_i < self._block_n:
            i = self._block_i
            self._block_i = i + 1
            v0 = blk[0][i]
            v1 = blk[1][i]
            v2 = blk[2][i]
            v3 = blk[3][i]
            if self._block_i == self._block_n:
                self.inputs_v[0] = v0
                self.inputs_v[1] = v1
                self.inputs_v[2] = v2
                self.inputs_v[3] = v3
        else:
            if blk is not None:
                self.block_underruns += 1
            v0, v1, v2, v3 = self.inputs_v
        return (t_ns, v0, v1, v2, v3)

    def _codes(self, sample):
        t_ns, v0, v1, v2, v3 = sample
        hook = self.input_hook
        if hook is not None:
            v0, v1 = hook(t_ns, v0, v1)
        k = self._k
        c0 = round(v0 * k[0])
        c1 = round(v1 * k[1])
        c2 = round(v2 * k[2])
        c3 = round(v3 * k[3])
        if not (CODE_MIN <= c0 <= CODE_MAX and CODE_MIN <= c1 <= CODE_MAX
                and CODE_MIN <= c2 <= CODE_MAX and CODE_MIN <= c3 <= CODE_MAX):
            c0 = self._clip(c0, 0)
            c1 = self._clip(c1, 1)
            c2 = self._clip(c2, 2)
            c3 = self._clip(c3, 3)
        if self._cal_or_mux or self._enabled != 0xF:
            return self._post(c0, c1, c2, c3)
        return (c0, c1, c2, c3)

    def _clip(self, code, ch):
        if code > CODE_MAX:
            self.rail_clips[ch] += 1
            return CODE_MAX
        if code < CODE_MIN:
            self.rail_clips[ch] += 1
            return CODE_MIN
        return code

    def _post(self, *codes):
        regs = self._regs
        out = []
        for ch in range(N_CH):
            base = CH0_CFG + 5 * ch
            code = codes[ch]
            mux = regs[base] & 3
            if mux == 1:
                code = 0
            elif mux == 2:
                code = TEST_SIGNAL_CODE
            elif mux == 3:
                code = -TEST_SIGNAL_CODE
            ocal = (regs[base + 1] << 8) | (regs[base + 2] >> 8)
            if ocal & 0x800000:
                ocal -= 1 << 24
            gcal = (regs[base + 3] << 8) | (regs[base + 4] >> 8)
            code = ((code - ocal) * gcal) >> 23
            code = max(CODE_MIN, min(CODE_MAX, code))
            if not (self._enabled >> ch) & 1:
                code = 0
            out.append(code)
        return tuple(out)

    # -- SPI ----------------------------------------------------------------------------
    def spi_select(self):
        self.sync()
        self._selected = True
        self._pos = 0
        self._in_len = 0
        self._build_frame()

    def _put16(self, off, word):
        out = self._out
        out[off] = (word >> 8) & 0xFF
        out[off + 1] = word & 0xFF
        for i in range(off + 2, off + self._ws):
            out[i] = 0

    def _put_data(self, off, code):
        out = self._out
        wl = self._wlength
        if wl == 1:
            out[off] = (code >> 16) & 0xFF
            out[off + 1] = (code >> 8) & 0xFF
            out[off + 2] = code & 0xFF
        elif wl == 0:
            out[off] = (code >> 16) & 0xFF
            out[off + 1] = (code >> 8) & 0xFF
        elif wl == 2:
            out[off] = (code >> 16) & 0xFF
            out[off + 1] = (code >> 8) & 0xFF
            out[off + 2] = code & 0xFF
            out[off + 3] = 0
        else:
            out[off] = 0xFF if code < 0 else 0
            out[off + 1] = (code >> 16) & 0xFF
            out[off + 2] = (code >> 8) & 0xFF
            out[off + 3] = code & 0xFF

    def _build_frame(self):
        ws = self._ws
        pending = self._pending
        self._pending = None
        if isinstance(pending, list):  # multi-register RREG: ack + registers, no data
            for i in range(len(pending)):
                self._put16(i * ws, pending[i])
            end = len(pending) * ws
            self._frame_sample = False
            self._data_end = 0
        else:
            self._put16(0, self._status() if pending is None else pending)
            if pending is None:
                self._crc_err = False  # CRC_ERR is reported once in the STATUS word
            fifo = self._fifo
            codes = self._result(0) if fifo else self._latest_codes()
            self._frame_sample = bool(fifo)
            for ch in range(N_CH):
                self._put_data(ws * (1 + ch), codes[ch])
            end = ws * (1 + N_CH)
            self._data_end = end
        crc = crc16(self._out, 0, end, self._crc_table)
        if self._crc_corrupt > 0:
            self._crc_corrupt -= 1
            crc ^= 0x8001
        self._put16(end, crc)
        self._out_len = end + ws
        self.frames += 1

    def spi_xfer(self, tx, rx):
        n = len(tx)
        pos = self._pos
        room = len(self._in) - self._in_len
        if room > 0:
            k = n if n < room else room
            self._in[self._in_len : self._in_len + k] = tx[:k]
            self._in_len += k
        if rx is not None:
            avail = self._out_len - pos
            if avail >= n:
                rx[:n] = self._out[pos : pos + n]
            else:
                if avail > 0:
                    rx[:avail] = self._out[pos : self._out_len]
                else:
                    avail = 0
                for i in range(avail, n):
                    rx[i] = 0
        self._pos = pos + n

    def spi_deselect(self):
        self._selected = False
        if self._frame_sample and self._pos >= self._data_end:
            self._fifo.pop(0)
            self.samples_read += 1
            if not self._drdy_pulse:
                self._set_drdy(1)
        self._frame_sample = False
        self._execute()

    def _word16(self, i):
        off = i * self._ws
        return (self._in[off] << 8) | self._in[off + 1]

    def _execute(self):
        ws = self._ws
        nwords = self._in_len // ws
        if nwords < 1:
            return
        cmd = self._word16(0)
        nreg = 0
        if cmd & 0xE000 in (0xA000, 0x6000):
            addr = (cmd >> 7) & 0x3F
            nreg = (cmd & 0x7F) + 1
        data_words = nreg if cmd & 0xE000 == 0x6000 else 0
        need = 1 + data_words
        if nwords < need:
            return  # command not fully clocked in: ignored
        if self._rx_crc:
            if nwords < need + 1:
                return
            if crc16(self._in, 0, need * ws, self._crc_table) != self._word16(need):
                self._crc_err = True
                self.rx_crc_errors += 1
                return
        if self._locked and cmd not in (CMD_NULL, CMD_UNLOCK) and cmd & 0xE000 != 0xA000:
            return  # locked: only NULL, UNLOCK and RREG are valid
        if cmd == CMD_RESET:
            if nwords >= 2 + N_CH:
                self._power_on()
            else:
                self._pending = RSP_RESET_INCOMPLETE
        elif cmd == CMD_STANDBY:
            self._standby = True
            self._pending = CMD_STANDBY
        elif cmd == CMD_WAKEUP:
            if self._standby:
                self._standby = False
                self._next_conv_ns = self.clock.now_ns + self._period_ns
            self._pending = CMD_WAKEUP
        elif cmd == CMD_LOCK:
            self._locked = True
            self._pending = CMD_LOCK
        elif cmd == CMD_UNLOCK:
            self._locked = False
            self._pending = CMD_UNLOCK
        elif cmd & 0xE000 == 0xA000:
            if nreg == 1:
                self._pending = self.reg(addr)
            else:
                words = [0xE000 | (addr << 7) | (nreg - 1)]
                for a in range(addr, addr + nreg):
                    words.append(self.reg(a) if a < 64 else 0)
                self._pending = words
        elif cmd & 0xE000 == 0x6000:
            self._write_regs(addr, nreg)
            self._pending = 0x4000 | (addr << 7) | (nreg - 1)

    def _write_regs(self, addr, nreg):
        self.materialize()  # buffered results keep the gains and calibration they had
        old_clock = self._regs[CLOCK]
        for i in range(nreg):
            a = addr + i
            if a not in _WRITABLE:
                continue
            value = self._word16(1 + i)
            if a == MODE:
                value = (value & ~0x0400) | (value & self._regs[MODE] & 0x0400)
            self._regs[a] = value
        self._apply_config()
        if self._regs[CLOCK] != old_clock:
            self._next_conv_ns = self.clock.now_ns + self._period_ns  # restart conversions

    # -- SYNC/RESET pin -----------------------------------------------------------------
    def sync_reset_changed(self, level):
        self.sync()
        now = self.clock.now_ns
        if level == 0:
            self._sync_low_ns = now
            return
        if self._sync_low_ns is None:
            return
        low_ns = now - self._sync_low_ns
        self._sync_low_ns = None
        if low_ns * self.clkin_hz >= 2048 * 1_000_000_000:
            self._power_on()
        else:
            self._fifo = []
            self._next_conv_ns = now + self._period_ns
