"""Shared helpers for the gateway tests: config builder, a recording MQTT subscriber,
end-to-end sequence accounting, an MQTT command requester. (Not named conftest: the
suite also collects cloud/tests, which has its own.)"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fieldrig_edge.config import BrokerConfig, GatewayConfig, RigConfig, SpoolConfig

REPLIES = "ops/replies/test"


def gateway_config(tmp_path: Path, broker: Any, rigs: list[tuple[str, int]],
                   limits: dict[str, dict[str, tuple[float, float]]] | None = None,
                   **opts: Any) -> GatewayConfig:
    """rigs: (rig id, TCP port on 127.0.0.1); limits: rig id -> command limits."""
    # No ingester in most gateway tests: rows leave on the broker's PUBACK (tests with
    # an ingester pass confirm_stored=True). No status polls either: the command tests
    # count what reaches the rig (tests of the actuator state pass actuator_poll_s).
    defaults: dict[str, Any] = {"batch_wait_s": 0.05, "health_interval_s": 1.0,
                                "reconnect_max_s": 0.5, "command_timeout_s": 2.0,
                                "shutdown_flush_s": 5.0, "confirm_stored": False,
                                "actuator_poll_s": 0.0}
    defaults.update(opts)
    return GatewayConfig(
        site="lab-1", gateway_id="gw-1",
        broker=BrokerConfig(broker.host, broker.port),
        rigs=[RigConfig(r, f"tcp://127.0.0.1:{p}", cell=f"cell-{r}", run="run-1",
                        limits=(limits or {}).get(r, {})) for r, p in rigs],
        spool=SpoolConfig(tmp_path / "spool.sqlite"), **defaults)


@dataclass
class Delivery:
    topic: str
    payload: dict[str, Any]
    dup: bool
    retain: bool
    correlation: bytes | None
    t: float


@dataclass
class Recorder:
    """A persistent-session MQTT v5 subscriber that records everything it receives."""

    host: str
    port: int
    topic: str = "fieldrig/v1/#"
    client_id: str = "test-recorder"
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Recorder:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.ready = threading.Event()

        def on_connect(client: mqtt.Client, *_a: Any) -> None:
            client.subscribe(self.topic, qos=1)

        def on_subscribe(*_a: Any) -> None:
            self.ready.set()

        def on_message(_c: mqtt.Client, _u: Any, m: mqtt.MQTTMessage) -> None:
            try:
                payload = json.loads(m.payload)
            except ValueError:
                payload = {"raw": m.payload.decode(errors="replace")}
            corr = getattr(m.properties, "CorrelationData", None)
            with self.lock:
                self.deliveries.append(Delivery(m.topic, payload, bool(m.dup), bool(m.retain),
                                                corr, time.monotonic()))

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_message = on_message
        c.reconnect_delay_set(0.05, 0.5)
        c.connect(self.host, self.port, clean_start=False, properties=props)
        c.loop_start()
        self.client = c
        assert self.ready.wait(10), "recorder did not subscribe"
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def of(self, leaf: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.topic.endswith("/" + leaf)]

    def samples(self, include_dup: bool = False) -> Counter[tuple[str, int, int]]:
        """(rig, boot, seq) -> deliveries. Without ``include_dup``, only deliveries the
        broker did not flag DUP: a DUP redelivery is the broker's own at-least-once to
        this subscriber; a second non-DUP copy is the gateway publishing a sample twice."""
        c: Counter[tuple[str, int, int]] = Counter()
        for d in self.of("telemetry"):
            if d.dup and not include_dup:
                continue
            for s in d.payload["samples"]:
                c[(d.payload["rig"], d.payload["boot"], s["seq"])] += 1
        return c

    def sample_rows(self) -> dict[tuple[str, int, int], dict[str, Any]]:
        out = {}
        for d in self.of("telemetry"):
            for s in d.payload["samples"]:
                out[(d.payload["rig"], d.payload["boot"], s["seq"])] = s
        return out

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [d.payload for d in self.of("events") if d.payload.get("event") == name or
                name is None]


def assert_exactly_once(rec: Recorder, expected: dict[tuple[str, int], set[int]]) -> None:
    """Every expected (rig, boot, seq) delivered, none twice, nothing unexpected."""
    got = rec.samples()
    want = {(rig, boot, s) for (rig, boot), seqs in expected.items() for s in seqs}
    missing = want - set(rec.samples(include_dup=True))
    dups = {k: n for k, n in got.items() if n > 1}
    extra = set(got) - want
    assert not missing, f"{len(missing)} samples lost, e.g. {sorted(missing)[:10]}"
    assert not dups, f"{len(dups)} samples published twice, e.g. {sorted(dups.items())[:10]}"
    assert not extra, f"{len(extra)} samples never produced, e.g. {sorted(extra)[:10]}"


class Requester:
    """An operator's tool: publishes command requests with v5 response topic and
    correlation data."""

    def __init__(self, host: str, port: int) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="operator",
                             protocol=mqtt.MQTTv5)
        self.c.connect(host, port)
        self.c.loop_start()

    def send(self, rig: str, payload: bytes | dict[str, Any], corr: bytes | None,
             response_topic: str | None = REPLIES) -> None:
        props = Properties(PacketTypes.PUBLISH)
        if response_topic is not None:
            props.ResponseTopic = response_topic
        if corr is not None:
            props.CorrelationData = corr
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.c.publish(f"fieldrig/v1/lab-1/{rig}/cmd", raw, qos=1, properties=props
                       ).wait_for_publish(5)

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def responses(rec: Recorder, n: int, timeout_s: float = 15) -> dict[bytes, dict[str, Any]]:
    """Responses on the REPLIES topic by correlation data, once n arrived (or timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = {d.correlation: d.payload for d in rec.of("test") if d.correlation is not None}
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)
