# Recipe engine: validation messages (exact), loop and end-condition semantics, the
# progress cursor (resume gives identical set-points), built-ins, CCD ladder, pulses,
# mitigation through the runner.
import json

from fieldrig.echem import recipe as R
from fieldrig.echem.recipe import Measurements, RecipeError, RecipeRunner


def _base():
    return {"recipe": 1, "name": "t", "area_cm2": 1.0, "steps": [
        {"type": "plate", "current_ma_cm2": 0.5, "until": {"time_s": 10}},
        {"type": "rest", "until": {"time_s": 5}},
        {"type": "strip", "current_ma_cm2": 0.5, "until": {"time_s": 10}},
        {"type": "set_pressure", "pressure_mpa": 5.0},
        {"type": "loop", "count": 2, "steps": [
            {"type": "plate", "current_ma_cm2": 0.2, "until": {"time_s": 1}},
            {"type": "loop", "count": 3, "steps": [{"type": "rest", "until": {"time_s": 1}}]}]},
        {"type": "pulse", "on_ma_cm2": 1.0, "freq_hz": 10.0, "duty": 0.5, "count": 4},
        {"type": "set_temperature", "temp_c": 40.0},
    ]}


def _copy(x):
    return json.loads(json.dumps(x))


def _mod(fn):
    r = _base()
    fn(r)
    return r


def _set(path, value):
    # path like ("steps", 3, "current_ma_cm2")
    def fn(r):
        d = r
        for k in path[:-1]:
            d = d[k]
        if value is _DEL:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return fn


_DEL = object()
S = "steps"

BAD = [
    (_set(("recipe",), 2), "recipe: unsupported format version 2 (this firmware reads 1)"),
    (_set(("name",), _DEL), "name: must be a string of 1 to 64 characters"),
    (_set(("area_cm2",), 0), "area_cm2: must be > 0"),
    (_set(("stpes",), []), "stpes: unknown field"),
    (_set((S,), []), "steps: must be a non-empty list"),
    (_set((S, 2, "current_ma_cm2"), 0), "steps[2].current_ma_cm2: must be > 0"),
    (_set((S, 2, "current_ma_cm2"), "1"), "steps[2].current_ma_cm2: must be a number"),
    (_set((S, 2, "current_ma_cm2"), True), "steps[2].current_ma_cm2: must be a number"),
    (_set((S, 0, "current_ma_cm2"), 60.0), "steps[0].current_ma_cm2: must be <= 50"),
    (_set((S, 1, "type"), "boil"), 'steps[1].type: unknown step type "boil"'),
    (_set((S, 0, "curent_ma_cm2"), 1.0), "steps[0].curent_ma_cm2: unknown field for a plate step"),
    (_set((S, 2, "until"), _DEL), "steps[2].until: required (the step must end)"),
    (_set((S, 0, "until", "time_s"), -1), "steps[0].until.time_s: must be > 0"),
    (_set((S, 0, "until", "evnt"), "void"), "steps[0].until.evnt: unknown end condition"),
    (_set((S, 0, "until", "event"), "explosion"),
     'steps[0].until.event: unknown alarm kind "explosion" (one of soft_short, hard_short, '
     'void, crack)'),
    (_set((S, 1, "until"), {}), "steps[1].until: needs at least one end condition"),
    (_set((S, 4, "steps", 1, "count"), 0),
     "steps[4].steps[1].count: must be an integer from 1 to 100000"),
    (_set((S, 4, "steps", 1, "steps", 0, "until", "voltage_v_below"), -20),
     "steps[4].steps[1].steps[0].until.voltage_v_below: must be >= -10"),
    (_set((S, 5, "duty"), 1.0), "steps[5].duty: must be < 1"),
    (_set((S, 5, "off_ma_cm2"), 2.0), "steps[5].off_ma_cm2: must be <= on_ma_cm2"),
    (_set((S, 6, "temp_c"), 150.0), "steps[6].temp_c: must be <= 100"),
    (_set((S, 3, "wait"), "yes"), "steps[3].wait: must be true or false"),
    (_set((S, 3, "pressure_mpa"), 40.0), "steps[3].pressure_mpa: must be <= 25"),
    (_set(("mitigation",), {"soft_short": {"actions": ["rest", "dance"]}}),
     "mitigation.soft_short.actions[1]: unknown action 'dance'"),
    (_set(("mitigation",), {"hard_short": {"actions": ["rest"]}}),
     'mitigation.hard_short.actions: a hard short always ends in ["safe_state"]'),
    (_set(("mitigation",), {"void": {"pressure_max_mpa": 80}}),
     "mitigation.void.pressure_max_mpa: must be > 0.0 and <= 25.0"),
    (_set(("mitigation",), {"soft_short": {"recheck": 1}}),
     "mitigation.soft_short.recheck: must be true or false"),
    (_set(("stop_on",), ["meltdown"]),
     'stop_on: unknown alarm kind "meltdown" (one of soft_short, hard_short, void, crack)'),
]


