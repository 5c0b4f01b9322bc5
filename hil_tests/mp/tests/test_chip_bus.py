"""machine stand-in: SPI dispatch by chip select, bus errors, fault hooks, pins, PWM,
timers and the watchdog in virtual time."""

import errno

import machine
from benchutil import BENCH, fresh, spi_bus, xfer
from chips.dac8551 import DAC8551
from chips.max31865 import MAX31865
from machine import PWM, SPI, WDT, Pin, Timer

SCK, MOSI, MISO = 10, 11, 12


def two_chips():
    fresh()
    dac = DAC8551()
    rtd = MAX31865(clock=BENCH, rref_ohm=400.0)
    BENCH.add_spi(dac, cs=13, sck=SCK, mosi=MOSI, miso=None)
    BENCH.add_spi(rtd, cs=14, sck=SCK, mosi=MOSI, miso=MISO)
    return dac, rtd, spi_bus(SCK, MOSI, MISO, bus=1, baud=4_000_000)


def test_transfer_goes_to_the_chip_whose_cs_is_low():
    dac, _rtd, spi = two_chips()
    cs_dac = Pin(13, Pin.OUT, value=1)
    cs_rtd = Pin(14, Pin.OUT, value=1)
    xfer(spi, cs_dac, bytes((0x00, 0x12, 0x34)))
    assert dac.code == 0x1234
    assert xfer(spi, cs_rtd, bytes((0x03, 0, 0))) == bytes((0x00, 0xFF, 0xFF))  # HFT
    assert BENCH.error_count() == 0


def test_transfer_with_no_cs_low_is_a_bus_error_and_reads_ff():
    dac, _rtd, spi = two_chips()
    rx = bytearray(3)
    spi.write_readinto(bytes((0x00, 0x44, 0x44)), rx)
    assert rx == b"\xff\xff\xff" and dac.code == 0
    assert BENCH.error_count("spi_no_cs") == 1


def test_two_cs_low_is_a_bus_error_and_both_chips_hear_it():
    dac, _rtd, spi = two_chips()
    Pin(13, Pin.OUT, value=0)
    Pin(14, Pin.OUT, value=0)
    rx = bytearray(3)
    spi.write_readinto(bytes((0x03, 0x00, 0x00)), rx)
    assert BENCH.error_count("spi_multi_cs") == 1
    assert dac.code == 0x0000 and dac.writes == 1  # the DAC took the bytes as a write


def test_stuck_miso_reads_constant_bytes():
    _dac, rtd, spi = two_chips()
    cs = Pin(14, Pin.OUT, value=1)
    BENCH.set_stuck_miso(SCK, 0x00)
    assert xfer(spi, cs, bytes((0x03, 0, 0))) == bytes(3)
    BENCH.set_stuck_miso(SCK, 0xFF)
    assert xfer(spi, cs, bytes((0x80, 0xC0))) == b"\xff\xff"
    assert rtd.regs[0] == 0xC0  # the chip still received MOSI
    BENCH.set_stuck_miso(SCK, None)
    assert xfer(spi, cs, bytes((0x03, 0))) == bytes((0, 0xFF))


def test_cs_on_a_different_bus_is_not_selected():
    dac, _rtd, _spi = two_chips()
    other = SPI(0, 1_000_000, sck=Pin(18), mosi=Pin(19), miso=Pin(16))
    cs = Pin(13, Pin.OUT, value=1)
    xfer(other, cs, bytes((0x00, 0x55, 0x55)))
    assert dac.code == 0 and BENCH.error_count("spi_no_cs") == 1


def test_bad_pins_raise_like_the_rp2_port():
    fresh()
    for kw in ({"sck": Pin(11)}, {"mosi": Pin(10)}, {"miso": Pin(13)}):
        try:
            SPI(1, **kw)
            raise AssertionError(kw)
        except ValueError:
            pass
    try:
        SPI(2)
        raise AssertionError("SPI(2)")
    except ValueError:
        pass
    try:
        Pin(30)
        raise AssertionError("GP30")
    except ValueError:
        pass
    Pin(25, Pin.OUT)  # CYW43 WL_CS on the Pico 2 W
    assert BENCH.error_count("pin_cyw43_conflict") == 1
    assert Pin("GP7")._st.pid == 7


def test_pin_irq_edges_pulls_and_contention():
    fresh()
    seen = []
    p = Pin(6, Pin.IN, Pin.PULL_UP)
    assert p.value() == 1
    p.irq(lambda pin: seen.append(pin.value()), Pin.IRQ_FALLING | Pin.IRQ_RISING)
    BENCH.drive(6, 0)
    BENCH.drive(6, 0)
    BENCH.drive(6, None)
    assert seen == [0, 1]
    out = Pin(7, Pin.OUT, value=1)
    BENCH.drive(7, 0)
    assert BENCH.error_count("pin_contention") == 1 and out.value() == 1


