# DAC8551: exact 24-bit frames (PD1/PD0 + 16-bit code, MSB first, one CS-low per write),
# voltage mapping and clamping, power-down modes and the safe output.
from fakebus import (
    BusLog,
    FakePin,
    FakeSPI,
    NullSpiDevice,
    ScriptedSpiDevice,
    runs_with_heap_locked,
)

from fieldrig.drivers import dac8551
from fieldrig.drivers.dac8551 import DAC8551


def _dac(vref_v=2.5, safe_code=None):
    log = BusLog()
    spi = FakeSPI(1, log)
    cs = FakePin(13, value=1)
    dev = spi.attach(cs, ScriptedSpiDevice(), "dac")
    return DAC8551(spi, cs, vref_v, safe_code), dev, log


def test_set_code_frames():
    dac, dev, log = _dac()
    dac.set_code(0x1234)
    dac.set_code(0xFFFF)
    dac.set_code(0)
    assert dev.received == [b"\x00\x12\x34", b"\x00\xff\xff", b"\x00\x00\x00"]
    # Each write is framed by exactly one CS low..high around 3 bytes.
    assert log.entries[:3] == [("cs", "dac", 0), ("spi", "dac", b"\x00\x12\x34", b""),
                               ("cs", "dac", 1)]


def test_power_down_frames():
    dac, dev, _ = _dac()
    dac.power_down(dac8551.PD_1K_TO_GND)
    dac.power_down(dac8551.PD_100K_TO_GND)
    dac.power_down(dac8551.PD_HIGH_Z)
    assert dev.received == [b"\x01\x00\x00", b"\x02\x00\x00", b"\x03\x00\x00"]
    assert dac.power_mode == dac8551.PD_HIGH_Z
    dac.set_code(5)
    assert dac.power_mode == dac8551.PD_NORMAL


def test_voltage_mapping_and_clamping():
    dac, dev, _ = _dac(vref_v=2.5)
    assert dac.set_voltage(1.25) == 0x8000  # VOUT = VREF * D / 65536
    assert dac.set_voltage(0.625) == 0x4000
    assert dac.set_voltage(2.5) == 0xFFFF  # full VREF is one code past the top
    assert dac.set_voltage(3.3) == 0xFFFF
    assert dac.set_voltage(-0.5) == 0
    assert dac.set_voltage(float("nan")) == 0
    assert dev.received[0] == b"\x00\x80\x00"
    dac.set_code(0x8000)
    assert abs(dac.voltage() - 1.25) < 1e-9


def test_out_of_range_code_refused_and_nothing_sent():
    dac, dev, _ = _dac()
    for bad in (-1, 0x10000):
        try:
            dac.set_code(bad)
        except ValueError:
            continue
        raise AssertionError("accepted code %r" % bad)
    try:
        dac.power_down(dac8551.PD_NORMAL)
    except ValueError:
        pass
    else:
        raise AssertionError("power_down accepted normal mode")
    assert dev.received == []


def test_safe_without_safe_code_powers_down_to_ground():
    dac, dev, _ = _dac()
    dac.set_code(0xABCD)
    dac.safe()
    assert dev.received[-1] == b"\x01\x00\x00"


def test_safe_with_mid_scale_for_bipolar_stage():
    dac, dev, _ = _dac(safe_code=0x8000)
    dac.set_code(0xFFFF)
    dac.safe()
    assert dev.received[-1] == b"\x00\x80\x00"
    assert dac.code == 0x8000


def test_set_code_allocates_nothing():
    log = BusLog()
    log.enabled = False
    spi = FakeSPI(1, log)
    cs = FakePin(13, value=1)
    sink = spi.attach(cs, NullSpiDevice(), "dac")
    dac = DAC8551(spi, cs)

    def write():
        dac.set_code(0x7FFF)

    assert runs_with_heap_locked(write)
    assert sink.count == 1
    assert dac.code == 0x7FFF


def test_bipolar_fraction_about_mid_scale():
    dac, dev, _ = _dac()
    assert dac.set_fraction(0.0) == 0x8000  # zero current on the bipolar stage
    assert dac.set_fraction(0.5) == 0xC000
    assert dac.set_fraction(-0.5) == 0x4000
    assert dac.set_fraction(-1.0) == 0x0000
    assert dac.set_fraction(1.0) == 0xFFFF
    assert dac.set_fraction(7.0) == 0xFFFF
    assert dac.set_fraction(-7.0) == 0x0000
    assert dac.set_fraction(float("nan")) == 0x8000
    assert dev.received[:3] == [b"\x00\x80\x00", b"\x00\xc0\x00", b"\x00\x40\x00"]
