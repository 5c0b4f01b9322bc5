# Bus errors on sensor reads (an I2C NAK, an SPI / DRDY failure, a press that raises) and
# an RTD with no conversion yet: never out of the control loop, counted in the
# sensor_bus row (fatal, debounced): one transient is tolerated, a lasting one ends in
# the safe state. Also the heater and pressure loops on their own.
import math

from doubles import Bench

from boards.unix_synthetic import PressPlant, ThermalPlant
from fieldrig.clock import VirtualClock
from fieldrig.pid import HeaterLoop, Pid
from fieldrig.pressure import PressureLoop


def _nak(*_args):
    raise OSError(5)  # EIO, what machine.I2C raises for a NAK


class Flaky:
    """Replaces one bound method: raises OSError while ``fail`` > 0 (-1: always)."""

    def __init__(self, obj, name):
        self.orig = getattr(obj, name)
        self.fail = 0
        self.calls = 0
        setattr(obj, name, self)

    def __call__(self, *args):
        self.calls += 1
        if self.fail:
            if self.fail > 0:
                self.fail -= 1
            raise OSError(5)
        return self.orig(*args)


def _energised():
    b = Bench()
    b.rig.set_temperature(40.0)
    b.rig.set_pressure(5.0)
    b.rig.set_current(0.5)
    b.run_ms(2000)
    assert not b.rig.safety.tripped
    return b


def _row(b):
    for i in range(len(b.rig.safety.rows)):
        if b.rig.safety.rows[i][0] == "sensor_bus":
            return i
    raise AssertionError("no sensor_bus row")


def _assert_fatal(b):
    b.run_ms(20)
    sf = b.rig.safety
    assert sf.tripped and sf.active[_row(b)]
    assert b.cell.range_index == -1 and b.thermal.duty == 0.0
    ev = [e for e in b.edge.events("limit_tripped") if e["row"] == "sensor_bus"]
    assert len(ev) == 1 and ev[0]["tier"] == "fatal" and ev[0]["reaction"] == "safe_state"
    return ev[0]


def test_lasting_load_cell_nak_trips_sensor_bus_and_the_press_holds():
    b = _energised()
    f = Flaky(b.press, "read_force_n")
    f.fail = -1
    pos = b.press.position
    i = b.check_debounce("sensor_bus")  # 300 ms from the first failed read
    assert b.rig.safety.active[i]
    ev = _assert_fatal(b)
    assert ev["value"] & 4  # the pressure loop's bit
    assert b.press.position == pos and b.rig.pressure_loop.blocked == "sensor_bus"
    assert f.calls > 5  # the loop kept running (and kept trying)


def test_single_nak_on_each_sensor_is_tolerated():
    b = _energised()
    flaky = (Flaky(b.press, "read_force_n"), Flaky(b.thermal, "fault"),
             Flaky(b.cell, "read_cell"))
    for f in flaky:
        f.fail = 1
        b.run_ms(1000)
    assert not b.rig.safety.tripped and b.rig.signals.sensor_bus == 0
    assert b.edge.events("limit_tripped") == []
    assert b.thermal.duty > 0.0 and b.rig.galvanostat.range_index >= 0


def test_lasting_rtd_spi_error_turns_the_heater_off_and_trips():
    b = _energised()
    f = Flaky(b.thermal, "fault")
    f.fail = -1
    b.run_ms(150)
    assert b.thermal.duty == 0.0  # no reading: heater off at once, before the trip
    b.run_ms(300)
    ev = _assert_fatal(b)
    assert ev["value"] & 2


def test_lasting_adc_error_reads_nan_and_trips():
    b = _energised()
    f = Flaky(b.cell, "read_cell")
    f.fail = -1
    b.run_ms(100)
    assert math.isnan(b.rig.signals.cell_current_ma)
    b.run_ms(300)
    ev = _assert_fatal(b)
    assert ev["value"] & 1


class NotReadyRtd(ThermalPlant):
    """An RTD converter with no conversion yet for the first ``n`` reads (NaN, no fault
    bits), as the MAX31865 driver reports its power-up result."""

    def __init__(self, clock, n):
        super().__init__(clock)
        self.n = n

    def read_temperature_c(self):
        if self.n > 0:
            self.n -= 1
            return math.nan
        return ThermalPlant.read_temperature_c(self)


def test_heater_loop_waits_for_the_first_reading():
    clock = VirtualClock()
    plant = NotReadyRtd(clock, 2)
    loop = HeaterLoop(plant, plant, Pid(0.08, 0.0008, 0.4), 0.1)
    loop.set_setpoint(60.0)
    for _ in range(2):
        loop.step()
        assert not loop.valid and not loop.fault_open and not loop.fault_short
        assert plant.duty == 0.0 and loop.rise_heater_off_c == 0.0 and loop.temp_c == 0.0
    clock.advance(100000)
    loop.step()
    assert loop.valid and plant.duty > 0.0 and 10.0 < loop.temp_c < 40.0


def test_heater_loop_survives_an_rtd_bus_error():
    clock = VirtualClock()
    plant = ThermalPlant(clock)
    loop = HeaterLoop(plant, plant, Pid(0.08, 0.0008, 0.4), 0.1)
    loop.set_setpoint(60.0)
    loop.step()
    assert plant.duty > 0.0
    setattr(plant, "fault", _nak)
    loop.step()
    assert plant.duty == 0.0 and not loop.valid and not loop.fault_open


def test_pressure_loop_does_not_move_without_a_reading():
    clock = VirtualClock()
    plant = PressPlant(clock)
    loop = PressureLoop(plant, plant, 0.05, plant.area_mm2)
    loop.set_setpoint(10.0)
    setattr(plant, "read_force_n", _nak)
    for _ in range(20):
        clock.advance(50000)
        assert loop.step() == 0
    assert plant.steps_total == 0 and loop.blocked == "sensor_bus" and not loop.saturated


def test_pressure_loop_survives_a_press_bus_error():
    clock = VirtualClock()
    plant = PressPlant(clock)
    loop = PressureLoop(plant, plant, 0.05, plant.area_mm2)
    loop.set_setpoint(10.0)
    setattr(plant, "step", _nak)
    clock.advance(50000)
    assert loop.step() == 0 and loop.blocked == "sensor_bus"