def test_disable_irq_defers_handlers():
    fresh()
    seen = []
    Pin(6, Pin.IN).irq(lambda pin: seen.append(1), Pin.IRQ_RISING)
    state = machine.disable_irq()
    BENCH.drive(6, 1)
    assert seen == []
    machine.enable_irq(state)
    assert seen == [1]


def test_pwm_settings_reach_listeners_and_slice_conflicts_are_counted():
    fresh()
    got = []
    BENCH.watch_pwm(15, lambda f, d, a: got.append((f, d, a)))
    pwm = PWM(Pin(15), freq=100, duty_u16=0)
    pwm.duty_u16(32768)
    assert got[-1] == (100, 32768, True)
    assert pwm.duty_ns() == 32768 * 10_000_000 // 65535
    PWM(Pin(14), freq=1000, duty_u16=1)  # GP14 and GP15 share PWM slice 7
    assert BENCH.error_count("pwm_slice_freq_conflict") == 1
    inv = PWM(Pin(15), freq=100, duty_u16=16384, invert=True)
    assert BENCH.pwm_state(15)[1] == 65535 - 16384
    inv.deinit()
    assert got[-1][2] is False


def test_timers_fire_in_virtual_time():
    fresh()
    ticks = []
    t = Timer(mode=Timer.PERIODIC, period=10, callback=lambda tm: ticks.append(BENCH.now_ns))
    once = []
    Timer(mode=Timer.ONE_SHOT, freq=40, callback=lambda tm: once.append(BENCH.now_ns))
    BENCH.advance_ms(55)
    assert ticks == [10_000_000 * k for k in range(1, 6)]
    assert once == [25_000_000]
    t.deinit()
    BENCH.advance_ms(50)
    assert len(ticks) == 5


def test_watchdog_expiry_resets_and_feeds_are_counted():
    fresh()
    try:
        WDT(timeout=16778)
        raise AssertionError("accepted a timeout beyond the RP2350 maximum")
    except ValueError:
        pass
    wdt = WDT(timeout=100)
    BENCH.advance_ms(90)
    wdt.feed()
    BENCH.advance_ms(90)
    wdt.feed()
    assert BENCH.wdt_feeds == 2 and BENCH.reset_cause is None
    try:
        BENCH.advance_ms(101)
        raise AssertionError("no reset")
    except machine.ResetRequested as e:
        assert e.args[0] == "wdt"
    assert BENCH.reset_cause == "wdt" and BENCH.reset_at_ns == 280_000_000
    assert machine.reset_cause() == machine.WDT_RESET
    BENCH.advance_ms(1000)  # the watchdog stopped with the reset
    assert BENCH.resets == 1


def test_a_board_hears_of_every_reset_before_it_happens():
    # The bench board reports resets to its host through on_reset: a watchdog expiring
    # inside a driver's busy-wait (not in a lockstep sleep) must be reported too.
    fresh()
    heard = []
    BENCH.on_reset = heard.append
    WDT(timeout=100)
    try:
        BENCH.advance_ms(150)  # e.g. time.ticks_us() in a busy-wait moving virtual time
        raise AssertionError("no reset")
    except machine.ResetRequested:
        pass
    assert heard == ["wdt"]
    fresh()
    assert BENCH.on_reset is None


def test_machine_reset_is_not_caught_by_except_exception():
    fresh()
    try:
        try:
            machine.reset()
        except Exception:
            raise AssertionError("reset swallowed by except Exception") from None
    except SystemExit as e:
        assert e.args[0] == "reset"


def test_idle_and_lightsleep_advance_to_the_next_event():
    fresh()
    Timer(mode=Timer.ONE_SHOT, period=3, callback=lambda t: None)
    machine.idle()
    assert BENCH.now_ns == 1_000_000  # at most one 1 ms tick
    machine.lightsleep(5)
    assert BENCH.now_ns == 6_000_000
    assert machine.unique_id() == BENCH.unique_id and machine.freq() == 150_000_000


def test_i2c_unknown_address_naks():
    fresh()
    i2c = machine.I2C(0, scl=Pin(1), sda=Pin(0))
    try:
        i2c.readfrom(0x50, 1)
        raise AssertionError("no NAK")
    except OSError as e:
        assert e.args[0] == errno.EIO
    assert i2c.scan() == []
