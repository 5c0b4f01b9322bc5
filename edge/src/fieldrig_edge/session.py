"""One rig: its link connection, the edge side of reliable delivery, clock and commands.

Contract: docs/link.md ("Reliable delivery"). The gateway is the go-back-N receiver:
per (boot, stream) it accepts only the next sequence number, spools it, and acks
cumulatively once the spool commit has returned. A duplicate (a retransmission of
something already accepted) is dropped and re-acked; a message ahead of a missing one
is dropped too, and the rig goes back to the gap on its ack timeout. The one message
accepted ahead of the expected seq is the rig's ``reliable_dropped`` tombstone, which
stands for the reliable messages its queue overflowed (it names them).

Where a stream skips forward, the rig's own report says why: HELLO's ``oldest_seq`` /
``rel_oldest`` for a boot this gateway never saw (reported here as
``before_first_contact``), ``telemetry_dropped`` and the tombstone's
``telemetry_through`` for overflow. Command numbers are per boot (HELLO ``cmd_next``),
so a command survives a reconnect: it is retransmitted with its number on the new
connection and its REPLY matched there.

A rig whose HELLO carries no ``boot`` (the firmware before the reliable layer) never
retransmits: for it, a gap is accepted and reported (``telemetry_gap``) instead of
waited for, and each connection gets a gateway-chosen boot id so that a restarted
rig's sequence numbers can never be mistaken for duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fieldrig_edge import commands, link
from fieldrig_edge.commands import Command, CommandError
from fieldrig_edge.config import RigConfig
from fieldrig_edge.spool import (
    KIND_ACTUATOR,
    KIND_EIS,
    KIND_EVENT,
    KIND_IMPEDANCE,
    KIND_TELEMETRY,
    Row,
)
from fieldrig_edge.timesync import ClockMap
from fieldrig_edge.transport import LinkUnavailable, describe, open_link

if TYPE_CHECKING:
    from fieldrig_edge.gateway import Gateway

log = logging.getLogger("fieldrig.edge.rig")

TELE = link.STREAM_TELEMETRY
REL = link.STREAM_RELIABLE
NONE = -1                    # "nothing spooled yet in this boot" (acked as ACK_NONE)
HOLD_FOR_SYNC_S = 2.0        # hold a new boot's samples until its first SYNC answer
SYNC_BURST = 4               # SYNC exchanges at connect, 50 ms apart, for a quick offset
MAX_HELD = 20_000            # samples held waiting for the clock (the rig window is 64)
MAX_WRITE_BUFFER = 256 * 1024  # a rig that does not read its link gets no more writes
MAX_QUEUED_COMMANDS = 8
DUP_ACK_INTERVAL_S = 0.05
ACK_REPEAT_S = 0.25          # cumulative ACK heartbeat on a reliable link
# The gateway's own status poll (actuator state, docs/mqtt.md): answered by every rig
# state, and read-only on the rig.
STATUS_POLL = Command("status", {})
# The rig's ``status`` result -> the actuator state's fields (firmware/fieldrig/app.py
# Rig.status): set-points and duty as numbers (null: output off), range and press
# position as integers, the state's name.
ACTUATOR_FROM_STATUS = {"current_set_ma": "current_setpoint_ma",
                        "temp_set_c": "temp_setpoint_c",
                        "pressure_set_mpa": "pressure_setpoint_mpa",
                        "heater_duty": "heater_duty"}
ACTUATOR_INTS_FROM_STATUS = {"range": "current_range", "press_position": "press_position_steps"}
# Last resort (a rig that breaks the contract): go-back rounds without the expected seq
# before the stream is resynchronised at what the rig does send, reported as a gap.
STALL_ROUNDS = 8
STALL_S = 4.0                # ... and at least this long without progress


class WrongRig(RuntimeError):
    """The HELLO names another rig than the config puts on this port."""


@dataclass(slots=True)
class RigHealth:
    state: str = "offline"        # offline | connecting | online
    protocol: str = ""            # reliable | legacy
    fw: str = ""
    boot: int | None = None
    connects: int = 0
    connect_failures: int = 0
    frames: int = 0
    link_errors: int = 0
    samples: int = 0              # new samples accepted (spooled or about to be)
    impedance_points: int = 0     # new MSG_IMPEDANCE points accepted (telemetry stream)
    eis_chunks: int = 0           # new MSG_EIS chunks accepted (reliable stream)
    duplicates: int = 0           # retransmitted messages already spooled, dropped
    out_of_order: int = 0         # messages ahead of a missing one, dropped (rig goes back)
    gaps_reported: int = 0        # samples the rig reported dropped (telemetry_dropped)
    gaps_unexplained: int = 0     # samples the gateway found missing (telemetry_gap events)
    backlog: int = 0              # rig messages seen but not yet acked (both streams)
    hello_backlog: int = 0        # telemetry backlog the rig held at its last HELLO
    last_seen_utc_ns: int = 0
    last_error: str = ""
    time_source: str = "none"
    time_error_bound_us: int = -1
    clock_offset_ns: int = 0
    clock_drift_ppm: float = 0.0
    time_clamped: int = 0
    commands_sent: int = 0
    commands_ok: int = 0
    commands_failed: int = 0
    command_timeouts: int = 0
    command_retransmits: int = 0
    late_replies: int = 0
    writes_skipped: int = 0
    reliable_dropped: int = 0     # reliable messages the rig reported lost (tombstones)
    hello_repeats: int = 0        # HELLOs repeated by the rig on a live connection
    resyncs: int = 0              # last-resort resynchronisations (a rig bug: see log)
    actuator_polls: int = 0       # status polls answered and published as actuator state
    actuator_poll_failures: int = 0  # status polls refused, timed out or not answerable

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class ReplyTo:
    """Where a command's response goes: the request's v5 response topic + correlation.
    No topic: the gateway's own request (the status poll), answered to nobody."""

    topic: str | None
    correlation: bytes | None
    cmd: str

    @property
    def internal(self) -> bool:
        return self.topic is None


