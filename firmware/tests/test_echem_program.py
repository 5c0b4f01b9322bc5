# Recipes on the running rig (virtual time, plant doubles): set-points applied in order
# through the galvanostat, the pressure loop and the PIO gate; step events; completion
# with results (CCD); the cursor on flash and what a reset does with it.
#
# Each scenario (_name) runs in its own interpreter with a 512 KiB heap (run_isolated,
# see test_echem_commands.py).
import os

from doubles import Bench, run_isolated

HERE = "test_echem_program.py"


class Recorder:
    """Galvanostat set-point changes, sampled every 5 ms of rig time, with the step
    path and loop counters they belong to."""

    def __init__(self, bench):
        self.b = bench
        self.changes = []

    def run_ms(self, ms):
        from fieldrig.echem_host import recipe_host

        b = self.b
        rh = recipe_host(b.rig)
        for _ in range(ms // 5):
            b.rig.sched.run_for_ms(5)
            r = rh.runner
            key = (r.path(), [f[2] for f in r.frames[1:]], b.rig.galvanostat.setpoint_ma)
            if rh.running() and (not self.changes or self.changes[-1] != key):
                self.changes.append(key)
        b.edge.read()


def _host(b):
    from fieldrig.echem_host import recipe_host

    return recipe_host(b.rig)


def _start(b, recipe):
    from fieldrig.echem_host import recipe_host

    host = recipe_host(b.rig)
    host.load(recipe)
    host.start()
    return host


PROGRAM = {"recipe": 1, "name": "programs", "area_cm2": 0.5, "steps": [
    {"type": "set_pressure", "pressure_mpa": 5.0, "tolerance_mpa": 0.3,
     "until": {"time_s": 30}},
    {"type": "plate", "current_ma_cm2": 0.5, "until": {"time_s": 2}},
    # software pulses: 25 ms phases, reverse off current
    {"type": "pulse", "on_ma_cm2": 0.5, "off_ma_cm2": -0.2, "freq_hz": 20, "duty": 0.5,
     "count": 4},
    {"type": "rest", "until": {"time_s": 1}},
    # PIO pulses: 0.5 ms phases, the DAC holds the on current
    {"type": "pulse", "on_ma_cm2": 0.5, "freq_hz": 1000, "duty": 0.5, "count": 1000},
    {"type": "strip", "current_ma_cm2": 0.25, "until": {"time_s": 1}}]}


def _programs_run_in_order():
    from fieldrig.echem_host import pulse_gate

    b = Bench()
    b.run_ms(600)
    host = _start(b, PROGRAM)
    rec = Recorder(b)
    rec.run_ms(8000)
    assert host.state == "done", host.status()
    seq = [(c[0], c[2]) for c in rec.changes]
    # set_pressure holds no current; plate 0.25 mA; 4 pulses 0.25 / -0.1 mA; rest 0
    # (output off); PIO train with the DAC at 0.25 mA; strip -0.125 mA.
    want = [("steps[0]", 0.0), ("steps[1]", 0.25)]
    for _ in range(4):
        want += [("steps[2]", 0.25), ("steps[2]", -0.1)]
    want += [("steps[3]", 0.0), ("steps[4]", 0.25), ("steps[5]", -0.125)]
    assert seq == want, seq
    assert b.rig.pressure_loop.setpoint_mpa == 5.0  # kept after the recipe
    assert b.rig.galvanostat.range_index == -1
    gate = pulse_gate(b.rig)
    trains = [e for e in gate.log if e["kind"] != "stop"]
    assert len(trains) == 1 and gate.log[-1] == {"kind": "stop"}, gate.log
    t = trains[0]
    assert t["count"] == 1000 and t["on_ma"] == 0.25 and abs(t["freq_hz"] - 1000.0) < 1e-6
    assert t["on_cycles"] == 75000 and t["off_cycles"] == 75000  # 150 MHz RP2350 clock
    steps = b.edge.events("recipe_step")
    starts = [e["path"] for e in steps if e["phase"] == "start"]
    ends = [(e["path"], e["reason"]) for e in steps if e["phase"] == "end"]
    assert starts == ["steps[%d]" % j for j in range(6)], starts
    assert ends == [("steps[0]", "reached"), ("steps[1]", "time_s"), ("steps[2]", "count"),
                    ("steps[3]", "time_s"), ("steps[4]", "count"), ("steps[5]", "time_s")], ends
    done = b.edge.events("recipe_done")
    assert len(done) == 1 and done[0]["result"] == "completed", done
    # Charge: measured |I| integrated: 2 s x 0.25 + 4 x (25 ms x 0.25 + 25 ms x 0.1)
    # + 1 s x 0.25 (PIO train, the DAC holds on_ma) + 1 s x 0.125, in mAh/cm2.
    q = (2 * 0.25 + 4 * 0.025 * 0.35 + 1 * 0.25 + 1 * 0.125) / 3600 / 0.5
    assert abs(done[0]["total_charge_mah_cm2"] - q) < 0.02 * q, (done, q)


def _ccd_ladder_reports_the_ccd():
    from fieldrig.echem import recipe
    from fieldrig.echem_host import route_alarm

    b = Bench()
    b.run_ms(600)
    ladder = recipe.ccd_ladder(0.5, start_ma_cm2=0.1, step_ma_cm2=0.1, max_ma_cm2=0.5,
                               capacity_mah_cm2=0.0001, rest_s=1.0)
    host = _start(b, ladder)
    for _ in range(200):
        b.run_ms(100)
        st = host.status()
        if st.get("type") == "plate" and abs(b.rig.galvanostat.setpoint_ma - 0.15) < 1e-9:
            break  # plating at 0.3 mA/cm2 on 0.5 cm2
    else:
        raise AssertionError("never reached 0.3 mA/cm2")
    b.run_ms(500)
    route_alarm(b.rig, {"event": "echem_alarm", "kind": "soft_short", "confidence": 0.7})
    b.run_ms(100)
    assert host.state == "done" and b.rig.galvanostat.range_index == -1
    done = b.edge.events("recipe_done")[0]
    assert done["result"] == "stopped" and done["reason"] == "stop_on:soft_short", done
    assert done["ccd_ma_cm2"] == 0.3 and done["last_passed_ma_cm2"] == 0.2, done
    assert host.result["ccd_ma_cm2"] == 0.3


CYCLE = {"recipe": 1, "name": "cycle", "area_cm2": 1.0, "on_reset": "resume", "steps": [
    {"type": "loop", "count": 2, "steps": [
        {"type": "plate", "current_ma_cm2": 0.4, "until": {"time_s": 1.5}},
        {"type": "strip", "current_ma_cm2": 0.2, "until": {"time_s": 1.5}}]}]}


def _tmpdir():
    d = "/tmp/fieldrig-recipe-%s" % "".join("%02x" % x for x in os.urandom(6))
    os.mkdir(d)
    return d


def _cleanup(d):
    for f in os.listdir(d):
        os.remove(d + "/" + f)
    os.rmdir(d)


def _resume_after_reset_gives_identical_set_points():
    import gc

    d = _tmpdir()
    try:
        # Uninterrupted run.
        a = Bench(recipe_path=d + "/a.json")
        a.run_ms(600)
        _start(a, CYCLE)
        ra = Recorder(a)
        ra.run_ms(7000)
        assert _host(a).state == "done"
        full = ra.changes
        del a, ra
        gc.collect()
        # Reset in the middle of the first strip: the rig reboots on the same flash.
        b = Bench(recipe_path=d + "/b.json")
        b.run_ms(600)
        _start(b, CYCLE)
        rb = Recorder(b)
        rb.run_ms(2200)
        before = rb.changes
        assert before[-1][:2] == ("steps[0].steps[1]", [0]), before
        del b, rb
        gc.collect()
        b2 = Bench(recipe_path=d + "/b.json", boot_id=0x2222)
        host = _host(b2)
        assert host.state == "running"  # resumed at boot, before any command
        rb2 = Recorder(b2)
        rb2.run_ms(7000)
        assert host.state == "done"
        ev = b2.edge.events("recipe_resumed")
        assert len(ev) == 1 and ev[0]["name"] == "cycle" and ev[0]["path"] == "steps[0].steps[1]"
        after = rb2.changes
        k = full.index(after[0])
        assert after == full[k:], (after, full)
        assert before + after[1:] == full or before[:-1] + after == full, (before, after)
        done = b2.edge.events("recipe_done")
        assert len(done) == 1 and done[0]["result"] == "completed"
    finally:
        _cleanup(d)


def _reset_aborts_by_default_and_says_so_once():
    import gc

    d = _tmpdir()
    try:
        recipe = dict(CYCLE)
        del recipe["on_reset"]
        b = Bench(recipe_path=d + "/r.json")
        b.run_ms(600)
        _start(b, recipe)
        b.run_ms(1000)
        assert b.rig.galvanostat.range_index != -1
        del b
        gc.collect()
        b2 = Bench(recipe_path=d + "/r.json", boot_id=0x3333)
        b2.run_ms(3000)
        assert b2.rig.galvanostat.range_index == -1 and _host(b2).state == "aborted"
        done = b2.edge.events("recipe_done")
        assert len(done) == 1 and done[0]["result"] == "aborted", done
        assert done[0]["reason"] == "reset" and done[0]["detail"] == "on_reset is abort"
        assert b2.edge.events("recipe_resumed") == []
        del b2
        gc.collect()
        b3 = Bench(recipe_path=d + "/r.json", boot_id=0x4444)
        b3.run_ms(1000)
        assert b3.edge.events("recipe_done") == [] and b3.rig.galvanostat.range_index == -1
        assert sorted(os.listdir(d)) == ["r.json", "r.json.cursor"]
    finally:
        _cleanup(d)


CUTOFF = {"recipe": 1, "name": "cutoff", "area_cm2": 0.5, "steps": [
    {"type": "plate", "current_ma_cm2": 0.5, "until": {"time_s": 100, "voltage_v_above": 1.0}},
    {"type": "rest", "until": {"time_s": 1.234}},
    {"type": "strip", "current_ma_cm2": 0.5, "until": {"time_s": 100}}]}


def _step_ends(b):
    return [e for e in b.edge.events("recipe_step") if e["phase"] == "end"]


def _runner_ticks_on_news_and_keeps_10_ms_resolution():
    b = Bench()
    b.run_ms(600)
    host = _start(b, CUTOFF)
    runner = host.runner
    ticks = [0]
    tick = runner.tick

    def counted(now_ms, m):
        ticks[0] += 1
        return tick(now_ms, m)

    runner.tick = counted
    b.run_ms(5000)
    # 5 s of plating with nothing happening: the runner ticks at its idle cadence
    # (100 ms), not at every 10 ms echem pass.
    assert 45 <= ticks[0] <= 55, ticks[0]
    assert runner.path() == "steps[0]" and _step_ends(b) == []
    # A voltage beyond the step's cut-off ends it at the next 10 ms pass.
    b.cell.force_voltage_v = 1.2
    b.run_ms(10)
    assert runner.path() == "steps[1]", host.status()
    b.cell.force_voltage_v = None
    b.edge.read()
    end = _step_ends(b)[0]
    assert end["reason"] == "voltage_v_above" and 4.95 <= end["elapsed_s"] <= 5.02, end
    # A time_s end keeps the 10 ms resolution: the 1.234 s rest ends by 1.244 s.
    b.run_ms(1400)
    end = _step_ends(b)[1]
    assert end["reason"] == "time_s" and 1.234 <= end["elapsed_s"] <= 1.244, end
    assert runner.path() == "steps[2]"
    assert b.rig.galvanostat.setpoint_ma == -0.25


def _recipe_clock_keeps_the_sub_ms_rest_of_late_passes():
    b = Bench()
    b.run_ms(600)
    host = _start(b, {"recipe": 1, "name": "late", "area_cm2": 0.5,
                      "steps": [{"type": "rest", "until": {"time_s": 100}}]})
    # Passes 10.37 ms apart, as a board's run some us late: 1999 of them after the one
    # that starts the step are 20729.63 ms. Dropping the sub-ms rest at every runner
    # tick would lose 0.7 ms per tick (about 140 ms here).
    for _ in range(2000):
        b.clock.advance(10370)
        host.tick()
    host.wake()
    host.tick()
    el = host.runner.step_elapsed_ms
    assert 20728 <= el <= 20730, el


def test_runner_ticks_on_news_and_keeps_10_ms_resolution():
    run_isolated(HERE, "_runner_ticks_on_news_and_keeps_10_ms_resolution")


def test_recipe_clock_keeps_the_sub_ms_rest_of_late_passes():
    run_isolated(HERE, "_recipe_clock_keeps_the_sub_ms_rest_of_late_passes")


def test_programs_run_in_order():
    run_isolated(HERE, "_programs_run_in_order")


def test_ccd_ladder_reports_the_ccd():
    run_isolated(HERE, "_ccd_ladder_reports_the_ccd")


def test_resume_after_reset_gives_identical_set_points():
    run_isolated(HERE, "_resume_after_reset_gives_identical_set_points")


def test_reset_aborts_by_default_and_says_so_once():
    run_isolated(HERE, "_reset_aborts_by_default_and_says_so_once")
