"""aiomqtt with the two things store-and-forward needs that it does not expose.

1. The PUBACK reason code. ``aiomqtt.Client.publish`` returns once *a* PUBACK arrived,
   whatever it says; an MQTT v5 broker refuses a message with a PUBACK of reason
   >= 0x80 (e.g. 0x87 not authorized by an ACL). Deleting the spooled copy then would
   lose data silently, so ``publish_acked`` raises ``PublishRefused`` instead; and it
   returns a success's reason, since 0x10 "no matching subscribers" means the broker
   discarded the message.
2. Manual acknowledgement of received messages (paho's ``manual_ack``) for the
   delivery witness: the witness deletes spool rows and only then acks, so a crash in
   between makes the broker redeliver (docs/edge.md, "Exactly once").

Both use aiomqtt internals (``_client``, ``_pending_call``, ``_wait_for``); the
dependency is pinned below the next major version in edge/pyproject.toml.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fieldrig_edge.config import BrokerConfig

# Refusals that a retry cannot fix: the message goes to the dead-letter table.
PERMANENT_REFUSALS = {0x87, 0x90, 0x95, 0x99}  # not authorized, bad topic, too large, format


class PublishRefused(aiomqtt.MqttError):
    def __init__(self, rc: ReasonCode) -> None:
        super().__init__(f"broker refused the message: {rc} (0x{rc.value:02x})")
        self.rc = rc

    @property
    def permanent(self) -> bool:
        return self.rc.value in PERMANENT_REFUSALS


class Client(aiomqtt.Client):
    def __init__(self, *args: Any, manual_ack: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused: dict[int, ReasonCode] = {}
        self._reasons: dict[int, int] = {}  # non-zero success reasons (0x10)
        self.session_present = False
        if manual_ack:
            self._client.manual_ack_set(True)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None = None) -> None:
        self.session_present = bool(flags.session_present)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties) -> None:
        if reason_code.is_failure:
            self._refused[mid] = reason_code
        elif reason_code.value:
            self._reasons[mid] = reason_code.value
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_acked(self, topic: str, payload: bytes | str, *, qos: int = 1,
                            retain: bool = False, properties: Properties | None = None,
                            timeout: float | None = None) -> int:
        """Publish and wait for the broker's PUBACK; raise if it refused the message.
        Returns the PUBACK's reason code: a success can still be 0x10, "no matching
        subscribers" (the broker discarded the message), which store-and-forward must
        treat as not delivered."""
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if not info.is_published():
            confirmation = asyncio.Event()
            with self._pending_call(info.mid, confirmation, self._pending_publishes):
                await self._wait_for(confirmation.wait(), timeout=timeout)
        rc = self._refused.pop(info.mid, None)
        if rc is not None:
            raise PublishRefused(rc)
        return self._reasons.pop(info.mid, 0)

    def ack(self, mid: int, qos: int) -> None:
        self._client.ack(mid, qos)


def tls_context(cfg: BrokerConfig) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls.ca_file)
    if cfg.tls.cert_file:
        ctx.load_cert_chain(cfg.tls.cert_file, cfg.tls.key_file)
    if cfg.tls.insecure_hostname:
        ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def user_property(props: Properties | None, name: str) -> str | None:
    for k, v in getattr(props, "UserProperty", None) or []:
        if k == name:
            return str(v)
    return None
