"""Reset mid-run: power loss (the process killed, as a brown-out) and ``machine.reset``.
The MCU boots again with a new boot id, greets the edge, and every output comes up safe;
the cell, being physical, keeps its state."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fieldrig_hil.bench import BenchRig

pytestmark = pytest.mark.fast


def energise(rig: BenchRig) -> None:
    rig.call("set_current", current_ma=1.0)
    rig.call("set_temperature", temp_c=45.0)
    rig.call("set_pressure", pressure_mpa=6.0)


def test_brownout_mid_run_gives_a_new_boot_with_safe_outputs(
    bench_rig: Callable[..., BenchRig],
) -> None:
    rig = bench_rig(seed=31)
    energise(rig)
    rig.run_for(60.0)
    assert rig.outputs is not None and rig.outputs.heater_duty > 0.0
    hot = rig.samples()[-1][1].cell_temp_c
    assert hot > 30.0
    t_kill = rig.t_s
    rig.brownout(off_s=2.0)
    rig.run_for(3.0)
    assert len(rig.boots) == 2 and rig.boots[1].t0_s == pytest.approx(t_kill + 2.0)
    boots = [h["boot"] for h in rig.edge.hellos]
    assert len(set(boots)) == 2 and rig.edge.hellos[-1]["next_seq"] in (0, 1)
    assert [e["boot"] for e in rig.event_bodies("boot")] == boots
    new = rig.samples(boot_index=1)
    assert [s.seq for _, s in new] == list(range(len(new))) and len(new) >= 25
    out = rig.outputs
    assert out is not None and out.safe and out.range_index == -1
    assert all(s.rig_state == 1 and abs(s.cell_current_ma) < 0.01 for _, s in new)
    # The cell kept its heat (it cools slowly with the heater off), the screw its place.
    assert new[0][1].cell_temp_c > hot - 3.0
    assert new[0][1].stack_pressure_mpa == pytest.approx(6.0, abs=0.2)
    status = rig.call("status")
    assert status["temp_set_c"] is None and status["current_set_ma"] == 0.0


def test_machine_reset_is_reported_and_the_rig_reboots(bench_rig: Callable[..., BenchRig]) -> None:
    rig = bench_rig(seed=32)
    energise(rig)
    rig.run_for(2.0)
    rig.request_reset()
    rig.run_for(2.0)
    assert [r["cause"] for r in rig.resets] == ["reset"]
    assert len(rig.edge.hellos) == 2 and len(rig.event_bodies("boot")) == 2
    assert rig.outputs is not None and rig.outputs.safe
