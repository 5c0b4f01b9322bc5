# ADS131M04: opcode bit layouts, CRC-CCITT against reference values, exact frames on the
# wire (NULL / RESET / WREG with input CRC), the init sequence, every word length, scaling
# to volts and amps, DRDY pacing, CRC errors counted and their values not used, an
# unexpected reset detected, and an allocation-free hot path.
import gc
import math
from array import array

from fakebus import BusLog, FakePin, FakeSPI, runs_with_heap_locked

from fieldrig.drivers import ads131m04 as a
from fieldrig.drivers.ads131m04 import ADS131M04


def ref_crc(data):
    # Bitwise CRC-CCITT (0x1021, init 0xFFFF), independent of the driver's table.
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


class Ads131m04Model:
    """The part at frame level: the response to frame k's command goes out in frame k+1;
    word length, input CRC check (RX_CRC_EN), STATUS flags and DRDY as in the datasheet.
    Faults on demand: corrupt an output frame, corrupt a received command, reset."""

    def __init__(self):
        self.ready = 1 << 30  # conversions waiting; DRDY is low while > 0
        self.poll_gap = 0  # DRDY polls that pass before the next conversion is ready
        self._polls = 0
        self.early_reads = 0  # frames clocked while DRDY was high
        self.codes = [0, 0, 0, 0]
        self.sample_fn = self.fixed_codes  # frame index -> four codes
        self.corrupt_out = set()  # frame indexes whose output gets a flipped bit
        self.corrupt_in_next = False
        self.frame_index = 0
        self.commands = []
        self.record = True
        self.power_on()

    def power_on(self):
        self.regs = {a.REG_ID: 0x2400, a.REG_MODE: a.MODE_DEFAULT, a.REG_CLOCK: a.CLOCK_DEFAULT,
                     a.REG_GAIN1: 0, a.REG_CFG: 0x0600}
        for ch in range(4):
            self.regs[a.ch_cfg_reg(ch)] = 0
            self.regs[a.ch_ocal_msb_reg(ch)] = 0
            self.regs[a.ch_ocal_msb_reg(ch) + 1] = 0
            self.regs[a.ch_gcal_msb_reg(ch)] = 0x8000
            self.regs[a.ch_gcal_msb_reg(ch) + 1] = 0
        self.crc_err = False
        self.locked = False
        self.pending = self.status()

    def fixed_codes(self, frame_index):
        return self.codes

    def wlength(self):
        return (self.regs[a.REG_MODE] >> 8) & 3

    def status(self):
        mode = self.regs[a.REG_MODE]
        s = 0x000F | (mode & (a.MODE_RESET | 0x0300))
        if self.locked:
            s |= a.STATUS_LOCK
        if self.crc_err:
            s |= a.STATUS_CRC_ERR
        return s

    def drdy(self):
        if self.ready > 0:
            return 0
        self._polls += 1
        if self._polls >= self.poll_gap:
            self._polls = 0
            self.ready = 1
        return 1

    def select(self):
        pass

    def deselect(self):
        pass

    def transfer(self, tx, rx):
        wl = self.wlength()
        wb = a.WORD_BYTES[wl]
        assert len(tx) == 6 * wb and len(rx) == 6 * wb, "frame length"
        if self.ready > 0:
            self.ready -= 1
        else:
            self.early_reads += 1
        codes = self.sample_fn(self.frame_index)
        # -- output frame
        for i in range(len(rx)):
            rx[i] = 0
        rx[0] = self.pending >> 8
        rx[1] = self.pending & 0xFF
        for ch in range(4):
            c = codes[ch]
            at = (1 + ch) * wb
            if wl == a.WLENGTH_16:
                w = (c >> 8) & 0xFFFF
                rx[at], rx[at + 1] = w >> 8, w & 0xFF
            elif wl == a.WLENGTH_24:
                w = c & 0xFFFFFF
                rx[at], rx[at + 1], rx[at + 2] = w >> 16, (w >> 8) & 0xFF, w & 0xFF
            else:
                w = ((c & 0xFFFFFF) << 8) if wl == a.WLENGTH_32_ZERO_PAD else (c & 0xFFFFFFFF)
                for j in range(4):
                    rx[at + j] = (w >> (24 - 8 * j)) & 0xFF
        crc = ref_crc(rx[:5 * wb])
        rx[5 * wb], rx[5 * wb + 1] = crc >> 8, crc & 0xFF
        if self.frame_index in self.corrupt_out:
            rx[wb + 1] ^= 0x04  # a bit flipped on the line after the CRC was made
        self.frame_index += 1
        # -- input frame
        data = bytearray(tx)
        if self.corrupt_in_next:
            data[1] ^= 0x01
            self.corrupt_in_next = False
        self.execute(data, wb)

    def execute(self, data, wb):
        cmd = (data[0] << 8) | data[1]
        if self.record:
            self.commands.append(cmd)
        is_wreg = cmd & 0xE000 == a.CMD_WREG
        n = (cmd & 0x7F) + 1
        n_words = 1 + (n if is_wreg else 0)
        if self.regs[a.REG_MODE] & a.MODE_RX_CRC_EN:
            at = n_words * wb
            if ref_crc(data[:at]) != (data[at] << 8) | data[at + 1]:
                self.crc_err = True  # not executed
                self.pending = self.status()
                return
        addr = (cmd >> 7) & 0x3F
        if cmd == a.CMD_NULL:
            self.pending = self.status()
            self.crc_err = False  # cleared once STATUS has been sent
        elif cmd == a.CMD_RESET:
            self.power_on()
            self.pending = 0xFF24
        elif cmd in (a.CMD_STANDBY, a.CMD_WAKEUP):
            self.pending = cmd
        elif cmd == a.CMD_LOCK:
            self.locked = True
            self.pending = cmd
        elif cmd == a.CMD_UNLOCK:
            self.locked = False
            self.pending = cmd
        elif cmd & 0xE000 == a.CMD_RREG:
            self.pending = self.regs.get(addr, 0)
        elif is_wreg and not self.locked:
            for k in range(n):
                at = (1 + k) * wb
                self.regs[addr + k] = (data[at] << 8) | data[at + 1]
            self.pending = 0x4000 | (cmd & 0x1FFF)
        else:
            self.pending = self.status()


