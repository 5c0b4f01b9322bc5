"""Gateway core: rigs -> spool -> MQTT v5, and commands back (docs/edge.md).

Tasks:

- one ``RigSession`` per rig (session.py): link protocol, dedup, clock, commands;
- the committer: group-commits what the sessions accepted into the spool, then lets
  each session ack its rig (a rig frees a message only once it is durable here);
- the broker loop: connects the delivery witness and the main client, reconciles
  what a crash may have left in flight, then publishes the spool in order, deleting
  rows once the broker has acknowledged them; it also serves command requests and
  publishes retained status and health.

Data is never held only in memory once a rig has been acked, and leaves the spool only
after a PUBACK (or a witness confirmation), so any process can be killed at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from fieldrig_edge import __version__, commands, topics
from fieldrig_edge.commands import CommandError
from fieldrig_edge.config import GatewayConfig
from fieldrig_edge.mqtt import Client, PublishRefused, tls_context, user_property
from fieldrig_edge.session import ReplyTo, RigSession
from fieldrig_edge.spool import (
    KIND_ACTUATOR,
    KIND_GATEWAY,
    KIND_IMPEDANCE,
    KIND_RESPONSE,
    KIND_TELEMETRY,
    STORED_KINDS,
    AsyncSpool,
    CommitBatch,
    Row,
    Spool,
    delivery_key,
)

log = logging.getLogger("fieldrig.edge")

PROP_KEY = "fr-spool"   # user property: which spool rows a message carries (witness key)
PROP_GW = "fr-gw"       # user property: which gateway client published it
WITNESS_CONFIRM_S = 10.0
PUBLISH_TIMEOUT_S = 30.0
NO_MATCHING_SUBSCRIBERS = 0x10  # PUBACK "success" for a message the broker discarded
NO_SUBSCRIBER_RETRY_S = 0.5
REPUBLISH_BACKOFF_MAX_NS = 600 * 10**9
_CONFIRMED_KINDS = frozenset(k for kinds in STORED_KINDS.values() for k in kinds)


@dataclass(slots=True)
class GatewayStats:
    broker_connected: bool = False
    broker_connects: int = 0
    broker_errors: int = 0
    last_broker_error: str = ""
    published_messages: int = 0
    published_samples: int = 0
    refused_messages: int = 0      # broker PUBACK >= 0x80 (dead-lettered if permanent)
    no_subscribers: int = 0        # PUBACK 0x10: discarded by the broker, published again
    republished_messages: int = 0  # published, not confirmed stored in time: sent again
    stored_confirmed: int = 0      # rows deleted on the ingesters' stored watermark
    dead_letters: int = 0
    witness_confirmed: int = 0     # rows deleted on the witness's word
    reconciled: int = 0            # of those, found at a reconnect (saved a duplicate)
    witness_unconfirmed_reconnects: int = 0
    spool_commits: int = 0
    spool_errors: int = 0
    commands_received: int = 0
    commands_unanswerable: int = 0
    command_errors: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class OutMessage:
    topic: str
    payload: str
    ids: list[int]
    key: str
    samples: int = 0
    correlation: bytes | None = None
    # Rig data the ingesters confirm: kept (marked published) until the stored
    # watermark covers it; everything else leaves the spool on the PUBACK.
    confirm: bool = False
    republish: bool = False
    kind: str = ""
    created_ns: int = 0


class Gateway:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.sessions: dict[str, RigSession] = {r.rig: RigSession(r, self) for r in cfg.rigs}
        self.stats = GatewayStats()
        self.batch = CommitBatch()
        self._spool: AsyncSpool | None = None
        self._kick = asyncio.Event()
        self._wake_publisher = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._client: Client | None = None
        self._marker: tuple[str, asyncio.Event] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self._started_ns = time.time_ns()
        # Set while the command subscription is active (tests, status).
        self.commands_ready = asyncio.Event()
        self._swap_times: dict[str, int] = {}
        self.witness_topics = [topics.rig_topic(cfg.site, r.rig, leaf)
                               for r in cfg.rigs
                               for leaf in ("telemetry", "impedance", "events", "eis")]
        self.stored_topics = [topics.rig_topic(cfg.site, r.rig, "stored/+") for r in cfg.rigs]
        self.marker_topic = topics.gateway_topic(cfg.site, cfg.gateway_id, "witness")

    # ------------------------------------------------------------- compatibility

    @property
    def published_samples(self) -> int:
        return self.stats.published_samples

    @property
    def health(self) -> dict[str, Any]:
        return {rig: s.health for rig, s in self.sessions.items()}

    @property
    def spool(self) -> AsyncSpool:
        assert self._spool is not None, "gateway not running"
        return self._spool

    # --------------------------------------------------------------------- rows

    def rig_topic(self, rig: str, leaf: str) -> str:
        return topics.rig_topic(self.cfg.site, rig, leaf)

    def envelope(self, rig_cfg: Any, boot: int | None) -> dict[str, Any]:
        return {"schema": topics.SCHEMA_VERSION, "site": self.cfg.site, "rig": rig_cfg.rig,
                "cell": rig_cfg.cell, "run": rig_cfg.run, "gateway": self.cfg.gateway_id,
                "boot": boot}

    def add_row(self, row: Row) -> None:
        self.batch.rows.append(row)
        self._kick.set()

    def mark(self, rig: str, boot: int, stream: int, seq: int) -> None:
        key = (rig, boot, stream)
        if seq > self.batch.watermarks.get(key, -1):
            self.batch.watermarks[key] = seq
        self._kick.set()

    def purge(self, rig: str, boot: int, stream: int) -> None:
        """Forget uncommitted rows and marks of one stream (after a refusal)."""
        self.batch.rows = [r for r in self.batch.rows
                           if not (r.rig == rig and r.boot == boot and r.stream == stream)]
        self.batch.watermarks.pop((rig, boot, stream), None)

    def gateway_event(self, rig_cfg: Any, boot: int | None, name: str,
                      data: dict[str, Any]) -> None:
        payload = self.envelope(rig_cfg, boot)
        payload.update({"seq": None, "time_ns": time.time_ns(), "source": "gateway",
                        "event": name, "data": data})
        self.add_row(Row(KIND_GATEWAY, rig_cfg.rig, _dumps(payload), boot, None, None,
                         rig_cfg.cell, rig_cfg.run, topic=self.rig_topic(rig_cfg.rig, "events")))

    def response_row(self, reply_to: ReplyTo, rig: str, body: dict[str, Any],
                     boot: int | None = None, seq: int | None = None) -> Row:
        props = {"corr": reply_to.correlation.hex()} if reply_to.correlation is not None else {}
        return Row(KIND_RESPONSE, rig, _dumps(body), boot, 0x20 if seq is not None else None,
                   seq, topic=reply_to.topic, props=json.dumps(props))

    # ---------------------------------------------------------------- committing

    async def _committer(self) -> None:
        while True:
            await self._kick.wait()
            # Group commit: whatever arrives within the interval shares one fsync.
            await asyncio.sleep(self.cfg.commit_interval_s)
            await self.flush_commits()

    async def flush_commits(self) -> None:
        """Commit everything accepted so far (and wait for a commit in progress)."""
        async with self._commit_lock:
            self._kick.clear()
            batch, self.batch = self.batch, CommitBatch()
            if not (batch.rows or batch.watermarks):
                return
            for s in self.sessions.values():
                snap = s.commit_snapshot()
                if snap is not None:
                    rig, boot, state = snap
                    batch.clocks[(rig, boot)] = state
            try:
                result = await self.spool.call(self.spool.spool.commit, batch)
            except Exception as exc:
                # Nothing of this batch was acked: drop the links so every rig resends
                # from its last ack and the sessions reload their state from the spool.
                self.stats.spool_errors += 1
                log.error("spool commit failed: %s", exc, exc_info=True)
                for s in self.sessions.values():
                    s.abort(f"spool commit failed: {exc}")
                return
            self.stats.spool_commits += 1
            for s in self.sessions.values():
                s.on_commit(batch.watermarks, result.watermarks)
            for d in result.dropped:
                rig_cfg = self.cfg.rig(d.rig)
                log.warning("spool full: dropped oldest telemetry", extra={
                    "rig": d.rig, "boot": d.boot, "first_seq": d.first_seq,
                    "last_seq": d.last_seq, "count": d.count})
                if rig_cfg is not None:
                    self.gateway_event(rig_cfg, d.boot, "spool_dropped", {
                        "first_seq": d.first_seq, "last_seq": d.last_seq, "count": d.count,
                        "reason": "spool_full", "policy": "drop_oldest"})
            if result.refused:
                log.warning("spool full: refused telemetry (the rigs keep it)",
                            extra={"refused": result.refused,
                                   "spool_bytes": self.spool.stats.bytes})
            self._wake_publisher.set()

    # -------------------------------------------------------------------- running

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        spool = await asyncio.to_thread(Spool, cfg.spool.path, cfg.spool.max_bytes,
                                        cfg.spool.when_full)
        self._spool = AsyncSpool(spool)
        log.info("gateway starting", extra={"version": __version__, "config": cfg.redacted(),
                                            "spool_rows": spool.stats.rows})
        committer = asyncio.create_task(self._committer(), name="committer")
        broker = asyncio.create_task(self._broker_loop(), name="broker")
        rigs = [asyncio.create_task(s.run(), name=f"rig-{r}") for r, s in self.sessions.items()]
        stopper = asyncio.create_task(stop.wait(), name="stop")
        crashed: BaseException | None = None
        try:
            done, _ = await asyncio.wait([stopper, committer, broker, *rigs],
                                         return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and not t.cancelled() and t.exception() is not None:
                    crashed = t.exception()
                    log.critical("gateway task %s crashed", t.get_name(), exc_info=crashed)
        finally:
            stopper.cancel()
            await self._shutdown(committer, broker, rigs)
        if crashed is not None:
            raise crashed

    async def _shutdown(self, committer: asyncio.Task[None], broker: asyncio.Task[None],
                        rigs: list[asyncio.Task[None]]) -> None:
        log.info("gateway stopping: closing rig links, flushing the spool")
        for t in rigs:
            t.cancel()
        await asyncio.gather(*rigs, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.flush_commits()
        self._stopping.set()
        self._wake_publisher.set()
        try:
            await asyncio.wait_for(broker, self.cfg.shutdown_flush_s + 10)
        except (TimeoutError, asyncio.CancelledError):
            pass
        except Exception as exc:
            log.error("broker task failed during shutdown: %s", exc)
        committer.cancel()
        await asyncio.gather(committer, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.flush_commits()
        for t in list(self._bg):
            t.cancel()
        await asyncio.gather(*self._bg, return_exceptions=True)
        left = self.spool.stats.rows
        log.info("gateway stopped", extra={"spool_rows_left": left,
                                           "published_samples": self.stats.published_samples})
        await self.spool.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        t = asyncio.create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    # --------------------------------------------------------------------- broker

    def _client_args(self) -> dict[str, Any]:
        b = self.cfg.broker
        return {"hostname": b.host, "port": b.port, "username": b.username,
                "password": b.password, "tls_context": tls_context(b),
                "protocol": aiomqtt.ProtocolVersion.V5, "keepalive": b.keepalive_s,
                "timeout": PUBLISH_TIMEOUT_S,
                "logger": logging.getLogger("fieldrig.edge.mqtt")}

    def _gateway_status(self, state: str) -> str:
        return _dumps({"schema": topics.SCHEMA_VERSION, "site": self.cfg.site,
                       "gateway": self.cfg.gateway_id, "state": state,
                       "rigs": sorted(self.sessions), "version": __version__,
                       "time_ns": time.time_ns()})

    async def _broker_loop(self) -> None:
        backoff = 0.2
        while True:
            self._connected_once = False
            try:
                await self._broker_session()
                return
            except (aiomqtt.MqttError, OSError) as exc:
                self.stats.broker_errors += 1
                self.stats.last_broker_error = str(exc)
                log.warning("broker connection lost: %s", exc,
                            extra={"retry_s": round(backoff, 2)})
            finally:
                self.stats.broker_connected = False
                self.commands_ready.clear()
                self._client = None
            if self._stopping.is_set():
                log.warning("stopping without a broker: unsent messages stay in the spool",
                            extra={"spool_rows": self.spool.stats.rows})
                return
            if self._connected_once:
                backoff = 0.2  # it worked until now: retry soon
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _jitter(backoff))
            if not self._connected_once:
                backoff = min(backoff * 2, 10.0)

    _connected_once = False

    async def _broker_session(self) -> None:
        cfg = self.cfg
        args = self._client_args()
        wprops = Properties(PacketTypes.CONNECT)
        wprops.SessionExpiryInterval = cfg.broker.witness_session_expiry_s
        witness = Client(identifier=f"{cfg.client_id}-witness", clean_start=False,
                         properties=wprops, manual_ack=True, **args)
        will = aiomqtt.Will(topics.gateway_topic(cfg.site, cfg.gateway_id, "status"),
                            self._gateway_status("offline"), qos=1, retain=True)
        # Clean start: commands sent while the gateway was away are not executed late.
        main = Client(identifier=cfg.client_id, clean_start=True, will=will, **args)
        async with witness:
            stored = self.stored_topics if cfg.confirm_stored else []
            await witness.subscribe([(t, SubscribeOptions(qos=1))
                                     for t in [*self.witness_topics, self.marker_topic,
                                               *stored]])
            witness_task = asyncio.create_task(self._witness_reader(witness))
            try:
                async with main:
                    self._connected_once = True
                    self.stats.broker_connected = True
                    self.stats.broker_connects += 1
                    self._client = main
                    log.info("broker connected", extra={
                        "broker": f"{cfg.broker.host}:{cfg.broker.port}",
                        "tls": cfg.broker.tls is not None,
                        "witness_session": witness.session_present})
                    if not witness.session_present and self.spool.stats.rows:
                        log.warning("delivery witness had no session at the broker: messages "
                                    "in flight before this start cannot be checked and may "
                                    "be delivered twice", extra={"spool_rows":
                                                                 self.spool.stats.rows})
                    await self._serve_broker(main, witness_task)
            finally:
                witness_task.cancel()
                await asyncio.gather(witness_task, return_exceptions=True)

    async def _serve_broker(self, main: Client, witness_task: asyncio.Task[None]) -> None:
        cfg = self.cfg
        await main.publish_acked(topics.gateway_topic(cfg.site, cfg.gateway_id, "status"),
                                 self._gateway_status("online"), qos=1, retain=True)
        for s in self.sessions.values():
            await self._publish_status(main, s)
        await self._reconcile(main, witness_task)
        cmd_task = asyncio.create_task(self._command_reader(main))
        await main.subscribe(topics.command_filter(cfg.site), qos=1)
        self.commands_ready.set()
        health_task = asyncio.create_task(self._health_loop(main))
        pub_task = asyncio.create_task(self._publish_loop(main))
        tasks = [pub_task, cmd_task, health_task, witness_task]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if pub_task not in done or pub_task.exception() is not None:
                for t in done:
                    exc = t.exception()
                    if exc is not None:
                        raise exc
                raise aiomqtt.MqttError("broker tasks ended unexpectedly")
        finally:
            for t in (cmd_task, health_task, pub_task):
                t.cancel()
            await asyncio.gather(cmd_task, health_task, pub_task, return_exceptions=True)
        # Stopping, and the spool is flushed as far as the deadline allowed.
        for s in self.sessions.values():
            await self._publish_status(main, s, state="offline")
        await self._publish_health(main)
        await main.publish_acked(topics.gateway_topic(cfg.site, cfg.gateway_id, "status"),
                                 self._gateway_status("offline"), qos=1, retain=True)

    async def _reconcile(self, main: Client, witness_task: asyncio.Task[None]) -> None:
        """Before replaying: let the witness drain what the broker queued for it while we
        were away, so rows that did reach the broker are deleted instead of resent."""
        nonce = secrets.token_hex(8)
        seen = asyncio.Event()
        self._marker = (nonce, seen)
        before = self.stats.witness_confirmed
        await main.publish_acked(self.marker_topic, nonce, qos=1)
        try:
            await asyncio.wait_for(seen.wait(), WITNESS_CONFIRM_S)
        except TimeoutError:
            self.stats.witness_unconfirmed_reconnects += 1
            log.warning("delivery witness did not confirm within %.0f s: replaying without "
                        "the check (a message in flight at the outage may repeat)",
                        WITNESS_CONFIRM_S)
        finally:
            self._marker = None
        found = self.stats.witness_confirmed - before
        self.stats.reconciled += found
        if found:
            log.info("witness: delivered before the outage, not resent",
                     extra={"rows": found})

    async def _witness_reader(self, witness: Client) -> None:
        keys: list[str] = []
        acks: list[tuple[int, int]] = []
        keep = self.cfg.confirm_stored
        async for msg in witness.messages:
            marker = str(msg.topic) == self.marker_topic
            stored = topics.parse_stored_topic(self.cfg.site, str(msg.topic))
            if stored is not None:
                await self._on_stored(stored, msg.payload)
            elif not marker:
                key = user_property(msg.properties, PROP_KEY)
                if key and user_property(msg.properties, PROP_GW) == self.cfg.client_id:
                    keys.append(key)
            acks.append((msg.mid, msg.qos))
            if marker or len(witness.messages) == 0 or len(keys) >= 256:
                if keys:
                    n = await self.spool.call(self.spool.spool.delete_confirmed, keys, keep)
                    self.stats.witness_confirmed += n
                    keys.clear()
                # Ack only after the deletion is committed: a crash in between makes the
                # broker redeliver to this persistent session.
                for mid, qos in acks:
                    if qos:
                        witness.ack(mid, qos)
                acks.clear()
            if marker and self._marker is not None:
                payload = msg.payload if isinstance(msg.payload, bytes) else b""
                if payload.decode(errors="replace") == self._marker[0]:
                    self._marker[1].set()

    async def _on_stored(self, where: tuple[str, int], payload: Any) -> None:
        """An ingester's stored watermark for (rig, boot): delete what it covers."""
        rig, boot = where
        try:
            body = json.loads(payload if isinstance(payload, bytes | str) else b"")
            through = {stream: body[name] for stream, name in ((0x10, "telemetry"),
                                                               (0x20, "reliable"))
                       if type(body.get(name)) is int}
        except (ValueError, AttributeError):
            log.warning("unreadable stored watermark", extra={"rig": rig, "boot": boot})
            return
        if through:
            n = await self.spool.call(self.spool.spool.delete_stored, rig, boot, through)
            self.stats.stored_confirmed += n

    async def _publish_loop(self, client: Client) -> None:
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            stopping = self._stopping.is_set()
            if stopping and deadline is None:
                deadline = loop.time() + self.cfg.shutdown_flush_s
            if deadline is not None and loop.time() >= deadline:
                log.warning("shutdown flush deadline reached", extra={
                    "spool_rows_left": self.spool.stats.rows})
                return
            self._wake_publisher.clear()
            cutoff = (time.time_ns() - int(self.cfg.stored_timeout_s * 1e9)
                      if self.cfg.confirm_stored else None)
            rows = await self.spool.call(self.spool.spool.fetch, self.cfg.batch_max * 4, cutoff)
            if not rows:
                if stopping:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_publisher.wait(), 1.0)
                continue
            if not stopping and len(rows) < self.cfg.batch_max:
                # Live: let a batch fill for up to batch_wait. A backlog (replay after an
                # outage) is never held back.
                age = (time.time_ns() - rows[0].created_ns) / 1e9
                if age < self.cfg.batch_wait_s:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(),
                                               self.cfg.batch_wait_s - age)
                    continue
            if not await self._publish_rows(client, rows):
                # The broker discarded a message (no subscriber yet): try again shortly.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), NO_SUBSCRIBER_RETRY_S)

    async def _publish_rows(self, client: Client, rows: list[Row]) -> bool:
        """Publish in order; False if the broker discarded one (PUBACK 0x10: nobody
        subscribed, e.g. the ingesters' shared subscription right after a Mosquitto
        restart), which is then not delivered: it and what follows stay to be sent."""
        acked: list[int] = []
        published: list[int] = []
        republished: list[tuple[int, int]] = []
        try:
            for m in self.build_messages(rows):
                props = Properties(PacketTypes.PUBLISH)
                props.ContentType = "application/json"
                props.UserProperty = [(PROP_KEY, m.key), (PROP_GW, self.cfg.client_id)]
                if m.correlation is not None:
                    props.CorrelationData = m.correlation
                try:
                    rc = await client.publish_acked(m.topic, m.payload, qos=1,
                                                    properties=props)
                except PublishRefused as exc:
                    self.stats.refused_messages += 1
                    if not exc.permanent:
                        raise
                    await self._dead_letter(m, str(exc))
                    continue
                except ValueError as exc:  # paho: a topic or payload it cannot send
                    await self._dead_letter(m, f"invalid message: {exc}")
                    continue
                # A response nobody waits for any more is not retried (its requester
                # gave up), nor an actuator state nobody follows (the next poll brings a
                # newer one; retrying would hold everything behind it, e.g. for
                # ingesters that do not subscribe to it yet); everything else the
                # ingesters store is.
                if rc == NO_MATCHING_SUBSCRIBERS and m.kind not in _NOT_RETRIED:
                    self.stats.no_subscribers += 1
                    log.info("broker had no subscriber for a message: publishing it again",
                             extra={"topic": m.topic})
                    return False
                if m.confirm and m.republish:
                    republished.extend((i, m.created_ns) for i in m.ids)
                elif m.confirm:
                    published.extend(m.ids)
                else:
                    acked.extend(m.ids)
                self.stats.published_messages += 1
                self.stats.published_samples += m.samples
                self.stats.republished_messages += m.republish
        finally:
            if acked:
                await self.spool.call(self.spool.spool.delete_ids, acked)
            if published:
                await self.spool.call(self.spool.spool.mark_published, published)
            if republished:
                # Back off: next try after as long again as the row has waited so far
                # (at most 10 min), so a long InfluxDB outage does not make the gateway
                # flood the broker with copies of its whole backlog every timeout.
                now = time.time_ns()
                await self.spool.call(self.spool.spool.mark_republished, [
                    (rid, now + min(now - created, REPUBLISH_BACKOFF_MAX_NS))
                    for rid, created in republished])
        return True

    async def _dead_letter(self, m: OutMessage, reason: str) -> None:
        self.stats.dead_letters += 1
        log.error("broker refused a message for good: kept in the spool's dead table",
                  extra={"topic": m.topic, "reason": reason, "rows": len(m.ids)})
        await self.spool.call(self.spool.spool.dead_letter, m.ids, m.topic, reason)

    def build_messages(self, rows: list[Row]) -> list[OutMessage]:
        """Rows (in spool order) -> messages, in the order of their first row.

        Telemetry rows of one (rig, boot, cell, run) share a message of up to
        ``batch_max`` samples, impedance points likewise (topic ``impedance``); every
        other row is a message of its own.
        """
        out: list[tuple[int, OutMessage]] = []
        open_groups: dict[tuple[Any, ...], list[Row]] = {}
        groups: list[list[Row]] = []
        for r in rows:
            if r.kind not in _BATCHED:
                groups.append([r])
                continue
            k = (r.kind, r.rig, r.boot, r.cell, r.run)
            g = open_groups.get(k)
            # A message is a run of consecutive rows of its (rig, boot, stream): a row of
            # the other kind in between (an impedance point among samples) starts a new
            # one, so that each message covers (prev_seq, last seq] completely.
            if g is None or len(g) >= self.cfg.batch_max or r.prev != g[-1].seq:
                g = []
                open_groups[k] = g
                groups.append(g)
            g.append(r)
        for g in groups:
            r = g[0]
            key = delivery_key(g)
            if r.kind in _BATCHED:
                leaf, array = _BATCHED[r.kind]
                head = _dumps({"schema": topics.SCHEMA_VERSION, "site": self.cfg.site,
                               "rig": r.rig, "cell": r.cell, "run": r.run,
                               "gateway": self.cfg.gateway_id, "boot": r.boot,
                               "prev_seq": r.prev})
                payload = head[:-1] + f',"{array}":[' + ",".join(x.body for x in g) + "]}"
                m = OutMessage(self.rig_topic(r.rig, leaf), payload, [x.id for x in g], key,
                               samples=len(g) if r.kind == KIND_TELEMETRY else 0)
            else:
                corr = None
                if r.props:
                    c = json.loads(r.props).get("corr")
                    corr = bytes.fromhex(c) if c is not None else None
                body = r.body
                if r.kind in _CONFIRMED_KINDS and r.prev is not None and body.startswith("{"):
                    body = '{"prev_seq":' + str(r.prev) + "," + body[1:]
                m = OutMessage(r.topic or self.rig_topic(r.rig, "events"), body, [r.id],
                               key, correlation=corr)
            m.kind = r.kind
            m.created_ns = r.created_ns
            m.confirm = self.cfg.confirm_stored and r.kind in _CONFIRMED_KINDS
            m.republish = any(x.published_ns is not None for x in g)
            out.append((r.id, m))
        return [m for _, m in out]

    # ---------------------------------------------------------- status and health

    def rig_status_changed(self, session: RigSession) -> None:
        client = self._client
        if client is not None:
            self._spawn(self._publish_status(client, session, quiet=True))

    async def _publish_status(self, client: Client, s: RigSession, state: str | None = None,
                              quiet: bool = False) -> None:
        body = s.status()
        if state is not None:
            body["state"] = state
        try:
            await client.publish_acked(self.rig_topic(s.cfg.rig, "status"), _dumps(body),
                                       qos=1, retain=True)
        except aiomqtt.MqttError:
            if not quiet:
                raise  # the broker loop reconnects and republishes every status

    def health_payload(self) -> dict[str, Any]:
        st = self.stats
        sp = self.spool.stats if self._spool is not None else None
        oldest = self._oldest_ns
        return {
            "schema": topics.SCHEMA_VERSION, "site": self.cfg.site,
            "gateway": self.cfg.gateway_id, "version": __version__, "time_ns": time.time_ns(),
            "uptime_s": round((time.time_ns() - self._started_ns) / 1e9, 1),
            "broker": {"connected": st.broker_connected, "connects": st.broker_connects,
                       "errors": st.broker_errors, "last_error": st.last_broker_error,
                       "published_messages": st.published_messages,
                       "published_samples": st.published_samples,
                       "refused_messages": st.refused_messages,
                       "no_subscribers": st.no_subscribers,
                       "republished_messages": st.republished_messages,
                       "stored_confirmed": st.stored_confirmed,
                       "witness_confirmed": st.witness_confirmed,
                       "reconciled": st.reconciled,
                       "witness_unconfirmed_reconnects": st.witness_unconfirmed_reconnects},
            "spool": None if sp is None else {
                "rows": sp.rows, "bytes": sp.bytes, "max_bytes": self.cfg.spool.max_bytes,
                "when_full": self.cfg.spool.when_full,
                "oldest_age_s": round((time.time_ns() - oldest) / 1e9, 1) if oldest else 0,
                "dropped_samples": sp.dropped_samples, "refused_samples": sp.refused_samples,
                "dead_letters": st.dead_letters, "commits": st.spool_commits,
                "errors": st.spool_errors},
            "commands": {"received": st.commands_received,
                         "unanswerable": st.commands_unanswerable,
                         "refused": dict(st.command_errors)},
            "rigs": {rig: s.health.as_dict() for rig, s in self.sessions.items()},
        }

    _oldest_ns = 0

    async def _health_loop(self, client: Client) -> None:
        while True:
            await self._publish_health(client)
            await asyncio.sleep(self.cfg.health_interval_s)

    async def _publish_health(self, client: Client) -> None:
        self._oldest_ns = await self.spool.call(self.spool.spool.oldest_created_ns)
        await client.publish_acked(topics.gateway_topic(self.cfg.site, self.cfg.gateway_id,
                                                        "health"),
                                   _dumps(self.health_payload()), qos=1, retain=True)

    # ------------------------------------------------------------------- commands

    async def _command_reader(self, client: Client) -> None:
        async for msg in client.messages:
            rig = topics.parse_command_topic(self.cfg.site, str(msg.topic))
            if rig is None:
                continue
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            self._spawn(self.handle_command(rig, payload, msg.properties))

    async def handle_command(self, rig: str, payload: bytes, props: Properties | None) -> None:
        """Validate one request, forward it, and spool exactly one response for it."""
        self.stats.commands_received += 1
        resp_topic = getattr(props, "ResponseTopic", None)
        corr = getattr(props, "CorrelationData", None)
        if not topics.valid_publish_topic(resp_topic):
            # No way to answer: refusing is all we can do (and say so in the log/health).
            self.stats.commands_unanswerable += 1
            log.warning("command without a valid response topic: not executed",
                        extra={"rig": rig, "response_topic": str(resp_topic)[:200]})
            return
        reply_to = ReplyTo(str(resp_topic), bytes(corr) if corr is not None else None, cmd="")
        try:
            if len(payload) > self.cfg.command_max_bytes:
                raise CommandError("too_large", f"payload of {len(payload)} bytes exceeds "
                                                f"{self.cfg.command_max_bytes}")
            session = self.sessions.get(rig)
            if session is None:
                known = ", ".join(sorted(self.sessions))
                raise CommandError("unknown_rig", f"gateway {self.cfg.gateway_id} has no rig "
                                                  f"{rig!r} (rigs: {known})")
            cmd = commands.parse_request(payload, self.cfg.command_max_bytes)
            reply_to.cmd = cmd.cmd
            await session.command(cmd, reply_to)
        except CommandError as exc:
            self.stats.command_errors[exc.code] += 1
            log.info("command refused", extra={"rig": rig, "error": exc.code,
                                               "detail": exc.detail})
            body = {"schema": topics.SCHEMA_VERSION, "site": self.cfg.site, "rig": rig,
                    "gateway": self.cfg.gateway_id, "cmd": reply_to.cmd or None, "ok": False,
                    "source": "gateway", "error": exc.code, "detail": exc.detail}
            self.add_row(self.response_row(reply_to, rig, body))


# Row kinds a PUBACK 0x10 (no subscriber: discarded) does not send again.
_NOT_RETRIED = frozenset({KIND_RESPONSE, KIND_ACTUATOR})
# Row kinds published in batches: topic leaf and the payload's array (docs/mqtt.md).
_BATCHED = {KIND_TELEMETRY: ("telemetry", "samples"), KIND_IMPEDANCE: ("impedance", "points")}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _jitter(s: float) -> float:
    return s * (0.8 + 0.4 * random.random())
