"""The gateway against the real firmware (micropython unix port, firmware/): the two
implementations of docs/link.md meet. Commands round-trip; telemetry is accounted for
across a gateway restart (the rig keeps what was not acked and resends it) and through
a corrupting, dropping line with cable pulls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import REPLIES, Recorder, Requester, assert_exactly_once, gateway_config, responses
from rig_emulator import LineFaults, wait_until

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


class NoisyProxy:
    """TCP proxy between the gateway and the firmware: splits each direction into frames
    (at the 0x00 delimiter) and corrupts, cuts, drops and pads them (``LineFaults``);
    ``pull()`` cuts both connections like a pulled cable. Connection numbers (1 = first)
    in ``lose_hello`` lose the rig's first frame (its HELLO); in ``deaf`` everything the
    edge sends for that many seconds (its ACKs: the rig hears nothing)."""

    def __init__(self, upstream_port: int, down: LineFaults, up: LineFaults,
                 lose_hello: set[int], deaf: dict[int, float]) -> None:
        self.upstream_port = upstream_port
        self.faults = {"down": down, "up": up}  # down: rig -> edge, up: edge -> rig
        self.lose_hello = lose_hello
        self.deaf = deaf
        self.port = 0
        self.pulls = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> NoisyProxy:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.pull()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def pull(self) -> None:
        self.pulls += 1
        for w in self._writers:
            w.close()
        self._writers.clear()

    async def _on_client(self, er: asyncio.StreamReader, ew: asyncio.StreamWriter) -> None:
        try:
            rr, rw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            ew.close()
            return
        self._writers += [ew, rw]
        self.connections += 1
        conn = self.connections
        await asyncio.gather(self._pipe(rr, ew, "down", conn), self._pipe(er, rw, "up", conn),
                             return_exceptions=True)
        ew.close()
        rw.close()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, way: str,
                    conn: int) -> None:
        buf = b""
        t0 = time.monotonic()
        first = way == "down" and conn in self.lose_hello
        try:
            while not w.is_closing():
                data = await r.read(4096)
                if not data:
                    break
                if way == "up" and time.monotonic() - t0 < self.deaf.get(conn, 0.0):
                    continue
                buf += data
                *frames, buf = buf.split(b"\x00")
                if first and frames:
                    frames = frames[1:]
                    first = False
                out = b"".join(self.faults[way].apply(f + b"\x00") for f in frames)
                if out:
                    w.write(out)
        finally:
            w.close()


def test_real_firmware_over_a_corrupting_dropping_line_loses_nothing(
        mosquitto: Any, recorder: Recorder, start_rig: Callable[..., FirmwareRig],
        tmp_path: Path) -> None:
    """The firmware and the gateway through a proxy that damages about 1 frame in 60
    each way (flips, cuts, drops, noise: ACKs, HELLOs, SYNCs and COMMANDs included) and
    pulls the cable four times; the 2nd connection loses its HELLO, the 3rd hears no ACK
    for 1.2 s (the firmware used to free what it sent then, unreported). Every sample
    exactly once, no gap of any kind, and a command sent on the noisy line is answered."""
    n = 1500
    fw = start_rig(rig_id="rig-f", samples=n, period_ms=5)
    down = LineFaults(seed=21, p_flip=0.006, p_drop=0.006, p_noise=0.003, p_cut=0.003)
    up = LineFaults(seed=22, p_flip=0.03, p_drop=0.03, p_noise=0.01, p_cut=0.01)
    ops = Recorder(mosquitto.host, mosquitto.port, topic=REPLIES, client_id="ops").start()
    req = Requester(mosquitto.host, mosquitto.port)

    async def main() -> tuple[NoisyProxy, Gateway]:
        proxy = await NoisyProxy(fw.port, down, up, lose_hello={2}, deaf={3: 1.2}).start()
        gw = Gateway(gateway_config(tmp_path, mosquitto, [("rig-f", proxy.port)],
                                    command_timeout_s=8.0))
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            await wait_until(lambda: gw.commands_ready.is_set() and
                             gw.sessions["rig-f"].health.samples > 0, 20, "rig online")
            await asyncio.to_thread(req.send, "rig-f", {
                "schema": 1, "cmd": "set_current", "args": {"current_ma": 0.25}}, b"c-1")
            for _ in range(4):
                await asyncio.sleep(0.8)
                proxy.pull()
            await wait_until(lambda: len(recorder.samples()) >= n, 90, "all samples")
            await asyncio.sleep(0.5)  # a late duplicate would show up now
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await proxy.stop()
        return proxy, gw

    try:
        proxy, gw = asyncio.run(main())
        assert proxy.pulls >= 4 and proxy.connections >= 5
        got = responses(ops, 1)
    finally:
        req.stop()
        ops.stop()
    boots = {b for (_r, b, _s) in recorder.samples()}
    assert len(boots) == 1
    assert_exactly_once(recorder, {("rig-f", boots.pop()): set(range(n))})
    for name in ("telemetry_gap", "reliable_gap", "telemetry_dropped", "reliable_dropped"):
        assert not recorder.events(name), (name, recorder.events(name))
    h = gw.sessions["rig-f"].health
    assert h.link_errors > 0 and h.connects >= 5 and h.resyncs == 0, h
    assert sum(down.stats.values()) > 20 and sum(up.stats.values()) > 5
    assert got[b"c-1"]["ok"] and got[b"c-1"]["result"]["current_ma"] == 0.25


def test_gateway_polls_the_rigs_status_and_publishes_its_actuator_state(
        mosquitto: Any, recorder: Recorder, start_rig: Callable[..., FirmwareRig],
        tmp_path: Path) -> None:
    # The SAMPLE carries no set-points (docs/link.md): the gateway asks the rig for its
    # status on its own and publishes what the rig is told to do (docs/mqtt.md).
    fw = start_rig(rig_id="rig-f", period_ms=20)
    ops = Recorder(mosquitto.host, mosquitto.port, topic=REPLIES, client_id="ops").start()
    req = Requester(mosquitto.host, mosquitto.port)
    cfg = gateway_config(tmp_path, mosquitto, [("rig-f", fw.port)], actuator_poll_s=0.5)

    def told(d: Any) -> bool:
        return (d.payload.get("current_setpoint_ma") == 0.25
                and d.payload.get("temp_setpoint_c") == 30.0)

    async def main() -> Gateway:
        gw = Gateway(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            await wait_until(lambda: gw.commands_ready.is_set() and
                             gw.sessions["rig-f"].health.samples > 0, 20, "rig online")
            await wait_until(lambda: recorder.of("actuators"), 10, "a first actuator state")
            await asyncio.to_thread(req.send, "rig-f", {
                "schema": 1, "cmd": "set_current", "args": {"current_ma": 0.25}}, b"i-1")
            await asyncio.to_thread(req.send, "rig-f", {
                "schema": 1, "cmd": "set_temperature", "args": {"temp_c": 30.0}}, b"t-1")
            await wait_until(lambda: any(told(d) for d in recorder.of("actuators")), 20,
                             "the new set-points in the actuator state")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        return gw

    try:
        gw = asyncio.run(main())
        got = responses(ops, 2)
        time.sleep(0.3)  # a response to a poll would have arrived by now
        replies = list(ops.of("test"))
    finally:
        req.stop()
        ops.stop()
    states = recorder.of("actuators")
    before, after = states[0].payload, next(d.payload for d in states if told(d))
    assert states[0].topic == "fieldrig/v1/lab-1/rig-f/actuators" and not states[0].retain
    # Before the commands: current off, heater not controlled (null), nothing invented.
    assert before["current_setpoint_ma"] == 0.0 and before["temp_setpoint_c"] is None
    assert after["state"] == "running" and after["current_range"] >= 0
    assert isinstance(after["press_position_steps"], int)
    assert 0.0 <= after["heater_duty"] <= 1.0
    assert (after["schema"], after["rig"], after["cell"], after["run"]) == (
        1, "rig-f", "cell-rig-f", "run-1")
    # On the samples' timeline: the rig's uptime at the reply, mapped like its samples.
    samples = recorder.sample_rows()
    first = min(s["time_ns"] for s in samples.values())
    last = max(s["time_ns"] for s in samples.values())
    assert first - 1_000_000_000 <= before["time_ns"] <= after["time_ns"] <= last
    assert after["boot"] == before["boot"] == next(iter(samples))[1]
    # The polls are the gateway's own: no response anywhere, not counted as commands.
    assert got[b"i-1"]["ok"] and got[b"t-1"]["ok"] and len(replies) == 2
    h = gw.sessions["rig-f"].health
    assert h.actuator_polls >= 2 and h.actuator_poll_failures == 0
    assert (h.commands_sent, h.commands_ok, h.late_replies) == (2, 2, 0)
