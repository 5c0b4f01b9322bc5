"""A CPython rig: the rig side of docs/link.md ("Reliable delivery"), for gateway tests.

Faithful to the contract, and to the firmware's choices where the contract leaves room
(firmware/fieldrig/session.py):

- HELLO on every connection with ``boot``, ``oldest_seq``, ``next_seq``, ``rel_oldest``,
  ``rel_next``, ``cmd_next``; repeated every ``ack_timeout`` (4 times) while nothing is
  heard from the edge; wait up to ``ack_timeout`` for the edge's ACKs before sending;
  without them send each message once and keep it (only an ACK frees anything);
- telemetry in a bounded ring (default 1024), reliable EVENT/REPLY in a bounded queue
  (32); cumulative ACKs free them; at most ``window`` messages beyond the ack in flight;
  no ACK progress for ``ack_timeout`` -> go back to the oldest unacked (go-back-N);
- ring overflow drops the oldest sample and reports it as EVENT telemetry_dropped;
  queue overflow replaces the oldest messages by one ``reliable_dropped`` tombstone at
  the seq of the last it replaces (with ``telemetry_through`` when it swallowed a
  telemetry_dropped report);
- COMMAND numbers per boot; a repeated number is not executed again, the stored REPLY
  (same reliable seq; a new one if a tombstone swallowed it) is re-sent (last 8 kept);
- SYNC answered at once with the uptime; the rig clock can drift (``drift_ppm``).

Faults are injected into the byte stream in both directions (``LineFaults``), and the
rig can be reset (new boot: RAM backlog gone, seq from 0) or disconnected.

Ground truth for the tests: ``produced[boot]`` (samples numbered), ``truth_utc`` (the
real UTC at which each sample was taken), ``executed`` (commands the rig ran).
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fieldrig_edge import link
from fieldrig_edge.commands import CATALOGUE

TELE = link.STREAM_TELEMETRY
REL = link.STREAM_RELIABLE


def synthetic(seq: int) -> tuple[float, float, float, float]:
    """Dyadic values (exact in float32), a function of seq: checkable end to end."""
    return (((seq % 64) / 256.0), (-0.5 if (seq // 50) % 2 else 0.5),
            25.0 + (seq % 8) / 8, 5.0 + (seq % 4) / 16)


@dataclass
class LineFaults:
    """Random corruption of a byte stream, reproducible from ``seed``."""

    seed: int = 1
    p_flip: float = 0.0       # per frame: flip one byte
    p_drop: float = 0.0       # per frame: drop it entirely
    p_noise: float = 0.0      # per frame: insert 1..8 noise bytes before it
    p_cut: float = 0.0        # per frame: cut it short (truncated frame)
    enabled: bool = True
    stats: dict[str, int] = field(default_factory=lambda: {"flip": 0, "drop": 0, "noise": 0,
                                                           "cut": 0})

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.seed)

    def apply(self, frame: bytes) -> bytes:
        if not self.enabled:
            return frame
        r = self.rnd
        if r.random() < self.p_drop:
            self.stats["drop"] += 1
            return b""
        out = bytearray(frame)
        if r.random() < self.p_flip and len(out) > 1:
            i = r.randrange(len(out) - 1)
            out[i] ^= 1 << r.randrange(8)
            self.stats["flip"] += 1
        if r.random() < self.p_cut and len(out) > 2:
            out = out[: r.randrange(1, len(out) - 1)]
            self.stats["cut"] += 1
        if r.random() < self.p_noise:
            out[0:0] = bytes(r.randrange(1, 256) for _ in range(r.randrange(1, 9)))
            self.stats["noise"] += 1
        return bytes(out)


class _Stream:
    def __init__(self, stream_id: int, capacity: int) -> None:
        self.stream_id = stream_id
        self.capacity = capacity
        self.base = 0
        self.next_seq = 0
        self.tx = 0
        self.items: dict[int, tuple[int, bytes]] = {}  # seq -> (msg_type, body)
        self.acking: bool | None = None
        self.hold = False
        self.progress = 0.0
        self.retransmitted = 0
        self.tomb: dict[str, Any] | None = None  # reliable: the tombstone at base

    def pending(self) -> int:
        return self.next_seq - self.base

    def on_ack(self, ack: int, now: float) -> None:
        first = self.acking is not True
        self.acking = True
        self.hold = False
        if ack != link.ACK_NONE:
            if ack >= self.next_seq:
                return  # acks what was never sent
            for s in range(self.base, ack + 1):
                self.items.pop(s, None)
                if self.tomb is not None and s == self.tomb["last_seq"]:
                    self.tomb = None
            if ack + 1 > self.base:
                self.base = ack + 1
                self.progress = now
        if first:
            self.progress = now
        if self.tx < self.base or first:
            self.tx = self.base


class RigEmulator:
    def __init__(self, rig_id: str = "rig-1", period_s: float = 0.005,
                 samples: int | None = None, backlog: int = 1024, queue: int = 32,
                 window: int = 64, ack_timeout_s: float = 0.5, drift_ppm: float = 0.0,
                 fw: str = "emu-1", tx_faults: LineFaults | None = None,
                 rx_faults: LineFaults | None = None, legacy: bool = False,
                 rig_state: int = 1, lose_hello: set[int] | None = None,
                 deaf: dict[int, float] | None = None,
                 ignore_commands: bool = False) -> None:
        self.rig_id = rig_id
        self.period_s = period_s
        self.max_samples = samples
        self.backlog = backlog
        self.queue = queue
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.drift = drift_ppm * 1e-6
        self.fw = fw
        self.tx_faults = tx_faults or LineFaults(enabled=False)
        self.rx_faults = rx_faults or LineFaults(enabled=False)
        self.legacy = legacy  # the pre-reliable firmware: HELLO without boot, no acks
        self.rig_state = rig_state
        # Connection numbers (1 = first) whose first HELLO is lost on the line.
        self.lose_hello = lose_hello or set()
        # Connection number -> seconds from its start during which everything the edge
        # sends is lost (its ACKs, SYNCs, COMMANDs).
        self.deaf = deaf or {}
        self.hellos = 0
        self.ignore_commands = ignore_commands  # a hung command handler: never replies
        self.host = "127.0.0.1"
        self.port = 0
        self.produced: dict[int, int] = {}
        # boot -> telemetry seq -> (f_hz, z_re, z_im, rel_err, flags) as float32 sent
        self.impedance: dict[int, dict[int, tuple[Any, ...]]] = {}
        self.truth_utc: dict[tuple[int, int], int] = {}
        # (boot, seq) -> the uptime the SAMPLE carries (ns, whole microseconds)
        self.truth_uptime_ns: dict[tuple[int, int], int] = {}
        self.dropped: dict[int, list[tuple[int, int]]] = {}
        self.rel_dropped: dict[int, int] = {}
        self.executed: list[dict[str, Any]] = []
        self.commands_seen: list[tuple[int, dict[str, Any]]] = []
        self.connections = 0
        self.sync_replies = 0
        self.paused = False
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._conn_task: asyncio.Task[None] | None = None
        self._new_boot()

    # ------------------------------------------------------------------ lifecycle

    def _new_boot(self) -> None:
        self.boot = secrets.randbits(32)
        self.boot_mono_ns = time.monotonic_ns()
        self.tele = _Stream(TELE, self.backlog)
        self.rel = _Stream(REL, self.queue)
        self.produced[self.boot] = 0
        self.dropped[self.boot] = []
        self._replies: list[list[Any]] = []  # [cmd_seq, rel seq (-1: re-queue), body]
        self._max_cmd_seq = -1
        self._heard = False
        self._hello_count = 0
        self._drop_range: list[int] | None = None
        self._drop_report = 0.0
        self._connect_at = 0.0
        self.state = {"current_ma": 0.0, "pressure_mpa": 0.0, "temp_c": 25.0}
        if not self.legacy:
            self._event({"event": "boot", "fw": self.fw, "boot": self.boot})

    async def start(self) -> RigEmulator:
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self._produce()), asyncio.create_task(self._timers())]
        return self

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.disconnect()
        if self._conn_task is not None:
            self._conn_task.cancel()
            await asyncio.gather(self._conn_task, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def disconnect(self) -> None:
        """The link drops (cable pulled, TCP reset): the rig keeps its backlog."""
        w, self._writer = self._writer, None
        if w is not None:
            w.close()

    def reset(self) -> int:
        """Power cycle: the link drops, RAM (backlog, queue) is lost, a new boot starts.
        Returns the old boot id."""
        old = self.boot
        self.disconnect()
        self._new_boot()
        return old

    def uptime_ns(self) -> int:
        return round((time.monotonic_ns() - self.boot_mono_ns) * (1 + self.drift))

    # ------------------------------------------------------------------ producing

    async def _produce(self) -> None:
        # Every sample due since the last tick, so high rates do not need one event-loop
        # wakeup per sample (the benchmark offers tens of thousands per second).
        next_t = time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, min(next_t - time.monotonic(), 0.002)))
            now = time.monotonic()
            while next_t <= now:
                next_t += self.period_s
                if self.paused:
                    continue
                if (self.max_samples is not None
                        and self.produced[self.boot] - len(self.impedance.get(self.boot, ()))
                        >= self.max_samples):
                    continue
                self.add_sample()

    def add_sample(self) -> int:
        st = self.tele
        if st.next_seq - st.base >= st.capacity:
            self._drop_oldest()
        seq = st.next_seq
        up = self.uptime_ns()
        self.truth_utc[(self.boot, seq)] = time.time_ns()
        self.truth_uptime_ns[(self.boot, seq)] = up // 1000 * 1000
        v, i, t, p = synthetic(seq)
        body = link.SAMPLE.pack(up // 1_000_000_000, (up % 1_000_000_000) // 1000, v, i, t, p,
                                self.rig_state)
        st.items[seq] = (link.MSG_SAMPLE, body)
        st.next_seq = seq + 1
        self.produced[self.boot] = st.next_seq
        self._pump(st)
        return seq

    def add_impedance(self, f_hz: float, z_re_ohm: float, z_im_ohm: float, rel_err: float,
                      flags: int, uptime_ns: int | None = None) -> int:
        """One MSG_IMPEDANCE on the telemetry stream (the firmware's TypedTelemetry):
        same seq space, ring, acks and drops as samples. The points of one tracking
        block share its end time: pass the same ``uptime_ns``."""
        st = self.tele
        if st.next_seq - st.base >= st.capacity:
            self._drop_oldest()
        seq = st.next_seq
        up = self.uptime_ns() if uptime_ns is None else uptime_ns
        body = link.IMPEDANCE.pack(up // 1_000_000_000, (up % 1_000_000_000) // 1000, f_hz,
                                   z_re_ohm, z_im_ohm, rel_err, flags)
        st.items[seq] = (link.MSG_IMPEDANCE, body)
        self.impedance.setdefault(self.boot, {})[seq] = link.IMPEDANCE.unpack(body)[2:]
        st.next_seq = seq + 1
        self.produced[self.boot] = st.next_seq
        self._pump(st)
        return seq

    def eis_chunk(self, body: dict[str, Any] | bytes) -> int:
        """One MSG_EIS on the reliable stream (a dict is sent as its JSON)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self._enqueue(link.MSG_EIS, raw)

    def _drop_oldest(self) -> None:
        st = self.tele
        seq = st.base
        st.items.pop(seq, None)
        st.base = seq + 1
        st.tx = max(st.tx, st.base)
        if self._drop_range and seq == self._drop_range[1] + 1:
            self._drop_range[1] = seq
        else:
            self._flush_drops()
            self._drop_range = [seq, seq]

    def _flush_drops(self) -> None:
        if self._drop_range is None:
            return
        first, last = self._drop_range
        self._drop_range = None
        self.dropped[self.boot].append((first, last))
        self._event({"event": "telemetry_dropped", "first_seq": first, "last_seq": last,
                     "count": last - first + 1})

    def event(self, name: str, **data: Any) -> int:
        return self._event({"event": name, **data})

    def _event(self, ev: dict[str, Any]) -> int:
        return self._enqueue(link.MSG_EVENT, json.dumps(ev).encode())

    def _enqueue(self, msg_type: int, body: bytes) -> int:
        q = self.rel
        if len(q.items) >= q.capacity:
            # Bounded queue: the oldest become one tombstone (docs/link.md).
            order = sorted(q.items)
            if q.tomb is not None:
                victims = order[1:2]
                ev = q.tomb
            else:
                victims = order[0:2]
                ev = q.tomb = {"event": "reliable_dropped", "first_seq": order[0],
                               "count": 0}
                self.rel_dropped.setdefault(self.boot, 0)
            for v in victims:
                vtype, vbody = q.items.pop(v)
                ev["count"] += 1
                ev["last_seq"] = v
                self.rel_dropped[self.boot] = self.rel_dropped.get(self.boot, 0) + 1
                if vtype == link.MSG_REPLY:
                    for r in self._replies:
                        if r[1] == v:
                            r[1] = -1
                elif b"telemetry_dropped" in vbody:
                    ev["telemetry_through"] = json.loads(vbody)["last_seq"]
            if victims and order[0] != ev["last_seq"]:
                q.items.pop(order[0], None)  # the previous tombstone
            q.items[ev["last_seq"]] = (link.MSG_EVENT, json.dumps(ev).encode())
        seq = q.next_seq
        q.items[seq] = (msg_type, body)
        q.next_seq = seq + 1
        self._pump(q)
        return seq

    # ----------------------------------------------------------------------- link

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:
            writer.close()  # one edge at a time, like the board
            return
        self._writer = writer
        self.connections += 1
        self._conn_task = asyncio.current_task()  # type: ignore[assignment]
        boot = self.boot
        conn = self.connections
        self._connect_at = time.monotonic()
        self._heard = False
        self._hello_count = 0
        for st in (self.tele, self.rel):
            st.tx = st.base
            st.acking = None
            st.hold = not self.legacy
        self._send_hello(lose=conn in self.lose_hello)
        if self.legacy:
            for st in (self.tele, self.rel):
                st.acking = False
                self._pump(st)
        decoder = link.FrameDecoder()
        try:
            while self._writer is writer and self.boot == boot:
                data = await reader.read(4096)
                if not data:
                    break
                data = self.rx_faults.apply(data)
                if time.monotonic() - self._connect_at < self.deaf.get(conn, 0.0):
                    continue
                for p in decoder.feed(data):
                    if self._writer is writer and self.boot == boot:
                        self._on_packet(p)
        except (ConnectionError, OSError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()

    def _send_hello(self, lose: bool = False) -> None:
        self._hello_count += 1
        hello: dict[str, Any] = {"rig": self.rig_id, "fw": self.fw, "protocol": 1}
        if not self.legacy:
            hello.update({"boot": self.boot, "next_seq": self.tele.next_seq,
                          "oldest_seq": self.tele.base, "rel_next": self.rel.next_seq,
                          "rel_oldest": self.rel.base, "cmd_next": self._max_cmd_seq + 1})
        self.hellos += 1
        if not lose:
            self._send(link.encode_json(link.MSG_HELLO, 0, hello))

    def _send(self, frame: bytes) -> bool:
        w = self._writer
        if w is None or w.is_closing():
            return False
        w.write(self.tx_faults.apply(frame))
        return True

    def _pump(self, st: _Stream) -> None:
        if self._writer is None or st.hold:
            return
        limit = st.next_seq
        if st.acking:
            extra = st.tomb["last_seq"] - st.base if st.tomb is not None else 0
            limit = min(st.base + self.window + max(0, extra), st.next_seq)
        while st.tx < limit:
            seq = st.tx
            item = st.items.get(seq)
            if item is not None:
                if st.tx == st.base:
                    st.progress = time.monotonic()
                if not self._send(link.encode_frame(item[0], seq, item[1])):
                    return
            st.tx = seq + 1

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            if self._writer is not None:
                if (not self.legacy and not self._heard and self._hello_count <= 4
                        and now - self._connect_at >= self.ack_timeout_s * self._hello_count):
                    self._send_hello()  # nothing heard: the HELLO may be lost
                for st in (self.tele, self.rel):
                    if st.hold and now - self._connect_at >= self.ack_timeout_s:
                        # No ACK: send each message once, keep it (acking stays None).
                        st.hold = False
                        st.progress = now
                    elif st.acking and st.tx > st.base and now - st.progress >= self.ack_timeout_s:
                        st.retransmitted += st.tx - st.base
                        st.tx = st.base
                        st.progress = now
                    self._pump(st)
            if self._drop_range is not None and now - self._drop_report >= 1.0:
                # Like the firmware (DROP_REPORT_MS): at most one report per second.
                self._drop_report = now
                self._flush_drops()

    def _on_packet(self, p: link.Packet) -> None:
        if self.legacy:
            return  # the old firmware read and ignored everything
        self._heard = True
        if p.msg_type == link.MSG_ACK:
            try:
                stream, ack = link.parse_ack(p)
            except link.LinkError:
                return
            st = self.tele if stream == TELE else self.rel if stream == REL else None
            if st is not None:
                st.on_ack(ack, time.monotonic())
                self._pump(st)
        elif p.msg_type == link.MSG_SYNC:
            up = self.uptime_ns()
            self.sync_replies += 1
            self._send(link.encode_sync_reply(p.seq, up // 1_000_000_000,
                                              (up % 1_000_000_000) // 1000))
        elif p.msg_type == link.MSG_COMMAND:
            self._on_command(p.seq, p.body)

    # ------------------------------------------------------------------- commands

    def _on_command(self, cmd_seq: int, body: bytes) -> None:
        if self.ignore_commands:
            self.commands_seen.append((cmd_seq, json.loads(body)))
            return
        for r in self._replies:
            if r[0] == cmd_seq:
                if r[1] < 0:  # a tombstone swallowed it: queue it again
                    r[1] = self._enqueue(link.MSG_REPLY, r[2])
                else:
                    self._send(link.encode_frame(link.MSG_REPLY, r[1], r[2]))
                return
        if cmd_seq <= self._max_cmd_seq:
            self._reply(cmd_seq, False, ("stale_command", "command number already used"))
            return
        self._max_cmd_seq = cmd_seq
        try:
            req = json.loads(body)
        except ValueError:
            self._reply(cmd_seq, False, ("bad_command", "body is not JSON"))
            return
        self.commands_seen.append((cmd_seq, req))
        ok, result = self.execute(req)
        self._reply(cmd_seq, ok, result, store=True)

    def execute(self, req: dict[str, Any]) -> tuple[bool, Any]:
        """The rig's own validation (it never trusts the edge) and execution."""
        name, args = req.get("cmd"), req.get("args", {})
        if name not in CATALOGUE or not isinstance(args, dict):
            return False, ("unknown_command", f"no command {name!r}")
        self.executed.append(req)
        if name == "status":
            return True, {"state": self.rig_state, "boot": self.boot,
                          "backlog": self.tele.pending(), **self.state}
        if name == "set_current":
            self.state["current_ma"] = float(args["current_ma"])
        elif name == "set_pressure":
            self.state["pressure_mpa"] = args["pressure_mpa"]
        elif name == "set_temperature":
            self.state["temp_c"] = args["temp_c"]
        elif name == "stop":
            self.state["current_ma"] = 0.0
        return True, {"applied": name, **args}

    def _reply(self, cmd_seq: int, ok: bool, result: Any, store: bool = False) -> None:
        if ok:
            body = {"cmd_seq": cmd_seq, "ok": True, "result": result}
        else:
            body = {"cmd_seq": cmd_seq, "ok": False, "error": result[0], "detail": result[1]}
        raw = json.dumps(body).encode()
        rel_seq = self._enqueue(link.MSG_REPLY, raw)
        if store:
            self._replies.append([cmd_seq, rel_seq, raw])
            del self._replies[:-8]

    # ------------------------------------------------------------------ accounting

    def expected_seqs(self, boot: int) -> set[int]:
        """Every sample this boot numbered, minus what the rig reported dropped."""
        gone = {s for a, b in self.dropped.get(boot, []) for s in range(a, b + 1)}
        return set(range(self.produced.get(boot, 0))) - gone

    def all_acked(self) -> bool:
        return self.tele.pending() == 0 and self.rel.pending() == 0

    def unpack_uptime(self, body: bytes) -> int:
        s, us = struct.unpack_from("<II", body)
        return int(s) * 1_000_000_000 + int(us) * 1000


async def wait_until(cond: Callable[[], bool], timeout_s: float, what: str,
                     step_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(step_s)