def test_validation_errors_name_step_and_field_exactly():
    R.validate(_base())
    for fn, msg in BAD:
        r = _mod(fn)
        before = R.canonical(r)
        try:
            R.validate(r)
        except RecipeError as e:
            assert str(e) == msg, (str(e), msg)
        else:
            raise AssertionError("accepted: " + msg)
        assert R.canonical(r) == before  # validation changes nothing
        try:
            RecipeRunner(r)
        except RecipeError as e:
            assert str(e) == msg
        else:
            raise AssertionError("runner accepted: " + msg)


def test_more_validation_cases():
    cases = [
        ('{"recipe": 1, "name": ', "recipe: not valid JSON"),
        ({"recipe": 1, "name": "big", "area_cm2": 10.0, "steps": [
            {"type": "plate", "current_ma_cm2": 20.0, "until": {"time_s": 1}}]},
         "steps[0].current_ma_cm2: 200 mA on 10 cm2 exceeds the 100 mA galvanostat limit"),
        ({"recipe": 1, "name": "deep", "area_cm2": 1.0, "steps": [
            {"type": "loop", "count": 1, "steps": [
                {"type": "loop", "count": 1, "steps": [
                    {"type": "loop", "count": 1, "steps": [
                        {"type": "loop", "count": 1, "steps": [
                            {"type": "loop", "count": 1, "steps": [
                                {"type": "rest", "until": {"time_s": 1}}]}]}]}]}]}]},
         "steps[0].steps[0].steps[0].steps[0].steps[0]: loops nest at most 4 deep"),
        ({"recipe": 1, "name": "fast", "area_cm2": 1.0, "steps": [
            {"type": "pulse", "on_ma_cm2": 1.0, "off_ma_cm2": -0.5, "freq_hz": 1000.0,
             "duty": 0.5, "until": {"time_s": 1}}]},
         "steps[0].freq_hz: a phase below 10 ms needs off_ma = 0 (PIO gating)"),
        ({"recipe": 1, "name": "pulse", "area_cm2": 1.0, "steps": [
            {"type": "pulse", "on_ma_cm2": 1.0, "freq_hz": 1000.0, "duty": 0.5}]},
         "steps[0].until: required (the step must end)"),
        ({"recipe": 1, "name": "eis", "area_cm2": 1.0, "steps": [
            {"type": "eis", "f_start_hz": 20000.0}]}, "steps[0].f_start_hz: must be <= 16000"),
    ]
    for r, msg in cases:
        try:
            R.validate(r)
        except RecipeError as e:
            assert str(e) == msg, (str(e), msg)
        else:
            raise AssertionError("accepted: " + msg)


class Cell:
    """Tiny stand-in for the rig: the measured current follows the set-point, the
    voltage is IR + a small polarisation, temperature/pressure approach their targets."""

    def __init__(self, r_ohm=20.0):
        self.m = Measurements(temp_c=25.0, pressure_mpa=0.0)
        self.r_ohm = r_ohm

    def apply(self, out, dt_s):
        self.m.current_ma = out.current_ma if out.output_on else 0.0
        self.m.voltage_v = self.m.current_ma * 1e-3 * self.r_ohm
        if out.temp_c is not None:
            self.m.temp_c += (out.temp_c - self.m.temp_c) * min(1.0, dt_s / 30.0)
        if out.pressure_mpa is not None:
            self.m.pressure_mpa += (out.pressure_mpa - self.m.pressure_mpa) * min(1.0, dt_s / 5.0)


