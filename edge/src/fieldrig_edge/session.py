"""One rig: its link connection, the edge side of reliable delivery, clock and commands.

Contract: docs/link.md ("Reliable delivery"). The gateway is the go-back-N receiver:
per (boot, stream) it accepts only the next sequence number, spools it, and acks
cumulatively once the spool commit has returned. A duplicate (a retransmission of
something already accepted) is dropped and re-acked; a message ahead of a missing one
is dropped too, and the rig goes back to the gap on its ack timeout.

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
    KIND_EIS,
    KIND_EVENT,
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
STALL_ROUNDS = 8             # go-back rounds without the expected seq before resync
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

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class ReplyTo:
    """Where a command's response goes: the request's v5 response topic + correlation."""

    topic: str
    correlation: bytes | None
    cmd: str


@dataclass(slots=True)
class Pending:
    reply_to: ReplyTo
    future: asyncio.Future[dict[str, Any]]


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
    held: list[tuple[link.Sample, int]] = field(default_factory=list)
    hold_timer: asyncio.TimerHandle | None = None
    rig_state: int | None = None
    next_cmd_seq: int = 0
    pending: dict[int, Pending] = field(default_factory=dict)
    answered: set[int] = field(default_factory=set)
    # Stall detection per stream (see _stalled): lowest seq seen ahead of the expected
    # one since the last progress, how often the rig went back, since when.
    stall_min: dict[int, int] = field(default_factory=dict)
    stall_rounds: dict[int, int] = field(default_factory=dict)
    stall_last: dict[int, int] = field(default_factory=dict)
    stall_since: dict[int, float] = field(default_factory=dict)
    sync_token: int = 0
    sync_sent: dict[int, int] = field(default_factory=dict)
    last_dup_ack: float = 0.0


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

    # ------------------------------------------------------------------ connection

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff; forever (cancel to stop)."""
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
        if self.link is not None:
            self._end_link("new HELLO on the same connection (rig reset)")
        boot_v = info.get("boot")
        legacy = not isinstance(boot_v, int) or isinstance(boot_v, bool)
        oldest = nxt = 0
        if not isinstance(boot_v, int) or isinstance(boot_v, bool):
            # No boot id, no retransmission: a per-connection id keeps accounting safe.
            boot = secrets.randbits(32)
        else:
            boot = boot_v
            o, n = info.get("oldest_seq"), info.get("next_seq")
            if not (isinstance(o, int) and isinstance(n, int) and 0 <= o <= n
                    and 0 <= boot <= 0xFFFFFFFF):
                raise link.LinkError(f"malformed HELLO: {info!r}")
            oldest, nxt = o, n
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
                  durable_last_time_ns=clock.last_time_ns)
        self.link = lk
        if not legacy:
            if nxt < lk.expected[TELE]:
                # The rig claims fewer messages than this boot already spooled: a boot id
                # collision or a rig bug. Its new samples would look like duplicates.
                self.gw.gateway_event(self.cfg, boot, "boot_conflict", {
                    "next_seq": nxt, "spooled_through": durable[TELE]})
                log.error("rig boot conflict", extra={"rig": self.cfg.rig, "boot": boot,
                                                      "next_seq": nxt})
            if oldest > lk.expected[TELE]:
                # The rig no longer holds what we wait for: overflow (it sends a
                # telemetry_dropped event) or freed unacked on a connection it served
                # without acks. Either way, waiting would stall the stream forever.
                self._gap(lk.expected[TELE], oldest - 1,
                          "not_in_rig_backlog" if known else "before_first_contact")
                lk.expected[TELE] = oldest
                self.gw.mark(self.cfg.rig, boot, TELE, oldest - 1)
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
                                     "oldest_seq": oldest, "next_seq": nxt})
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

    def _end_link(self, why: str) -> None:
        lk = self.link
        if lk is None:
            return
        self.link = None
        if lk.hold_timer is not None:
            lk.hold_timer.cancel()
        if self._sync_task is not None:
            self._sync_task.cancel()
            self._sync_task = None
        for seq, pend in lk.pending.items():
            if not pend.future.done():
                pend.future.set_exception(CommandError(
                    "rig_disconnected", f"link lost before the rig replied to command "
                    f"{seq} ({why}); it may or may not have run: check the rig status"))
        lk.pending.clear()
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
        if p.seq > exp:
            if not lk.legacy:
                self.health.out_of_order += 1
                self._dup_ack(lk, stream)
                if not self._stalled(lk, stream, p.seq):
                    return
                exp = lk.stall_min[stream]
                if p.seq != exp:
                    return
                # The rig went back again and again and never reached the message we
                # wait for: it no longer has it (a full queue dropped it, or it was
                # freed unacked). Resynchronise at the oldest it does have, reported.
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
        if p.msg_type != link.MSG_SAMPLE:
            self._unknown(lk, p, TELE)
            return
        try:
            s = link.parse_sample(p)
        except link.LinkError as exc:
            self._unknown(lk, p, TELE, str(exc))
            return
        lk.rig_state = s.rig_state
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

    def _spool_sample(self, lk: Link, s: link.Sample) -> None:
        clamped = lk.clock.clamped
        t = lk.clock.to_utc(_uptime_ns(s))
        self.health.time_clamped += lk.clock.clamped - clamped
        body = json.dumps({
            "seq": s.seq, "time_ns": t,
            "cell_voltage_v": _num(s.cell_voltage_v),
            "cell_current_ma": _num(s.cell_current_ma),
            "cell_temp_c": _num(s.cell_temp_c),
            "stack_pressure_mpa": _num(s.stack_pressure_mpa),
            "rig_state": s.rig_state}, separators=(",", ":"))
        self.gw.add_row(Row(KIND_TELEMETRY, self.cfg.rig, body, lk.boot, TELE, s.seq,
                            self.cfg.cell, self.cfg.run))
        self.gw.mark(self.cfg.rig, lk.boot, TELE, s.seq)
        self.health.samples += 1

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

    def _on_reply(self, lk: Link, p: link.Packet) -> None:
        try:
            rep = link.parse_json_body(p)
        except link.LinkError as exc:
            self._unknown(lk, p, REL, str(exc))
            return
        cmd_seq_v = rep.get("cmd_seq")
        cmd_seq = cmd_seq_v if isinstance(cmd_seq_v, int) else -1
        pend = lk.pending.pop(cmd_seq, None)
        if pend is None:
            if cmd_seq in lk.answered:
                return  # the rig re-sent a stored reply we already have
            # A reply nobody waits for any more (timed out, or from before a reconnect):
            # reported, never dropped silently.
            self.health.late_replies += 1
            self.gw.gateway_event(self.cfg, lk.boot, "late_reply", {"reply": rep})
            return
        lk.answered.add(cmd_seq)
        ok = rep.get("ok") is True
        body: dict[str, Any] = {"schema": 1, "site": self.gw.cfg.site, "rig": self.cfg.rig,
                                "gateway": self.gw.cfg.gateway_id, "cmd": pend.reply_to.cmd,
                                "ok": ok, "source": "rig", "boot": lk.boot, "cmd_seq": cmd_seq}
        if ok:
            body["result"] = rep.get("result", {})
        else:
            body["error"] = str(rep.get("error", "rig_error"))
            body["detail"] = str(rep.get("detail", ""))
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
        if now - lk.last_dup_ack >= DUP_ACK_INTERVAL_S:
            lk.last_dup_ack = now
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
        try:
            frame = link.encode_json(link.MSG_COMMAND, lk.next_cmd_seq, cmd.link_body())
        except link.LinkError as exc:
            raise CommandError("too_large", f"command does not fit a link frame: {exc}") from None
        seq = lk.next_cmd_seq
        lk.next_cmd_seq += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        lk.pending[seq] = Pending(reply_to, fut)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gw.cfg.command_timeout_s
        first = True
        log.info("command to rig", extra={"rig": self.cfg.rig, "cmd": cmd.cmd,
                                          "cmd_seq": seq, "args": cmd.args})
        while True:
            if self.link is not lk:
                break  # the future carries rig_disconnected
            self._write(frame)
            if first:
                self.health.commands_sent += 1
                first = False
            else:
                self.health.command_retransmits += 1
            remaining = deadline - loop.time()
            try:
                await asyncio.wait_for(asyncio.shield(fut),
                                       max(0.0, min(self.gw.cfg.command_retransmit_s, remaining)))
                break
            except TimeoutError:
                if loop.time() >= deadline:
                    lk.pending.pop(seq, None)
                    self.health.command_timeouts += 1
                    raise CommandError("timeout", f"rig {self.cfg.rig} did not reply to "
                                       f"{cmd.cmd} within {self.gw.cfg.command_timeout_s} s; "
                                       "it may or may not have run") from None
        return await fut

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


def _uptime_ns(s: link.Sample) -> int:
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
