"""ADS131M04 model against the datasheet (SBAS890), through machine.SPI and a CS pin."""

from benchutil import BENCH, crc16_bitwise, fresh, spi_bus, word, xfer
from chips import ads131m04 as ads
from chips.crc import ANSI_TABLE, crc16
from machine import Pin

CS, SCK, MOSI, MISO, DRDY, SYNC = 17, 18, 19, 16, 20, 21
# CRC-CCITT (seed FFFFh) of FF 24 00 followed by 12 zero bytes, by hand-run shift register
CRC_FF24_FRAME = 0xDCFE


def setup(inputs=(0.0, 0.0, 0.0, 0.0)):
    fresh()
    adc = ads.ADS131M04(clock=BENCH)
    BENCH.add_spi(adc, cs=CS, sck=SCK, mosi=MOSI, miso=MISO)
    BENCH.add_clocked(adc)
    adc.attach_drdy(BENCH.driver_for(DRDY))
    BENCH.watch(SYNC, adc.sync_reset_changed)
    adc.set_inputs_v(inputs)
    cs = Pin(CS, Pin.OUT, value=1)
    return adc, spi_bus(SCK, MOSI, MISO), cs


def frame(cmd, data=(), ws=3, crc=False, words=6):
    """Input frame: command, data words, optional input CRC, zero padding."""
    body = word(cmd, ws)
    for d in data:
        body += word(d, ws)
    if crc:
        body += word(crc16_bitwise(body), ws)
    return body + bytes(ws * words - len(body)) if len(body) < ws * words else body


def resp(rx, ws=3):
    return (rx[0] << 8) | rx[1]


def check_out_crc(rx, nwords, ws=3):
    at = (nwords - 1) * ws
    assert (rx[at] << 8 | rx[at + 1]) == crc16_bitwise(rx[:at]), rx


def test_crc_ccitt_and_ansi_check_values():
    # CRC-16/CCITT-FALSE and CRC-16/CMS (poly 8005h, seed FFFFh) check values.
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"123456789", table=ANSI_TABLE) == 0xAEE7
    assert crc16_bitwise(b"123456789") == 0x29B1


def test_first_frame_after_power_up_is_reset_response_with_crc():
    _adc, spi, cs = setup()
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    # FF24h response, four zero channel words (no conversion yet), CRC over 15 bytes.
    assert rx[:15] == bytes((0xFF, 0x24, 0x00)) + bytes(12)
    assert rx[15:] == bytes((CRC_FF24_FRAME >> 8, CRC_FF24_FRAME & 0xFF, 0x00))
    check_out_crc(rx, 6)
    # The NULL response in the next frame is STATUS = 0500h (RESET, WLENGTH 24 bit).
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert resp(rx) == 0x0500
    check_out_crc(rx, 6)


def test_null_frame_carries_status_with_drdy_bits_and_channel_codes():
    _adc, spi, cs = setup((0.6, -0.3, 0.0, 1.2 - 1.2 / (1 << 23)))
    xfer(spi, cs, frame(ads.CMD_NULL))  # consume the FF24h response
    BENCH.advance_us(250)  # one conversion at the default 4 kSPS (OSR 1024)
    assert BENCH.level(DRDY) == 0
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert resp(rx) == 0x050F  # RESET, WLENGTH=01, DRDY3..0 set
    assert rx[3:6] == bytes((0x40, 0x00, 0x00))  # +0.6 V: 2^22
    assert rx[6:9] == bytes((0xE0, 0x00, 0x00))  # -0.3 V: -2^21
    assert rx[9:12] == bytes(3)
    assert rx[12:15] == bytes((0x7F, 0xFF, 0xFF))  # last code below +full scale
    check_out_crc(rx, 6)
    assert BENCH.level(DRDY) == 1  # all channel data shifted out


def test_wreg_then_rreg_round_trip():
    adc, spi, cs = setup()
    xfer(spi, cs, frame(ads.CMD_NULL))
    # WREG GAIN (04h), one register: 011a aaaa annn nnnn = 6200h, data 0030h (CH1 gain 8)
    tx = frame(0x6200, (0x0030,))
    assert tx[:6] == bytes((0x62, 0x00, 0x00, 0x00, 0x30, 0x00))
    xfer(spi, cs, tx)
    rx = xfer(spi, cs, frame(0xA200))  # RREG GAIN: 101a aaaa annn nnnn = A200h
    assert resp(rx) == 0x4200  # WREG ack 010a aaaa ammm mmmm
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert resp(rx) == 0x0030
    assert adc.reg(ads.GAIN) == 0x0030


