"""TMC2209 model against the datasheet: UART datagrams and CRC (§4), STEP/DIR/ENN."""

from benchutil import BENCH, crc8_tmc_serial, fresh
from chips import tmc2209 as tmc
from chips.crc import crc8_tmc
from machine import UART, Pin

TX, RX, STEP, DIR, EN = 8, 9, 16, 17, 18


def setup(ms1=0, ms2=0):
    fresh()
    drv = tmc.TMC2209(clock=BENCH, ms1=ms1, ms2=ms2)
    BENCH.add_uart(drv, tx=TX, rx=RX, single_wire=True)
    BENCH.watch(STEP, drv.step_changed)
    BENCH.watch(DIR, drv.dir_changed)
    BENCH.watch(EN, drv.enn_changed)
    BENCH.board_pull(EN, 1)  # ENN pull-up on the driver board
    uart = UART(1, 115200, tx=Pin(TX), rx=Pin(RX))
    return drv, uart


def test_crc_examples():
    # Read request for GCONF of node 0, and a CHOPCONF write of its reset value
    # 10000053h: published datagrams 05 00 00 48 and 05 00 EC 10 00 00 53 9C.
    assert crc8_tmc(bytes((0x05, 0x00, 0x00))) == 0x48
    assert tmc.datagram_read(0, 0x00) == bytes((0x05, 0x00, 0x00, 0x48))
    assert tmc.datagram_write(0, tmc.CHOPCONF, 0x10000053) == bytes(
        (0x05, 0x00, 0xEC, 0x10, 0x00, 0x00, 0x53, 0x9C))
    for d in (b"\x05\x01\x6c", b"\x05\x03\x06", b"\x05\xff\x00\x00\x00\x01\x01"):
        assert crc8_tmc(d) == crc8_tmc_serial(d)


def test_read_reply_over_single_wire_uart_follows_the_echo():
    _drv, uart = setup()
    req = tmc.datagram_read(0, tmc.GCONF)
    assert uart.write(req) == 4
    got = uart.read(12)
    assert got[:4] == req  # the host hears its own request first (1 kOhm single wire)
    reply = got[4:]
    assert reply[:7] == bytes((0x05, 0xFF, 0x00, 0x00, 0x00, 0x01, 0x01))  # GCONF 101h
    assert reply[7] == crc8_tmc_serial(reply[:7])
    assert uart.read() is None


def test_writes_count_in_ifcnt_and_bad_datagrams_are_ignored():
    drv, uart = setup()
    uart.write(tmc.datagram_write(0, tmc.IHOLD_IRUN, 0x00061F0A))
    BENCH.advance_ms(1)
    bad = bytearray(tmc.datagram_write(0, tmc.TPOWERDOWN, 5))
    bad[7] ^= 1
    uart.write(bad + tmc.datagram_write(0, tmc.TPOWERDOWN, 6))  # same burst: lost too
    BENCH.advance_ms(3)  # 16 bytes take 1.4 ms, then > 63 bit times idle: resync
    uart.write(tmc.datagram_write(1, tmc.TPOWERDOWN, 5))  # another node
    BENCH.advance_ms(1)
    uart.read()
    uart.write(tmc.datagram_read(0, tmc.IFCNT))
    reply = uart.read()[4:]
    assert reply[3:7] == bytes((0, 0, 0, 1))
    assert drv.regs[tmc.IHOLD_IRUN] == 0x00061F0A and drv.regs[tmc.TPOWERDOWN] == 20
    assert drv.crc_errors == 1


def test_node_address_from_ms1_ms2_and_ioin_version():
    _drv, uart = setup(ms1=1, ms2=1)
    uart.write(tmc.datagram_read(0, tmc.IOIN))
    assert uart.read() == tmc.datagram_read(0, tmc.IOIN)  # echo only: not our node
    uart.write(tmc.datagram_read(3, tmc.IOIN))
    reply = uart.read()[4:]
    assert reply[3] == 0x21  # VERSION
    assert reply[6] & 0x0D == 0x0D  # ENN (pulled up), MS1, MS2


def test_gstat_reset_flag_clears_by_writing_one():
    drv, uart = setup()
    uart.write(tmc.datagram_write(0, tmc.GSTAT, 1))
    uart.read()
    assert drv.read_reg(tmc.GSTAT) == 0


def test_reading_a_write_only_register_replies_zero_and_is_counted():
    drv, uart = setup()
    uart.write(tmc.datagram_read(0, tmc.IHOLD_IRUN))
    assert uart.read()[4:][3:7] == bytes(4)
    assert drv.reads_of_write_only == 1


def test_step_counts_rising_edges_only_when_enabled():
    drv, _uart = setup()
    step = Pin(STEP, Pin.OUT, value=0)
    en = Pin(EN, Pin.OUT, value=1)
    d = Pin(DIR, Pin.OUT, value=1)
    for _ in range(3):
        step.value(1)
        step.value(0)
    assert drv.steps == 0 and drv.steps_ignored == 3  # ENN high: power stage off
    en.value(0)
    for _ in range(8):
        step.value(1)
        step.value(0)
    assert drv.steps == 8 and drv.microsteps == 8
    assert drv.position_256 == 8 * 32  # one full step = 8 microsteps at MS2/MS1 = 00
    d.value(0)
    for _ in range(4):
        step.value(1)
        step.value(0)
    assert drv.position_256 == 4 * 32


def test_mres_register_and_dedge():
    drv, uart = setup()
    uart.write(tmc.datagram_write(0, tmc.GCONF, 0x101 | 0x80))  # mstep_reg_select
    uart.write(tmc.datagram_write(0, tmc.CHOPCONF, 0x30000053 | (4 << 24)))  # 16, dedge
    uart.read()
    assert drv.microsteps == 16
    Pin(EN, Pin.OUT, value=0)
    Pin(DIR, Pin.OUT, value=1)
    step = Pin(STEP, Pin.OUT, value=0)
    step.value(1)
    step.value(0)
    assert drv.steps == 2 and drv.position_256 == 2 * 16


def test_vactual_moves_in_virtual_time():
    drv, uart = setup()
    Pin(EN, Pin.OUT, value=0)
    uart.write(tmc.datagram_write(0, tmc.VACTUAL, 2**20))
    uart.read()
    BENCH.advance_ms(100)
    # VACTUAL x fCLK / 2^24 microsteps/s = 2^20 x 12 MHz / 2^24 = 750 kusteps/s
    expect_usteps = 750_000 * 0.1
    assert abs(drv.position_fullsteps - expect_usteps / 8) < 1
