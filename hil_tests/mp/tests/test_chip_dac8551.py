"""DAC8551 model against the datasheet (SBAS379): 24-bit input register, SYNC interrupt,
power-down modes."""

from benchutil import BENCH, fresh, spi_bus, xfer
from chips.dac8551 import DAC8551
from machine import Pin

CS, SCK, MOSI, MISO = 13, 10, 11, 12


def setup(polarity=0, phase=1):
    fresh()
    dac = DAC8551(vref_v=2.5)
    BENCH.add_spi(dac, cs=CS, sck=SCK, mosi=MOSI, miso=None)
    cs = Pin(CS, Pin.OUT, value=1)
    return dac, spi_bus(SCK, MOSI, MISO, bus=1, baud=4_000_000, polarity=polarity,
                        phase=phase), cs


def test_power_on_is_zero_scale():
    dac, _spi, _cs = setup()
    assert dac.code == 0 and dac.vout_v == 0.0 and dac.pd_name == "normal"


def test_24_bit_write_sets_code_and_output():
    dac, spi, cs = setup()
    rx = xfer(spi, cs, bytes((0x00, 0x80, 0x00)))
    assert dac.code == 0x8000 and dac.vout_v == 1.25  # VREF x 32768 / 65536
    assert rx == b"\xff\xff\xff"  # no SDO pin: MISO floats high
    xfer(spi, cs, bytes((0xFC, 0xFF, 0xFF)))  # DB23..DB18 are don't care
    assert dac.code == 0xFFFF and dac.pd_mode == 0
    assert dac.vout_v == 2.5 * 65535 / 65536
    assert dac.writes == 2


def test_sync_high_before_24th_bit_aborts_the_write():
    dac, spi, cs = setup()
    xfer(spi, cs, bytes((0x00, 0x40, 0x00)))
    xfer(spi, cs, bytes((0x00, 0xC0)))  # 16 bits then SYNC high
    assert dac.code == 0x4000 and dac.aborted_writes == 1
    xfer(spi, cs, bytes((0x03,)))  # 8 bits: not even the power-down bits change
    assert dac.pd_mode == 0 and dac.aborted_writes == 2


def test_bits_after_the_24th_are_ignored():
    dac, spi, cs = setup()
    xfer(spi, cs, bytes((0x00, 0x12, 0x34, 0x00, 0xFF, 0xFF)))
    assert dac.code == 0x1234 and dac.writes == 1 and dac.aborted_writes == 0


def test_power_down_modes_output_zero_and_are_recorded():
    dac, spi, cs = setup()
    xfer(spi, cs, bytes((0x00, 0x80, 0x00)))
    for pd, name in ((1, "1k_to_gnd"), (2, "100k_to_gnd"), (3, "hi_z")):
        xfer(spi, cs, bytes((pd, 0x80, 0x00)))
        assert dac.pd_name == name and dac.vout_v == 0.0
    xfer(spi, cs, bytes((0x00, 0x80, 0x00)))
    assert dac.vout_v == 1.25


def test_wrong_spi_mode_shifts_the_data_and_is_counted():
    dac, spi, cs = setup(polarity=0, phase=0)  # mode 0: DAC samples on the other edge
    xfer(spi, cs, bytes((0x00, 0x80, 0x00)))
    assert BENCH.error_count("spi_mode") == 1
    assert dac.code == 0x4000  # the whole word arrives one bit late