def test_rreg_of_several_registers_replaces_the_data_words():
    _adc, spi, cs = setup()
    xfer(spi, cs, frame(ads.CMD_NULL))
    xfer(spi, cs, frame(0xA181))  # RREG from 03h (CLOCK), n-1 = 1
    rx = xfer(spi, cs, frame(ads.CMD_NULL, words=4))
    assert resp(rx) == 0xE181  # ack 111a aaaa annn nnnn
    assert rx[3:9] == bytes((0x0F, 0x0E, 0x00, 0x00, 0x00, 0x00))  # CLOCK 0F0Eh, GAIN 0
    check_out_crc(rx, 4)


def test_word_length_change_to_32_and_16_bits():
    adc, spi, cs = setup((-0.3, 0.6, 0.0, 0.0))
    xfer(spi, cs, frame(ads.CMD_NULL))
    # MODE = 0310h: RESET bit written 0, WLENGTH = 11b (32-bit, sign extended)
    xfer(spi, cs, frame(0x6100, (0x0310,)))
    assert adc.word_bytes == 4
    BENCH.advance_us(250)
    rx = xfer(spi, cs, frame(ads.CMD_NULL, ws=4))
    assert rx[:4] == bytes((0x41, 0x00, 0x00, 0x00))  # WREG MODE ack, zero padded
    assert rx[4:8] == bytes((0xFF, 0xE0, 0x00, 0x00))  # -2^21 sign extended
    assert rx[8:12] == bytes((0x00, 0x40, 0x00, 0x00))
    check_out_crc(rx, 6, ws=4)
    # WLENGTH = 10b: 32-bit, zero padded LSBs
    xfer(spi, cs, frame(0x6100, (0x0210,), ws=4))
    BENCH.advance_us(250)
    rx = xfer(spi, cs, frame(ads.CMD_NULL, ws=4))
    assert rx[4:8] == bytes((0xE0, 0x00, 0x00, 0x00))
    # WLENGTH = 00b: 16-bit, the 16 MSBs of the code
    xfer(spi, cs, frame(0x6100, (0x0010,), ws=4))
    BENCH.advance_us(250)
    rx = xfer(spi, cs, frame(ads.CMD_NULL, ws=2))
    assert len(rx) == 12 and adc.word_bytes == 2
    assert rx[0:2] == bytes((0x41, 0x00))
    assert rx[2:4] == bytes((0xE0, 0x00)) and rx[4:6] == bytes((0x40, 0x00))
    check_out_crc(rx, 6, ws=2)


def test_reset_needs_a_full_frame():
    adc, spi, cs = setup()
    xfer(spi, cs, frame(ads.CMD_NULL))
    xfer(spi, cs, frame(0x6200, (0x0077,)))
    rx = xfer(spi, cs, bytes((0x00, 0x11, 0x00)))  # RESET word only: frame not completed
    assert resp(rx) == 0x4200  # (the WREG ack)
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert resp(rx) == ads.RSP_RESET_INCOMPLETE  # 0011h: not reset
    assert adc.reg(ads.GAIN) == 0x0077
    xfer(spi, cs, frame(ads.CMD_RESET))  # full frame
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert resp(rx) == 0xFF24
    assert adc.reg(ads.GAIN) == 0 and adc.reg(ads.MODE) == 0x0510
    assert adc.reg(ads.CLOCK) == 0x0F0E and adc.reg(ads.CFG) == 0x0600
    assert adc.reg(ads.ID) >> 8 == 0x24
    assert adc.reg(ads.CH0_CFG + 3) == 0x8000  # GCAL_MSB


def test_input_crc_checked_only_when_enabled():
    adc, spi, cs = setup()
    xfer(spi, cs, frame(ads.CMD_NULL))
    # RX_CRC_EN off: a garbage CRC word is ignored
    bad = bytearray(frame(0x6200, (0x0011,)))
    bad[6] = 0xDE
    xfer(spi, cs, bad)
    assert adc.reg(ads.GAIN) == 0x0011
    xfer(spi, cs, frame(0x6100, (0x1510,)))  # MODE: RX_CRC_EN
    assert adc.reg(ads.MODE) == 0x1510
    bad = bytearray(frame(0x6200, (0x0022,), crc=True))
    bad[7] ^= 0x01
    xfer(spi, cs, bad)
    assert adc.reg(ads.GAIN) == 0x0011  # not executed
    rx = xfer(spi, cs, frame(ads.CMD_NULL, crc=True))
    assert resp(rx) & 0x1000  # STATUS.CRC_ERR
    assert adc.rx_crc_errors == 1
    xfer(spi, cs, frame(0x6200, (0x0022,), crc=True))
    assert adc.reg(ads.GAIN) == 0x0022
    rx = xfer(spi, cs, frame(ads.CMD_NULL, crc=True))
    assert resp(rx) == 0x4200