def _run(runner, cell, t0_ms, dt_ms, ticks, events_at=None, record=None):
    t = t0_ms
    for j in range(ticks):
        if events_at and j in events_at:
            cell.m.events = events_at[j]
        out = runner.tick(t, cell.m)
        cell.m.events = ()
        cell.apply(out, dt_ms / 1000.0)
        if record is not None:
            record.append((out.step, round(out.current_ma, 9), out.temp_c, out.pressure_mpa,
                           out.pulse["on_cycles"] if out.pulse else None,
                           [a.get("event") or a.get("action") for a in out.actions]))
        if out.done:
            return out, t
        t += dt_ms
    return out, t


def test_loops_nest_and_count():
    r = {"recipe": 1, "name": "loops", "area_cm2": 2.0, "steps": [
        {"type": "loop", "count": 2, "steps": [
            {"type": "plate", "current_ma_cm2": 0.5, "until": {"time_s": 2}},
            {"type": "loop", "count": 3, "steps": [
                {"type": "rest", "until": {"time_s": 1}},
                {"type": "strip", "current_ma_cm2": 0.25, "until": {"time_s": 1}}]}]},
        {"type": "rest", "until": {"time_s": 1}}]}
    run = RecipeRunner(r)
    cell = Cell()
    starts = []
    t = 0
    while True:
        out = run.tick(t, cell.m)
        cell.apply(out, 1.0)
        for a in out.actions:
            if a.get("event") == "recipe_step" and a["phase"] == "start":
                starts.append((a["path"], tuple(a.get("loop", ()))))
        if out.done:
            break
        t += 1000
    body = [("steps[0].steps[0]", (i,)) for i in range(2)]
    expect = []
    for i in range(2):
        expect.append(body[i])
        for j in range(3):
            expect.append(("steps[0].steps[1].steps[0]", (i, j)))
            expect.append(("steps[0].steps[1].steps[1]", (i, j)))
    expect.append(("steps[1]", ()))
    assert starts == expect, starts
    # 2 x (2 s plate + 3 x 2 s) + 1 s = 17 s.
    assert t == 17000, t
    # charge: plating 2 x 2 s x 1 mA + stripping 6 x 1 s x 0.5 mA on 2 cm2 in mAh/cm2
    assert abs(run.total_charge - (4 * 1.0 + 6 * 0.5) / 3600 / 2.0) < 1e-9


