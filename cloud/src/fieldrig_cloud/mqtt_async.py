"""paho-mqtt driven by the asyncio event loop, with application-controlled acks.

Why not aiomqtt here: the ingester must acknowledge (PUBACK) a QoS 1 message only after
InfluxDB accepted its points. aiomqtt 2.5 has no manual-ack API (aiomqtt issue #345,
draft PR #346 unmerged); its workaround reaches into the private ``Client._client``.
paho-mqtt 2.x has a public one (``manual_ack_set(True)`` / ``ack(mid, qos)``) and a public
API for driving it from any event loop (``on_socket_*`` callbacks + ``loop_read`` /
``loop_write`` / ``loop_misc``), so this module is that small adapter and nothing else:
no thread, every paho callback runs in the event loop's thread.

Packet ids (``mid``) are only meaningful on the connection that delivered them: after
a reconnect the broker redelivers unacknowledged messages and may reuse ids, so an ack
for an old connection's message must be dropped, not sent. Each connection gets a
``generation`` number; ``ack`` sends only for the current one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger("fieldrig.mqtt")


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS to the broker: the CA that signed its certificate, optional client cert."""

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(slots=True)
class BrokerOptions:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: TlsOptions | None = None
    keepalive_s: int = 30


@dataclass(slots=True)
class ConnectionState:
    generation: int = 0
    connected: bool = False
    reconnects: int = 0
    last_error: str = ""
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)


MessageHandler = Callable[[mqtt.MQTTMessage, int], None]


class AsyncPahoClient:
    """A persistent-session MQTT v5 subscriber with manual acks, run by asyncio.

    ``on_message(msg, generation)`` is called in the loop thread for each PUBLISH; the
    caller later calls ``ack(msg.mid, msg.qos, generation)``.
    """

    def __init__(self, broker: BrokerOptions, client_id: str, subscriptions: list[str],
                 on_message: MessageHandler, *, session_expiry_s: int = 7 * 24 * 3600,
                 receive_maximum: int = 1000, clean_start: bool = False) -> None:
        self.broker = broker
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.clean_start = clean_start
        self.state = ConnectionState()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._misc_task: asyncio.Task[None] | None = None
        self._disconnected = asyncio.Event()
        self._subacks = 0
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5, manual_ack=True)
        if self.broker.username is not None:
            c.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls is not None:
            t = self.broker.tls
            c.tls_set(ca_certs=t.ca_file, certfile=t.cert_file, keyfile=t.key_file,
                      cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_socket_register_write
        c.on_socket_unregister_write = self._on_socket_unregister_write
        return c

    # --- paho callbacks (all in the loop thread) ---------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: ReasonCode,
                    _props: Any) -> None:
        if rc.is_failure:
            self.state.last_error = f"CONNACK refused: {rc}"
            log.error("broker refused connection: %s", rc)
            return
        self.state.generation += 1
        self.state.connected = True
        log.info("connected (session present: %s, generation %d)",
                 flags.session_present, self.state.generation)
        if self.state.generation > 1 and not flags.session_present and not self.clean_start:
            log.warning("the broker no longer had our session (expired, or restarted "
                        "without persistence): what it had queued for us is gone")
        # Subscribe on every connection, first thing, all filters in one SUBSCRIBE: a
        # kept session should already have its subscriptions, but Mosquitto 2.0 does
        # not persist *shared* ones, so after a broker restart (session present, yet no
        # subscription) the broker discards what is published before it has this
        # SUBSCRIBE (PUBACK 0x10, docs/cloud.md). Re-subscribing an existing
        # subscription replaces it without losing messages (MQTT-3.8.4-3).
        client.subscribe([(flt, 1) for flt in self.subscriptions])

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[ReasonCode],
                      _p: Any) -> None:
        bad = [c for c in codes if c.is_failure]
        if bad:
            self.state.last_error = f"SUBACK refused: {bad}"
            log.error("subscription refused: %s", bad)
            return
        self._subacks += len(codes)
        if self._subacks == len(self.subscriptions):
            log.info("subscribed to %d filter(s)", self._subacks)
            self.state.subscribed.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, rc: ReasonCode, _p: Any) -> None:
        if self.state.connected:
            log.warning("disconnected from broker: %s", rc)
        self.state.connected = False
        self._disconnected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.on_message(msg, self.state.generation)

    def _on_socket_open(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_reader(sock, self._read, sock)
        self._misc_task = self._loop.create_task(self._misc())

    def _on_socket_close(self, _c: Any, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        if self._misc_task is not None:
            self._misc_task.cancel()
            self._misc_task = None
        self._disconnected.set()

    def _on_socket_register_write(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, client.loop_write)

    def _on_socket_unregister_write(self, _c: Any, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    def _read(self, sock: Any) -> None:
        self._client.loop_read()
        # TLS may hold decrypted bytes the OS socket no longer signals as readable.
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            assert self._loop is not None
            self._loop.call_soon(self._read, sock)

    async def _misc(self) -> None:
        # Keepalive pings and timeouts.
        while self._client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            await asyncio.sleep(1.0)

    # --- public ---------------------------------------------------------------------

    def ack(self, mid: int, qos: int, generation: int) -> bool:
        """PUBACK a message if it came on the current connection; False if dropped."""
        if qos == 0 or generation != self.state.generation or not self.state.connected:
            return False
        rc = self._client.ack(mid, qos)
        return rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish(self, topic: str, payload: str, qos: int = 1, retain: bool = False) -> bool:
        """Queue a PUBLISH on the current connection; False when not connected (the
        caller keeps what it wanted to say and tries again later)."""
        if not self.state.connected:
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def _connect_once(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s
        # Bounds unacknowledged messages in flight to us, hence the ingester's memory.
        props.ReceiveMaximum = self.receive_maximum
        self._subacks = 0
        self.state.subscribed.clear()
        self._disconnected.clear()
        # Blocking TCP (+TLS) connect, bounded by paho's connect timeout; the ingester
        # has nothing else to do while it has no broker.
        self._client.connect(self.broker.host, self.broker.port,
                             keepalive=self.broker.keepalive_s,
                             clean_start=self.clean_start, properties=props)

    async def run(self, stop: asyncio.Event, backoff_max_s: float = 5.0) -> None:
        """Stay connected (reconnecting with backoff) until ``stop``; then DISCONNECT."""
        self._loop = asyncio.get_running_loop()
        delay = 0.1
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                generation_before = self.state.generation
                try:
                    self._connect_once()
                except OSError as exc:  # includes ssl.SSLError and timeouts
                    self.state.last_error = f"connect failed: {exc}"
                    log.warning("broker connect failed, retrying in %.1fs: %s", delay, exc)
                else:
                    disc = asyncio.ensure_future(self._disconnected.wait())
                    await asyncio.wait({disc, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                    disc.cancel()
                    if stop.is_set():
                        break
                    if self.state.generation != generation_before:
                        delay = 0.1  # this attempt got a session: start backoff afresh
                    self.state.reconnects += 1
                await asyncio.wait({stop_wait}, timeout=delay * (0.5 + random.random()))
                delay = min(delay * 2, backoff_max_s)
        finally:
            stop_wait.cancel()
            if self.state.connected:
                self._client.disconnect()
                # Let the DISCONNECT leave the socket before the loop goes away.
                for _ in range(20):
                    if self._disconnected.is_set():
                        break
                    await asyncio.sleep(0.01)
            self.state.connected = False
