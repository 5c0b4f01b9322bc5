"""The operator's side of MQTT: commands with MQTT v5 request/response, following a
recipe, reading rig and gateway status.

A command goes to ``fieldrig/v1/{site}/{rig}/cmd`` (QoS 1) with a v5 *response topic*
``fieldrig/v1/{site}/{rig}/reply/{client id}`` and random *correlation data*; the gateway
validates it, forwards it to the rig and publishes the rig's reply to the response
topic with the same correlation data. The broker ACL lets only operators publish
``cmd`` and lets a gateway publish only below its own rigs' ``reply/``.

aiomqtt is enough here (no manual acks needed); the ingester uses paho directly.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fieldrig_cloud.mqtt_async import BrokerOptions

TOPIC_ROOT = "fieldrig/v1"
END_EVENTS = frozenset({"recipe_done", "recipe_complete", "recipe_aborted", "safe_state",
                        "interlock"})


class CommandError(RuntimeError):
    """The rig (or gateway) answered ok: false."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(f"{reply.get('error', 'error')}: {reply.get('detail', '')}".strip())
        self.reply = reply


def _client(broker: BrokerOptions, client_id: str) -> aiomqtt.Client:
    tls = None
    if broker.tls is not None:
        tls = aiomqtt.TLSParameters(ca_certs=broker.tls.ca_file, certfile=broker.tls.cert_file,
                                    keyfile=broker.tls.key_file, cert_reqs=ssl.CERT_REQUIRED)
    return aiomqtt.Client(broker.host, broker.port, identifier=client_id,
                          protocol=aiomqtt.ProtocolVersion.V5, username=broker.username,
                          password=broker.password, tls_params=tls)


def _raw(payload: Any) -> bytes:
    return payload if isinstance(payload, bytes) else str(payload).encode()


def command_payload(cmd: str, args: dict[str, Any]) -> bytes:
    return json.dumps({"schema": 1, "cmd": cmd, "args": args}).encode()


@dataclass(slots=True)
class FollowState:
    """What ``follow`` has seen of a running recipe."""

    step: int = -1
    cycle: int = -1
    samples: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    ended_by: str = ""


async def send_command(broker: BrokerOptions, site: str, rig: str, cmd: str,
                       args: dict[str, Any], timeout_s: float = 10.0,
                       follow: Callable[[aiomqtt.Client], Any] | None = None) -> dict[str, Any]:
    """Send one command and wait for its correlated reply; raise CommandError on
    ``ok: false`` and TimeoutError when no reply comes. With ``follow``, the same
    connection then runs ``follow(client)`` (subscriptions made before sending, so
    nothing the recipe publishes right after the reply is missed)."""
    client_id = f"fieldrig-cli-{uuid.uuid4().hex[:12]}"
    response_topic = f"{TOPIC_ROOT}/{site}/{rig}/reply/{client_id}"
    correlation = uuid.uuid4().bytes
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    # A command nobody picks up in time must not run later by surprise.
    props.MessageExpiryInterval = max(1, int(timeout_s))
    async with _client(broker, client_id) as client:
        await client.subscribe(response_topic, qos=1)
        if follow is not None:
            await client.subscribe(f"{TOPIC_ROOT}/{site}/{rig}/telemetry", qos=1)
            await client.subscribe(f"{TOPIC_ROOT}/{site}/{rig}/events", qos=1)
        await client.publish(f"{TOPIC_ROOT}/{site}/{rig}/cmd", command_payload(cmd, args),
                             qos=1, properties=props)
        async with asyncio.timeout(timeout_s):
            async for msg in client.messages:
                if str(msg.topic) != response_topic:
                    continue
                got = getattr(msg.properties, "CorrelationData", None)
                if got != correlation:
                    continue  # a late reply to an earlier request
                reply: dict[str, Any] = json.loads(_raw(msg.payload))
                if not reply.get("ok"):
                    raise CommandError(reply)
                break
        if follow is not None:
            await follow(client)
        return reply


async def follow_recipe(client: aiomqtt.Client, site: str, rig: str, state: FollowState,
                        on_update: Callable[[FollowState], None], timeout_s: float) -> None:
    """Track telemetry (step, cycle, V, I) and events until an end event or timeout."""
    deadline = time.monotonic() + timeout_s
    telemetry = f"{TOPIC_ROOT}/{site}/{rig}/telemetry"
    events = f"{TOPIC_ROOT}/{site}/{rig}/events"
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
            async for msg in client.messages:
                topic = str(msg.topic)
                try:
                    payload = json.loads(_raw(msg.payload))
                except ValueError:
                    continue
                if topic == telemetry:
                    for s in payload.get("samples", []):
                        state.samples += 1
                        state.step = max(state.step, int(s.get("step", state.step)))
                        state.cycle = max(state.cycle, int(s.get("cycle", state.cycle)))
                        state.last = s
                elif topic == events:
                    evs = payload.get("events") or [payload]
                    for ev in evs:
                        state.events.append(ev)
                        if ev.get("event") in END_EVENTS:
                            state.ended_by = str(ev["event"])
                on_update(state)
                if state.ended_by:
                    return
    except TimeoutError:
        state.ended_by = "timeout"


async def read_status(broker: BrokerOptions, site: str, wait_s: float = 1.0
                      ) -> dict[str, dict[str, Any]]:
    """Retained rig and gateway status of one site: {'rig-a': {...}, 'gateway/gw-1': {...}}."""
    out: dict[str, dict[str, Any]] = {}
    async with _client(broker, f"fieldrig-cli-{uuid.uuid4().hex[:12]}") as client:
        await client.subscribe(f"{TOPIC_ROOT}/{site}/+/status", qos=1)
        await client.subscribe(f"{TOPIC_ROOT}/{site}/gateway/+/status", qos=1)
        try:
            async with asyncio.timeout(wait_s):
                async for msg in client.messages:
                    parts = str(msg.topic).split("/")
                    key = parts[3] if len(parts) == 5 else f"gateway/{parts[4]}"
                    try:
                        out[key] = json.loads(_raw(msg.payload))
                    except ValueError:
                        out[key] = {"state": "(unreadable status)"}
        except TimeoutError:
            pass
    return out
