"""Ingester: MQTT v5 telemetry -> InfluxDB points.

Subscribes through a shared subscription so several ingesters split the load, and
keeps a persistent session (clean start off, long session expiry) so QoS 1
messages queued while it is down are delivered when it returns.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fieldrig_cloud import schema
from fieldrig_cloud.influx import InfluxError, InfluxHttp

log = logging.getLogger("fieldrig.ingester")

TELEMETRY_FILTER = "$share/fieldrig-ingest/fieldrig/v1/+/+/telemetry"


@dataclass(slots=True)
class IngestStats:
    messages: int = 0
    points: int = 0
    rejected: int = 0
    write_retries: int = 0
    last_error: str = ""
    dead_letters: list[tuple[str, str]] = field(default_factory=list)


class Ingester:
    def __init__(self, broker_host: str, broker_port: int, influx: InfluxHttp,
                 client_id: str = "fieldrig-ingester-1", username: str | None = None,
                 password: str | None = None) -> None:
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.influx = influx
        self.client_id = client_id
        self.username = username
        self.password = password
        self.stats = IngestStats()

    async def _write_with_retry(self, lines: list[str], stop: asyncio.Event) -> None:
        delay_s = 0.1
        while True:
            try:
                await self.influx.write_lines(lines)
                return
            except InfluxError as exc:
                self.stats.write_retries += 1
                self.stats.last_error = str(exc)
                log.warning("InfluxDB write failed, retrying in %.1fs: %s", delay_s, exc)
                if stop.is_set():
                    raise
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 10.0)

    def handle_payload(self, topic: str, raw: bytes) -> list[str]:
        """Lines for one message, or [] after recording it as a dead letter."""
        try:
            return schema.telemetry_points(json.loads(raw))
        except (ValueError, schema.PayloadError) as exc:
            self.stats.rejected += 1
            self.stats.dead_letters.append((topic, str(exc)))
            log.error("dead letter on %s: %s", topic, exc)
            return []

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        connect_props = Properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = 7 * 24 * 3600
        async with aiomqtt.Client(
            self.broker_host,
            self.broker_port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect_props,
            username=self.username,
            password=self.password,
        ) as client:
            await client.subscribe(TELEMETRY_FILTER, qos=1)
            if ready is not None:
                ready.set()
            messages = client.messages.__aiter__()
            while not stop.is_set():
                try:
                    msg = await asyncio.wait_for(messages.__anext__(), timeout=0.2)
                except TimeoutError:
                    continue
                raw = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
                lines = self.handle_payload(str(msg.topic), raw)
                self.stats.messages += 1
                if lines:
                    await self._write_with_retry(lines, stop)
                    self.stats.points += len(lines)