def test_lock_accepts_only_null_unlock_and_rreg():
    adc, spi, cs = setup()
    xfer(spi, cs, frame(ads.CMD_NULL))
    xfer(spi, cs, frame(ads.CMD_LOCK))
    rx = xfer(spi, cs, frame(0x6200, (0x0044,)))
    assert resp(rx) == 0x0555
    rx = xfer(spi, cs, frame(0xA200))
    assert resp(rx) & 0x8000  # WREG ignored: NULL response (STATUS with LOCK)
    rx = xfer(spi, cs, frame(ads.CMD_UNLOCK))
    assert resp(rx) == 0x0000  # RREG GAIN still works while locked
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert resp(rx) == 0x0655
    assert not adc.locked


def count_drdy(us):
    n = [0]

    def cb(pin):
        n[0] += 1

    Pin(DRDY, Pin.IN).irq(cb, Pin.IRQ_FALLING)
    BENCH.advance_us(us)
    return n[0]


def test_data_rate_follows_osr():
    adc, spi, cs = setup()
    assert count_drdy(1000) == 4  # CLOCK 0F0Eh: OSR 1024 -> 4 kSPS
    xfer(spi, cs, frame(0x6180, (0x0F02,)))  # OSR 128 -> 32 kSPS
    assert adc.data_rate_hz == 32000
    assert count_drdy(1000) == 32
    xfer(spi, cs, frame(0x6180, (0x0F0A,)))  # OSR 512 -> 8 kSPS
    assert count_drdy(1000) == 8
    xfer(spi, cs, frame(0x6180, (0x0F22,)))  # TBM + OSR 128 -> OSR 64, 64 kSPS
    assert count_drdy(1000) == 64


def test_gain_and_rail_clipping():
    adc, spi, cs = setup((0.3, 1.3, -1.25, 0.0))
    xfer(spi, cs, frame(ads.CMD_NULL))
    xfer(spi, cs, frame(0x6200, (0x0001,)))  # CH0 gain 2
    BENCH.advance_us(250)
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert rx[3:6] == bytes((0x40, 0x00, 0x00))  # 0.3 V x 2 = half scale
    assert rx[6:9] == bytes((0x7F, 0xFF, 0xFF))  # clipped to the positive rail
    assert rx[9:12] == bytes((0x80, 0x00, 0x00))  # clipped to the negative rail
    assert adc.rail_clips == [0, 1, 1, 0]


def test_calibration_mux_and_channel_enable():
    _adc, spi, cs = setup((0.6, 0.6, 0.6, 0.6))
    xfer(spi, cs, frame(ads.CMD_NULL))
    # CH0_OCAL = 100000h (2^20) subtracted; CH1 GCAL = 0.5 (400000h); CH2 MUX shorted;
    # CH3 MUX positive DC test signal; then CH3 disabled in CLOCK.
    xfer(spi, cs, frame(0x6000 | (0x0A << 7) | 1, (0x1000, 0x0000)))
    xfer(spi, cs, frame(0x6000 | (0x11 << 7) | 1, (0x4000, 0x0000)))
    xfer(spi, cs, frame(0x6000 | (0x13 << 7), (0x0001,)))
    xfer(spi, cs, frame(0x6000 | (0x18 << 7), (0x0002,)))
    BENCH.advance_us(250)
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert rx[3:6] == bytes((0x30, 0x00, 0x00))  # 400000h - 100000h
    assert rx[6:9] == bytes((0x20, 0x00, 0x00))  # half gain
    assert rx[9:12] == bytes(3)  # shorted input
    assert rx[12:15] == bytes((0x11, 0x11, 0x11))  # 2/15 of full scale
    xfer(spi, cs, frame(0x6180, (0x070E,)))  # CH3_EN = 0
    BENCH.advance_us(250)
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert rx[12:15] == bytes(3)


def test_block_of_samples_feeds_consecutive_conversions():
    adc, spi, cs = setup()
    xfer(spi, cs, frame(ads.CMD_NULL))
    n = 8
    v = [i * 0.075 for i in range(n)]  # 0 .. 0.525 V
    adc.load_block_v((v, [-x for x in v], [0.0] * n, [0.0] * n))
    got = []

    def on_drdy(pin):
        got.append(xfer(spi, cs, frame(ads.CMD_NULL)))

    Pin(DRDY, Pin.IN).irq(on_drdy, Pin.IRQ_FALLING)
    BENCH.advance_us(250 * (n + 2))
    assert len(got) == n + 2
    for i in range(n):
        code = (got[i][3] << 16) | (got[i][4] << 8) | got[i][5]
        assert code == round(v[i] / 1.2 * (1 << 23)), (i, code)
    assert got[n][3:6] == got[n - 1][3:6]  # inputs hold the last block value
    assert adc.block_underruns == 2 and adc.block_remaining() == 0
    assert adc.samples_read == n + 2 and adc.samples_lost == 0


