# Command parsing and validation: every invalid command gets a clear error and changes
# nothing; fuzzed commands never crash the parser nor change state unless accepted.
import json
import random

from doubles import Bench

from fieldrig import link


def _state(rig):
    g = rig.galvanostat
    return (rig.heater_loop.setpoint_c, rig.pressure_loop.setpoint_mpa, g.setpoint_ma,
            g.range_index, rig.safety.tripped, tuple(rig.safety.thresholds),
            json.dumps(rig.cfg))


def _refused(b, seq, cmd, args, code):
    before = _state(b.rig)
    r = b.command(seq, cmd, args)
    assert not r["ok"] and r["error"] == code, (cmd, args, r)
    assert isinstance(r["detail"], str) and r["detail"]
    assert _state(b.rig) == before, (cmd, args)


def test_valid_commands_act_and_reply():
    b = Bench()
    b.run_ms(600)
    r = b.command(0, "set_temperature", {"temp_c": 45})
    assert r == {"cmd_seq": 0, "ok": True, "result": {"temp_c": 45.0}}
    assert b.rig.heater_loop.setpoint_c == 45.0
    assert b.command(1, "set_pressure", {"pressure_mpa": 5.5})["ok"]
    assert b.rig.pressure_loop.setpoint_mpa == 5.5
    r = b.command(2, "set_current", {"current_ma": -0.004})
    assert r["ok"] and r["result"]["range"] == 0 and b.rig.galvanostat.setpoint_ma == -0.004
    st = b.command(3, "status")["result"]
    assert st["state"] == "running" and st["temp_set_c"] == 45.0 and st["range"] == 0
    assert b.command(4, "stop")["ok"] and b.rig.galvanostat.range_index == -1
    assert b.command(5, "set_temperature", {"temp_c": None})["ok"]
    assert b.rig.heater_loop.setpoint_c is None
    assert b.command(6, "set_pressure", {"pressure_mpa": None})["ok"]
    assert b.rig.pressure_loop.setpoint_mpa is None
    r = b.command(7, "reset_safety", {"token": "0000"})
    assert r["ok"] and r["result"]["was_tripped"] is False


def test_invalid_commands_are_refused_without_side_effects():
    b = Bench()
    b.run_ms(600)
    assert b.command(0, "set_current", {"current_ma": 0.3})["ok"]
    cases = (
        ("no_such_cmd", {}, "unknown_command"),
        ("set_temperature", {}, "missing_arg"),
        ("set_temperature", {"temp_c": "40"}, "bad_type"),
        ("set_temperature", {"temp_c": True}, "bad_type"),
        ("set_temperature", {"temp_c": -5}, "out_of_range"),
        ("set_temperature", {"temp_c": 40, "extra": 1}, "unknown_arg"),
        ("set_pressure", {"pressure_mpa": 0.5}, "out_of_range"),  # below under-pressure limit
        ("set_pressure", {"pressure_mpa": [5]}, "bad_type"),
        ("set_current", {"current_ma": 1e9}, "out_of_range"),
        ("set_current", {"current_ma": None}, "bad_type"),
        ("reset_safety", {"token": 0}, "bad_type"),
        ("reset_safety", {"token": "9999"}, "bad_token"),
        ("set_limit", {"row": "over_temp"}, "missing_arg"),
        ("set_limit", {"row": "over_temp", "threshold": "hot"}, "bad_type"),
        ("set_limit", {"row": "over_temp", "threshold": 10.0}, "out_of_range"),  # not sane
        ("get_config", {"section": 7}, "bad_type"),
    )
    seq = 1
    for cmd, args, code in cases:
        _refused(b, seq, cmd, args, code)
        seq += 1
    # Infinity has no JSON spelling, but MicroPython's parser reads 1e999 as inf.
    b.edge.raw_command(seq, b'{"cmd": "set_current", "args": {"current_ma": 1e999}}')
    b.run_ms(10)
    r = b.edge.replies()[-1]
    assert r["cmd_seq"] == seq and r["error"] == "bad_type"
    assert b.rig.galvanostat.setpoint_ma == 0.3


