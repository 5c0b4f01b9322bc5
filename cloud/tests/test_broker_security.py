"""Broker security against a real Mosquitto running the generated passwd/ACL/TLS files:
gateways publish only their own rigs, only operators command, anonymous is refused,
TLS works with the generated CA (and only with it)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import InProcessIngester, count_seq, t0_ns, telemetry, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from fieldrig_cloud import broker
from fieldrig_cloud.broker import Fleet, Gateway
from fieldrig_hil.services import InfluxDB, Mosquitto, free_port

FLEET = Fleet(gateways=[Gateway("lab-1", "gw-1", ("rig-a", "rig-b")),
                        Gateway("lab-1", "gw-2", ("rig-c",))],
              operators=["alice"], ingesters=["ing-1"])


def test_password_hash_matches_mosquitto_format() -> None:
    h = broker.hash_password("s3cret", salt=b"0123456789ab")
    assert h.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert broker.verify_password("s3cret", h) and not broker.verify_password("other", h)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd missing")
def test_verify_accepts_hashes_written_by_mosquitto_passwd(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(f), "u", "pa:ss wörd"], check=True)
    _, encoded = f.read_text().strip().split(":", 1)
    assert broker.verify_password("pa:ss wörd", encoded)
    assert not broker.verify_password("pa:ss word", encoded)


def test_acl_text_grants_only_own_rigs() -> None:
    acl = broker.acl_text(FLEET)
    gw1 = acl.split("user gw.lab-1.gw-1\n")[1].split("\n\n")[0].splitlines()
    assert "topic readwrite fieldrig/v1/lab-1/rig-a/telemetry" in gw1  # + witness read
    assert "topic write fieldrig/v1/lab-1/rig-a/status" in gw1
    # Actuator state from the gateway's status polls: its own rigs', write only.
    assert "topic write fieldrig/v1/lab-1/rig-a/actuators" in gw1
    assert "topic write fieldrig/v1/lab-1/rig-b/actuators" in gw1
    assert "topic read fieldrig/v1/lab-1/rig-b/cmd" in gw1
    assert not any("rig-c" in ln or (ln.endswith("/cmd") and "write" in ln) for ln in gw1)
    assert "topic write fieldrig/v1/+/+/cmd" in acl.split("user op.alice\n")[1]
    assert Fleet.parse_gateway("lab-1/gw-9:r1,r2") == Gateway("lab-1", "gw-9", ("r1", "r2"))


def test_generate_keeps_existing_passwords_and_ca(tmp_path: Path) -> None:
    first = broker.generate(tmp_path, FLEET)
    ca = (tmp_path / "ca.crt").read_bytes()
    bigger = Fleet(FLEET.gateways, ["alice", "bob"], FLEET.ingesters)
    second = broker.generate(tmp_path, bigger, existing=first.passwords)
    assert second.passwords["op.alice"] == first.passwords["op.alice"]
    assert "op.bob" in second.passwords and (tmp_path / "ca.crt").read_bytes() == ca
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600


class Conn:
    """A paho client in its own network thread; records CONNACK, SUBACK, PUBACK, messages."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None,
                 ca: Path | None = None, client_id: str = "") -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        if user is not None:
            self.c.username_pw_set(user, password)
        if ca is not None:
            self.c.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.connack: Any = None
        self.subacks: dict[int, list[Any]] = {}
        self.pubacks: dict[int, Any] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.c.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, rcs)
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc)
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        wait_until(lambda: self.connack is not None, 10, "CONNACK", 0.02)

    def subscribe(self, flt: str) -> list[Any]:
        _, mid = self.c.subscribe(flt, qos=1)
        wait_until(lambda: mid in self.subacks, 10, "SUBACK", 0.02)
        return self.subacks[mid]

    def publish(self, topic: str, payload: bytes = b"x") -> Any:
        info = self.c.publish(topic, payload, qos=1)
        wait_until(lambda: info.mid in self.pubacks, 10, "PUBACK", 0.02)
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Mosquitto, int, broker.BrokerSecurity]]:
    sec = broker.generate(tmp_path / "sec", FLEET)
    tls_port = free_port()
    mq = Mosquitto(tmp_path / "mq", extra_config=sec.config_lines(tls_port, "127.0.0.1"),
                   allow_anonymous=False).start()
    try:
        wait_until(lambda: _port_open(tls_port), 10, "TLS listener")
        yield mq, tls_port, sec
    finally:
        mq.stop()


