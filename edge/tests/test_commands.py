"""Commands over MQTT v5: request/response with correlation data; every bad request gets
its own error on the response topic and reaches no rig."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from edgekit import Recorder, Requester, gateway_config, responses
from rig_emulator import RigEmulator, wait_until

from fieldrig_edge.gateway import Gateway


def _with_gateway(mosquitto: Any, tmp_path: Path, rigs: list[RigEmulator],
                  body: Any, **opts: Any) -> Gateway:
    async def main() -> Gateway:
        for r in rigs:
            await r.start()
        cfg = gateway_config(tmp_path, mosquitto, [(r.rig_id, r.port) for r in rigs], **opts)
        gw = Gateway(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            await wait_until(lambda: gw.commands_ready.is_set() and all(
                s.link is not None and s.link.rig_state is not None
                for s in gw.sessions.values() if not s.link or not s.link.legacy), 20,
                "gateway up, rigs sampling")
            await asyncio.to_thread(body, gw)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            for r in rigs:
                await r.stop()
        return gw

    return asyncio.run(main())


def test_valid_commands_round_trip_with_correlation(mosquitto: Any, tmp_path: Path) -> None:
    rig = RigEmulator("rig-a", period_s=0.01)
    rec = Recorder(mosquitto.host, mosquitto.port, topic="ops/replies/#", client_id="ops").start()
    req = Requester(mosquitto.host, mosquitto.port)

    def body(_gw: Gateway) -> None:
        req.send("rig-a", {"schema": 1, "cmd": "status"}, b"c-1")
        req.send("rig-a", {"schema": 1, "cmd": "set_current", "args": {"current_ma": 2.5}},
                 b"c-2")
        req.send("rig-a", {"schema": 1, "cmd": "status"}, b"c-3")
        assert len(responses(rec, 3)) == 3

    try:
        gw = _with_gateway(mosquitto, tmp_path, [rig], body)
    finally:
        req.stop()
        rec.stop()
    got = responses(rec, 3, 0)
    assert got[b"c-1"]["ok"] is True and got[b"c-1"]["result"]["boot"] == rig.boot
    assert got[b"c-1"]["source"] == "rig" and got[b"c-1"]["rig"] == "rig-a"
    assert got[b"c-2"]["ok"] and got[b"c-2"]["result"] == {"applied": "set_current",
                                                          "current_ma": 2.5}
    assert got[b"c-3"]["result"]["current_ma"] == 2.5  # executed in order
    assert [c["cmd"] for _s, c in rig.commands_seen] == ["status", "set_current", "status"]
    assert gw.sessions["rig-a"].health.commands_ok == 3


def test_each_bad_command_gets_its_error_and_reaches_no_rig(
        mosquitto: Any, tmp_path: Path) -> None:
    rig = RigEmulator("rig-a", period_s=0.01)
    tripped = RigEmulator("rig-t", period_s=0.01, rig_state=2)  # interlock tripped
    legacy = RigEmulator("rig-l", period_s=0.01, legacy=True)
    rec = Recorder(mosquitto.host, mosquitto.port, topic="ops/replies/#", client_id="ops").start()
    req = Requester(mosquitto.host, mosquitto.port)
    cases: dict[bytes, tuple[str, bytes | dict[str, Any], str]] = {
        b"unknown-rig": ("rig-zz", {"schema": 1, "cmd": "status"}, "unknown_rig"),
        b"not-json": ("rig-a", b"{nope", "bad_payload"),
        b"not-utf8": ("rig-a", b"\xff\xfe", "bad_payload"),
        b"array": ("rig-a", b"[1, 2]", "bad_payload"),
        b"no-schema": ("rig-a", {"cmd": "status"}, "bad_schema"),
        b"extra-field": ("rig-a", {"schema": 1, "cmd": "status", "x": 1}, "bad_schema"),
        b"unknown-cmd": ("rig-a", {"schema": 1, "cmd": "self_destruct"}, "unknown_command"),
        b"missing-arg": ("rig-a", {"schema": 1, "cmd": "set_current", "args": {}},
                         "bad_schema"),
        b"wrong-type": ("rig-a", {"schema": 1, "cmd": "set_current",
                                  "args": {"current_ma": "5"}},
                        "bad_schema"),
        b"bool-arg": ("rig-a", {"schema": 1, "cmd": "set_current",
                                "args": {"current_ma": True}},
                      "bad_schema"),
        b"nan": ("rig-a", b'{"schema": 1, "cmd": "set_current", "args": {"current_ma": NaN}}',
                 "bad_payload"),
        b"range": ("rig-a", {"schema": 1, "cmd": "set_pressure", "args": {"pressure_mpa": 95}},
                   "out_of_range"),
        b"config-limit": ("rig-a", {"schema": 1, "cmd": "set_current",
                                    "args": {"current_ma": 6.0}},
                          "out_of_range"),
        b"state": ("rig-t", {"schema": 1, "cmd": "set_temperature", "args": {"temp_c": 40}},
                   "rig_state"),
        b"too-large": ("rig-a", {"schema": 1, "cmd": "status", "pad": "x" * 5000},
                       "too_large"),
        b"legacy": ("rig-l", {"schema": 1, "cmd": "status"}, "unsupported"),
    }

    def body(_gw: Gateway) -> None:
        for corr, (rig_id, payload, _code) in cases.items():
            req.send(rig_id, payload, corr)
        req.send("rig-t", {"schema": 1, "cmd": "set_temperature", "args": {"temp_c": None}},
                 b"heater-off")
        # No response topic: nobody can be told, so nothing is executed either.
        req.send("rig-a", {"schema": 1, "cmd": "status"}, b"no-topic", response_topic=None)
        req.send("rig-a", {"schema": 1, "cmd": "status"}, b"wild", response_topic="ops/+/x")
        assert len(responses(rec, len(cases) + 1)) == len(cases) + 1
        time.sleep(0.3)

    try:
        gw = _with_gateway(mosquitto, tmp_path, [rig, tripped, legacy], body,
                           limits={"rig-a": {"set_current.current_ma": (-5.0, 5.0)}})
    finally:
        req.stop()
        rec.stop()
    got = responses(rec, len(cases) + 1, 0)
    for corr, (_rig, _payload, code) in cases.items():
        assert got[corr]["ok"] is False, corr
        assert got[corr]["error"] == code, (corr, got[corr])
        assert got[corr]["source"] == "gateway" and got[corr]["detail"]
    assert b"no-topic" not in got and b"wild" not in got
    assert got[b"heater-off"]["ok"] is True  # switching off is allowed when tripped
    assert rig.commands_seen == []
    assert [c for _s, c in tripped.commands_seen] == [
        {"cmd": "set_temperature", "args": {"temp_c": None}}]
    assert gw.stats.commands_unanswerable == 2


def test_command_timeout_and_rig_error_are_reported(mosquitto: Any, tmp_path: Path) -> None:
    hung = RigEmulator("rig-h", period_s=0.01, ignore_commands=True)
    rec = Recorder(mosquitto.host, mosquitto.port, topic="ops/replies/#", client_id="ops").start()
    req = Requester(mosquitto.host, mosquitto.port)

    def body(_gw: Gateway) -> None:
        req.send("rig-h", {"schema": 1, "cmd": "status"}, b"t-1")
        assert len(responses(rec, 1)) == 1

    try:
        gw = _with_gateway(mosquitto, tmp_path, [hung], body, command_timeout_s=1.2,
                           command_retransmit_s=0.3)
    finally:
        req.stop()
        rec.stop()
    r = responses(rec, 1, 0)[b"t-1"]
    assert r["ok"] is False and r["error"] == "timeout" and "may or may not" in r["detail"]
    # Retransmitted with the same command number (the rig would not run it twice).
    seqs = [s for s, _c in hung.commands_seen]
    assert len(seqs) >= 3 and set(seqs) == {0}
    assert gw.sessions["rig-h"].health.command_timeouts == 1


def test_lost_reply_is_recovered_without_running_the_command_twice(
        mosquitto: Any, tmp_path: Path) -> None:
    rig = RigEmulator("rig-a", period_s=0.01)
    rec = Recorder(mosquitto.host, mosquitto.port, topic="ops/replies/#", client_id="ops").start()
    req = Requester(mosquitto.host, mosquitto.port)
    dropped = threading.Event()
    orig_reply = rig._reply

    def lossy_reply(cmd_seq: int, ok: bool, result: Any, store: bool = False) -> None:
        # The rig runs the command and queues the REPLY, but the frame is lost on the line:
        # the gateway retransmits the COMMAND, the rig re-sends the stored REPLY.
        if not dropped.is_set():
            dropped.set()
            send = rig._send
            rig._send = lambda frame: True  # type: ignore[method-assign]
            try:
                orig_reply(cmd_seq, ok, result, store)
            finally:
                rig._send = send  # type: ignore[method-assign]
            rig.rel.tx = rig.rel.next_seq  # "sent"
            return
        orig_reply(cmd_seq, ok, result, store)

    rig._reply = lossy_reply  # type: ignore[method-assign]

    def body(_gw: Gateway) -> None:
        req.send("rig-a", {"schema": 1, "cmd": "set_pressure",
                           "args": {"pressure_mpa": 4.0}}, b"p-1")
        assert len(responses(rec, 1)) == 1

    try:
        _with_gateway(mosquitto, tmp_path, [rig], body, command_retransmit_s=0.2)
    finally:
        req.stop()
        rec.stop()
    r = responses(rec, 1, 0)[b"p-1"]
    assert r["ok"] is True and r["result"]["pressure_mpa"] == 4.0
    assert [c["cmd"] for c in rig.executed] == ["set_pressure"]


def test_command_survives_a_reconnect_and_numbers_continue_per_boot(
        mosquitto: Any, tmp_path: Path) -> None:
    """Command numbers are per boot of the rig (docs/link.md): a command in flight when
    the link drops is sent again with its number on the next connection and answered
    there (run once); a restarted gateway continues from HELLO's cmd_next, so its first
    command is not mistaken for a repeat of the old gateway's."""
    # The 1st connection hears nothing from the gateway for 60 s (COMMANDs lost).
    rig = RigEmulator("rig-a", period_s=0.01, deaf={1: 60.0})
    rec = Recorder(mosquitto.host, mosquitto.port, topic="ops/replies/#", client_id="ops").start()
    req = Requester(mosquitto.host, mosquitto.port)

    async def main() -> None:
        await rig.start()
        cfg = gateway_config(tmp_path, mosquitto, [("rig-a", rig.port)],
                             command_timeout_s=8.0, command_retransmit_s=0.2)
        for k, (corr, mpa) in enumerate(((b"p-1", 4.0), (b"p-2", 5.0))):
            gw = Gateway(cfg)
            stop = asyncio.Event()
            task = asyncio.create_task(gw.run(stop))
            try:
                await wait_until(lambda gw=gw: gw.commands_ready.is_set() and
                                 gw.sessions["rig-a"].link is not None and
                                 gw.sessions["rig-a"].link.rig_state is not None, 20, "up")
                await asyncio.to_thread(req.send, "rig-a", {
                    "schema": 1, "cmd": "set_pressure", "args": {"pressure_mpa": mpa}}, corr)
                if k == 0:
                    await wait_until(lambda gw=gw: gw.sessions["rig-a"].health
                                     .command_retransmits >= 2, 10, "retransmits")
                    assert rig.commands_seen == []  # all lost on the deaf line
                    rig.disconnect()  # the cable is pulled with the command in flight
                assert corr in await asyncio.to_thread(responses, rec, k + 1)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
        await rig.stop()

    try:
        asyncio.run(main())
    finally:
        req.stop()
        rec.stop()
    got = responses(rec, 2, 0)
    assert got[b"p-1"]["ok"] is True and got[b"p-1"]["result"]["pressure_mpa"] == 4.0
    assert got[b"p-2"]["ok"] is True and got[b"p-2"]["result"]["pressure_mpa"] == 5.0
    assert got[b"p-1"]["cmd_seq"] == 0 and got[b"p-2"]["cmd_seq"] == 1
    assert [c["args"]["pressure_mpa"] for c in rig.executed] == [4.0, 5.0]
    assert [s for s, _c in rig.commands_seen] == [0, 1]