def _adc(**kw):
    log = BusLog()
    spi = FakeSPI(0, log, baudrate=8_000_000, polarity=0, phase=1)
    cs = FakePin(5, value=1)
    model = Ads131m04Model()
    spi.attach(cs, model, "adc")
    drdy = FakePin(6, source=model.drdy)
    return ADS131M04(spi, cs, drdy, **kw), model, log


def _tx_frames(log):
    return [e[2] for e in log.of("spi", "adc")]


# -- datasheet encodings ---------------------------------------------------------------


def test_opcode_bit_layouts():
    # RREG 101a aaaa annn nnnn, WREG 011a aaaa annn nnnn, WREG ack 010a aaaa ammm mmmm.
    assert a.rreg_opcode(a.REG_ID) == 0xA000
    assert a.rreg_opcode(a.REG_MODE) == 0xA100
    assert a.rreg_opcode(a.REG_GAIN1) == 0xA200
    assert a.rreg_opcode(a.REG_REGMAP_CRC) == 0xBF00
    assert a.rreg_opcode(a.REG_CLOCK, 2) == 0xA181
    assert a.wreg_opcode(a.REG_CLOCK) == 0x6180
    assert a.wreg_opcode(a.REG_GAIN1, 3) == 0x6202
    assert a.wreg_response(a.REG_CLOCK) == 0x4180
    assert (a.CMD_NULL, a.CMD_RESET, a.CMD_STANDBY, a.CMD_WAKEUP, a.CMD_LOCK, a.CMD_UNLOCK) \
        == (0x0000, 0x0011, 0x0022, 0x0033, 0x0555, 0x0655)


def test_register_map_addresses():
    assert (a.REG_ID, a.REG_STATUS, a.REG_MODE, a.REG_CLOCK, a.REG_GAIN1, a.REG_CFG) == \
        (0x00, 0x01, 0x02, 0x03, 0x04, 0x06)
    assert [a.ch_cfg_reg(ch) for ch in range(4)] == [0x09, 0x0E, 0x13, 0x18]
    assert [a.ch_ocal_msb_reg(ch) for ch in range(4)] == [0x0A, 0x0F, 0x14, 0x19]
    assert [a.ch_gcal_msb_reg(ch) for ch in range(4)] == [0x0C, 0x11, 0x16, 0x1B]