def test_malformed_envelopes_are_refused():
    b = Bench()
    b.run_ms(600)
    before = _state(b.rig)
    for seq, body, code in ((0, b"not json", "bad_json"), (1, b"[1,2]", "bad_request"),
                            (2, b'{"args": {}}', "bad_request"),
                            (3, b'{"cmd": 5}', "bad_request"),
                            (4, b'{"cmd": "stop", "args": [1]}', "bad_args"),
                            (5, b'{"cmd": "stop", "x": 1}', "bad_request"),
                            (6, b"\xff\xfe\xfd", "bad_json"),
                            (7, b"[" * 400, "bad_json")):
        b.edge.raw_command(seq, body)
        b.run_ms(10)
        r = b.edge.replies()[-1]
        assert r["cmd_seq"] == seq and not r["ok"] and r["error"] == code, (body, r)
    assert _state(b.rig) == before


def test_status_reply_fits_in_one_frame():
    b = Bench()
    b.run_ms(600)
    b.energise()
    r = b.command(10, "status")
    assert r["ok"]
    body = json.dumps(r).encode()
    assert len(body) <= link.MAX_BODY
    seq = 12
    for section in b.command(11, "get_config")["result"]["sections"]:
        r = b.command(seq, "get_config", {"section": section})
        assert r["ok"] and section in r["result"], (section, r)
        seq += 1


_NAMES = ("status", "set_temperature", "set_pressure", "set_current", "stop", "reset_safety",
          "get_config", "set_limit", "bogus", "")
_KEYS = ("temp_c", "pressure_mpa", "current_ma", "token", "section", "row", "threshold", "x")
_VALUES = (0, 1, -1, 0.5, 5.0, 45.0, 99.0, 1e300, -1e300, 150.0, 151.0, True, False, None,
           "", "0000", "over_temp", "limits", "watchdog", [], {}, [1.5], {"a": 1})


def _pick(seq):
    return seq[random.getrandbits(16) % len(seq)]


def _random_command():
    cmd: dict = {"cmd": _pick(_NAMES)}
    if random.getrandbits(1):
        cmd["args"] = {_pick(_KEYS): _pick(_VALUES)
                       for _ in range(random.getrandbits(2))}
    if random.getrandbits(4) == 0:
        cmd["args"] = _pick(_VALUES)
    return json.dumps(cmd).encode()


def _mutate(body):
    b = bytearray(body)
    for _ in range(1 + random.getrandbits(2)):
        op = random.getrandbits(2)
        pos = random.getrandbits(16) % (len(b) + 1)
        if op == 0 and b:
            b[pos % len(b)] = random.getrandbits(8)
        elif op == 1:
            b[pos:pos] = bytes([random.getrandbits(8)])
        elif op == 2 and b:
            b = b[:pos % len(b)]  # truncate
        else:
            b[pos:pos] = _pick((b"{", b"}", b'"', b",", b":", b"[", b"null"))
    return bytes(b)


def test_fuzzed_commands_never_crash_and_only_accepted_ones_change_state():
    random.seed(20240601)
    b = Bench()
    b.run_ms(600)
    rig = b.rig
    ses = rig.session
    accepted = 0
    for k in range(3000):
        body = _random_command()
        if k % 2:
            body = _mutate(body)
        before = _state(rig)
        ok, result = rig.commands.handle(body)
        reply = ses._reply_body(k, ok, result)
        assert len(reply) <= link.MAX_BODY
        parsed = json.loads(reply)
        assert parsed["ok"] is ok and parsed["cmd_seq"] == k
        if ok:
            accepted += 1
        else:
            code, detail = result
            assert isinstance(code, str) and isinstance(detail, str), result
            assert _state(rig) == before, (body, result)
        if rig.safety.tripped or k % 200 == 0:
            rig.stop()
            rig.set_temperature(None)
            rig.set_pressure(None)
    assert 100 < accepted < 2900  # both paths were exercised
