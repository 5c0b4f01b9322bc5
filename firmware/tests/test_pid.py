# Heater PID: anti-windup, output rate limit, derivative on measurement, RTD fault ->
# heater off; the loop brings the thermal plant double to its set-point.
from boards.unix_synthetic import ThermalPlant
from fieldrig.clock import VirtualClock
from fieldrig.pid import HeaterLoop, Pid


def test_output_is_clamped_and_integrator_does_not_wind_up():
    pid = Pid(0.1, 0.01, 0.0, rate_per_s=100.0)
    for _ in range(10000):  # 1000 s far below the set-point: output pinned at 1
        out = pid.update(100.0, 20.0, 0.1)
    assert out == 1.0
    assert pid.integral <= 1.0
    # The measurement passes the set-point: with a wound-up integrator the output would
    # stay at 1 for ages; with anti-windup it leaves saturation within a few steps.
    steps = 0
    while pid.update(100.0, 101.0, 0.1) >= 1.0:
        steps += 1
        assert steps < 20, "integrator wound up"


def test_back_calculation_tracks_the_rate_limited_output():
    pid = Pid(1.0, 0.5, 0.0, rate_per_s=0.1)  # slow actuator: 0.1 per second
    outs = [pid.update(10.0, 0.0, 0.1) for _ in range(50)]
    for k in range(1, len(outs)):
        assert outs[k] - outs[k - 1] <= 0.1 * 0.1 + 1e-9  # rate limit holds
    # The integrator followed what was applied (about 0.5), not the unreachable demand.
    assert pid.integral < 0.7


def test_rate_limit_applies_downwards_too():
    pid = Pid(1.0, 0.0, 0.0, rate_per_s=0.5)
    pid.reset(1.0)
    out = pid.update(0.0, 50.0, 0.1)
    assert abs(out - 0.95) < 1e-9


def test_derivative_acts_on_measurement_not_setpoint():
    pid = Pid(0.0, 0.0, 1.0, out_min=-10.0, out_max=10.0, rate_per_s=1000.0)
    pid.update(20.0, 20.0, 0.1)
    # A set-point step with a steady measurement: no derivative kick.
    assert pid.update(80.0, 20.0, 0.1) == 0.0
    # A rising measurement: derivative opposes it.
    assert pid.update(80.0, 21.0, 0.1) < 0.0


def test_heater_loop_reaches_setpoint_on_the_plant():
    clock = VirtualClock()
    plant = ThermalPlant(clock)
    loop = HeaterLoop(plant, plant, Pid(0.08, 0.0008, 0.4, rate_per_s=0.2, d_filter_s=2.0), 0.1)
    loop.set_setpoint(60.0)
    peak = 0.0
    for k in range(30000):  # 3000 s at 10 Hz
        clock.advance(100000)
        loop.step()
        if k > 5000:
            peak = max(peak, plant.temp_c)
    assert abs(plant.temp_c - 60.0) < 0.5, plant.temp_c
    assert peak < 63.0  # overshoot bounded (over-temp limit is far above)


def test_rtd_fault_turns_heater_off_in_the_same_step():
    clock = VirtualClock()
    plant = ThermalPlant(clock)
    loop = HeaterLoop(plant, plant, Pid(0.08, 0.0008, 0.4, rate_per_s=1.0), 0.1)
    loop.set_setpoint(80.0)
    for _ in range(20):
        clock.advance(100000)
        loop.step()
    assert plant.duty > 0.0
    last_good = loop.temp_c
    plant.fault_code = 0x04  # over/under-voltage fault: counted as open
    loop.step()
    assert plant.duty == 0.0 and loop.fault_open and not loop.fault_short and not loop.valid
    assert loop.temp_c == last_good  # the last valid reading is kept, flagged invalid
    for _ in range(10):
        clock.advance(100000)
        loop.step()
        assert plant.duty == 0.0
    plant.fault_code = 0
    loop.step()  # recovers from zero (PID reset), not from a stale integral
    assert loop.valid and plant.duty <= 0.1 * 1.0 + 1e-9


def test_runaway_signal_rises_only_with_heater_off():
    clock = VirtualClock()
    plant = ThermalPlant(clock)
    loop = HeaterLoop(plant, plant, Pid(0.08, 0.0008, 0.4), 0.1)
    for _ in range(100):
        clock.advance(100000)
        loop.step()
    assert loop.rise_heater_off_c < 0.01  # heater off, plant cooling/steady
    plant.stuck_on = True
    for _ in range(300):
        clock.advance(100000)
        loop.step()
    assert loop.rise_heater_off_c > 10.0  # 0.4 C/s for 30 s
    loop.set_setpoint(200.0)  # heater commanded on: the rise is expected, not runaway
    clock.advance(100000)
    loop.step()
    assert loop.rise_heater_off_c == 0.0