def test_crc_ccitt_reference_values():
    assert a.crc16_ccitt(b"123456789", 9) == 0x29B1  # CRC-16/CCITT-FALSE check value
    assert a.crc16_ccitt(b"\x00\x00\x00", 3) == 0xCC9C  # NULL command, 24-bit word
    # A whole output frame: STATUS 0x0500, codes 0x123456, -1, -2^23, 1 (24-bit words).
    frame = bytes.fromhex("050000123456ffffff800000000001")
    assert a.crc16_ccitt(frame, 15) == 0x0806
    for n in range(0, 15):
        assert a.crc16_ccitt(frame, n) == ref_crc(frame[:n])


def test_null_reset_and_wreg_frames_on_the_wire():
    adc, _, log = _adc(gains=(1, 8, 1, 1))
    adc.init()
    frames = _tx_frames(log)
    # RESET with its input CRC in word 1; 6 x 24-bit words.
    assert frames[0] == bytes.fromhex("001100" "fcde00") + bytes(12)
    # NULL frame collecting the response.
    assert frames[1] == bytes.fromhex("000000" "cc9c00") + bytes(12)
    # WREG GAIN1 = 0x0030 (channel 1 gain 8): command, data word, CRC over both.
    wreg = bytes.fromhex("620000" "003000")
    assert ref_crc(wreg) == 0xDFDD  # (CPython binascii.crc_hqx(wreg, 0xFFFF))
    i = frames.index(wreg + bytes.fromhex("dfdd00") + bytes(9))
    assert frames[i + 1][:3] == b"\x00\x00\x00"  # then a NULL for the ack


def test_init_sequence_and_register_values():
    adc, model, _ = _adc(osr=4096, gains=(1, 8, 1, 1))
    adc.init()
    assert model.commands == [
        0x0011, 0x0000,  # RESET, then NULL to collect 0xFF24
        0xA000, 0x0000,  # RREG ID
        0x6100, 0x0000, 0xA100, 0x0000,  # WREG MODE, read back
        0x6180, 0x0000, 0xA180, 0x0000,  # WREG CLOCK, read back
        0x6200, 0x0000, 0xA200, 0x0000,  # WREG GAIN1, read back
    ]
    assert model.regs[a.REG_MODE] == 0x1110  # RX_CRC_EN, 24-bit, TIMEOUT, RESET flag 0
    assert model.regs[a.REG_CLOCK] == 0x0F16  # CH0..3 on, OSR 4096 (101b), high-resolution
    assert model.regs[a.REG_GAIN1] == 0x0030
    assert adc.data_rate_sps == 1000
    assert adc.crc_errors == 0


def test_init_fails_without_reset_ack():
    adc, model, _ = _adc()
    model.execute = lambda data, wb: None  # a part that never answers commands
    model.pending = 0
    try:
        adc.init()
    except OSError as e:
        assert "0x0011" in str(e)
        return
    raise AssertionError("init accepted a silent part")


def test_wrong_id_rejected():
    adc, model, _ = _adc()
    power_on = model.power_on

    def m08_power_on():
        power_on()
        model.regs[a.REG_ID] = 0x2800  # an eight-channel sibling

    model.power_on = m08_power_on
    try:
        adc.init()
    except OSError as e:
        assert "ID" in str(e)
        return
    raise AssertionError("wrong ID accepted")


# -- conversions ----------------------------------------------------------------------


def test_codes_volts_and_amps():
    adc, model, _ = _adc(gains=(1, 8, 1, 1), cell_v_divider=4.0, shunt_ohm=10.0)
    adc.init()
    model.codes = [0x400000, 1 << 20, -0x200000, 7]
    assert adc.read_frame()
    assert list(adc.codes) == [0x400000, 1 << 20, -0x200000, 7]
    v = array("f", [0.0] * 3)
    i = array("f", [0.0] * 3)
    ref = array("f", [0.0] * 3)
    assert adc.read_block_into(v, i, 3, ref) == 3
    for k in range(3):
        assert abs(v[k] - 2.4) < 1e-6  # 0.6 V at the pin (half of +1.2 V FS) x divider 4
        assert abs(i[k] - 1.875e-3) < 1e-9  # 1.2/8/2^23 * 2^20 = 18.75 mV over 10 ohm
        assert abs(ref[k] + 0.3) < 1e-6


def test_read_cell_volts_and_milliamps():
    adc, model, _ = _adc(gains=(1, 8, 1, 1), cell_v_divider=4.0, shunt_ohm=10.0)
    adc.init()
    model.codes = [-0x400000, 1 << 20, 0, 0]
    v, i_ma = adc.read_cell()
    assert abs(v + 2.4) < 1e-9 and abs(i_ma - 1.875) < 1e-9
    model.corrupt_out = {model.frame_index}
    v, i_ma = adc.read_cell()
    assert math.isnan(v) and math.isnan(i_ma)


