# Recipe commands through the link session: load (whole or in parts), validation
# errors naming step and field, start, status, abort; the safety latch and a running
# recipe guard the current. Replies are compared as whole bodies.
#
# Each scenario (_name) runs in its own interpreter with a 512 KiB heap (run_isolated):
# the core, the test doubles and the recipe modules compiled from source do not fit the
# 256 KiB test heap of this 64-bit port together (docs/firmware.md, "Resource budget").
import json
from binascii import crc32

from doubles import Bench, run_isolated

HERE = "test_echem_commands.py"

RECIPE = {"recipe": 1, "name": "plate-rest-strip", "area_cm2": 0.5,
          "steps": [{"type": "plate", "current_ma_cm2": 0.5, "until": {"time_s": 2}},
                    {"type": "rest", "until": {"time_s": 1}},
                    {"type": "strip", "current_ma_cm2": 0.25, "until": {"time_s": 2}}]}


def _fingerprint(r):
    # Independent of the firmware's incremental CRC: the whole canonical text at once.
    from fieldrig.echem import recipe

    return crc32(recipe.canonical(r).encode()) & 0xFFFFFFFF


def _reply(b, seq, cmd, args=None):
    r = b.command(seq, cmd, args)
    assert r["cmd_seq"] == seq
    return r


def _load_reply_and_validation_errors_change_nothing():
    b = Bench()
    b.run_ms(600)  # past the post-HELLO wait for acks
    fp = _fingerprint(RECIPE)
    r = _reply(b, 0, "recipe_load", {"recipe": RECIPE})
    assert r == {"cmd_seq": 0, "ok": True, "result": {
        "name": "plate-rest-strip", "fingerprint": fp, "steps": 3, "on_reset": "abort"}}, r
    bad = json.loads(json.dumps(RECIPE))
    bad["name"] = "other"
    bad["steps"][2]["current_ma_cm2"] = -0.25
    r = _reply(b, 1, "recipe_load", {"recipe": bad})
    assert r == {"cmd_seq": 1, "ok": False, "error": "invalid_recipe",
                 "detail": "steps[2].current_ma_cm2: must be > 0"}, r
    bad = json.loads(json.dumps(RECIPE))
    bad["steps"][1]["until"] = {"tiem_s": 1}
    r = _reply(b, 2, "recipe_load", {"recipe": bad})
    assert r["error"] == "invalid_recipe"
    assert r["detail"] == "steps[1].until.tiem_s: unknown end condition", r
    r = _reply(b, 3, "recipe_load", {"recipe": "not an object"})
    assert r == {"cmd_seq": 3, "ok": False, "error": "bad_type",
                 "detail": "recipe must be an object"}, r
    r = _reply(b, 4, "recipe_load", {})
    assert r["error"] == "bad_args", r
    # Still the first recipe, not started, current untouched.
    r = _reply(b, 5, "recipe_status")
    assert r["result"] == {"state": "loaded", "name": "plate-rest-strip", "fingerprint": fp}, r
    assert b.rig.galvanostat.range_index == -1 and b.edge.events("recipe_started") == []


def _recipe_sent_in_parts():
    b = Bench()
    b.run_ms(600)  # past the post-HELLO wait for acks
    text = json.dumps(RECIPE)
    third = len(text) // 3
    parts = [text[:third], text[third:2 * third], text[2 * third:]]
    r = _reply(b, 0, "recipe_load", {"text": parts[0], "part": 0, "parts": 3})
    assert r["result"] == {"part": 0, "parts": 3, "received": len(parts[0])}, r
    r = _reply(b, 1, "recipe_load", {"text": parts[2], "part": 2, "parts": 3})
    assert r == {"cmd_seq": 1, "ok": False, "error": "out_of_range",
                 "detail": "part 2 out of order (expected 1)"}, r
    # Out of order restarts nothing silently: the sender starts again from part 0.
    _reply(b, 2, "recipe_load", {"text": parts[0], "part": 0, "parts": 3})
    r = _reply(b, 3, "recipe_load", {"text": parts[1], "part": 1, "parts": 3})
    assert r["result"]["received"] == len(parts[0]) + len(parts[1])
    r = _reply(b, 4, "recipe_load", {"text": parts[2], "part": 2, "parts": 3})
    assert r["result"] == {"name": "plate-rest-strip", "fingerprint": _fingerprint(RECIPE),
                           "steps": 3, "on_reset": "abort"}, r
    r = _reply(b, 5, "recipe_load", {"text": "{\"recipe\": 1,", "part": 0, "parts": 1})
    assert r["error"] == "invalid_recipe" and r["detail"] == "recipe: not valid JSON", r


