"""MAX31865 model against the datasheet (19-6478): registers, RTD code, faults, timing."""

from benchutil import BENCH, fresh, spi_bus, xfer
from chips import max31865 as mx
from machine import Pin

CS, SCK, MOSI, MISO = 14, 10, 11, 12


def setup(rtd_ohm=100.0, rref_ohm=400.0, phase=1):
    fresh()
    rtd = mx.MAX31865(clock=BENCH, rref_ohm=rref_ohm)
    rtd.rtd_ohm = rtd_ohm
    BENCH.add_spi(rtd, cs=CS, sck=SCK, mosi=MOSI, miso=MISO)
    BENCH.add_clocked(rtd)
    cs = Pin(CS, Pin.OUT, value=1)
    return rtd, spi_bus(SCK, MOSI, MISO, bus=1, baud=4_000_000, phase=phase), cs


def read_regs(spi, cs, addr, n):
    return xfer(spi, cs, bytes((addr,)) + bytes(n))[1:]


def test_power_on_register_values_and_auto_increment_read():
    _rtd, spi, cs = setup()
    assert read_regs(spi, cs, 0x00, 8) == bytes((0, 0, 0, 0xFF, 0xFF, 0, 0, 0))


def test_config_c2_then_rtd_read_of_pt100_with_400_ohm_reference():
    rtd, spi, cs = setup()
    xfer(spi, cs, bytes((0x80, 0xC2)))  # VBIAS on, auto conversion, fault status clear
    assert read_regs(spi, cs, 0x00, 1) == bytes((0xC0,))  # D1 self-clears
    BENCH.advance_ms(16)
    assert read_regs(spi, cs, 0x01, 2) == bytes(2)  # first conversion not done (16.7 ms)
    BENCH.advance_ms(1)
    assert read_regs(spi, cs, 0x01, 2) == bytes((0x40, 0x00))  # 8192 << 1, no fault bit
    BENCH.advance_ms(100)
    assert rtd.conversions == 7  # one per 16.7 ms with the 60 Hz filter


def test_one_shot_starts_at_cs_high_and_takes_52_or_62_5_ms():
    rtd, spi, cs = setup(rtd_ohm=138.51)  # PT100 at 100 C
    xfer(spi, cs, bytes((0x80, 0xA0)))  # VBIAS + 1-shot, 60 Hz
    BENCH.advance_us(51_999)
    assert rtd.conversions == 0
    BENCH.advance_us(1)
    assert rtd.conversions == 1
    code = int(138.51 / 400 * 32768 + 0.5)
    assert read_regs(spi, cs, 0x01, 2) == bytes(((code >> 7), (code << 1) & 0xFE))
    assert read_regs(spi, cs, 0x00, 1) == bytes((0x80,))  # 1-shot bit self-cleared
    xfer(spi, cs, bytes((0x80, 0xA1)))  # 50 Hz filter
    BENCH.advance_us(62_499)
    assert rtd.conversions == 1
    BENCH.advance_us(1)
    assert rtd.conversions == 2


def test_conversion_without_vbias_reads_zero_and_low_fault():
    rtd, spi, cs = setup()
    xfer(spi, cs, bytes((0x80, 0x20)))  # 1-shot with VBIAS off
    BENCH.advance_ms(60)
    assert rtd.conversions_without_vbias == 1
    assert read_regs(spi, cs, 0x01, 2) == bytes((0x00, 0x01))  # code 0, fault bit D0
    assert read_regs(spi, cs, 0x07, 1) == bytes((mx.FAULT_LOW,))  # 0 <= LFT (0000h)


