"""A read-only tap on a rig's link: a TCP relay between the gateway and the rig that
forwards every byte unchanged and decodes, on the side, what the rig sends.

The gateway connects to the tap's port as it would to the rig; the tap opens the rig's
port (``127.0.0.1:rig.port``) for each connection. What the demo shows live and reports
(samples, impedance points, EVENTs and REPLYs) is what the firmware put on its link,
decoded with the edge's own frame decoder; the samples the firmware sent are the
"sent" side of the end-to-end accounting (InfluxDB holds the "stored" side).

Decoding is passive: a retransmitted message is counted once per (boot, stream, seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fieldrig_edge import link

MSG_IMPEDANCE = 0x11  # docs/link.md, "Electrochemistry messages"
MSG_EIS = 0x22
IMPEDANCE = struct.Struct("<IIffffB")  # uptime_s, uptime_us, f_hz, z_re, z_im, rel_err, flags

ALARM_EVENTS = frozenset({"echem_alarm", "limit_tripped", "safe_state", "interlock",
                          "telemetry_dropped", "reliable_dropped"})


@dataclass(slots=True)
class ZPoint:
    t_s: float  # plant (virtual) time
    f_hz: float
    z_re: float
    z_im: float
    rel_err: float
    flags: int

    @property
    def mag(self) -> float:
        return math.hypot(self.z_re, self.z_im)


@dataclass(slots=True)
class TapEvent:
    t_s: float  # plant time the tap saw it (or the rig's own t_s for alarms)
    boot: int
    seq: int
    kind: str  # "event" | "reply" | "eis"
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body.get("event") or ("reply" if self.kind == "reply" else self.kind))


@dataclass
class RigObservation:
    """Everything one rig sent on its link, deduplicated, with plant times."""

    rig: str
    # plant time now (the rig's virtual clock) and of a boot's uptime 0
    now_s: Callable[[], float] = field(default=lambda: 0.0, repr=False)
    boot_t0_s: Callable[[], float] = field(default=lambda: 0.0, repr=False)
    boots: dict[int, float] = field(default_factory=dict)  # boot id -> plant t0
    # samples: (plant t, boot, link.Sample), in arrival order
    samples: list[tuple[float, int, link.Sample]] = field(default_factory=list)
    impedance: list[ZPoint] = field(default_factory=list)
    events: list[TapEvent] = field(default_factory=list)
    connections: int = 0
    decoder_errors: int = 0
    bytes_from_rig: int = 0
    _seen: set[tuple[int, int, int]] = field(default_factory=set, repr=False)

    # -- views --------------------------------------------------------------------------
    def sample_keys(self) -> list[tuple[int, int]]:
        return [(b, s.seq) for _, b, s in self.samples]

    @property
    def last_sample(self) -> link.Sample | None:
        return self.samples[-1][2] if self.samples else None

    def last_z(self, max_age_s: float | None = None) -> ZPoint | None:
        """The latest impedance point at the lowest tracking tone (what the recipe
        engine calls |Z|), else the latest one."""
        if not self.impedance:
            return None
        last = self.impedance[-1]
        same = [z for z in self.impedance[-6:] if abs(z.t_s - last.t_s) < 0.5]
        z = min(same, key=lambda p: p.f_hz) if same else last
        if max_age_s is not None and self.now_s() - z.t_s > max_age_s:
            return None
        return z

    def named(self, *names: str) -> list[TapEvent]:
        return [e for e in self.events if e.name in names]

    def last_alarm(self) -> TapEvent | None:
        for e in reversed(self.events):
            if e.name in ALARM_EVENTS or e.name == "mitigation":
                return e
        return None

    # -- decoding ---------------------------------------------------------------------------
    def _t_of(self, boot: int, uptime_s: int, uptime_us: int) -> float:
        return self.boots.get(boot, 0.0) + uptime_s + uptime_us / 1e6

    def handle(self, p: link.Packet, boot: int | None) -> int | None:
        """One packet from the rig; returns the boot it belongs to (HELLO sets it)."""
        t = p.msg_type
        if t == link.MSG_HELLO:
            with contextlib.suppress(link.LinkError):
                hello = link.parse_json_body(p)
                b = hello.get("boot")
                if isinstance(b, int):
                    self.boots.setdefault(b, self.boot_t0_s())
                    return b
            return boot
        if boot is None:
            return boot
        stream = link.stream_of(t)
        if stream is None:
            return boot
        key = (boot, stream, p.seq)
        if key in self._seen:
            return boot
        self._seen.add(key)
        try:
            if t == link.MSG_SAMPLE:
                s = link.parse_sample(p)
                self.samples.append((self._t_of(boot, s.uptime_s, s.uptime_us), boot, s))
            elif t == MSG_IMPEDANCE and len(p.body) == IMPEDANCE.size:
                us, uus, f, re_, im, err, flags = IMPEDANCE.unpack(p.body)
                self.impedance.append(ZPoint(self._t_of(boot, us, uus), f, re_, im, err, flags))
            elif t in (link.MSG_EVENT, link.MSG_REPLY, MSG_EIS):
                body = json.loads(p.body.decode("utf-8"))
                if isinstance(body, dict):
                    kind = {link.MSG_EVENT: "event", link.MSG_REPLY: "reply"}.get(t, "eis")
                    ts = self.now_s()
                    rig_t = body.get("t_s")  # alarms carry the rig's uptime
                    if isinstance(rig_t, (int, float)) and not isinstance(rig_t, bool):
                        ts = self.boots.get(boot, 0.0) + float(rig_t)
                    self.events.append(TapEvent(ts, boot, p.seq, kind, body))
        except (link.LinkError, ValueError, UnicodeDecodeError, struct.error):
            self.decoder_errors += 1
        return boot


class LinkTap:
    """Relay ``127.0.0.1:<port>`` (what the gateway opens) <-> the rig's link port."""

    def __init__(self, obs: RigObservation, rig_port: int, host: str = "127.0.0.1") -> None:
        self.obs = obs
        self.rig_port = rig_port
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> LinkTap:
        self._server = await asyncio.start_server(self._on_client, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_client(self, g_reader: asyncio.StreamReader,
                         g_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                r_reader, r_writer = await asyncio.open_connection(self.host, self.rig_port)
            except OSError:
                g_writer.close()
                return
            self.obs.connections += 1
            up = asyncio.create_task(self._pipe(g_reader, r_writer, None))
            down = asyncio.create_task(self._pipe(r_reader, g_writer, link.FrameDecoder()))
            try:
                await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (up, down):
                    t.cancel()
                await asyncio.gather(up, down, return_exceptions=True)
                for w in (r_writer, g_writer):
                    w.close()
        finally:
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    decoder: link.FrameDecoder | None) -> None:
        boot: int | None = None
        errors0 = 0
        while True:
            data = await reader.read(65536)
            if not data:
                return
            writer.write(data)
            if decoder is not None:
                self.obs.bytes_from_rig += len(data)
                for p in decoder.feed(data):
                    boot = self.obs.handle(p, boot)
                self.obs.decoder_errors += decoder.errors - errors0
                errors0 = decoder.errors
            await writer.drain()
