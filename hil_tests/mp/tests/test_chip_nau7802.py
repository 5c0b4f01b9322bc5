"""NAU7802 model against the datasheet (Rev 1.7) through machine.I2C at 0x2A."""

import errno

from benchutil import BENCH, fresh
from chips import nau7802 as nau
from machine import I2C, Pin

SDA, SCL = 0, 1


def setup():
    fresh()
    dev = nau.NAU7802(clock=BENCH, avdd_v=3.3)
    BENCH.add_i2c(dev, 0x2A, sda=SDA, scl=SCL)
    BENCH.add_clocked(dev)
    return dev, I2C(0, scl=Pin(SCL), sda=Pin(SDA), freq=400_000)


def rd(i2c, reg, n=1):
    return i2c.readfrom_mem(0x2A, reg, n)


def wr(i2c, reg, value):
    i2c.writeto_mem(0x2A, reg, bytes((value,)))


def power_up(i2c, ctrl2=0x30):
    wr(i2c, nau.PU_CTRL, nau.PU_RR)
    wr(i2c, nau.PU_CTRL, nau.PU_PUD)
    BENCH.advance_us(nau.T_PUR_NS // 1000)
    wr(i2c, nau.PU_CTRL, nau.PU_PUD | nau.PU_PUA)
    wr(i2c, nau.CTRL1, 0x07)  # gain 128, VLDO code 0
    wr(i2c, nau.CTRL2, ctrl2)  # CRS
    wr(i2c, nau.PU_CTRL, nau.PU_PUD | nau.PU_PUA | nau.PU_CS)


def test_scan_revision_and_power_on_values():
    _dev, i2c = setup()
    assert i2c.scan() == [0x2A]
    assert rd(i2c, nau.REVISION_ID) == b"\x0f"
    assert rd(i2c, 0x00, 3) == bytes(3)
    assert rd(i2c, nau.GCAL1_B3, 4) == bytes((0x00, 0x80, 0x00, 0x00))  # gain 1.0


def test_power_up_sequence_sets_pur_after_the_digital_core_is_up():
    _dev, i2c = setup()
    wr(i2c, nau.PU_CTRL, nau.PU_RR)
    wr(i2c, nau.PU_CTRL, nau.PU_PUD)
    assert rd(i2c, nau.PU_CTRL)[0] & nau.PU_PUR == 0
    BENCH.advance_us(199)
    assert rd(i2c, nau.PU_CTRL)[0] & nau.PU_PUR == 0
    BENCH.advance_us(1)
    assert rd(i2c, nau.PU_CTRL)[0] == nau.PU_PUD | nau.PU_PUR
    wr(i2c, nau.PU_CTRL, nau.PU_PUD | nau.PU_PUR)  # PUR is read-only: writing it is ignored
    wr(i2c, nau.PU_CTRL, 0)
    assert rd(i2c, nau.PU_CTRL)[0] == 0  # powered down: not ready


def test_register_reset_restores_power_on_values():
    _dev, i2c = setup()
    wr(i2c, nau.CTRL1, 0x27)
    wr(i2c, nau.PU_CTRL, nau.PU_RR)
    assert rd(i2c, nau.CTRL1) == b"\x00"


def test_cycle_ready_timing_and_clear_on_read():
    dev, i2c = setup()
    power_up(i2c, ctrl2=0x30)  # 80 SPS
    BENCH.advance_us(12_499)
    assert not rd(i2c, nau.PU_CTRL)[0] & nau.PU_CR
    BENCH.advance_us(1)
    assert rd(i2c, nau.PU_CTRL)[0] & nau.PU_CR
    rd(i2c, nau.ADCO_B2, 3)
    assert not rd(i2c, nau.PU_CTRL)[0] & nau.PU_CR
    wr(i2c, nau.CTRL2, 0x70)  # 320 SPS
    n0 = dev.conversions
    BENCH.advance_ms(100)
    assert dev.conversions - n0 in (31, 32)


def test_code_for_a_bridge_input_and_external_avdd():
    dev, i2c = setup()
    power_up(i2c)
    dev.vin_v[0] = 0.005
    BENCH.advance_ms(13)
    code = round(0.005 * 128 / (0.5 * 3.3) * (1 << 23))
    b = rd(i2c, nau.ADCO_B2, 3)
    assert b == bytes(((code >> 16) & 0xFF, (code >> 8) & 0xFF, code & 0xFF))
    dev.vin_v[0] = -0.005
    BENCH.advance_ms(13)
    b = rd(i2c, nau.ADCO_B2, 3)
    got = (b[0] << 16) | (b[1] << 8) | b[2]
    assert got - (1 << 24) == -code


def test_ldo_sets_the_reference_for_a_ratiometric_bridge():
    dev, i2c = setup()
    power_up(i2c)
    wr(i2c, nau.CTRL1, 0x07 | (4 << 3))  # VLDO 100b = 3.3 V
    wr(i2c, nau.PU_CTRL, nau.PU_PUD | nau.PU_PUA | nau.PU_CS | nau.PU_AVDDS)
    assert dev.ref_v() == 4.5 - 0.3 * 4
    dev.bridge_v_per_v = 0.001  # 1 mV/V: half the +-0.5 VREF / 128 span is 3.9 mV/V
    BENCH.advance_ms(13)
    b = rd(i2c, nau.ADCO_B2, 3)
    assert (b[0] << 16) | (b[1] << 8) | b[2] == round(0.001 * 128 / 0.5 * (1 << 23))


def test_saturation_at_both_rails():
    dev, i2c = setup()
    power_up(i2c)
    dev.vin_v[0] = 0.1
    BENCH.advance_ms(13)
    assert rd(i2c, nau.ADCO_B2, 3) == b"\x7f\xff\xff"
    dev.vin_v[0] = -0.1
    BENCH.advance_ms(13)
    assert rd(i2c, nau.ADCO_B2, 3) == b"\x80\x00\x00"
    assert dev.saturations >= 2


def start_cal(i2c, calmod):
    ctrl2 = rd(i2c, nau.CTRL2)[0] & ~0x03 & 0xFF
    wr(i2c, nau.CTRL2, ctrl2 | calmod | nau.CTRL2_CALS)


def test_system_offset_and_gain_calibration_change_the_output():
    dev, i2c = setup()
    power_up(i2c)
    dev.vin_v[0] = 0.001  # tare load
    start_cal(i2c, 2)  # system offset
    assert rd(i2c, nau.CTRL2)[0] & nau.CTRL2_CALS
    BENCH.advance_ms(13)
    assert rd(i2c, nau.CTRL2)[0] & (nau.CTRL2_CALS | nau.CTRL2_CAL_ERR) == 0
    offset = dev.raw_code()
    b = rd(i2c, nau.OCAL1_B2, 3)
    assert (b[0] << 16) | (b[1] << 8) | b[2] == offset
    BENCH.advance_ms(13)
    assert rd(i2c, nau.ADCO_B2, 3) == bytes(3)  # the offset is subtracted
    dev.vin_v[0] = 0.004  # full-scale load for the gain calibration
    start_cal(i2c, 3)
    BENCH.advance_ms(13)
    assert not rd(i2c, nau.CTRL2)[0] & nau.CTRL2_CAL_ERR
    BENCH.advance_ms(13)
    b = rd(i2c, nau.ADCO_B2, 3)
    assert abs(((b[0] << 16) | (b[1] << 8) | b[2]) - 0x7FFFFF) <= 1
    dev.vin_v[0] = 0.0025  # halfway between tare and span
    BENCH.advance_ms(13)
    b = rd(i2c, nau.ADCO_B2, 3)
    assert abs(((b[0] << 16) | (b[1] << 8) | b[2]) - 0x400000) <= 2


def test_gain_calibration_error_when_the_input_is_not_above_the_offset():
    dev, i2c = setup()
    power_up(i2c)
    dev.vin_v[0] = 0.0
    start_cal(i2c, 3)
    BENCH.advance_ms(13)
    assert rd(i2c, nau.CTRL2)[0] & nau.CTRL2_CAL_ERR
    dev.vin_v[0] = 0.001
    start_cal(i2c, 3)  # a valid calibration clears CAL_ERR
    BENCH.advance_ms(13)
    assert not rd(i2c, nau.CTRL2)[0] & nau.CTRL2_CAL_ERR


def test_nak_injection_and_unknown_address():
    _dev, i2c = setup()
    BENCH.nak(0x2A, count=2)
    for _ in range(2):
        try:
            rd(i2c, nau.PU_CTRL)
            raise AssertionError("no NAK")
        except OSError as e:
            assert e.args[0] == errno.EIO  # rp2 hardware I2C reports a NAK as EIO
    assert rd(i2c, nau.REVISION_ID) == b"\x0f"
    try:
        i2c.writeto(0x40, b"")  # zero-length write: the soft-I2C path, ENODEV
        raise AssertionError("no NAK")
    except OSError as e:
        assert e.args[0] == errno.ENODEV
    assert BENCH.error_count("i2c_nak") == 3


def test_bad_pins_and_fast_clock():
    _dev, _i2c = setup()
    try:
        I2C(0, scl=Pin(2), sda=Pin(0))
        raise AssertionError("accepted GP2 as I2C0 SCL")
    except ValueError:
        pass
    fast = I2C(0, scl=Pin(SCL), sda=Pin(SDA), freq=1_000_000)
    fast.readfrom_mem(0x2A, nau.REVISION_ID, 1)
    assert BENCH.error_count("i2c_freq") == 1