def test_threshold_faults_latch_until_cleared():
    rtd, spi, cs = setup(rtd_ohm=120.0)
    # High threshold 110 ohm, low threshold 90 ohm (15-bit codes, left-justified)
    hi = int(110 / 400 * 32768) << 1
    lo = int(90 / 400 * 32768) << 1
    xfer(spi, cs, bytes((0x83, hi >> 8, hi & 0xFF, lo >> 8, lo & 0xFF)))
    assert read_regs(spi, cs, 0x03, 4) == bytes((hi >> 8, hi & 0xFF, lo >> 8, lo & 0xFF))
    xfer(spi, cs, bytes((0x80, 0xA0)))
    BENCH.advance_ms(60)
    assert read_regs(spi, cs, 0x02, 1)[0] & 1
    assert read_regs(spi, cs, 0x07, 1) == bytes((mx.FAULT_HIGH,))
    rtd.rtd_ohm = 100.0
    xfer(spi, cs, bytes((0x80, 0xA0)))
    BENCH.advance_ms(60)
    assert read_regs(spi, cs, 0x07, 1) == bytes((mx.FAULT_HIGH,))  # latched
    xfer(spi, cs, bytes((0x80, 0x82)))  # fault status clear
    assert read_regs(spi, cs, 0x07, 1) == bytes(1)


def test_open_rtd_reads_full_scale_and_fault_cycle_flags_refin():
    _rtd, spi, cs = setup(rtd_ohm=None)
    xfer(spi, cs, bytes((0x80, 0xA0)))
    BENCH.advance_ms(60)
    assert read_regs(spi, cs, 0x01, 2) == bytes((0xFF, 0xFF))  # 7FFFh << 1 | fault
    assert read_regs(spi, cs, 0x07, 1)[0] & mx.FAULT_HIGH  # >= HFT (7FFFh)
    xfer(spi, cs, bytes((0x80, 0x84)))  # automatic fault detection cycle: 100X010Xb
    assert read_regs(spi, cs, 0x07, 1)[0] & mx.FAULT_REFIN_HIGH
    assert read_regs(spi, cs, 0x00, 1)[0] & 0x0C == 0  # D3:D2 self-clear


def test_force_minus_open_sets_d4_d3_in_fault_cycle():
    rtd, spi, cs = setup()
    rtd.force_minus_open = True
    xfer(spi, cs, bytes((0x80, 0x84)))
    assert read_regs(spi, cs, 0x07, 1)[0] == (mx.FAULT_REFIN_LOW_FORCE_OPEN
                                             | mx.FAULT_RTDIN_LOW_FORCE_OPEN)


def test_writes_to_read_only_registers_are_ignored():
    _rtd, spi, cs = setup()
    xfer(spi, cs, bytes((0x81, 0x12, 0x34)))
    xfer(spi, cs, bytes((0x87, 0xFF)))
    assert read_regs(spi, cs, 0x01, 2) == bytes(2)
    assert read_regs(spi, cs, 0x07, 1) == bytes(1)


def test_drdy_falls_on_new_data_and_rises_when_lsb_is_read():
    fresh()
    rtd = mx.MAX31865(clock=BENCH, rref_ohm=400.0)
    BENCH.add_spi(rtd, cs=CS, sck=SCK, mosi=MOSI, miso=MISO)
    BENCH.add_clocked(rtd)
    rtd.attach_drdy(BENCH.driver_for(22))
    cs = Pin(CS, Pin.OUT, value=1)
    spi = spi_bus(SCK, MOSI, MISO, bus=1, baud=4_000_000, phase=1)
    xfer(spi, cs, bytes((0x80, 0xA0)))
    BENCH.advance_ms(53)
    assert BENCH.level(22) == 0
    read_regs(spi, cs, 0x01, 2)
    assert BENCH.level(22) == 1


def test_mode_0_and_too_fast_clock_are_bus_errors():
    _rtd, spi, cs = setup(phase=0)
    xfer(spi, cs, bytes((0x00, 0x00)))
    assert BENCH.error_count("spi_mode") == 1
    fast = spi_bus(SCK, MOSI, MISO, bus=1, baud=10_000_000, phase=1)
    xfer(fast, cs, bytes((0x00, 0x00)))
    assert BENCH.error_count("spi_baudrate") == 1
