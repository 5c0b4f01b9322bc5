"""Gateway core: read rigs' links, map their clocks to UTC, publish to MQTT v5.

One task per rig reads frames into a queue; one publisher task batches the queue
into QoS 1 telemetry messages. Data flows one way here; commands come later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fieldrig_edge import link, topics

log = logging.getLogger("fieldrig.edge")


@dataclass(frozen=True, slots=True)
class RigConfig:
    rig: str
    host: str
    port: int
    cell: str = "cell-1"
    run: str = "run-1"


@dataclass(slots=True)
class RigHealth:
    frames: int = 0
    link_errors: int = 0
    samples: int = 0
    connected: bool = False
    last_seen_utc_ns: int = 0


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = None


@dataclass(slots=True)
class Gateway:
    site: str
    gateway_id: str
    broker: BrokerConfig
    rigs: list[RigConfig]
    batch_max: int = 200
    batch_wait_s: float = 0.2
    health: dict[str, RigHealth] = field(default_factory=dict)
    published_samples: int = 0

    def __post_init__(self) -> None:
        topics.check_id("site", self.site)
        topics.check_id("gateway", self.gateway_id)
        for r in self.rigs:
            topics.check_id("rig", r.rig)
            self.health[r.rig] = RigHealth()

    async def run(self, stop: asyncio.Event) -> None:
        queue: asyncio.Queue[tuple[RigConfig, dict[str, object]]] = asyncio.Queue()
        will = aiomqtt.Will(
            topics.gateway_topic(self.site, self.gateway_id, "status"),
            json.dumps({"schema": topics.SCHEMA_VERSION, "state": "offline"}),
            qos=1,
            retain=True,
        )
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=f"fieldrig-edge-{self.site}-{self.gateway_id}",
            protocol=aiomqtt.ProtocolVersion.V5,
            username=self.broker.username,
            password=self.broker.password,
            will=will,
        ) as client:
            await client.publish(
                topics.gateway_topic(self.site, self.gateway_id, "status"),
                json.dumps({"schema": topics.SCHEMA_VERSION, "state": "online"}),
                qos=1,
                retain=True,
            )
            readers = [asyncio.create_task(self._read_rig(r, queue, stop)) for r in self.rigs]
            try:
                await self._publish(client, queue, stop)
            finally:
                for t in readers:
                    t.cancel()
                await asyncio.gather(*readers, return_exceptions=True)

    async def _read_rig(
        self,
        rig: RigConfig,
        queue: asyncio.Queue[tuple[RigConfig, dict[str, object]]],
        stop: asyncio.Event,
    ) -> None:
        h = self.health[rig.rig]
        backoff_s = 0.05
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(rig.host, rig.port)
            except OSError:
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            backoff_s = 0.05
            h.connected = True
            decoder = link.FrameDecoder()
            # Rig uptime -> UTC: fixed at the first sample of each connection.
            utc_offset_ns: int | None = None
            try:
                while True:
                    data = await reader.read(4096)
                    if not data:
                        break
                    for packet in decoder.feed(data):
                        h.frames += 1
                        h.last_seen_utc_ns = time.time_ns()
                        if packet.msg_type != link.MSG_SAMPLE:
                            continue
                        s = link.parse_sample(packet)
                        uptime_ns = s.uptime_s * 1_000_000_000 + s.uptime_us * 1000
                        if utc_offset_ns is None:
                            utc_offset_ns = time.time_ns() - uptime_ns
                        h.samples += 1
                        await queue.put((rig, {
                            "seq": s.seq,
                            "time_ns": utc_offset_ns + uptime_ns,
                            "cell_voltage_v": s.cell_voltage_v,
                            "cell_current_ma": s.cell_current_ma,
                            "cell_temp_c": s.cell_temp_c,
                            "stack_pressure_mpa": s.stack_pressure_mpa,
                            "rig_state": s.rig_state,
                        }))
                    h.link_errors = decoder.errors
            finally:
                h.connected = False
                writer.close()

    async def _publish(
        self,
        client: aiomqtt.Client,
        queue: asyncio.Queue[tuple[RigConfig, dict[str, object]]],
        stop: asyncio.Event,
    ) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        while not (stop.is_set() and queue.empty()):
            try:
                first = await asyncio.wait_for(queue.get(), timeout=0.1)
            except TimeoutError:
                continue
            batch = [first]
            deadline = asyncio.get_running_loop().time() + self.batch_wait_s
            while len(batch) < self.batch_max:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), timeout=timeout))
                except TimeoutError:
                    break
            by_rig: dict[RigConfig, list[dict[str, object]]] = {}
            for rig, sample in batch:
                by_rig.setdefault(rig, []).append(sample)
            for rig, samples in by_rig.items():
                payload = {
                    "schema": topics.SCHEMA_VERSION,
                    "site": self.site,
                    "rig": rig.rig,
                    "cell": rig.cell,
                    "run": rig.run,
                    "gateway": self.gateway_id,
                    "samples": samples,
                }
                await client.publish(
                    topics.rig_topic(self.site, rig.rig, "telemetry"),
                    json.dumps(payload, separators=(",", ":")),
                    qos=1,
                    properties=props,
                )
                self.published_samples += len(samples)
