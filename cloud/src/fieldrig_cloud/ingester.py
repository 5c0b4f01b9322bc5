"""Ingester: MQTT v5 (telemetry, impedance, events, EIS, status, actuator state, gateway
health) -> InfluxDB.

Delivery guarantee, and how each piece gives it:

- *Nothing lost.* Messages arrive at QoS 1 on a persistent session (clean start off,
  long session expiry) and are acknowledged to the broker only after InfluxDB accepted
  their points (manual PUBACK, ``fieldrig_cloud.mqtt_async``). A crash at any moment
  leaves the unacknowledged messages with the broker, which redelivers them.
- *Nothing twice.* Every point's key (measurement, tags, time) comes from the payload,
  so a redelivered message overwrites its own points (``fieldrig_cloud.schema``).
- *Never blocked.* A message that cannot be turned into points, or whose points InfluxDB
  refuses (400: parse error, field-type conflict), becomes a ``dead_letter`` record
  (and a line in the dead-letter file, if configured) and is acknowledged; only
  retryable failures (InfluxDB down, 5xx) hold the stream, with backoff.
- *Shared load.* The subscriptions are shared (``$share/{group}/...``), so several
  ingesters with distinct client ids split the messages.

Pipeline: paho callback (parses the message into encoded lines on arrival) ->
``_incoming`` -> batcher (groups up to ``batch_points``, or what came within
``batch_wait_s`` once a write slot is free) -> bounded queue -> writer (writes, retries,
then acks in arrival order, as MQTT requires). Parsing the next messages overlaps the
HTTP write of the previous batch.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import paho.mqtt.client as mqtt

from fieldrig_cloud import lineproto, retention, schema, watermark
from fieldrig_cloud.influx import InfluxError, InfluxHttp
from fieldrig_cloud.mqtt_async import AsyncPahoClient, BrokerOptions, TlsOptions

log = logging.getLogger("fieldrig.ingester")

SHARE_GROUP = "fieldrig-ingest"
# Topic filters below fieldrig/v1/ that the ingester stores.
INGEST_FILTERS = (
    "+/+/telemetry",
    "+/+/impedance",
    "+/+/events",
    "+/+/eis",
    "+/+/status",
    "+/+/actuators",
    "+/gateway/+/status",
    "+/gateway/+/health",
)
# InfluxDB 1.x pays a large fixed cost per write (WAL fsync, request handling):
# 20 000-point batches measured ~2.5x the throughput of 5 000 (docs/benchmarks_ingest.md).
DEFAULT_BATCH_POINTS = 20_000
TELEMETRY_FILTER = f"$share/{SHARE_GROUP}/fieldrig/v1/+/+/telemetry"


# Not shared: every ingester follows every stored watermark (watermark.py).
STORED_FILTER = f"{schema.TOPIC_ROOT}/+/+/stored/+"


def subscriptions(group: str = SHARE_GROUP) -> list[str]:
    return [f"$share/{group}/{schema.TOPIC_ROOT}/{f}" for f in INGEST_FILTERS] + [STORED_FILTER]


@dataclass(slots=True)
class IngestConfig:
    share_group: str = SHARE_GROUP
    batch_points: int = DEFAULT_BATCH_POINTS
    batch_wait_s: float = 0.05
    # Batches parsed ahead of the writer; with receive_maximum this bounds memory.
    write_queue: int = 2
    # Batch writes in flight at once (acks stay in order).
    write_concurrency: int = 2
    receive_maximum: int = 1000
    max_payload_bytes: int = 4 * 1024 * 1024
    health_interval_s: float = 10.0
    retry_max_s: float = 10.0
    dead_letter_file: Path | None = None
    tls: TlsOptions | None = None
    # Create/update database, retention policies and CQs at start (idempotent).
    setup_schema: bool = True
    retention_cfg: retention.RetentionConfig = field(default_factory=retention.RetentionConfig)


@dataclass(slots=True)
class IngestStats:
    """Counters since start. ``points`` counts telemetry samples stored (one
    ``cell_sample`` point each, what end-to-end accounting compares with);
    ``lines`` counts every point written for messages."""

    messages: int = 0
    points: int = 0
    lines: int = 0
    rejected: int = 0
    batches: int = 0
    write_retries: int = 0
    write_errors: int = 0
    acks: int = 0
    acks_dropped: int = 0
    last_error: str = ""
    last_write_ms: float = 0.0
    last_data_lag_s: float = 0.0
    last_ack_latency_s: float = 0.0
    dead_letters: collections.deque[tuple[str, str]] = field(
        default_factory=lambda: collections.deque(maxlen=100))


@dataclass(slots=True)
class _Msg:
    topic: str
    mid: int
    qos: int
    generation: int
    received_ns: int
    received_mono: float
    # Its points as line protocol, per retention policy: each message's lines are
    # joined once, so a batch is a join of a few hundred bodies, not of every line.
    bodies: dict[str, bytes] = field(default_factory=dict)
    points: int = 0  # lines in bodies
    samples: int = 0
    newest_ns: int = 0
    dead: tuple[str, str] | None = None  # (code, reason)
    payload: bytes = b""
    chain: schema.Chain | None = None  # the stream range it covers (stored watermarks)


@dataclass(slots=True)
class _Abandoned:
    """Messages left unacknowledged because InfluxDB was unreachable at stop."""

    count: int = 0

    def any(self) -> bool:
        return self.count > 0


@dataclass(slots=True)
class _Batch:
    msgs: list[_Msg]
    extra_lines: list[str]


def _rp_of_line(line: bytes) -> str:
    return retention.rp_of(line.split(b",", 1)[0].split(b" ", 1)[0].decode())


def _bodies(enc: schema.Encoded) -> dict[str, bytes]:
    """A message's lines joined per retention policy: one body when all its
    measurements share a policy (every telemetry message), else line by line."""
    if not enc.lines:
        return {}
    rps = {retention.rp_of(x) for x in enc.measurements}
    if len(rps) == 1:
        return {rps.pop(): b"\n".join(enc.lines)}
    groups: dict[str, list[bytes]] = {}
    for ln in enc.lines:
        groups.setdefault(_rp_of_line(ln), []).append(ln)
    return {rp: b"\n".join(lines) for rp, lines in groups.items()}


def _line_chunks(lines: list[str]) -> dict[str, list[bytes]]:
    """Our own records (dead letters, health), each into its retention policy."""
    chunks: dict[str, list[bytes]] = {}
    for ln in lines:
        b = ln.encode()
        chunks.setdefault(_rp_of_line(b), []).append(b)
    return chunks


class Ingester:
    def __init__(self, broker_host: str, broker_port: int, influx: InfluxHttp,
                 client_id: str = "fieldrig-ingester-1", username: str | None = None,
                 password: str | None = None, config: IngestConfig | None = None) -> None:
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.influx = influx
        self.client_id = client_id
        self.username = username
        self.password = password
        self.config = config or IngestConfig()
        self.stats = IngestStats()
        self._incoming: collections.deque[_Msg] = collections.deque()
        self._wake = asyncio.Event()
        self._writes_inflight = 0
        self._mqtt: AsyncPahoClient | None = None
        self._dead_file: IO[str] | None = None
        self._started_mono = time.monotonic()
        self.watermarks = watermark.StoredWatermarks()

    # --- message -> points -----------------------------------------------------------

    def handle_payload(self, topic: str, raw: bytes, received_ns: int | None = None) -> list[str]:
        """Lines for one message; raises schema.PayloadError if it must be dead-lettered."""
        if len(raw) > self.config.max_payload_bytes:
            raise schema.PayloadError(
                f"payload of {len(raw)} bytes exceeds {self.config.max_payload_bytes}")
        return schema.points_for(topic, raw, received_ns or time.time_ns())

    def handle_message(self, topic: str, raw: bytes, received_ns: int) -> schema.Encoded:
        """Encoded points and covered stream range of one message; raises
        schema.PayloadError."""
        if len(raw) > self.config.max_payload_bytes:
            raise schema.PayloadError(
                f"payload of {len(raw)} bytes exceeds {self.config.max_payload_bytes}")
        return schema.encode_message(topic, raw, received_ns)

    def _on_message(self, msg: mqtt.MQTTMessage, generation: int) -> None:
        m = _Msg(topic=msg.topic, mid=msg.mid, qos=msg.qos, generation=generation,
                 received_ns=time.time_ns(), received_mono=time.monotonic())
        raw = bytes(msg.payload)
        stored = watermark.parse_topic(m.topic)
        if stored is not None:
            # A stored watermark (ours or another ingester's): merged now, acked in
            # arrival order with the rest (it writes nothing).
            self.watermarks.seen(stored, raw)
            self._publish_watermarks()
            self._incoming.append(m)
            self._wake.set()
            return
        try:
            enc = self.handle_message(m.topic, raw, m.received_ns)
        except schema.PayloadError as exc:
            m.dead = ("invalid", str(exc))
            m.payload = raw
        except UnicodeDecodeError as exc:  # a topic that is not UTF-8
            m.dead = ("invalid", f"topic: {exc}")
            m.payload = raw
        else:
            m.bodies = _bodies(enc)
            m.points = len(enc.lines)
            m.samples, m.newest_ns, m.chain = enc.samples, enc.newest_ns, enc.chain
        self._incoming.append(m)
        self._wake.set()

    def _dead_letter(self, m: _Msg, code: str, reason: str) -> str:
        self.stats.rejected += 1
        self.stats.dead_letters.append((m.topic, reason))
        log.error("dead letter on %s (%s): %s", m.topic, code, reason)
        if self._dead_file is not None:
            self._dead_file.write(json.dumps({
                "received_ns": m.received_ns, "topic": m.topic, "code": code, "reason": reason,
                "digest": schema.payload_digest(m.payload),
                "payload_b64": base64.b64encode(m.payload).decode(),
            }) + "\n")
        return schema.dead_letter_point(m.topic, m.payload, code, reason, m.received_ns)

    # --- batching and writing --------------------------------------------------------

    async def _batcher(self, queue: asyncio.Queue[_Batch | None], stop: asyncio.Event) -> None:
        cfg = self.config
        next_health = time.monotonic() + cfg.health_interval_s
        last = (time.monotonic(), 0, 0)
        while not stop.is_set():
            msgs: list[_Msg] = []
            points = 0
            deadline: float | None = None
            while points < cfg.batch_points and not stop.is_set():
                while self._incoming and points < cfg.batch_points:
                    m = self._incoming.popleft()
                    msgs.append(m)
                    points += max(m.points, 1)
                    if deadline is None:
                        deadline = time.monotonic() + cfg.batch_wait_s
                now = time.monotonic()
                # Past its deadline a batch goes out only once the writer can start it:
                # while every write slot is busy (a backlog) it keeps filling instead of
                # queueing as a small batch, and InfluxDB gets fewer, fuller writes.
                if deadline is not None and now >= deadline and self._writer_ready(queue):
                    break
                if deadline is None and now >= next_health:
                    break
                if deadline is None:
                    timeout = next_health - now
                elif now < deadline:
                    timeout = deadline - now
                else:  # waiting for a write slot: a finished write wakes us
                    timeout = cfg.batch_wait_s
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=max(timeout, 0.001))
                except TimeoutError:
                    pass
            extra: list[str] = []
            now = time.monotonic()
            if now >= next_health:
                extra.append(self.health_line(last))
                last = (now, self.stats.messages, self.stats.points)
                next_health = now + cfg.health_interval_s
            if msgs or extra:
                await queue.put(_Batch(msgs, extra))
        await queue.put(None)

    def _writer_ready(self, queue: asyncio.Queue[_Batch | None]) -> bool:
        """True when a batch handed over now would be written at once."""
        return queue.empty() and self._writes_inflight < self.config.write_concurrency

    async def _write_retrying(self, chunks: dict[str, list[bytes]],
                              give_up: asyncio.Event) -> None:
        """Write ``chunks`` (line-protocol bodies per retention policy) until accepted;
        raise InfluxError if refused for good (4xx) or if ``give_up`` (the stop event)
        is set while InfluxDB is unreachable."""
        for rp, parts in chunks.items():
            if parts:
                await self._write_rp_retrying(b"\n".join(parts), rp, give_up)

    async def _write_rp_retrying(self, body: bytes, rp: str, give_up: asyncio.Event) -> None:
        delay = 0.1
        while True:
            try:
                t0 = time.perf_counter()
                await self.influx.write_body(body, rp=rp)
                self.stats.last_write_ms = (time.perf_counter() - t0) * 1000
                return
            except InfluxError as exc:
                self.stats.last_error = str(exc)
                if not exc.retryable:
                    raise
                self.stats.write_retries += 1
                if "database not found" in str(exc) or "retention policy not found" in str(exc):
                    # Dropped behind our back (or a fresh InfluxDB): set it up again.
                    try:
                        await retention.ensure(self.influx, self.config.retention_cfg)
                    except InfluxError:
                        pass
                if give_up.is_set():
                    raise
                log.warning("InfluxDB write failed, retrying in %.1fs: %s", delay, exc)
                try:
                    await asyncio.wait_for(give_up.wait(), delay * (0.5 + random.random()))
                except TimeoutError:
                    pass
                delay = min(delay * 2, self.config.retry_max_s)

    async def _write_batch(self, batch: _Batch, give_up: asyncio.Event) -> None:
        dead = [self._dead_letter(m, *m.dead) for m in batch.msgs if m.dead]
        own = _line_chunks(dead + batch.extra_lines)
        chunks: dict[str, list[bytes]] = {}
        for m in batch.msgs:
            for rp, body in m.bodies.items():
                chunks.setdefault(rp, []).append(body)
        for rp, parts in own.items():
            chunks.setdefault(rp, []).extend(parts)
        try:
            await self._write_retrying(chunks, give_up)
        except InfluxError as exc:
            if exc.retryable:
                raise
            # Refused for good: find the message(s) at fault, one write each, and
            # dead-letter them; the others are (re)written, idempotently.
            self.stats.write_errors += 1
            for m in batch.msgs:
                if not m.bodies:
                    continue
                try:
                    await self._write_retrying(
                        {rp: [body] for rp, body in m.bodies.items()}, give_up)
                except InfluxError as exc2:
                    if exc2.retryable:
                        raise
                    # Keep what was refused (the points) for the record.
                    m.payload = b"\n".join(m.bodies.values())
                    m.bodies = {}
                    m.points = m.samples = 0
                    await self._write_retrying(
                        _line_chunks([self._dead_letter(m, "influx_rejected", str(exc2))]),
                        give_up)
            try:
                await self._write_retrying(own, give_up)
            except InfluxError as exc3:
                if exc3.retryable:
                    raise
                # Our own records refused: log, never hold the stream for them.
                log.error("dead-letter/health points refused: %s", exc3)
        if self._dead_file is not None and dead:
            self._dead_file.flush()
            os.fsync(self._dead_file.fileno())

    async def _writer(self, queue: asyncio.Queue[_Batch | None], stop: asyncio.Event) -> None:
        """Up to ``write_concurrency`` batch writes in flight (InfluxDB overlaps their WAL
        syncs); acks still go out strictly in arrival order, each batch after its own
        points and every earlier batch's are stored."""
        slots = asyncio.Semaphore(self.config.write_concurrency)
        previous_done = asyncio.Event()
        previous_done.set()
        abandoned = _Abandoned()
        inflight: set[asyncio.Task[None]] = set()
        while True:
            batch = await queue.get()
            if batch is None:
                break
            await slots.acquire()
            self._writes_inflight += 1
            done = asyncio.Event()
            task = asyncio.create_task(
                self._write_then_ack(batch, stop, previous_done, done, slots, abandoned))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            previous_done = done
        await asyncio.gather(*inflight)
        if abandoned.count:
            log.warning("stopped with %d message(s) unacknowledged: the broker keeps them "
                        "for the next run", abandoned.count)

    async def _write_then_ack(self, batch: _Batch, stop: asyncio.Event,
                              previous_done: asyncio.Event, done: asyncio.Event,
                              slots: asyncio.Semaphore, abandoned: _Abandoned) -> None:
        assert self._mqtt is not None
        try:
            try:
                if abandoned.any():
                    raise InfluxError("an earlier batch was abandoned")
                await self._write_batch(batch, stop)
            except InfluxError:
                # Only when stopping with InfluxDB unreachable: ack nothing from here on
                # (the broker redelivers on the next connection).
                abandoned.count += len(batch.msgs)
                return
            await previous_done.wait()
            if abandoned.any():
                abandoned.count += len(batch.msgs)
                return
            # Acks in arrival order (MQTT-4.6.0-2), after the points are stored.
            now_mono = time.monotonic()
            newest = 0
            for m in batch.msgs:
                if self._mqtt.ack(m.mid, m.qos, m.generation):
                    self.stats.acks += 1
                else:
                    self.stats.acks_dropped += 1
                self.stats.messages += 1
                self.stats.points += m.samples
                self.stats.lines += m.points
                newest = max(newest, m.newest_ns)
            self.stats.batches += 1
            # Stored (or, refused by InfluxDB for good, dead-lettered: republishing
            # cannot change that): the gateways may free what these messages carried.
            for m in batch.msgs:
                if m.chain is not None:
                    self.watermarks.stored(m.chain)
            self._publish_watermarks()
            if batch.msgs:
                self.stats.last_ack_latency_s = now_mono - batch.msgs[0].received_mono
            if newest:
                self.stats.last_data_lag_s = (time.time_ns() - newest) / 1e9
        finally:
            done.set()
            slots.release()
            self._writes_inflight -= 1
            self._wake.set()  # a batch held past its deadline may go now

    def _publish_watermarks(self) -> None:
        """Retained, QoS 1; what cannot go out now (no connection) stays dirty."""
        assert self._mqtt is not None
        for key in sorted(self.watermarks.dirty):
            if not self._mqtt.publish(watermark.topic(*key),
                                      self.watermarks.payload(key, self.client_id),
                                      qos=1, retain=True):
                return
            self.watermarks.dirty.discard(key)

    def health_line(self, last: tuple[float, int, int]) -> str:
        """A ``pipeline_health`` point: counters, rates since the last one, lag."""
        now = time.monotonic()
        t_last, msgs_last, pts_last = last
        dt = max(now - t_last, 1e-6)
        s = self.stats
        conn = self._mqtt.state if self._mqtt else None
        fields: dict[str, lineproto.FieldValue] = {
            "messages_total": s.messages, "points_total": s.points, "lines_total": s.lines,
            "dead_letters_total": s.rejected, "batches_total": s.batches,
            "write_retries_total": s.write_retries, "write_errors_total": s.write_errors,
            "acks_dropped_total": s.acks_dropped,
            "reconnects_total": conn.reconnects if conn else 0,
            "msg_rate": (s.messages - msgs_last) / dt, "point_rate": (s.points - pts_last) / dt,
            "data_lag_s": s.last_data_lag_s, "ack_latency_s": s.last_ack_latency_s,
            "write_ms": s.last_write_ms, "backlog_messages": len(self._incoming),
            "connected": bool(conn and conn.connected),
            "uptime_s": now - self._started_mono,
        }
        return lineproto.point(schema.PIPELINE_HEALTH,
                               {"ingester": self.client_id, "group": self.config.share_group},
                               fields, time.time_ns())

    # --- run -------------------------------------------------------------------------

    async def _setup_schema(self, stop: asyncio.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                await retention.ensure(self.influx, self.config.retention_cfg)
                return
            except InfluxError as exc:
                if not exc.retryable:
                    raise
                log.warning("InfluxDB not ready for schema setup, retrying: %s", exc)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, self.config.retry_max_s)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Ingest until ``stop``; ``ready`` is set once every subscription is granted."""
        cfg = self.config
        self._wake = asyncio.Event()
        self._mqtt = AsyncPahoClient(
            BrokerOptions(self.broker_host, self.broker_port, self.username, self.password,
                          cfg.tls),
            self.client_id, subscriptions(cfg.share_group), self._on_message,
            receive_maximum=cfg.receive_maximum)
        if cfg.dead_letter_file is not None:
            cfg.dead_letter_file.parent.mkdir(parents=True, exist_ok=True)
            self._dead_file = cfg.dead_letter_file.open("a", encoding="utf-8")
        if cfg.setup_schema:
            await self._setup_schema(stop)
        queue: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=cfg.write_queue)
        stop_mqtt = asyncio.Event()
        mqtt_task = asyncio.create_task(self._mqtt.run(stop_mqtt))
        batcher = asyncio.create_task(self._batcher(queue, stop))
        writer = asyncio.create_task(self._writer(queue, stop))

        async def _ready() -> None:
            assert self._mqtt is not None
            await self._mqtt.state.subscribed.wait()
            if ready is not None:
                ready.set()

        async def _wake_on_stop() -> None:
            # The batcher sleeps until a message or its next health point; wake it.
            await stop.wait()
            self._wake.set()

        ready_task = asyncio.create_task(_ready())
        waker = asyncio.create_task(_wake_on_stop())
        try:
            # Normal end: stop is set, the batcher hands over its last batch and the
            # writer drains the queue (one write attempt each), acking while the broker
            # connection is still up. Any task failing ends the run with its error.
            pending = {mqtt_task, batcher, writer}
            while not writer.done():
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    exc = t.exception()
                    if exc is not None:
                        raise exc
                if mqtt_task in done:
                    raise RuntimeError("MQTT client stopped unexpectedly")
        finally:
            for t in (batcher, writer, ready_task, waker):
                t.cancel()
            stop_mqtt.set()
            await asyncio.gather(mqtt_task, batcher, writer, ready_task, waker,
                                 return_exceptions=True)
            if self._dead_file is not None:
                self._dead_file.close()
                self._dead_file = None