@dataclass(slots=True)
class Pending:
    reply_to: ReplyTo
    future: asyncio.Future[dict[str, Any]]
    boot: int


# What the telemetry stream carries: held, in order, until the clock is mapped.
Periodic = link.Sample | link.ImpedancePoint
# Impedance points of one ADC block share its end time; each is stored at that time plus
# (seq mod this) ns, so every point has its own key (docs/edge.md, "Impedance").
IMPEDANCE_SEQ_SPACING = 1000


@dataclass(slots=True)
class Link:
    """State of one HELLO'd connection (one boot of the rig)."""

    boot: int
    legacy: bool
    fw: str
    clock: ClockMap
    durable: dict[int, int]
    expected: dict[int, int]
    durable_last_time_ns: int = 0
    max_seen: dict[int, int] = field(default_factory=lambda: {TELE: NONE, REL: NONE})
    held: list[tuple[Periodic, int]] = field(default_factory=list)
    hold_timer: asyncio.TimerHandle | None = None
    rig_state: int | None = None
    # HELLO has cmd_next: command numbers are per boot (else per connection, from 0).
    cmd_per_boot: bool = False
    rel_reported: bool = False    # HELLO names the reliable range (rel_oldest, rel_next)
    # Stall detection per stream (see _stalled): lowest seq seen ahead of the expected
    # one since the last progress, how often the rig went back, since when.
    stall_min: dict[int, int] = field(default_factory=dict)
    stall_rounds: dict[int, int] = field(default_factory=dict)
    stall_last: dict[int, int] = field(default_factory=dict)
    stall_since: dict[int, float] = field(default_factory=dict)
    sync_token: int = 0
    sync_sent: dict[int, int] = field(default_factory=dict)
    last_dup_ack: dict[int, float] = field(default_factory=lambda: {TELE: 0.0, REL: 0.0})


def _num(x: float) -> float | None:
    # A failed sensor reads NaN; JSON has no NaN, and a NaN set-point must never be
    # mistaken for a value: it travels as null (docs/mqtt.md).
    return x if math.isfinite(x) else None


