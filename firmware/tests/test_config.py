# Config on flash: validated at boot, factory defaults (and an EVENT) when missing,
# corrupt or invalid; atomic replace; limits never past the absolute bounds.
import json
import os

from doubles import Bench

from fieldrig import config


def _tmpdir():
    d = "/tmp/fieldrig-cfg-%s" % "".join("%02x" % b for b in os.urandom(6))
    os.mkdir(d)
    return d


def _cleanup(d):
    for name in os.listdir(d):
        os.remove(d + "/" + name)
    os.rmdir(d)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_defaults_are_valid_and_complete():
    cfg = config.defaults()
    assert config.validate(cfg) == cfg
    assert cfg["schema"] == config.SCHEMA_VERSION and cfg["limits"]["over_temp"] == 120.0
    assert cfg["link"]["backlog"] == 1024 and cfg["link"]["ack_timeout_ms"] == 500


def test_missing_file_gives_defaults_and_an_event():
    d = _tmpdir()
    try:
        b = Bench(config_path=d + "/rig.json")
        b.run_ms(600)
        ev = b.edge.events("config_defaults")
        assert len(ev) == 1 and ev[0]["reason"] == "missing"
        assert b.rig.cfg == config.defaults()
    finally:
        _cleanup(d)


def test_corrupt_file_gives_defaults_and_an_event():
    d = _tmpdir()
    try:
        for text in ('{"schema": 1, "limits": {"over_te', "\xff\xfe garbage", ""):
            _write(d + "/rig.json", text)
            b = Bench(config_path=d + "/rig.json")
            b.run_ms(600)
            ev = b.edge.events("config_defaults")
            assert len(ev) == 1 and ev[0]["reason"] == "corrupt", (text, ev)
            assert b.rig.cfg == config.defaults()
    finally:
        _cleanup(d)


def test_invalid_content_gives_defaults_and_names_the_problem():
    d = _tmpdir()
    cases = (
        ({"schema": 2}, "schema"),
        ({"schema": 1, "limits": {"over_temp": 200.0}}, "over_temp"),  # past 150 C
        ({"schema": 1, "limits": {"over_pressure": "high"}}, "over_pressure"),
        ({"schema": 1, "heater": {"kp": -1.0}}, "heater.kp"),
        ({"schema": 1, "heater": {"kp_typo": 1.0}}, "kp_typo"),
        ({"schema": 1, "link": {"backlog": 1024.5}}, "link.backlog"),
        ({"schema": 1, "galvanostat": {"ranges_ma": [1.0, 0.1]}}, "ranges_ma"),
        ({"schema": 1, "reset_token": 1234}, "reset_token"),
        ({"schema": 1, "pressure": {"min_position": 5, "max_position": 5}}, "min_position"),
        ([1, 2, 3], "object"),
    )
    try:
        for raw, word in cases:
            _write(d + "/rig.json", json.dumps(raw))
            cfg, problem = config.ConfigStore(d + "/rig.json").load()
            assert cfg == config.defaults(), raw
            assert problem is not None and problem[0] == "invalid", (raw, problem)
            assert word in problem[1], (word, problem[1])
    finally:
        _cleanup(d)


def test_partial_file_keeps_its_values_and_fills_defaults():
    d = _tmpdir()
    try:
        _write(d + "/rig.json", json.dumps({"schema": 1, "reset_token": "pin-4711",
                                             "limits": {"over_temp": 90},
                                             "calibration": {"rtd_offset_c": -0.25}}))
        b = Bench(config_path=d + "/rig.json")
        b.run_ms(600)
        assert b.edge.events("config_defaults") == []
        assert b.rig.safety.threshold("over_temp") == 90.0
        assert b.rig.cfg["calibration"]["rtd_offset_c"] == -0.25
        assert b.rig.cfg["heater"] == config.defaults()["heater"]
        assert b.command(0, "reset_safety", {"token": "pin-4711"})["ok"]
    finally:
        _cleanup(d)


def test_set_limit_is_saved_and_survives_a_reboot():
    d = _tmpdir()
    try:
        b = Bench(config_path=d + "/rig.json")
        b.run_ms(600)
        assert b.command(0, "set_limit", {"row": "over_temp", "threshold": 95.5})["ok"]
        b2 = Bench(config_path=d + "/rig.json")
        assert b2.rig.safety.threshold("over_temp") == 95.5
        b2.run_ms(600)
        assert b2.edge.events("config_defaults") == []
        assert sorted(os.listdir(d)) == ["rig.json"]
    finally:
        _cleanup(d)


def test_crash_between_write_and_rename_leaves_the_old_file():
    d = _tmpdir()
    path = d + "/rig.json"
    try:
        store = config.ConfigStore(path)
        old = config.defaults()
        old["limits"]["over_temp"] = 80.0
        store.save(old)
        new = config.defaults()
        new["limits"]["over_temp"] = 140.0
        store.write_tmp(new)  # power fails here: the rename never happens
        cfg, problem = config.ConfigStore(path).load()
        assert problem is None and cfg["limits"]["over_temp"] == 80.0
        assert os.listdir(d) == ["rig.json"]  # the stale temp file was cleared at boot
        # A torn temp file (crash during the write) changes nothing either.
        _write(path + ".tmp", '{"schema": 1, "lim')
        cfg, problem = config.ConfigStore(path).load()
        assert problem is None and cfg["limits"]["over_temp"] == 80.0
    finally:
        _cleanup(d)


def test_save_refuses_invalid_config_and_keeps_the_file():
    d = _tmpdir()
    path = d + "/rig.json"
    try:
        store = config.ConfigStore(path)
        store.save(config.defaults())
        bad = config.defaults()
        bad["limits"]["over_current"] = 500.0
        try:
            store.save(bad)
        except config.ConfigError:
            pass
        else:
            raise AssertionError("saved a limit past the absolute bound")
        cfg, problem = store.load()
        assert problem is None and cfg["limits"]["over_current"] == 50.0
    finally:
        _cleanup(d)


def test_get_config_never_returns_the_token():
    b = Bench()
    b.run_ms(600)
    r = b.command(0, "get_config")
    assert r["ok"] and "reset_token" not in r["result"]["sections"]
    assert "limits" in r["result"]["sections"]
    r = b.command(1, "get_config", {"section": "reset_token"})
    assert not r["ok"] and r["error"] == "unknown_section"
    r = b.command(2, "get_config", {"section": "limits"})
    assert r["ok"] and r["result"]["limits"]["over_temp"] == 120.0


def test_board_overrides_are_validated():
    cfg = config.defaults({"limits": {"watchdog": 2000}})
    assert cfg["limits"]["watchdog"] == 2000
    try:
        config.defaults({"limits": {"watchdog": 99999}})
    except config.ConfigError:
        return
    raise AssertionError("override past the hard bound accepted")