def _start_status_abort_round_trip():
    b = Bench()
    b.run_ms(600)  # past the post-HELLO wait for acks
    r = _reply(b, 0, "recipe_start")
    assert r == {"cmd_seq": 0, "ok": False, "error": "no_recipe",
                 "detail": "no recipe loaded: recipe_load first"}, r
    _reply(b, 1, "recipe_load", {"recipe": RECIPE})
    fp = _fingerprint(RECIPE)
    r = _reply(b, 2, "recipe_start")
    assert r == {"cmd_seq": 2, "ok": True, "result": {
        "name": "plate-rest-strip", "fingerprint": fp, "state": "running"}}, r
    b.run_ms(500)
    assert b.rig.galvanostat.setpoint_ma == 0.25  # 0.5 mA/cm2 on 0.5 cm2
    st = _reply(b, 3, "recipe_status")["result"]
    assert st["state"] == "running" and st["path"] == "steps[0]" and st["type"] == "plate"
    assert 0.4 <= st["elapsed_s"] <= 0.6, st
    r = _reply(b, 4, "recipe_start")
    assert r["error"] == "recipe_running", r
    r = _reply(b, 5, "set_current", {"current_ma": 1.0})
    assert r == {"cmd_seq": 5, "ok": False, "error": "inhibited",
                 "detail": "current inhibited by recipe"}, r
    r = _reply(b, 6, "recipe_load", {"recipe": RECIPE})
    assert r["error"] == "recipe_running", r
    r = _reply(b, 7, "recipe_abort")
    assert r == {"cmd_seq": 7, "ok": True, "result": {"aborted": True, "state": "aborted"}}, r
    assert b.rig.galvanostat.range_index == -1
    done = b.edge.events("recipe_done")
    assert len(done) == 1 and done[0]["result"] == "aborted" and done[0]["reason"] == "command"
    assert [e["name"] for e in b.edge.events("recipe_started")] == ["plate-rest-strip"]
    r = _reply(b, 8, "recipe_abort")
    assert r["result"] == {"aborted": False, "state": "aborted"}, r
    b.run_ms(3000)
    assert b.rig.galvanostat.range_index == -1  # nothing comes back after an abort
    st = _reply(b, 9, "recipe_status")["result"]
    assert st["result"] == {"result": "aborted", "reason": "command"}, st
    r = _reply(b, 10, "set_current", {"current_ma": 0.5})
    assert r["ok"], r  # manual control is back


def _stop_command_aborts_the_recipe():
    b = Bench()
    b.run_ms(600)  # past the post-HELLO wait for acks
    _reply(b, 0, "recipe_load", {"recipe": RECIPE})
    _reply(b, 1, "recipe_start")
    b.run_ms(300)
    assert b.rig.galvanostat.range_index != -1
    _reply(b, 2, "stop")
    b.run_ms(1000)
    assert b.rig.galvanostat.range_index == -1
    assert b.edge.events("recipe_done")[0]["reason"] == "stop"


def _safety_latch_blocks_recipe_start_and_a_trip_aborts_the_recipe():
    b = Bench()
    b.run_ms(600)  # past the post-HELLO wait for acks
    _reply(b, 0, "recipe_load", {"recipe": RECIPE})
    _reply(b, 1, "recipe_start")
    b.run_ms(300)
    b.cell.force_voltage_v = 4.8  # over_voltage: fatal, latched
    b.run_ms(200)
    assert b.rig.safety.tripped and b.rig.galvanostat.range_index == -1
    done = b.edge.events("recipe_done")
    assert len(done) == 1 and done[0]["reason"] == "safety_trip", done
    r = _reply(b, 2, "recipe_start")
    assert r == {"cmd_seq": 2, "ok": False, "error": "tripped",
                 "detail": "safe state latched: reset_safety first"}, r
    b.run_ms(500)
    assert b.rig.galvanostat.range_index == -1 and len(b.edge.events("recipe_started")) == 1
    b.cell.force_voltage_v = None
    b.run_ms(600)  # past the post-HELLO wait for acks
    assert _reply(b, 3, "reset_safety", {"token": "0000"})["ok"]
    r = _reply(b, 4, "recipe_start")
    assert r["ok"] and r["result"]["state"] == "running", r


def test_load_reply_and_validation_errors_change_nothing():
    run_isolated(HERE, "_load_reply_and_validation_errors_change_nothing")


def test_recipe_sent_in_parts():
    run_isolated(HERE, "_recipe_sent_in_parts")


def test_start_status_abort_round_trip():
    run_isolated(HERE, "_start_status_abort_round_trip")


def test_stop_command_aborts_the_recipe():
    run_isolated(HERE, "_stop_command_aborts_the_recipe")


def test_safety_latch_blocks_recipe_start_and_a_trip_aborts_the_recipe():
    run_isolated(HERE, "_safety_latch_blocks_recipe_start_and_a_trip_aborts_the_recipe")
