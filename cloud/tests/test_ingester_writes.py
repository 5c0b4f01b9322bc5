"""The ingester's write path without services: each message is encoded once on arrival
and a batch goes out as one request per retention policy holding those bodies; a message
InfluxDB refuses for good is found, dead-lettered with its points, and the rest stored."""

from __future__ import annotations

import asyncio
import json

import paho.mqtt.client as mqtt
from conftest import t0_ns, telemetry

from fieldrig_cloud.influx import InfluxError
from fieldrig_cloud.ingester import Ingester, _Batch

BASE = "fieldrig/v1/lab-1/rig-a"


class FakeInflux:
    """Records each /write body; refuses (400) a ``raw`` body that holds ``refuse``."""

    def __init__(self, refuse: bytes | None = None) -> None:
        self.refuse = refuse
        self.writes: list[tuple[str | None, bytes]] = []

    async def write_body(self, body: bytes, rp: str | None = None) -> None:
        if rp == "raw" and self.refuse is not None and self.refuse in body:
            raise InfluxError("write rejected (400): field type conflict", 400)
        self.writes.append((rp, body))


def message(topic: str, payload: dict[str, object] | bytes, mid: int) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(mid=mid, topic=topic.encode())
    msg.payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    msg.qos = 1
    return msg


def batch_of(ing: Ingester, msgs: list[mqtt.MQTTMessage]) -> _Batch:
    for m in msgs:
        ing._on_message(m, 1)
    return _Batch(list(ing._incoming), [])


def test_a_batch_is_one_write_per_retention_policy_of_whole_message_bodies() -> None:
    fake = FakeInflux()
    ing = Ingester("localhost", 1883, fake)  # type: ignore[arg-type]
    t0 = t0_ns()
    batch = batch_of(ing, [
        message(f"{BASE}/telemetry", telemetry("rig-a", range(0, 3), t0), 1),
        message(f"{BASE}/events", {"schema": 1, "event": "short", "time_ns": t0}, 2),
        message(f"{BASE}/telemetry", b"not json", 3),
        message(f"{BASE}/telemetry", telemetry("rig-a", range(3, 5), t0), 4),
    ])
    assert [m.samples for m in batch.msgs] == [3, 0, 0, 2]
    assert batch.msgs[3].newest_ns == t0 + 4 * 100_000_000
    asyncio.run(ing._write_batch(batch, asyncio.Event()))
    by_rp = dict(fake.writes)
    assert sorted(by_rp) == ["keep", "raw"] and len(fake.writes) == 2
    raw_lines = by_rp["raw"].split(b"\n")
    assert [ln.split(b" ")[1].split(b",")[0] for ln in raw_lines] == [
        b"seq=%di" % k for k in range(5)]
    keep = by_rp["keep"].decode()
    assert keep.startswith("event,") and "\ndead_letter," in keep
    assert ing.stats.rejected == 1


def test_a_refused_message_is_dead_lettered_with_its_points_and_the_rest_stored() -> None:
    t0 = t0_ns()
    bad = telemetry("rig-a", range(10, 12), t0)
    bad["samples"][0]["cell_voltage_v"] = 1e300  # stands in for what InfluxDB refuses
    fake = FakeInflux(refuse=b"1e+300")
    ing = Ingester("localhost", 1883, fake)  # type: ignore[arg-type]
    batch = batch_of(ing, [
        message(f"{BASE}/telemetry", telemetry("rig-a", range(0, 2), t0), 1),
        message(f"{BASE}/telemetry", bad, 2),
    ])
    asyncio.run(ing._write_batch(batch, asyncio.Event()))
    stored = b"\n".join(body for rp, body in fake.writes if rp == "raw")
    assert stored.count(b"cell_sample,") == 2 and b"seq=10i" not in stored
    [dead] = [body for rp, body in fake.writes if rp == "keep"]
    assert dead.startswith(b"dead_letter,code=influx_rejected,")
    good, refused = batch.msgs
    assert (good.samples, good.points) == (2, 2)
    assert (refused.samples, refused.points, refused.bodies) == (0, 0, {})
    assert refused.payload.count(b"cell_sample,") == 2  # the refused points, for the record
    assert ing.stats.write_errors == 1 and ing.stats.rejected == 1


class FakeMqtt:
    """Acks and watermark publishes, recorded."""

    def __init__(self) -> None:
        self.acks: list[int] = []

    def ack(self, mid: int, qos: int, generation: int) -> bool:
        self.acks.append(mid)
        return True

    def publish(self, topic: str, payload: str, qos: int = 1, retain: bool = False) -> bool:
        return True


class GatedInflux(FakeInflux):
    """Each write waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = 0

    async def write_body(self, body: bytes, rp: str | None = None) -> None:
        self.started += 1
        await self.gate.wait()
        await super().write_body(body, rp)


def test_a_batch_past_its_deadline_keeps_filling_while_every_write_slot_is_busy() -> None:
    """Draining a backlog, batches must not be cut at batch_wait into small writes that
    queue behind a busy writer: the batch grows (up to batch_points) until a write slot
    frees, then goes out whole; acks stay in arrival order."""
    from fieldrig_cloud.ingester import IngestConfig

    async def scenario() -> tuple[list[int], list[int], int]:
        fake = GatedInflux()
        ing = Ingester("localhost", 1883, fake,  # type: ignore[arg-type]
                       config=IngestConfig(batch_points=2000, batch_wait_s=0.01,
                                           write_concurrency=1, health_interval_s=3600))
        mq = FakeMqtt()
        ing._mqtt = mq  # type: ignore[assignment]
        queue: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=2)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(ing._batcher(queue, stop)),
                 asyncio.create_task(ing._writer(queue, stop))]
        t0 = t0_ns()

        def feed(mid: int) -> None:
            ing._on_message(message(f"{BASE}/telemetry",
                                    telemetry("rig-a", range(mid * 100, mid * 100 + 100), t0),
                                    mid), 1)

        feed(1)
        while fake.started < 1:  # the first batch is written at its deadline
            await asyncio.sleep(0.005)
        for mid in (2, 3, 4):
            feed(mid)
            await asyncio.sleep(0.03)  # each past batch_wait_s while the slot is busy
        held = fake.started
        fake.gate.set()
        while len(fake.writes) < 2:
            await asyncio.sleep(0.005)
        stop.set()
        ing._wake.set()
        await asyncio.gather(*tasks)
        sizes = [body.count(b"\n") + 1 for _, body in fake.writes]
        return sizes, mq.acks, held

    sizes, acks, started_while_busy = asyncio.run(scenario())
    assert started_while_busy == 1
    assert sizes == [100, 300]
    assert acks == [1, 2, 3, 4]