def test_end_conditions():
    r = {"recipe": 1, "name": "ends", "area_cm2": 1.0, "steps": [
        # 1 mA -> 20 mV: ends on voltage before its 100 s
        {"type": "plate", "current_ma_cm2": 1.0,
         "until": {"time_s": 100, "voltage_v_above": 0.015}},
        # 0.01 mAh/cm2 at 2 mA: 18 s
        {"type": "strip", "current_ma_cm2": 2.0, "until": {"charge_mah_cm2": 0.01}},
        {"type": "rest", "until": {"impedance_ohm_below": 5.0, "time_s": 100}},
        {"type": "set_temperature", "temp_c": 45.0, "tolerance_c": 0.5},
        {"type": "wait", "until": {"pressure_mpa_above": 2.0, "time_s": 50}},
        {"type": "eis", "f_start_hz": 1000.0, "f_stop_hz": 1.0, "until": {"time_s": 600}},
        {"type": "plate", "current_ma_cm2": 0.1, "until": {"event": ["crack", "void"]}},
    ]}
    run = RecipeRunner(r)
    cell = Cell()
    ends = []
    eis = []
    t = 0
    out = None
    for _ in range(3000):
        # Drive the measurements from what the runner is doing, like a cell would.
        step = out.step if out is not None else ""
        el = run.step_elapsed_ms
        if step == "steps[2]" and el >= 50000:
            cell.m.impedance_ohm = 4.0
        if step == "steps[4]" and el >= 10000:
            cell.m.pressure_mpa = 2.5
        if step == "steps[5]" and el >= 30000 and eis:
            cell.m.eis_done = eis[0]["eis_seq"]
        cell.m.events = ("crack",) if step == "steps[6]" and el >= 5000 else ()
        out = run.tick(t, cell.m)
        cell.apply(out, 1.0)
        for a in out.actions:
            if a.get("event") == "recipe_step" and a["phase"] == "end":
                ends.append((a["path"], a["reason"], t // 1000))
            if a.get("action") == "eis":
                eis.append(a)
        if out.done:
            break
        t += 1000
    reasons = [(p, why) for p, why, _ in ends]
    assert out is not None
    assert reasons == [("steps[0]", "voltage_v_above"), ("steps[1]", "charge_mah_cm2"),
                       ("steps[2]", "impedance_ohm_below"), ("steps[3]", "reached"),
                       ("steps[4]", "pressure_mpa_above"), ("steps[5]", "eis_done"),
                       ("steps[6]", "event:crack")], ends
    assert ends[0][2] == 1  # first tick with the 20 mV reading
    assert ends[1][2] - ends[0][2] == 18
    durations = [ends[j][2] - ends[j - 1][2] for j in range(1, len(ends))]
    # The stand-in cell reacts to the elapsed time of the previous tick, so each
    # condition is seen one 1 s tick after it is injected: rest ends on |Z| at 51 s (not
    # its 100 s), wait on pressure at 11 s (not 50 s), eis when the platform reports
    # the sweep, the last plate on the crack alarm.
    assert durations[1] == 51 and durations[3] == 11 and durations[4] == 31, durations
    assert durations[5] == 6, durations
    assert eis[0]["f_start_hz"] == 1000.0 and eis[0]["dc_ma"] == 0.0
    assert out.done


def test_stale_eis_completion_does_not_end_a_new_eis_step():
    r = {"recipe": 1, "name": "eis2", "area_cm2": 1.0, "steps": [
        {"type": "eis"}, {"type": "eis"}]}
    run = RecipeRunner(r)
    m = Measurements()
    out = run.tick(0, m)
    seq1 = next(a for a in out.actions if a.get("action") == "eis")["eis_seq"]
    m.eis_done = seq1
    out = run.tick(1000, m)  # first sweep done -> second requested
    seq2 = next(a for a in out.actions if a.get("action") == "eis")["eis_seq"]
    assert seq2 == seq1 + 1
    out = run.tick(2000, m)  # eis_done still names the first sweep
    assert not out.done and out.step == "steps[1]"
    m.eis_done = seq2
    assert run.tick(3000, m).done


def _cycling():
    r = R.symmetric_cycling(0.5, 1.0, 0.002, 4, rest_s=3)
    r["steps"].insert(0, {"type": "set_temperature", "temp_c": 30.0, "wait": False})
    r["steps"].append({"type": "pulse", "on_ma_cm2": 2.0, "freq_hz": 1000.0, "duty": 0.25,
                       "until": {"time_s": 5}})
    return r


def test_cursor_round_trip_resumes_identically_mid_loop():
    r = _cycling()
    a = RecipeRunner(r)
    cell_a = Cell()
    _, t = _run(a, cell_a, 0, 500, 60)
    cur = json.loads(json.dumps(a.cursor()))  # as the platform would persist it
    assert cur["loops"][1] > 0 and cur["path"][0] == 1  # inside the loop, not at its start
    # Reference: keep running A. Resumed: a fresh runner after a "reset" whose uptime
    # restarted at 7 s; the same measurements follow.
    rec_a = []
    b = RecipeRunner(_copy(r))
    b.resume(cur)
    cell_b = Cell()
    cell_b.m.temp_c = cell_a.m.temp_c
    cell_b.m.current_ma = cell_a.m.current_ma
    cell_b.m.voltage_v = cell_a.m.voltage_v
    # The first tick after resume() anchors the step clock (the time between the last
    # saved cursor and the reset is not known, so it is not counted): it stands for A's
    # last tick before the cursor, and must give the same set-point.
    first_b = b.tick(6500, cell_b.m)
    assert first_b.step == a.path() and first_b.current_ma == cell_a.m.current_ma
    rec_b = []
    _run(a, cell_a, t, 500, 400, record=rec_a)
    _run(b, cell_b, 7000, 500, 400, record=rec_b)
    assert len(rec_a) == len(rec_b) > 50
    assert rec_a == rec_b
    assert "recipe_done" in rec_a[-1][-1]
    # The pulse step handed a PIO train to the platform (1 kHz 25 %, 150 MHz: 37500 cycles).
    assert any(x[4] == 37500 for x in rec_a)


def test_cursor_taken_before_the_first_tick_resumes():
    r = R.symmetric_cycling(1.0, 1.0, 0.001, 2)  # starts with a loop
    a = RecipeRunner(r)
    b = RecipeRunner(_copy(r))
    b.resume(json.loads(json.dumps(a.cursor())))
    rec_a = []
    rec_b = []
    _run(a, Cell(), 0, 1000, 30, record=rec_a)
    _run(b, Cell(), 0, 1000, 30, record=rec_b)
    assert rec_a == rec_b and rec_a[0][0] == "steps[0].steps[0]"


def test_resume_refuses_foreign_or_broken_cursors():
    a = RecipeRunner(_cycling())
    a.tick(0, Measurements())
    cur = a.cursor()
    other = R.symmetric_cycling(0.5, 1.0, 0.002, 5)
    b = RecipeRunner(other)
    for bad, msg in ((cur, "another recipe"), ({"cursor": 9}, "not a recipe cursor")):
        try:
            b.resume(bad)
        except ValueError as e:
            assert msg in str(e)
        else:
            raise AssertionError(msg)
    broken = dict(cur)
    broken["path"] = [7]
    c = RecipeRunner(_cycling())
    try:
        c.resume(broken)
    except ValueError as e:
        assert "does not fit" in str(e)
    else:
        raise AssertionError("broken path accepted")
    assert c.path() == "steps[0]" and c.state == "running"  # nothing changed


def test_abort_is_safe_and_sticky():
    run = RecipeRunner(_cycling())
    m = Measurements()
    run.tick(0, m)
    out = run.abort("operator")
    assert out.done and out.current_ma == 0.0 and not out.output_on and out.pulse is None
    assert out.actions[-1]["event"] == "recipe_done" and out.actions[-1]["result"] == "aborted"
    again = RecipeRunner(_cycling())
    again.resume(run.cursor())
    out = again.tick(5000, m)
    assert out.done and out.current_ma == 0.0


def _run_ladder(run, shorted):
    """Tick a ladder at 1 s until it is done; a soft_short alarm comes on the tick after
    ``shorted(out)``. Returns (last Output, recipe_done event or None)."""
    cell = Cell()
    t = 0
    done = None
    for _ in range(20000):
        out = run.tick(t, cell.m)
        cell.m.events = ()
        if shorted(out):
            cell.m.events = ({"event": "echem_alarm", "kind": "soft_short", "confidence": 0.8},)
        cell.apply(out, 1.0)
        for a in out.actions:
            if a.get("event") == "recipe_done":
                done = a
        if out.done:
            break
        t += 1000
    return out, done


def test_builtins_validate_and_ccd_ladder_reports_ccd():
    for r in (R.symmetric_cycling(0.785, 0.5, 0.5, 100, rest_s=60),
              R.ccd_ladder(0.785), R.gitt(0.785, 0.2, 600, 3600, 20),
              R.temperature_hold(0.785, 60.0, 3600), R.pressure_hold(0.785, 5.0, 600)):
        R.validate(r)
    ladder = R.ccd_ladder(1.0, start_ma_cm2=0.1, step_ma_cm2=0.1, max_ma_cm2=1.0,
                          capacity_mah_cm2=0.01, rest_s=1)
    run = RecipeRunner(ladder)

    def shorted(out):
        # The synthetic cell shorts while plating above 0.35 mA/cm2 (10 s in).
        return (out.step_type == "plate" and out.current_ma > 0.35
                and run.step_elapsed_ms > 10000)

    out, done = _run_ladder(run, shorted)
    assert done is not None and done["result"] == "stopped", done
    assert done["reason"] == "stop_on:soft_short"
    assert abs(done["ccd_ma_cm2"] - 0.4) < 1e-9 and abs(done["last_passed_ma_cm2"] - 0.3) < 1e-9
    assert out.current_ma == 0.0 and not out.output_on


def test_ccd_ladder_short_seen_in_the_rest_counts_for_the_rung_before_it():
    # The detector needs a few tracking periods: a filament grown while plating at
    # 0.4 mA/cm2 may only be reported in the rest after it. That rung is the CCD and it
    # did not pass.
    ladder = R.ccd_ladder(1.0, start_ma_cm2=0.1, step_ma_cm2=0.1, max_ma_cm2=1.0,
                          capacity_mah_cm2=0.001, rest_s=30)
    seen = []

    def shorted(out):
        if out.step_type == "plate" and abs(out.current_ma - 0.4) < 1e-9:
            seen.append(True)
        return bool(seen) and out.step_type == "rest"

    _, done = _run_ladder(RecipeRunner(ladder), shorted)
    assert done is not None and done["reason"] == "stop_on:soft_short", done
    assert abs(done["ccd_ma_cm2"] - 0.4) < 1e-9, done
    assert abs(done["last_passed_ma_cm2"] - 0.3) < 1e-9, done


def test_pulsed_ccd_ladder_plates_and_strips_with_pio_trains():
    ladder = R.ccd_ladder(0.785, start_ma_cm2=1.0, step_ma_cm2=0.5, max_ma_cm2=5.0,
                          capacity_mah_cm2=0.02, rest_s=30, pulse_hz=1e6, duty=0.5)
    R.validate(ladder)
    currents = [s for s in ladder["steps"] if s["type"] != "rest"]
    assert [s["type"] for s in currents[:2]] == ["pulse", "pulse"]
    assert [s["direction"] for s in currents[:2]] == ["plate", "strip"]
    assert currents[-1]["on_ma_cm2"] == 5.0 and currents[0]["freq_hz"] == 1e6
    run = RecipeRunner(ladder)
    out = run.tick(0, Cell().m)
    assert out.pulse is not None and out.output_on, out.pulse


def test_gitt_pulses_and_rests():
    run = RecipeRunner(R.gitt(2.0, 0.25, 10, 20, 3))
    rec = []
    _run(run, Cell(), 0, 1000, 200, record=rec)
    currents = [x[1] for x in rec]
    # 3 x (10 s at 0.5 mA, 20 s at 0) then done.
    assert currents[:10] == [0.5] * 10 and currents[10:30] == [0.0] * 20
    assert currents[30:40] == [0.5] * 10 and len(rec) == 91


def test_mitigation_soft_short_sequence_through_the_runner():
    r = {"recipe": 1, "name": "mit", "area_cm2": 1.0,
         "mitigation": {"soft_short": {"rest_s": 10, "reverse_s": 2, "max_attempts": 2}},
         "steps": [{"type": "set_temperature", "temp_c": 40.0, "wait": False},
                   {"type": "plate", "current_ma_cm2": 2.0, "until": {"time_s": 100}}]}
    run = RecipeRunner(r)
    cell = Cell()
    rec = []
    alarm = {"event": "echem_alarm", "kind": "soft_short", "confidence": 0.7}
    _run(run, cell, 0, 1000, 40, events_at={5: (alarm,)}, record=rec)
    acts = []
    for x in rec:
        acts += x[5]
    assert acts.count("mitigation") == 6  # one event per policy action
    currents = [x[1] for x in rec]
    pulses = [x[4] for x in rec]
    temps = [x[2] for x in rec]
    assert currents[:5] == [2.0] * 5
    # t=5: alarm -> stop (0), rest 10 s at 0, reverse 2 s at -0.1 mA, then resume
    # plating pulsed (1 kHz 50 %) at half current, heater +5 C.
    assert currents[5] == 0.0
    assert currents[6:16] == [0.0] * 10, currents
    assert currents[16:18] == [-0.1, -0.1], currents
    assert currents[18] == 1.0 and pulses[18] == 75000, (currents[18], pulses[18])
    assert temps[4] == 40.0 and temps[18] == 45.0
    # The plating step's clock paused during the interlude: it counts only the seconds
    # that plated (tick j's set-point holds until tick j + 1).
    plated = sum(1 for j in range(len(currents) - 1) if currents[j] > 0)
    assert run.step_elapsed_ms == 1000 * plated, (run.step_elapsed_ms, plated)
    # A second alarm lowers again (0.25x); a third exceeds max_attempts -> safe state.
    out, _ = _run(run, cell, 40000, 1000, 5, events_at={1: (alarm,)})
    assert abs(run.plate_scale - 0.25) < 1e-12
    out, _ = _run(run, cell, 50000, 1000, 20, events_at={1: (alarm,)})
    assert out.done and run.state == "aborted" and run.end_reason == "safe_state:soft_short"


def _escalation_run(still_raised):
    r = {"recipe": 1, "name": "esc", "area_cm2": 1.0,
         "mitigation": {"soft_short": {"actions": ["stop_plating", "rest", "lower_current"],
                                       "rest_s": 10, "lower_factor": 0.5,
                                       "max_attempts": 2}},
         "steps": [{"type": "plate", "current_ma_cm2": 2.0, "until": {"time_s": 200}}]}
    run = RecipeRunner(r)
    cell = Cell()
    alarm = {"event": "echem_alarm", "kind": "soft_short", "confidence": 0.7}
    if still_raised:
        cell.m.active = ("soft_short",)  # the detector keeps the alarm raised
    out, _ = _run(run, cell, 0, 1000, 40, events_at={5: (alarm,)})
    return run, out


def test_a_mitigation_that_does_not_clear_its_alarm_escalates_to_the_safe_state():
    # A bridged filament does not heal in a rest: after each response the alarm is still
    # raised, so the policy responds again and past max_attempts ends in the safe state.
    run, out = _escalation_run(still_raised=True)
    assert out.done and run.state == "aborted", run.state
    assert run.end_reason == "safe_state:soft_short"
    assert out.current_ma == 0.0 and not out.output_on
    # ...while an alarm the rest cleared leaves the recipe plating at the lowered current.
    run, out = _escalation_run(still_raised=False)
    assert run.state == "running" and out.current_ma == 1.0, (run.state, out.current_ma)


def test_hard_short_is_always_safe_state():
    run = RecipeRunner(R.symmetric_cycling(1.0, 1.0, 1.0, 10))
    m = Measurements()
    run.tick(0, m)
    m.events = ({"event": "echem_alarm", "kind": "hard_short", "confidence": 1.0},)
    out = run.tick(1000, m)
    kinds = [(a.get("event"), a.get("action")) for a in out.actions]
    assert ("mitigation", "safe_state") in kinds, kinds
    assert out.done and out.current_ma == 0.0
    assert run.ccd_ma_cm2 == 1.0


def test_void_raises_pressure_and_lowers_stripping():
    r = {"recipe": 1, "name": "void", "area_cm2": 1.0, "steps": [
        {"type": "set_pressure", "pressure_mpa": 3.0, "wait": False},
        {"type": "strip", "current_ma_cm2": 1.0, "until": {"time_s": 60}}]}
    run = RecipeRunner(r)
    cell = Cell()
    rec = []
    _run(run, cell, 0, 1000, 10, events_at={3: ("void",)}, record=rec)
    assert rec[2][1] == -1.0 and rec[2][3] == 3.0
    assert rec[3][1] == -0.5 and rec[3][3] == 4.0  # same tick: half current, +1 MPa
    assert "mitigation" in rec[3][5]


def test_void_while_plating_lowers_the_plating_current():
    # Symmetric cell: a void seen during a plate step grows on the counter electrode,
    # which that step strips: the plate current is lowered, not the next strip's.
    r = {"recipe": 1, "name": "void", "area_cm2": 1.0, "steps": [
        {"type": "set_pressure", "pressure_mpa": 3.0, "wait": False},
        {"type": "plate", "current_ma_cm2": 1.0, "until": {"time_s": 60}},
        {"type": "strip", "current_ma_cm2": 1.0, "until": {"time_s": 60}}]}
    run = RecipeRunner(r)
    cell = Cell()
    rec = []
    _run(run, cell, 0, 1000, 130, events_at={3: ("void",)}, record=rec)
    assert rec[2][1] == 1.0
    assert rec[3][1] == 0.5 and rec[3][3] == 4.0  # same tick: half current, +1 MPa
    strip = [x for x in rec if x[1] < 0]
    assert strip and strip[0][1] == -1.0  # the strip step keeps its current


def test_example_recipes_in_docs_validate_and_run():
    import os
    folder = "../../docs/recipes"
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    assert len(names) >= 6, names
    for name in names:
        with open(folder + "/" + name) as f:
            text = f.read()
        run = RecipeRunner(text)  # JSON text straight from a file / command
        out = run.tick(0, Measurements())
        assert out.step.startswith("steps[") and not out.done, name


def test_fingerprint_is_the_crc_of_the_canonical_text():
    import binascii
    r = _base()
    assert R.fingerprint(r) == binascii.crc32(R.canonical(r).encode()) & 0xFFFFFFFF
    r2 = _copy(r)
    r2["steps"][0]["current_ma_cm2"] = 0.51
    assert R.fingerprint(r2) != R.fingerprint(r)
