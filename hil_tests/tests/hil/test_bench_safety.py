"""Every fatal safety fault ends in the safe state -- current off (DAC at mid-scale, stage
disconnected), heater duty 0, press stopped -- with the EVENT on the link. The faults are
injected where they happen on a rig: at the sensor, on the bus, in the power stage."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fieldrig_hil.bench import BenchRig

pytestmark = pytest.mark.fast


def energised(bench_rig: Callable[..., BenchRig], **kw: object) -> BenchRig:
    """A rig with current, heater and pressure loop all active, settled for 3 s."""
    rig = bench_rig(**kw)
    rig.call("set_current", current_ma=1.0)
    rig.call("set_temperature", temp_c=35.0)
    rig.call("set_pressure", pressure_mpa=5.5)
    rig.run_for(3.0)
    out = rig.outputs
    assert out is not None and out.range_index >= 0 and out.dac_code != 0x8000
    return rig


def assert_safe_after_trip(rig: BenchRig, row: str, timeout_s: float) -> None:
    rig.run_until(lambda: rig.first_event("limit_tripped", row=row) is not None, timeout_s,
                  f"limit_tripped {row}")
    ev = rig.first_event("limit_tripped", row=row)
    assert ev is not None
    assert ev.body["tier"] == "fatal" and ev.body["reaction"] == "safe_state"
    rig.step()  # outputs at the end of the step in which the EVENT left the rig
    out = rig.outputs
    assert out is not None
    assert out.dac_code == 0x8000 and out.range_index == -1, "current not off"
    assert out.heater_duty == 0.0, "heater not off"
    pos = out.press_pos_256
    rig.run_for(2.0)
    assert rig.outputs is not None and rig.outputs.press_pos_256 == pos, "press moved"
    assert rig.outputs.safe
    assert rig.samples()[-1][1].rig_state == 2  # telemetry says tripped
    reply = rig.command("set_current", {"current_ma": 0.5})
    assert reply["ok"] is False and reply["error"] == "tripped"


@pytest.mark.parametrize(("fault", "row", "timeout_s"), [
    ("rtd_open", "rtd_open", 2.0),
    ("rtd_short", "rtd_short", 2.0),
    ("loadcell_saturated", "loadcell_sat", 2.0),
    ("adc_rail", "over_voltage", 1.0),
    ("stage_overcurrent", "over_current", 1.0),
])
def test_fatal_fault_ends_in_safe_state_with_event(
    bench_rig: Callable[..., BenchRig], fault: str, row: str, timeout_s: float,
) -> None:
    # The current channel at PGA 1 (+-120 mA over the 10 ohm shunt) so that the 50 mA
    # over-current limit lies inside what the ADC can measure (see the test below).
    rig = energised(bench_rig, seed=11, firmware_opts={"cell_i_gain": "1"})
    if fault == "rtd_open":
        rig.set_rtd("open")
    elif fault == "rtd_short":
        rig.set_rtd("short")
    elif fault == "loadcell_saturated":
        rig.saturate_loadcell()
    elif fault == "adc_rail":
        rig.rail_adc()
    else:
        rig.stage_fault(0.08)  # 80 mA through a failed stage: beyond the 50 mA limit
    assert_safe_after_trip(rig, row, timeout_s)


def test_stuck_on_heater_trips_runaway_then_over_temperature(
    bench_rig: Callable[..., BenchRig],
) -> None:
    # LAGP cell on a 60 W heater (the heater_stuck_on scenario's plant).
    rig = bench_rig(scenario="heater_stuck_on", seed=12)
    assert rig.plant is not None
    rig.call("set_temperature", temp_c=40.0)
    rig.run_for(5.0)
    rig.heater_stuck_on()
    assert_safe_after_trip(rig, "heater_runaway", 120.0)
    # The MOSFET still conducts: the firmware cannot cool the cell, but it keeps the
    # heater commanded off and reports the over-temperature as well.
    rig.run_until(lambda: rig.first_event("limit_tripped", row="over_temp") is not None,
                  400.0, "over_temp")
    assert rig.outputs is not None and rig.outputs.heater_duty == 0.0
    assert rig.plant.temperature_c > 120.0


def test_over_current_trips_with_the_default_front_end(
    bench_rig: Callable[..., BenchRig],
) -> None:
    rig = energised(bench_rig, seed=11)
    rig.stage_fault(0.08)
    assert_safe_after_trip(rig, "over_current", 1.0)
