"""The gateway against the real firmware (micropython unix port, firmware/): the two
implementations of docs/link.md meet. Commands round-trip; telemetry is accounted for
across a gateway restart (the rig keeps what was not acked and resends it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import REPLIES, Recorder, Requester, assert_exactly_once, gateway_config, responses
from rig_emulator import wait_until

from fieldrig_edge.gateway import Gateway
from fieldrig_hil.services import FirmwareRig


def test_real_firmware_commands_and_restart_accounting(
        mosquitto: Any, recorder: Recorder, start_rig: Callable[..., FirmwareRig],
        tmp_path: Path) -> None:
    n = 600
    fw = start_rig(rig_id="rig-f", samples=n, period_ms=5)
    ops = Recorder(mosquitto.host, mosquitto.port, topic=REPLIES, client_id="ops").start()
    req = Requester(mosquitto.host, mosquitto.port)
    cfg = gateway_config(tmp_path, mosquitto, [("rig-f", fw.port)])

    async def run_once(until: Callable[[], bool], what: str, commands: bool) -> None:
        gw = Gateway(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            if commands:
                await wait_until(lambda: gw.commands_ready.is_set() and
                                 gw.sessions["rig-f"].health.samples > 0, 20, "rig online")
                await asyncio.to_thread(req.send, "rig-f", {"schema": 1, "cmd": "status"},
                                        b"s-1")
                await asyncio.to_thread(req.send, "rig-f", {
                    "schema": 1, "cmd": "set_current", "args": {"current_ma": 0.25}}, b"i-1")
                await asyncio.to_thread(req.send, "rig-f", {
                    "schema": 1, "cmd": "set_current", "args": {"current_ma": 80}}, b"i-2")
            await wait_until(until, 60, what)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    async def main() -> None:
        await run_once(lambda: len(recorder.samples()) > n // 3, "first third", True)
        await asyncio.sleep(0.5)  # the rig keeps sampling into its backlog meanwhile
        await run_once(lambda: len(recorder.samples()) >= n, "the rest", False)

    try:
        asyncio.run(main())
        got = responses(ops, 3)
    finally:
        req.stop()
        ops.stop()
    boots = {b for (_r, b, _s) in recorder.samples()}
    assert len(boots) == 1
    assert_exactly_once(recorder, {("rig-f", boots.pop()): set(range(n))})
    assert got[b"s-1"]["ok"] and got[b"s-1"]["source"] == "rig"
    assert got[b"s-1"]["result"]["state"] == "running"
    assert got[b"i-1"]["ok"] and got[b"i-1"]["result"]["current_ma"] == 0.25
    # Within the edge's envelope (100 mA) but over the rig's configured over_current
    # limit (50 mA): the rig's own validation refuses it, and says so.
    assert got[b"i-2"]["ok"] is False and got[b"i-2"]["error"] == "out_of_range"
    assert got[b"i-2"]["source"] == "rig"