def test_unread_conversions_are_held_two_deep():
    adc, spi, cs = setup((0.15, 0.0, 0.0, 0.0))
    xfer(spi, cs, frame(ads.CMD_NULL))
    adc.load_block_v(([0.1, 0.2, 0.3], [0.0] * 3, [0.0] * 3, [0.0] * 3))
    BENCH.advance_us(750)  # three conversions, none read
    assert adc.samples_lost == 1 and BENCH.level(DRDY) == 0
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert rx[3:6] == bytes((0x15, 0x55, 0x55))  # 0.2 V: the oldest kept sample
    assert BENCH.level(DRDY) == 1
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert rx[3:6] == bytes((0x20, 0x00, 0x00))  # 0.3 V
    assert resp(rx) & 0xF == 0xF
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert resp(rx) & 0xF == 0  # nothing new: stale data, DRDY bits clear


def test_short_read_leaves_drdy_low_and_the_sample_unread():
    adc, spi, cs = setup((0.3, 0.0, 0.0, 0.0))
    xfer(spi, cs, frame(ads.CMD_NULL))
    BENCH.advance_us(250)
    xfer(spi, cs, bytes(9))  # only response + 2 channels
    assert BENCH.level(DRDY) == 0 and adc.samples_read == 0
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert rx[3:6] == bytes((0x20, 0x00, 0x00)) and adc.samples_read == 1


def test_drdy_pulse_format():
    _adc, spi, cs = setup()
    xfer(spi, cs, frame(ads.CMD_NULL))
    xfer(spi, cs, frame(0x6100, (0x0511,)))  # DRDY_FMT = 1
    assert count_drdy(1000) == 4
    assert BENCH.level(DRDY) == 1  # a pulse, not a level


def test_crc_fault_injection_corrupts_the_next_frames_only():
    adc, spi, cs = setup()
    adc.corrupt_crc(2)
    bad = 0
    for _ in range(3):
        rx = xfer(spi, cs, frame(ads.CMD_NULL))
        if (rx[15] << 8 | rx[16]) != crc16_bitwise(rx[:15]):
            bad += 1
        else:
            assert _ == 2
    assert bad == 2


def test_standby_stops_and_wakeup_restarts_conversions():
    adc, spi, cs = setup()
    xfer(spi, cs, frame(ads.CMD_STANDBY))
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert resp(rx) == 0x0022 and adc.standby
    assert count_drdy(1000) == 0
    xfer(spi, cs, frame(ads.CMD_WAKEUP))
    assert resp(xfer(spi, cs, frame(ads.CMD_NULL))) == 0x0033
    assert count_drdy(1000) == 4


def test_sync_reset_pin_short_pulse_resyncs_long_pulse_resets():
    adc, spi, cs = setup()
    sync = Pin(SYNC, Pin.OUT, value=1)
    xfer(spi, cs, frame(ads.CMD_NULL))
    xfer(spi, cs, frame(0x6200, (0x0033,)))
    sync.value(0)
    BENCH.advance_us(100)  # < 2048 / 8.192 MHz = 250 us: resynchronisation
    sync.value(1)
    assert adc.reg(ads.GAIN) == 0x0033
    sync.value(0)
    BENCH.advance_us(300)
    sync.value(1)
    assert adc.reg(ads.GAIN) == 0
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert resp(rx) == 0xFF24


def test_results_are_worked_out_when_read_and_keep_the_gain_they_were_taken_with():
    # Lazy results: the input hook runs only for conversions a frame reads (those pushed
    # out unread cost nothing); a gain written while results wait does not change them.
    adc, spi, cs = setup((0.3, 0.0, 0.0, 0.0))
    xfer(spi, cs, frame(ads.CMD_NULL))
    hooked = []

    def hook(t_ns, v0, v1):
        hooked.append(t_ns)
        return v0, v1

    adc.input_hook = hook
    BENCH.advance_us(250 * 5)  # five conversions, three pushed out unread
    assert hooked == [] and adc.samples_lost == 3
    xfer(spi, cs, frame(0x6200, (0x0001,)))  # CH0 gain 2 while two results wait
    assert len(hooked) == 2  # the write worked them out at the old gain
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert rx[3:6] == bytes((0x20, 0x00, 0x00))  # 0.3 V at gain 1: quarter scale
    BENCH.advance_us(250)
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    rx = xfer(spi, cs, frame(ads.CMD_NULL))
    assert rx[3:6] == bytes((0x40, 0x00, 0x00))  # a new conversion at gain 2
    assert hooked == sorted(hooked)  # in conversion order