def _port_open(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.integration
def test_anonymous_and_wrong_passwords_are_refused(
        secured: tuple[Mosquitto, int, broker.BrokerSecurity]) -> None:
    mq, tls_port, sec = secured
    for port, ca in ((mq.port, None), (tls_port, sec.ca_file)):
        anon = Conn(port, ca=ca)
        assert anon.connack.is_failure and "authori" in str(anon.connack).lower()
        anon.close()
        wrong = Conn(port, "gw.lab-1.gw-1", "not-the-password", ca=ca)
        assert wrong.connack.is_failure
        wrong.close()
        ok = Conn(port, "gw.lab-1.gw-1", sec.passwords["gw.lab-1.gw-1"], ca=ca)
        assert not ok.connack.is_failure
        ok.close()


@pytest.mark.integration
def test_gateway_publishes_only_its_own_rigs_and_never_commands(
        secured: tuple[Mosquitto, int, broker.BrokerSecurity]) -> None:
    _, tls_port, sec = secured
    pw = sec.passwords
    ca = sec.ca_file

    def conn(user: str, cid: str) -> Conn:
        return Conn(tls_port, user, pw[user], ca, cid)

    # Listeners that never publish anything forbidden themselves (Mosquitto drops the
    # connection of a client whose publish it denies).
    ingest = conn("ingest.ing-1", "ingest-acl")
    assert not ingest.subscribe("$share/g/fieldrig/v1/#")[0].is_failure
    gw1_cmd = conn("gw.lab-1.gw-1", "gw1-cmd")
    gw2_cmd = conn("gw.lab-1.gw-2", "gw2-cmd")
    assert not gw1_cmd.subscribe("fieldrig/v1/lab-1/rig-a/cmd")[0].is_failure
    # Mosquitto grants this subscription but checks "read" on every delivery: gw-1
    # must never receive gw-2's rig commands (asserted below).
    gw1_cmd.subscribe("fieldrig/v1/lab-1/rig-c/cmd")
    assert not gw2_cmd.subscribe("fieldrig/v1/lab-1/rig-c/cmd")[0].is_failure
    # The edge's delivery witness reads back its own rigs' streams, not other gateways'.
    gw1_witness = conn("gw.lab-1.gw-1", "gw1-witness")
    gw1_witness.subscribe("fieldrig/v1/lab-1/+/telemetry")
    gw1_witness.subscribe("fieldrig/v1/lab-1/+/events")

    forbidden = [
        ("gw.lab-1.gw-1", "fieldrig/v1/lab-1/rig-c/telemetry"),  # gw-2's rig
        ("gw.lab-1.gw-1", "fieldrig/v1/lab-1/rig-c/actuators"),
        ("gw.lab-1.gw-1", "fieldrig/v1/lab-2/rig-a/telemetry"),  # same rig id, other site
        ("gw.lab-1.gw-1", "fieldrig/v1/lab-1/rig-a/cmd"),        # commands: operators only
        ("gw.lab-1.gw-2", "fieldrig/v1/lab-1/rig-a/cmd"),
        ("gw.lab-1.gw-1", "fieldrig/v1/lab-1/gateway/gw-2/status"),
        ("ingest.ing-1", "fieldrig/v1/lab-1/rig-a/telemetry"),  # ingesters only read
    ]
    for k, (user, topic) in enumerate(forbidden):
        c = conn(user, f"forbidden-{k}")
        rc = c.publish(topic, b"forbidden")
        assert rc.is_failure and rc.value == 135, (topic, rc)  # v5 PUBACK: not authorized
        c.close()
    # The broker answered each forbidden PUBLISH after routing it; anything published
    # after that reaches a subscriber behind it, so once the markers are in, a leaked
    # forbidden message would be too.
    for user, topic in [("gw.lab-1.gw-1", "fieldrig/v1/lab-1/rig-b/telemetry"),
                        ("gw.lab-1.gw-1", "fieldrig/v1/lab-1/rig-b/actuators"),
                        ("gw.lab-1.gw-2", "fieldrig/v1/lab-1/rig-c/events"),
                        ("gw.lab-1.gw-1", "fieldrig/v1/lab-1/gateway/gw-1/health")]:
        c = conn(user, "marker")
        assert not c.publish(topic, b"marker").is_failure
        c.close()
    op = conn("op.alice", "alice")
    assert not op.publish("fieldrig/v1/lab-1/rig-c/cmd", b"op-cmd-c").is_failure
    assert not op.publish("fieldrig/v1/lab-1/rig-a/cmd", b"op-cmd").is_failure
    wait_until(lambda: sum(p == b"marker" for _, p in ingest.messages) == 4, 10, "markers")
    wait_until(lambda: ("fieldrig/v1/lab-1/rig-a/cmd", b"op-cmd") in gw1_cmd.messages, 10,
               "operator command at the gateway")
    wait_until(lambda: ("fieldrig/v1/lab-1/rig-c/cmd", b"op-cmd-c") in gw2_cmd.messages, 10,
               "operator command at the other gateway")
    wait_until(lambda: ("fieldrig/v1/lab-1/rig-b/telemetry", b"marker")
               in gw1_witness.messages, 10, "witness read-back")
    assert ("fieldrig/v1/lab-1/rig-c/events", b"marker") not in gw1_witness.messages
    received = ingest.messages + gw1_cmd.messages + gw2_cmd.messages + gw1_witness.messages
    assert not any(p == b"forbidden" for _, p in received)
    assert not any(p == b"op-cmd-c" for _, p in gw1_cmd.messages)
    for c in (ingest, gw1_cmd, gw2_cmd, gw1_witness, op):
        c.close()


@pytest.mark.integration
def test_tls_needs_the_generated_ca(secured: tuple[Mosquitto, int, broker.BrokerSecurity],
                                    tmp_path: Path) -> None:
    _, tls_port, sec = secured
    other = tmp_path / "other"
    other.mkdir()
    broker.make_ca(other, "some other CA")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set("op.alice", sec.passwords["op.alice"])
    c.tls_set(ca_certs=str(other / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect("127.0.0.1", tls_port)
    # And with the right CA, a full TLS handshake and CONNACK.
    ok = Conn(tls_port, "op.alice", sec.passwords["op.alice"], sec.ca_file)
    assert not ok.connack.is_failure
    ok.close()


def test_ingester_stores_over_tls_with_its_credentials(
        secured: tuple[Mosquitto, int, broker.BrokerSecurity], influxdb: InfluxDB) -> None:
    from fieldrig_cloud.mqtt_async import TlsOptions

    _, tls_port, sec = secured
    ing = InProcessIngester("127.0.0.1", tls_port, influxdb.url,
                            tls=TlsOptions(str(sec.ca_file)))
    ing.ingester.username = "ingest.ing-1"
    ing.ingester.password = sec.passwords["ingest.ing-1"]
    ing.start()
    gw = Conn(tls_port, "gw.lab-1.gw-1", sec.passwords["gw.lab-1.gw-1"], sec.ca_file, "gw1")
    try:
        import json
        t0 = t0_ns()
        for k in range(5):
            rc = gw.publish("fieldrig/v1/lab-1/rig-a/telemetry", json.dumps(
                telemetry("rig-a", range(k * 100, k * 100 + 100), t0)).encode())
            assert not rc.is_failure
        wait_until(lambda: count_seq(influxdb, "rig-a")[0] == 500, 30, "samples over TLS")
        time.sleep(0.2)
    finally:
        gw.close()
        ing.stop()
    assert count_seq(influxdb, "rig-a") == (500, 500, 0, 499)