def test_every_word_length_decodes_the_same_codes():
    values = [0x123456, -0x123456, 0x7FFFFF, -0x800000]
    for wl in (a.WLENGTH_16, a.WLENGTH_24, a.WLENGTH_32_ZERO_PAD, a.WLENGTH_32_SIGN_EXT):
        adc, model, log = _adc(word_length=wl)
        adc.init()
        assert model.wlength() == wl
        model.codes = values
        assert adc.read_frame(), wl
        wb = a.WORD_BYTES[wl]
        assert len(_tx_frames(log)[-1]) == 6 * wb
        if wl == a.WLENGTH_16:
            assert list(adc.codes) == [(c >> 8) << 8 for c in values]
        else:
            assert list(adc.codes) == values, wl


def test_block_read_is_drdy_paced():
    adc, model, _ = _adc()
    adc.init()
    model.ready = 0
    model.poll_gap = 3
    model.sample_fn = lambda frame_index: [frame_index, -frame_index, 2 * frame_index, 0]
    cv = array("i", [0] * 10)
    ci = array("i", [0] * 10)
    start = model.frame_index
    assert adc.read_block_codes_into(cv, ci, 10) == 10
    assert model.early_reads == 0
    assert list(cv) == list(range(start, start + 10))
    assert list(ci) == [-k for k in range(start, start + 10)]


def test_drdy_timeout():
    adc, model, _ = _adc()
    adc.init()
    model.ready = 0
    model.poll_gap = 1 << 30
    adc.drdy_timeout_us = 2000
    try:
        adc.read_frame()
    except OSError as e:
        assert e.args[0] == 110
        return
    raise AssertionError("no timeout with DRDY stuck high")


def test_crc_error_counted_flagged_and_values_not_used():
    adc, model, _ = _adc()
    adc.init()
    model.sample_fn = lambda frame_index: [1000 + frame_index, 2000 + frame_index, 0, 0]
    start = model.frame_index
    model.corrupt_out = {start + 2, start + 5}
    cv = array("i", [0] * 8)
    ci = array("i", [0] * 8)
    assert adc.read_block_codes_into(cv, ci, 8) == 6
    assert adc.crc_errors == 2
    for k in range(8):
        if k in (2, 5):
            assert cv[k] == a.CODE_INVALID and ci[k] == a.CODE_INVALID
        else:
            assert cv[k] == 1000 + start + k and ci[k] == 2000 + start + k
    fv = array("f", [0.0] * 4)
    fi = array("f", [0.0] * 4)
    model.corrupt_out = {model.frame_index + 1}
    assert adc.read_block_into(fv, fi, 4) == 3
    assert math.isnan(fv[1]) and math.isnan(fi[1])
    assert not math.isnan(fv[0]) and not math.isnan(fv[2])
    assert adc.crc_errors == 3
    # A single frame read keeps the last good codes when its CRC fails.
    before = list(adc.codes)
    model.corrupt_out = {model.frame_index}
    model.sample_fn = lambda frame_index: [9, 9, 9, 9]
    assert not adc.read_frame()
    assert not adc.last_frame_ok
    assert list(adc.codes) == before


def test_garbled_command_not_acknowledged():
    adc, model, _ = _adc()
    adc.init()
    model.corrupt_in_next = True  # the WREG's bits are hit on the way in
    try:
        adc.write_reg(a.REG_GAIN1, 0x0007)
    except OSError as e:
        assert "not acknowledged" in str(e)
    else:
        raise AssertionError("WREG with a bad input CRC reported as written")
    assert model.regs[a.REG_GAIN1] == 0  # the part did not execute it
    # The part's STATUS.CRC_ERR shows up in the next data frame's status word.
    assert adc.read_frame()
    assert adc.input_crc_errors == 1


def test_unexpected_reset_rejects_frames_until_init():
    adc, model, _ = _adc(gains=(1, 8, 1, 1))
    adc.init()
    assert adc.read_frame()
    model.power_on()  # brown-out: registers back to defaults, MODE.RESET = 1
    # Gains are back to 1: every frame is rejected until the driver is set up again.
    assert [adc.read_frame() for _ in range(3)] == [False, False, False]
    assert adc.unexpected_resets == 3
    adc.init()
    assert adc.read_frame()
    assert adc.unexpected_resets == 0


