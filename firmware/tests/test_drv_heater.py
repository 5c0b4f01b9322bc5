# Heater PWM driver: duty mapping onto duty_u16, the duty limit, NaN/negative handling,
# and that off() works at any time.
from fakebus import BusLog, FakePWM, runs_with_heap_locked

from fieldrig.drivers.heater import Heater


def _heater(max_duty=1.0):
    log = BusLog()
    pwm = FakePWM(log=log, name="heater", duty_u16=12345)
    return Heater(pwm, max_duty), pwm, log


def test_constructor_turns_heater_off():
    h, pwm, log = _heater()
    assert pwm.duty_u16() == 0
    assert log.of("pwm") == [("pwm", "heater", 0)]
    assert h.duty == 0.0


def test_duty_maps_to_duty_u16():
    h, pwm, _ = _heater()
    assert h.set_duty(0.5) == 32768
    assert pwm.duty_u16() == 32768
    assert h.set_duty(1.0) == 65535
    assert h.set_duty(0.25) == 16384
    assert abs(h.duty - 0.25) < 1e-4


def test_duty_is_clamped_to_limit():
    h, pwm, _ = _heater(max_duty=0.4)
    assert h.set_duty(0.9) == 26214  # 0.4 * 65535, rounded
    assert pwm.duty_u16() == 26214
    assert h.set_duty(1e9) == 26214
    assert h.set_duty(float("inf")) == 26214
    assert h.set_duty(0.1) == 6554


def test_negative_and_nan_mean_off():
    h, pwm, _ = _heater()
    h.set_duty(0.7)
    assert h.set_duty(-0.2) == 0
    assert pwm.duty_u16() == 0
    h.set_duty(0.7)
    assert h.set_duty(float("nan")) == 0
    assert pwm.duty_u16() == 0


def test_off_any_time_and_allocation_free():
    h, pwm, log = _heater()
    h.set_duty(0.8)
    log.enabled = False
    assert runs_with_heap_locked(h.off)
    assert pwm.duty_u16() == 0
    h.off()
    assert pwm.duty_u16() == 0


def test_limit_outside_range_refused():
    for bad in (-0.1, 1.5):
        try:
            Heater(FakePWM(), bad)
        except ValueError:
            continue
        raise AssertionError("accepted max_duty %r" % bad)
