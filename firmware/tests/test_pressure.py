# Stack-pressure loop against a screw press on a creeping Li stack (plant double).
from boards.unix_synthetic import PressPlant
from fieldrig.clock import VirtualClock
from fieldrig.pressure import PressureLoop


def _rig(**kw):
    clock = VirtualClock()
    plant = PressPlant(clock)
    loop = PressureLoop(plant, plant, 0.05, plant.area_mm2, **kw)
    return clock, plant, loop


def _run(clock, loop, seconds):
    for _ in range(int(seconds * 20)):
        clock.advance(50000)
        loop.step()


def test_holds_setpoint_while_lithium_creep_relaxes_the_stack():
    clock, plant, loop = _rig()
    loop.set_setpoint(5.0)
    _run(clock, loop, 30)
    assert abs(plant.pressure_mpa() - 5.0) <= 0.15
    start_pos = plant.position
    worst = 0.0
    for _ in range(3600):  # one hour: creep would relax 5 MPa to ~0 at a fixed position
        _run(clock, loop, 1)
        worst = max(worst, abs(plant.pressure_mpa() - 5.0))
    assert worst <= 0.1 + 0.05, worst  # deadband plus one step
    assert plant.position > start_pos + 100  # it kept stepping in to follow the creep
    assert plant.creep_steps > 100


def test_deadband_means_no_motion():
    clock, plant, loop = _rig(deadband_mpa=0.5)
    plant.position = 1250  # 5.0 MPa
    loop.set_setpoint(5.3)
    _run(clock, loop, 1)
    assert plant.steps_total == 0


def test_step_rate_is_capped():
    clock, plant, loop = _rig(max_steps_per_s=100)
    plant.position = 1000
    loop.set_setpoint(40.0)  # far away: the cap decides
    _run(clock, loop, 2)
    assert 195 <= plant.steps_total <= 200


def test_travel_limit_is_never_passed():
    clock, plant, loop = _rig(max_position=1100)
    plant.position = 1090
    loop.set_setpoint(20.0)
    _run(clock, loop, 5)
    assert plant.position == 1100 and loop.blocked == "travel_limit"


def test_end_stops_block_motion_towards_them():
    clock, plant, loop = _rig()
    plant.position = 1100
    plant.high_stop = 1100  # closed end stop hit
    loop.set_setpoint(20.0)
    _run(clock, loop, 1)
    assert plant.position == 1100 and loop.blocked == "end_stop_high"
    plant.position = 1400
    plant.high_stop = 30000
    plant.low_stop = 1400  # open end stop hit while backing off
    loop.set_setpoint(1.0)
    _run(clock, loop, 1)
    assert plant.position == 1400 and loop.blocked == "end_stop_low"


def test_saturated_load_cell_means_no_motion():
    clock, plant, loop = _rig()
    plant.full_scale_n = 10.0  # any contact saturates
    plant.position = 1100
    loop.set_setpoint(30.0)
    _run(clock, loop, 1)
    assert plant.steps_total == 0 and loop.saturated and loop.blocked == "saturated"


def test_safe_holds_position():
    clock, plant, loop = _rig()
    loop.set_setpoint(10.0)
    _run(clock, loop, 2)
    loop.safe()
    pos = plant.position
    _run(clock, loop, 5)
    assert plant.position == pos and plant.stopped == 1 and loop.setpoint_mpa is None