def test_lock_unlock_standby_wakeup():
    adc, model, _ = _adc()
    adc.init()
    model.commands = []
    adc.lock()
    try:
        adc.write_reg(a.REG_GAIN1, 1)
    except OSError:
        pass
    else:
        raise AssertionError("write accepted while locked")
    adc.unlock()
    adc.write_reg(a.REG_GAIN1, 1)
    adc.standby()
    adc.wakeup()
    assert [c for c in model.commands if c] == [0x0555, 0x6200, 0x0655, 0x6200, 0x0022, 0x0033]


def test_calibration_registers():
    adc, model, _ = _adc()
    adc.init()
    adc.set_offset_cal(1, -2)
    assert model.regs[0x0F] == 0xFFFF and model.regs[0x10] == 0xFE00
    adc.set_gain_cal(2, 1.0)
    assert model.regs[0x16] == 0x8000 and model.regs[0x17] == 0x0000
    adc.set_gain_cal(2, 1.5)
    assert model.regs[0x16] == 0xC000
    adc.set_input_mux(3, a.CH_CFG_MUX_SHORTED)
    assert model.regs[0x18] & 3 == 1


# -- allocation --------------------------------------------------------------------------


class Replay:
    """Answers every frame with one prepared frame: unlike the model, allocates nothing."""

    def __init__(self, frame):
        self.frame = frame

    def select(self):
        pass

    def deselect(self):
        pass

    def transfer(self, tx, rx):
        rx[:] = self.frame


def _replaying_adc(codes):
    adc, model, log = _adc()
    adc.init()
    model.codes = codes
    frame = bytearray(18)
    model.transfer(bytearray(adc._tx_null), frame)  # a NULL frame's reply: STATUS + codes
    spi = FakeSPI(0, log)
    cs = FakePin(5, value=1)
    spi.attach(cs, Replay(frame), "adc")
    adc._spi = spi
    adc._cs = cs
    log.enabled = False
    return adc


def test_hot_path_allocates_nothing():
    adc = _replaying_adc([11, 22, 33, 44])
    cv = array("i", [0] * 64)
    ci = array("i", [0] * 64)
    cr = array("i", [0] * 64)

    def block():
        adc.read_block_codes_into(cv, ci, 64, cr)

    assert runs_with_heap_locked(adc.read_frame)
    assert runs_with_heap_locked(block)
    assert list(cv[:2]) == [11, 11] and list(ci[:2]) == [22, 22] and list(cr[:2]) == [33, 33]
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(20):
        block()
    assert gc.mem_alloc() - before == 0
    assert adc.crc_errors == 0


def test_counters_wrap_before_bigint():
    adc = _replaying_adc([1, 2, 3, 4])
    adc.frames = a.COUNTER_MASK
    assert adc.read_frame()
    assert adc.frames == 0


def test_hard_reset_pulses_sync_reset_before_reset_command():
    log = BusLog()
    spi = FakeSPI(0, log)
    cs = FakePin(5, value=1)
    model = spi.attach(cs, Ads131m04Model(), "adc")
    sync = FakePin(7, log=log, name="sync_reset", value=1)
    adc = ADS131M04(spi, cs, FakePin(6, source=model.drdy), sync)
    assert sync.value() == 1
    adc.init()
    kinds = [(e[0], e[1], e[2]) for e in log.entries[:3]]
    assert kinds == [("pin", "sync_reset", 0), ("pin", "sync_reset", 1), ("cs", "adc", 0)]
    assert model.commands[0] == a.CMD_RESET


def test_float_block_allocation_is_one_float_per_value():
    adc = _replaying_adc([100, 200, 300, 0])
    n = 32
    fv = array("f", [0.0] * n)
    fi = array("f", [0.0] * n)
    adc.read_block_into(fv, fi, n)
    gc.collect()
    before = gc.mem_alloc()
    adc.read_block_into(fv, fi, n)
    used = gc.mem_alloc() - before
    scale = [1.25]
    gc.collect()
    before = gc.mem_alloc()
    scale[0] = scale[0] * 3.0
    float_bytes = gc.mem_alloc() - before  # one boxed float: 16 B on rp2, 32 B on unix x64
    assert float_bytes > 0
    # Two stored values per frame, one transient float each, plus the scale factors
    # computed once per block (three intermediate floats for each of three channels).
    assert used <= (2 * n + 9) * float_bytes, (used, float_bytes)
    assert abs(fv[0] - 100 * 1.2 / 2**23) < 1e-12
