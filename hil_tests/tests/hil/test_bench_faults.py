"""Bus errors, link corruption and mechanical faults, injected on the bench. The rig must
keep its interlocks and its link accounting; where it does not, the test names the gap."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fieldrig_hil.bench import BenchRig, LinkFaults

pytestmark = pytest.mark.fast


def test_adc_crc_errors_turn_the_current_off_until_they_stop(
    bench_rig: Callable[..., BenchRig],
) -> None:
    rig = bench_rig(seed=41)
    rig.call("set_current", current_ma=1.0)
    rig.run_for(2.0)
    rig.corrupt_adc_crc(2000)  # every frame for about 18 s (110 frames/s are read)
    rig.run_until(lambda: rig.first_event("limit_tripped", row="adc_crc") is not None, 3.0,
                  "adc_crc")
    ev = rig.first_event("limit_tripped", row="adc_crc")
    assert ev is not None and ev.body["tier"] == "warning"
    assert ev.body["reaction"] == "current_off"
    rig.step()
    assert rig.outputs is not None and rig.outputs.range_index == -1
    assert rig.outputs.bus_errors == 0  # CRC errors are the chip's, not bus misuse
    rig.run_until(lambda: rig.first_event("limit_cleared", row="adc_crc") is not None, 30.0,
                  "adc_crc cleared")
    status = rig.call("status")
    assert status["state"] == "running" and "adc_crc" not in status["active"]


def test_loadcell_i2c_nak_is_survived_and_the_press_holds(
    bench_rig: Callable[..., BenchRig],
) -> None:
    rig = bench_rig(seed=42)
    rig.call("set_pressure", pressure_mpa=6.0)
    rig.run_for(3.0)
    rig.nak_loadcell()  # until cleared
    rig.run_for(1.0)
    assert rig.outputs is not None
    pos = rig.outputs.press_pos_256
    rig.run_for(2.0)
    assert rig.outputs.press_pos_256 == pos  # pressure unknown: no motion
    assert rig.call("status")["state"] in ("running", "tripped")


def test_press_end_stop_hit_stops_the_screw(bench_rig: Callable[..., BenchRig]) -> None:
    rig = bench_rig(seed=43)
    rig.call("set_pressure", pressure_mpa=15.0)
    rig.run_for(0.6)  # the screw is on its way in
    assert rig.outputs is not None
    moving_from = rig.outputs.press_pos_256
    rig.force_endstops(endstop_max=True)  # the closed-side stop triggers
    rig.step()
    stopped_at = rig.outputs.press_pos_256
    assert stopped_at > moving_from
    rig.run_for(3.0)
    assert rig.outputs.press_pos_256 == stopped_at and rig.outputs.endstop_max == 1
    assert rig.samples()[-1][1].stack_pressure_mpa < 14.0  # short of the set-point
    rig.force_endstops()  # released: the loop carries on to the set-point
    rig.run_until(lambda: abs(rig.samples()[-1][1].stack_pressure_mpa - 15.0) < 0.2, 10.0,
                  "15 MPa after release")


def test_corrupted_and_lossy_link_still_delivers_every_sample_once(
    bench_rig: Callable[..., BenchRig],
) -> None:
    faults = LinkFaults(flip_rate=2e-4, drop_rate=2e-4, seed=7)
    rig = bench_rig(seed=44, period_ms=20, link_faults=faults)
    rig.call("set_current", current_ma=0.5)
    rig.run_for(30.0)
    assert faults.flipped > 10 and faults.dropped > 10
    assert rig.edge.decoder.errors > 0  # corrupt frames were seen and dropped
    seqs = [s.seq for _, s in rig.samples()]
    assert seqs == list(range(len(seqs)))  # no gap, no duplicate stored
    assert len(seqs) > 0.9 * 30.0 / 0.02  # retransmission caught up
    assert rig.call("status")["link_errors"] > 0  # the rig saw corrupt commands/acks too