class RigSession:
    def __init__(self, cfg: RigConfig, gw: Gateway) -> None:
        self.cfg = cfg
        self.gw = gw
        self.health = RigHealth()
        self.link: Link | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._cmd_lock = asyncio.Lock()
        self._cmd_waiting = 0
        self._sync_task: asyncio.Task[None] | None = None
        self._errors_base = 0
        # Commands live per boot of the rig, across connections (docs/link.md).
        self._cmd_boot: int | None = None
        self._next_cmd_seq = 0
        self.pending: dict[int, Pending] = {}
        self._answered: set[int] = set()
        self._link_changed = asyncio.Event()

    # ------------------------------------------------------------------ connection

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff; forever (cancel to stop)."""
        poller = (asyncio.create_task(self._poll_actuators(), name=f"poll-{self.cfg.rig}")
                  if self.gw.cfg.actuator_poll_s > 0 else None)
        try:
            await self._serve_forever()
        finally:
            if poller is not None:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)

    async def _serve_forever(self) -> None:
        backoff = 0.05
        while True:
            self._set_state("connecting")
            try:
                reader, writer = await open_link(self.cfg)
            except LinkUnavailable as exc:
                self.health.connect_failures += 1
                self._note_error(f"cannot open {describe(self.cfg)}: {exc}", quiet=True)
                await asyncio.sleep(_jitter(backoff))
                backoff = min(backoff * 2, self.gw.cfg.reconnect_max_s)
                continue
            self.health.connects += 1
            hello_seen = False
            try:
                hello_seen = await self._serve(reader, writer)
            except WrongRig as exc:
                self._note_error(str(exc))
                backoff = self.gw.cfg.reconnect_max_s  # a wiring error does not fix itself fast
            except (OSError, EOFError, link.LinkError) as exc:
                self._note_error(f"link lost: {exc!r}")
            finally:
                self._end_link("link closed")
                self._writer = None
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
                self._set_state("offline")
            if hello_seen:
                backoff = 0.05
            await asyncio.sleep(_jitter(backoff))
            if not hello_seen:
                backoff = min(backoff * 2, self.gw.cfg.reconnect_max_s)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        self._writer = writer
        decoder = link.FrameDecoder()
        loop = asyncio.get_running_loop()
        hello_deadline = loop.time() + self.gw.cfg.hello_timeout_s
        hello_seen = False
        log.info("rig link open", extra={"rig": self.cfg.rig, "port": describe(self.cfg)})
        try:
            while True:
                if self.link is None:
                    remaining = hello_deadline - loop.time()
                    if remaining <= 0:
                        # Maybe the rig sent its HELLO before we opened the port (serial);
                        # reopening is how a rig learns of a new connection.
                        raise EOFError(f"no HELLO within {self.gw.cfg.hello_timeout_s} s")
                    try:
                        data = await asyncio.wait_for(reader.read(65536), remaining)
                    except TimeoutError:
                        continue
                else:
                    data = await reader.read(65536)
                t_recv = time.time_ns()
                if not data:
                    return hello_seen
                self.health.last_seen_utc_ns = t_recv
                for p in decoder.feed(data):
                    self.health.frames += 1
                    if p.msg_type == link.MSG_HELLO:
                        await self._on_hello(p)
                        hello_seen = True
                    elif self.link is None:
                        pass  # before HELLO nothing can be attributed to a boot
                    else:
                        self._on_packet(p, t_recv)
                self.health.link_errors = self._errors_base + decoder.errors
        finally:
            self._errors_base += decoder.errors
            self.health.link_errors = self._errors_base

    def abort(self, why: str) -> None:
        """Drop the connection (the rig retransmits what was not acked)."""
        self._note_error(why)
        if self._writer is not None:
            self._writer.close()

    def _write(self, frame: bytes) -> bool:
        w = self._writer
        if w is None or w.is_closing():
            return False
        if w.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.health.writes_skipped += 1
            return False
        w.write(frame)
        return True

    # ------------------------------------------------------------------------ HELLO

    async def _on_hello(self, p: link.Packet) -> None:
        info = link.parse_json_body(p)
        rig = info.get("rig")
        if rig != self.cfg.rig:
            raise WrongRig(f"port {self.cfg.port} is configured for rig {self.cfg.rig!r} but "
                           f"the rig there says it is {rig!r}: not recording its data")
        boot_v = info.get("boot")
        legacy = not isinstance(boot_v, int) or isinstance(boot_v, bool)
        oldest = nxt = 0
        rel_range: tuple[int, int] | None = None
        cmd_next: int | None = None
        if legacy:
            # No boot id, no retransmission: a per-connection id keeps accounting safe.
            boot = secrets.randbits(32)
        else:
            assert isinstance(boot_v, int)
            boot = boot_v
            o, n = info.get("oldest_seq"), info.get("next_seq")
            if not (_u32(o) and _u32(n) and o <= n and _u32(boot)):  # type: ignore[operator]
                raise link.LinkError(f"malformed HELLO: {info!r}")
            assert isinstance(o, int) and isinstance(n, int)
            oldest, nxt = o, n
            ro, rn, cn = info.get("rel_oldest"), info.get("rel_next"), info.get("cmd_next")
            if ro is not None or rn is not None:
                if not (_u32(ro) and _u32(rn) and ro <= rn):  # type: ignore[operator]
                    raise link.LinkError(f"malformed HELLO: {info!r}")
                assert isinstance(ro, int) and isinstance(rn, int)
                rel_range = (ro, rn)
            if cn is not None:
                if not _u32(cn):
                    raise link.LinkError(f"malformed HELLO: {info!r}")
                assert isinstance(cn, int)
                cmd_next = cn
        lk = self.link
        if lk is not None and not legacy and lk.boot == boot:
            # The rig repeats HELLO while it hears nothing from us (our ACKs lost): the
            # same boot on the same connection. Answer it again; nothing is reset.
            self.health.hello_repeats += 1
            self._check_ranges(lk, oldest, nxt, rel_range, known=True)
            for s in (TELE, REL):
                self._send_ack(s)
            return
        if lk is not None:
            self._end_link("new HELLO on the same connection (rig reset)")
        # Rows of this boot may still sit in the commit batch (a quick reconnect):
        # commit them first so that the dedup state read below is complete.
        await self.gw.flush_commits()
        marks, clock_state = await self.gw.spool.call(self.gw.spool.spool.load_boot,
                                                      self.cfg.rig, boot)
        known = bool(marks) or clock_state is not None
        durable = {TELE: marks.get(TELE, NONE), REL: marks.get(REL, NONE)}
        clock = ClockMap.restore(clock_state)
        lk = Link(boot=boot, legacy=legacy, fw=str(info.get("fw", "")), clock=clock,
                  durable=dict(durable), expected={s: q + 1 for s, q in durable.items()},
                  durable_last_time_ns=clock.last_time_ns, cmd_per_boot=cmd_next is not None,
                  rel_reported=rel_range is not None)
        self.link = lk
        if not legacy:
            self._check_ranges(lk, oldest, nxt, rel_range, known)
        self._commands_on_hello(lk, cmd_next)
        if not known:
            self.gw.gateway_event(self.cfg, boot, "rig_boot", {
                "fw": lk.fw, "protocol": "legacy" if legacy else "reliable",
                "oldest_seq": oldest, "next_seq": nxt})
        self.health.boot = boot
        self.health.fw = lk.fw
        self.health.protocol = "legacy" if legacy else "reliable"
        self.health.hello_backlog = nxt - oldest
        log.info("rig hello", extra={"rig": self.cfg.rig, "boot": boot, "fw": lk.fw,
                                     "protocol": self.health.protocol, "known_boot": known,
                                     "oldest_seq": oldest, "next_seq": nxt,
                                     "rel_range": rel_range, "cmd_next": cmd_next})
        for s in (TELE, REL):
            self._send_ack(s)
        if legacy:
            if lk.clock.source == "restored":
                lk.clock.source = "receive"
        else:
            self._sync_task = asyncio.create_task(self._sync_loop(lk))
            if not lk.clock.ready:
                lk.hold_timer = asyncio.get_running_loop().call_later(
                    HOLD_FOR_SYNC_S, self._hold_expired, lk)
        self._set_state("online")
        self._link_changed.set()

    def _check_ranges(self, lk: Link, oldest: int, nxt: int,
                      rel_range: tuple[int, int] | None, known: bool) -> None:
        """Apply what HELLO says the rig still holds (docs/link.md, "Sessions and boots")."""
        streams: list[tuple[int, int, int]] = [(TELE, oldest, nxt)]
        if rel_range is not None:
            streams.append((REL, *rel_range))
        for s, o, n in streams:
            if n < lk.expected[s]:
                # The rig claims fewer messages than this boot already spooled: a boot id
                # collision or a rig bug. Its new messages would look like duplicates.
                self.gw.gateway_event(self.cfg, lk.boot, "boot_conflict", {
                    "stream": s, "next_seq": n, "spooled_through": lk.expected[s] - 1})
                log.error("rig boot conflict", extra={"rig": self.cfg.rig, "boot": lk.boot,
                                                      "stream": s, "next_seq": n})
            if o <= lk.expected[s]:
                continue
            # The rig no longer holds what we wait for; waiting would stall the stream.
            if not known:
                # Taken by another gateway (or spool), or dropped by the rig before
                # we came (its telemetry_dropped events say which).
                self._gap(lk.expected[s], o - 1, "before_first_contact", stream=s)
            elif s == TELE and lk.rel_reported:
                # This boot's rig keeps everything until acked: only its overflow drops,
                # and it reports exactly that (telemetry_dropped / tombstone): no gap
                # report of ours, it would count the same samples twice.
                log.info("rig telemetry backlog overflowed (the rig reports the range)",
                         extra={"rig": self.cfg.rig, "boot": lk.boot,
                                "first_seq": lk.expected[s], "last_seq": o - 1})
            else:
                # An older firmware that freed unacked messages, or a rig bug.
                self._gap(lk.expected[s], o - 1, "not_in_rig_backlog", stream=s)
            lk.expected[s] = o
            self.gw.mark(self.cfg.rig, lk.boot, s, o - 1)

    def _commands_on_hello(self, lk: Link, cmd_next: int | None) -> None:
        """Command numbering for this link: per boot when the rig says where it stands
        (``cmd_next``), so commands in flight survive the reconnect; else per connection."""
        if not lk.cmd_per_boot or self._cmd_boot != lk.boot:
            self._fail_pending("rig_reset" if self._cmd_boot is not None else
                               "rig_disconnected",
                               "the rig restarted (new boot) before it replied; it may or "
                               "may not have run: check the rig status")
            self._answered.clear()
            self._next_cmd_seq = 0
        self._cmd_boot = lk.boot if lk.cmd_per_boot else None
        if cmd_next is not None and cmd_next > self._next_cmd_seq:
            self._next_cmd_seq = cmd_next

    def _fail_pending(self, code: str, detail: str) -> None:
        for seq, pend in self.pending.items():
            if not pend.future.done():
                pend.future.set_exception(CommandError(code, f"command {seq}: {detail}"))
        self.pending.clear()

    def _end_link(self, why: str) -> None:
        lk = self.link
        if lk is None:
            return
        self.link = None
        self._link_changed.set()
        if lk.hold_timer is not None:
            lk.hold_timer.cancel()
        if self._sync_task is not None:
            self._sync_task.cancel()
            self._sync_task = None
        if not lk.cmd_per_boot:
            # Numbers restart with the next connection: what is in flight cannot be
            # matched there.
            self._fail_pending("rig_disconnected", f"link lost before the rig replied "
                               f"({why}); it may or may not have run: check the rig status")
        # Held samples were never acked: the rig still has them and resends them.
        lk.held.clear()

    # ---------------------------------------------------------------------- packets

    def _on_packet(self, p: link.Packet, t_recv: int) -> None:
        lk = self.link
        assert lk is not None
        if p.msg_type == link.MSG_SYNC_REPLY:
            self._on_sync_reply(lk, p, t_recv)
            return
        stream = link.stream_of(p.msg_type)
        if stream is None:
            return  # edge -> rig types echoed back or unknown session types: ignore
        lk.max_seen[stream] = max(lk.max_seen[stream], p.seq)
        exp = lk.expected[stream]
        if p.seq < exp:
            self.health.duplicates += 1
            self._dup_ack(lk, stream)
            return
        if p.seq > exp and stream == REL and _tombstone_covers(p, exp):
            # The rig's queue overflowed: this tombstone stands for exp..seq-1 (and
            # itself). Accepted in order of what it replaces; its body is the report.
            self.health.reliable_dropped += p.seq - exp
        elif p.seq > exp:
            if not lk.legacy:
                self.health.out_of_order += 1
                self._dup_ack(lk, stream)
                if not self._stalled(lk, stream, p.seq):
                    return
                exp = lk.stall_min[stream]
                if p.seq != exp:
                    return
                # The rig went back again and again and never reached the message we
                # wait for: it no longer has it, and no report of the rig said so. The
                # contract rules this out (docs/link.md): a rig bug, or a firmware from
                # before the reliable ranges in HELLO. Resynchronise at the oldest it
                # does have, reported, rather than stall the rig forever.
                self.health.resyncs += 1
                log.error("rig stream resynchronised without a rig report",
                          extra={"rig": self.cfg.rig, "boot": lk.boot, "stream": stream,
                                 "first_seq": lk.expected[stream], "last_seq": exp - 1})
                self._gap(lk.expected[stream], exp - 1, "rig_no_longer_has", stream=stream)
            else:
                self._gap(exp, p.seq - 1, "lost_on_link", stream=stream)
        lk.stall_rounds.pop(stream, None)
        lk.stall_min.pop(stream, None)
        lk.stall_last.pop(stream, None)
        lk.stall_since.pop(stream, None)
        lk.expected[stream] = p.seq + 1
        if stream == TELE:
            self._on_telemetry(lk, p, t_recv)
        else:
            self._on_reliable(lk, p, t_recv)
        self._update_backlog(lk)

    def _stalled(self, lk: Link, stream: int, seq: int) -> bool:
        """True once the stream has made no progress for STALL_S while the rig went back
        (go-back-N) at least STALL_ROUNDS times without ever sending the expected seq.

        A message merely corrupted on the line is resent on every round, so this needs
        the same frame lost STALL_ROUNDS times in a row (1e-10 at 5 % loss)."""
        now = time.monotonic()
        last = lk.stall_last.get(stream)
        if last is None:
            lk.stall_since[stream] = now
            lk.stall_rounds[stream] = 0
            lk.stall_min[stream] = seq
        elif seq < last:
            lk.stall_rounds[stream] += 1  # the rig went back to its oldest
        lk.stall_min[stream] = min(lk.stall_min[stream], seq)
        lk.stall_last[stream] = seq
        return (lk.stall_rounds[stream] >= STALL_ROUNDS
                and now - lk.stall_since[stream] >= STALL_S)

    def _on_telemetry(self, lk: Link, p: link.Packet, t_recv: int) -> None:
        s: Periodic
        try:
            if p.msg_type == link.MSG_SAMPLE:
                s = link.parse_sample(p)
                lk.rig_state = s.rig_state
            elif p.msg_type == link.MSG_IMPEDANCE:
                s = link.parse_impedance(p)
            else:
                self._unknown(lk, p, TELE)
                return
        except link.LinkError as exc:
            self._unknown(lk, p, TELE, str(exc))
            return
        if not lk.clock.ready:
            if lk.legacy:
                lk.clock.fallback_from_receive(_uptime_ns(s), t_recv)
                self._update_time_health(lk)
            elif len(lk.held) < MAX_HELD:
                lk.held.append((s, t_recv))
                return
            else:
                self._hold_expired(lk)
        if lk.held:
            lk.held.append((s, t_recv))
            return
        self._spool_sample(lk, s)

    def _spool_sample(self, lk: Link, s: Periodic) -> None:
        if isinstance(s, link.ImpedancePoint):
            self._spool_impedance(lk, s)
            return
        clamped = lk.clock.clamped
        t = lk.clock.to_utc(_uptime_ns(s))
        self.health.time_clamped += lk.clock.clamped - clamped
        body = json.dumps({
            # uptime_ns: the rig's own clock. time_ns is its mapping, kept strictly
            # increasing (clamped where the rig's clock runs ahead of ours), so durations
            # and charge are measured on the uptime downstream (docs/mqtt.md).
            "seq": s.seq, "time_ns": t, "uptime_ns": _uptime_ns(s),
            "cell_voltage_v": _num(s.cell_voltage_v),
            "cell_current_ma": _num(s.cell_current_ma),
            "cell_temp_c": _num(s.cell_temp_c),
            "stack_pressure_mpa": _num(s.stack_pressure_mpa),
            "rig_state": s.rig_state}, separators=(",", ":"))
        self.gw.add_row(Row(KIND_TELEMETRY, self.cfg.rig, body, lk.boot, TELE, s.seq,
                            self.cfg.cell, self.cfg.run))
        self.gw.mark(self.cfg.rig, lk.boot, TELE, s.seq)
        self.health.samples += 1

    def _spool_impedance(self, lk: Link, z: link.ImpedancePoint) -> None:
        # Not through to_utc: the three points of a tracking block have the same uptime,
        # and clamping them would shift the samples' timeline (and count as clock trouble).
        t = lk.clock.peek_utc(_uptime_ns(z)) + z.seq % IMPEDANCE_SEQ_SPACING
        body = json.dumps({
            "seq": z.seq, "time_ns": t, "f_hz": _num(z.f_hz),
            "z_re_ohm": _num(z.z_re_ohm), "z_im_ohm": _num(z.z_im_ohm),
            "rel_err": _num(z.rel_err), "quality": z.quality, "source": z.source},
            separators=(",", ":"))
        self.gw.add_row(Row(KIND_IMPEDANCE, self.cfg.rig, body, lk.boot, TELE, z.seq,
                            self.cfg.cell, self.cfg.run))
        self.gw.mark(self.cfg.rig, lk.boot, TELE, z.seq)
        self.health.impedance_points += 1

    def _on_eis_chunk(self, lk: Link, p: link.Packet, t_recv: int) -> None:
        try:
            c = link.parse_eis_chunk(p)
        except link.LinkError as exc:
            self._unknown(lk, p, REL, str(exc))
            return
        payload = self.gw.envelope(self.cfg, lk.boot)
        payload.update({
            "seq": p.seq, "time_ns": t_recv, "source": "rig", "sweep_seq": c.sweep_seq,
            "eis_seq": c.eis_seq, "chunk": c.chunk, "chunks": c.chunks,
            "points": [{"f_hz": x.f_hz, "z_re_ohm": x.z_re_ohm, "z_im_ohm": x.z_im_ohm,
                        "rel_err": x.rel_err, "quality": x.quality} for x in c.points]})
        self.gw.add_row(Row(KIND_EIS, self.cfg.rig, _dumps(payload), lk.boot, REL, p.seq,
                            self.cfg.cell, self.cfg.run,
                            topic=self.gw.rig_topic(self.cfg.rig, "eis")))
        self.health.eis_chunks += 1

    def _release_held(self, lk: Link) -> None:
        held, lk.held = lk.held, []
        for s, _t in held:
            self._spool_sample(lk, s)

    def _hold_expired(self, lk: Link) -> None:
        lk.hold_timer = None
        if self.link is not lk or not lk.held:
            return
        if not lk.clock.ready:
            s0, t0 = lk.held[0]
            log.warning("rig did not answer SYNC: timestamps from arrival time",
                        extra={"rig": self.cfg.rig, "boot": lk.boot})
            lk.clock.fallback_from_receive(_uptime_ns(s0), t0)
            self._update_time_health(lk)
        self._release_held(lk)

    def _on_reliable(self, lk: Link, p: link.Packet, t_recv: int) -> None:
        if p.msg_type == link.MSG_EVENT:
            try:
                ev = link.parse_json_body(p)
            except link.LinkError as exc:
                self._unknown(lk, p, REL, str(exc))
                return
            name = ev.pop("event", None)
            if not isinstance(name, str):
                self._unknown(lk, p, REL, "EVENT without an 'event' name")
                return
            if name == "telemetry_dropped":
                self._rig_dropped(lk, ev)
            elif name == "reliable_dropped":
                self._rig_tombstone(lk, ev)
            kind = KIND_EIS if name == "eis_spectrum" else KIND_EVENT
            payload = self.gw.envelope(self.cfg, lk.boot)
            payload.update({"seq": p.seq, "time_ns": t_recv, "source": "rig"})
            if kind == KIND_EIS:
                payload["spectrum"] = ev
                topic_leaf = "eis"
            else:
                payload.update({"event": name, "data": ev})
                topic_leaf = "events"
            self.gw.add_row(Row(kind, self.cfg.rig, _dumps(payload), lk.boot, REL, p.seq,
                                self.cfg.cell, self.cfg.run,
                                topic=self.gw.rig_topic(self.cfg.rig, topic_leaf)))
        elif p.msg_type == link.MSG_REPLY:
            self._on_reply(lk, p)
        elif p.msg_type == link.MSG_EIS:
            self._on_eis_chunk(lk, p, t_recv)
        else:
            self._unknown(lk, p, REL)
            return
        self.gw.mark(self.cfg.rig, lk.boot, REL, p.seq)

    def _rig_dropped(self, lk: Link, ev: dict[str, Any]) -> None:
        first, last, count = ev.get("first_seq"), ev.get("last_seq"), ev.get("count")
        if not (isinstance(first, int) and isinstance(last, int) and first <= last):
            log.error("malformed telemetry_dropped event", extra={"rig": self.cfg.rig,
                                                                  "event": ev})
            return
        self.health.gaps_reported += int(count) if isinstance(count, int) else last - first + 1
        if lk.expected[TELE] <= last:
            # The rig no longer has these: stop waiting for them (they are reported).
            lk.expected[TELE] = last + 1
            self.gw.mark(self.cfg.rig, lk.boot, TELE, last)

    def _rig_tombstone(self, lk: Link, ev: dict[str, Any]) -> None:
        """A reliable_dropped tombstone: the messages it replaced are counted on
        acceptance (_on_packet); ``telemetry_through`` stands for the telemetry_dropped
        reports it swallowed: every sample up to it that we lack is gone (the rig keeps
        all it has not dropped), so the telemetry stream moves on, reported here."""
        t = ev.get("telemetry_through")
        if not isinstance(t, int) or isinstance(t, bool) or lk.expected[TELE] > t:
            return
        first = lk.expected[TELE]
        self.health.gaps_reported += t - first + 1
        # The rig's own ranges were swallowed: say which samples they covered for us.
        self.gw.gateway_event(self.cfg, lk.boot, "telemetry_gap", {
            "first_seq": first, "last_seq": t, "count": t - first + 1,
            "reason": "rig_dropped_report_in_tombstone"})
        lk.expected[TELE] = t + 1
        self.gw.mark(self.cfg.rig, lk.boot, TELE, t)

    def _on_reply(self, lk: Link, p: link.Packet) -> None:
        try:
            rep = link.parse_json_body(p)
        except link.LinkError as exc:
            self._unknown(lk, p, REL, str(exc))
            return
        cmd_seq_v = rep.get("cmd_seq")
        cmd_seq = cmd_seq_v if isinstance(cmd_seq_v, int) else -1
        pend = self.pending.pop(cmd_seq, None) if self._cmd_boot == lk.boot or \
            not lk.cmd_per_boot else None
        if pend is None:
            if cmd_seq in self._answered:
                return  # the rig re-sent a stored reply we already have
            # A reply nobody waits for any more (timed out, or from before a reconnect):
            # reported, never dropped silently.
            self.health.late_replies += 1
            self.gw.gateway_event(self.cfg, lk.boot, "late_reply", {"reply": rep})
            return
        self._answered.add(cmd_seq)
        ok = rep.get("ok") is True
        body: dict[str, Any] = {"schema": 1, "site": self.gw.cfg.site, "rig": self.cfg.rig,
                                "gateway": self.gw.cfg.gateway_id, "cmd": pend.reply_to.cmd,
                                "ok": ok, "source": "rig", "boot": lk.boot, "cmd_seq": cmd_seq}
        if ok:
            body["result"] = rep.get("result", {})
        else:
            body["error"] = str(rep.get("error", "rig_error"))
            body["detail"] = str(rep.get("detail", ""))
        if not pend.reply_to.internal:
            self.gw.add_row(self.gw.response_row(pend.reply_to, self.cfg.rig, body,
                                                 boot=lk.boot, seq=p.seq))
            if ok:
                self.health.commands_ok += 1
            else:
                self.health.commands_failed += 1
        if not pend.future.done():
            pend.future.set_result(body)

    def _unknown(self, lk: Link, p: link.Packet, stream: int, why: str = "") -> None:
        # It used a sequence number: accept it (so the stream moves on) and report it.
        self.gw.gateway_event(self.cfg, lk.boot, "unknown_message", {
            "type": p.msg_type, "seq": p.seq, "stream": stream, "why": why,
            "body_hex": p.body.hex()})
        self.gw.mark(self.cfg.rig, lk.boot, stream, p.seq)

    def _gap(self, first: int, last: int, reason: str, stream: int = TELE) -> None:
        lk = self.link
        assert lk is not None
        n = last - first + 1
        self.health.gaps_unexplained += n
        self.gw.gateway_event(self.cfg, lk.boot, "telemetry_gap" if stream == TELE
                              else "reliable_gap", {
                                  "first_seq": first, "last_seq": last, "count": n,
                                  "reason": reason})
        log.warning("sequence gap", extra={"rig": self.cfg.rig, "boot": lk.boot,
                                           "stream": stream, "first_seq": first,
                                           "last_seq": last, "reason": reason})

    # ------------------------------------------------------------------------ acks

    def on_commit(self, submitted: dict[tuple[str, int, int], int],
                  durable: dict[tuple[str, int, int], int]) -> None:
        """After a spool commit: ack what became durable; rewind what was refused."""
        lk = self.link
        if lk is None:
            return
        lk.durable_last_time_ns = lk.clock.last_time_ns
        for s in (TELE, REL):
            key = (self.cfg.rig, lk.boot, s)
            if key not in durable:
                continue
            d = durable[key]
            if d > lk.durable[s]:
                lk.durable[s] = d
                self._send_ack(s)
            if submitted.get(key, NONE) > d:
                # Refused (spool full, policy refuse_new): forget everything after the
                # durable point; the rig keeps it and sends it again.
                self.gw.purge(self.cfg.rig, lk.boot, s)
                lk.expected[s] = d + 1
                lk.held.clear()
        self._update_backlog(lk)

    def commit_snapshot(self) -> tuple[str, int, dict[str, Any]] | None:
        # Every commit registers the boot (dedup state) and its clock mapping, so a
        # restarted gateway continues the same timeline for the same boot.
        lk = self.link
        if lk is None:
            return None
        return self.cfg.rig, lk.boot, lk.clock.state()

    def _send_ack(self, stream: int) -> None:
        lk = self.link
        if lk is None:
            return
        d = lk.durable[stream]
        self._write(link.encode_ack(stream, link.ACK_NONE if d == NONE else d))

    def _dup_ack(self, lk: Link, stream: int) -> None:
        now = time.monotonic()
        if now - lk.last_dup_ack[stream] >= DUP_ACK_INTERVAL_S:
            lk.last_dup_ack[stream] = now
            self._send_ack(stream)

    def _update_backlog(self, lk: Link) -> None:
        self.health.backlog = sum(max(0, lk.max_seen[s] - lk.durable[s]) for s in (TELE, REL))

    # ----------------------------------------------------------------------- clock

    async def _sync_loop(self, lk: Link) -> None:
        """SYNC exchanges and ACK repeats for one reliable connection.

        The rig waits ``ack_timeout`` (500 ms) after HELLO for our ACKs; if it gets none it
        serves the connection without retransmission (firmware: a peer that does not
        ack). One lost ACK frame must not cause that, so the HELLO answer is repeated
        every 100 ms for the first 400 ms; afterwards a cumulative ACK is repeated every
        ACK_REPEAT_S, which also repairs a lost ACK before the rig's timer goes back N.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_sync = start
        syncs = 0
        next_ack = start + 0.1
        while True:
            now = loop.time()
            if now >= next_sync:
                self._send_sync(lk)
                syncs += 1
                next_sync += 0.05 if syncs < SYNC_BURST else self.gw.cfg.sync_interval_s
            if now >= next_ack:
                for s in (TELE, REL):
                    self._send_ack(s)
                next_ack += 0.1 if now - start < 0.4 else ACK_REPEAT_S
            await asyncio.sleep(max(0.0, min(next_sync, next_ack) - loop.time()))

    def _send_sync(self, lk: Link) -> None:
        lk.sync_token = (lk.sync_token + 1) & 0xFFFFFFFF
        if len(lk.sync_sent) > 64:
            lk.sync_sent.clear()  # unanswered syncs: the rig lost them
        lk.sync_sent[lk.sync_token] = time.time_ns()
        self._write(link.encode_sync(lk.sync_token))

    def _on_sync_reply(self, lk: Link, p: link.Packet, t_recv: int) -> None:
        try:
            token, uptime = link.parse_sync_reply(p)
        except link.LinkError:
            return
        t_send = lk.sync_sent.pop(token, None)
        if t_send is None:
            return
        lk.clock.add_exchange(t_send, uptime, t_recv)
        self._update_time_health(lk, uptime)
        if lk.held:
            if lk.hold_timer is not None:
                lk.hold_timer.cancel()
            self._release_held(lk)

    def _update_time_health(self, lk: Link, uptime: int | None = None) -> None:
        c = lk.clock
        self.health.time_source = c.source
        if c.applied is not None:
            u = uptime if uptime is not None else c.applied.u0
            self.health.clock_offset_ns = c.applied.theta(u)
            # theta = UTC - uptime falls when the rig's crystal runs fast: report the
            # crystal's rate error (positive = fast).
            self.health.clock_drift_ppm = round(-c.applied.drift * 1e6, 3)
            b = c.error_bound_ns(u)
            self.health.time_error_bound_us = -1 if b < 0 else b // 1000

    # -------------------------------------------------------------------- commands

    async def command(self, cmd: Command, reply_to: ReplyTo) -> dict[str, Any]:
        """Send a validated command; return the rig's reply body (also spooled for the
        requester). Raises CommandError for everything the gateway refuses or gives up on."""
        commands.check_ranges(cmd, self.cfg.limits)
        if self._cmd_waiting >= MAX_QUEUED_COMMANDS:
            raise CommandError("busy", f"{MAX_QUEUED_COMMANDS} commands already queued "
                                       f"for rig {self.cfg.rig}")
        self._cmd_waiting += 1
        try:
            async with self._cmd_lock:
                return await self._command(cmd, reply_to)
        finally:
            self._cmd_waiting -= 1

    async def _command(self, cmd: Command, reply_to: ReplyTo) -> dict[str, Any]:
        lk = self.link
        if lk is None:
            raise CommandError("rig_offline", f"rig {self.cfg.rig} is not connected")
        if lk.legacy:
            raise CommandError("unsupported", f"rig {self.cfg.rig} firmware {lk.fw!r} has no "
                                              "command support (HELLO without boot)")
        commands.check_state(cmd, lk.rig_state)
        seq = self._next_cmd_seq
        try:
            frame = link.encode_json(link.MSG_COMMAND, seq, cmd.link_body())
        except link.LinkError as exc:
            raise CommandError("too_large", f"command does not fit a link frame: {exc}") from None
        self._next_cmd_seq += 1
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.pending[seq] = Pending(reply_to, fut, lk.boot)
        deadline = loop.time() + self.gw.cfg.command_timeout_s
        first = True
        # The gateway's own polls are not the operators' commands: kept out of their
        # counters and of the INFO log (one every few seconds per rig).
        internal = reply_to.internal
        log.log(logging.DEBUG if internal else logging.INFO, "command to rig",
                extra={"rig": self.cfg.rig, "cmd": cmd.cmd, "cmd_seq": seq,
                       "cmd_args": cmd.args})
        while not fut.done():
            cur = self.link
            if cur is not None and cur.boot == lk.boot:
                # Same boot (maybe a new connection): the same number, so the rig runs
                # it at most once and re-sends its stored REPLY (docs/link.md).
                self._write(frame)
                if first:
                    if not internal:
                        self.health.commands_sent += 1
                    first = False
                elif not internal:
                    self.health.command_retransmits += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.pending.pop(seq, None)
                if internal:
                    # Its reply, should it still come, is wanted by nobody: no late_reply.
                    self._answered.add(seq)
                else:
                    self.health.command_timeouts += 1
                raise CommandError("timeout", f"rig {self.cfg.rig} did not reply to "
                                   f"{cmd.cmd} within {self.gw.cfg.command_timeout_s} s; "
                                   "it may or may not have run")
            self._link_changed.clear()
            wait = min(self.gw.cfg.command_retransmit_s, remaining)
            link_changed: asyncio.Future[Any] = asyncio.ensure_future(
                self._link_changed.wait())
            waiters: set[asyncio.Future[Any]] = {fut, link_changed}
            try:
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                link_changed.cancel()
        return await fut

    # -------------------------------------------------------------- actuator state

    async def _poll_actuators(self) -> None:
        """Every ``actuator_poll_s``: the rig's ``status`` through the command path (one
        command at a time with the operators', numbered per boot), published as its
        actuator state. The SAMPLE carries no set-points (docs/link.md), and the status
        reply is where the firmware reports them."""
        period = self.gw.cfg.actuator_poll_s
        while True:
            await asyncio.sleep(period)
            lk = self.link
            if lk is None or lk.legacy or not lk.clock.ready:
                continue  # nothing to ask, or no clock yet to give the state its time
            try:
                reply = await self.command(STATUS_POLL, ReplyTo(None, None, STATUS_POLL.cmd))
            except CommandError as exc:
                self.health.actuator_poll_failures += 1
                log.debug("status poll failed", extra={"rig": self.cfg.rig,
                                                       "error": exc.code})
                continue
            if self._spool_actuators(reply):
                self.health.actuator_polls += 1
            else:
                self.health.actuator_poll_failures += 1

    def _spool_actuators(self, reply: dict[str, Any]) -> bool:
        """One actuator-state message from a status reply (docs/mqtt.md, "Actuator
        state"); False when the reply holds none."""
        result = reply.get("result")
        lk = self.link
        if reply.get("ok") is not True or not isinstance(result, dict) or lk is None \
                or not lk.clock.ready \
                or lk.boot != reply.get("boot"):
            return False
        state: dict[str, Any] = {}
        for key, name in ACTUATOR_FROM_STATUS.items():
            v = result.get(key)
            if v is None or (isinstance(v, int | float) and not isinstance(v, bool)):
                state[name] = None if v is None else _num(float(v))
        for key, name in ACTUATOR_INTS_FROM_STATUS.items():
            v = result.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                state[name] = v
        if not any(v is not None for v in state.values()):
            return False
        if isinstance(result.get("state"), str) and result["state"]:
            state["state"] = result["state"]
        # The rig's uptime at the reply, on the samples' timeline (its mapping, like an
        # impedance point's: not the samples' strictly-increasing clamp). The status
        # gives whole seconds: the state is placed up to 1 s early, at polls seconds apart.
        up = result.get("uptime_s")
        if isinstance(up, int) and not isinstance(up, bool) and up >= 0:
            t = lk.clock.peek_utc(up * 1_000_000_000)
        else:
            t = time.time_ns()
        payload = self.gw.envelope(self.cfg, lk.boot)
        payload.update({"time_ns": t, "uptime_s": up if isinstance(up, int) else None,
                        **state})
        self.gw.add_row(Row(KIND_ACTUATOR, self.cfg.rig, _dumps(payload), lk.boot, None,
                            None, self.cfg.cell, self.cfg.run,
                            topic=self.gw.rig_topic(self.cfg.rig, "actuators")))
        return True

    # ---------------------------------------------------------------------- status

    def _set_state(self, state: str) -> None:
        if state != self.health.state:
            self.health.state = state
            self.gw.rig_status_changed(self)

    def _note_error(self, msg: str, quiet: bool = False) -> None:
        repeated = msg == self.health.last_error
        self.health.last_error = msg
        if not (quiet and repeated):
            log.warning(msg, extra={"rig": self.cfg.rig})

    def status(self) -> dict[str, Any]:
        h = self.health
        return {"schema": 1, "site": self.gw.cfg.site, "rig": self.cfg.rig,
                "gateway": self.gw.cfg.gateway_id, "cell": self.cfg.cell, "run": self.cfg.run,
                "state": h.state, "boot": h.boot, "fw": h.fw, "protocol": h.protocol,
                "time_ns": time.time_ns()}


def _u32(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFFFFFF


def _tombstone_covers(p: link.Packet, expected: int) -> bool:
    """A reliable_dropped tombstone that stands for ``expected`` (docs/link.md)."""
    if p.msg_type != link.MSG_EVENT or b"reliable_dropped" not in p.body:
        return False
    try:
        ev = link.parse_json_body(p)
    except link.LinkError:
        return False
    first, last = ev.get("first_seq"), ev.get("last_seq")
    return (ev.get("event") == "reliable_dropped" and _u32(first) and last == p.seq
            and first <= expected)  # type: ignore[operator]


def _uptime_ns(s: Periodic) -> int:
    return s.uptime_s * 1_000_000_000 + s.uptime_us * 1000


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=_default)


def _default(o: object) -> Any:
    if isinstance(o, bytes):
        return o.hex()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _jitter(s: float, rnd: Callable[[], float] = random.random) -> float:
    # ±20 %: many rigs re-plugged at once do not reconnect in lockstep.
    return s * (0.8 + 0.4 * rnd())
