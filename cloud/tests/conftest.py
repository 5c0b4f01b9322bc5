"""Helpers for the cloud tests: payloads as the edge publishes them (docs/architecture.md,
schema 1), a QoS 1 publisher that survives broker restarts, ingesters as real
subprocesses, and polling with a deadline."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

if TYPE_CHECKING:
    from fieldrig_hil.services import InfluxDB, Mosquitto

SITE = "lab-1"


def wait_until(check: Callable[[], bool], timeout_s: float, what: str,
               interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def t0_ns(minutes_ago: float = 30.0) -> int:
    """A recent, whole-second start time (inside every retention policy)."""
    return (time.time_ns() // 1_000_000_000 - int(minutes_ago * 60)) * 1_000_000_000


def sample(seq: int, t_ns: int, **extra: Any) -> dict[str, Any]:
    # A plausible symmetric Li cell at 10 Hz: a few mV of overpotential, 25 °C, 5 MPa.
    return {"seq": seq, "time_ns": t_ns,
            "cell_voltage_v": round(0.03 + 0.002 * math.sin(seq / 50), 6),
            "cell_current_ma": 0.5, "cell_temp_c": 25.0 + 0.01 * (seq % 7),
            "stack_pressure_mpa": 5.0, "rig_state": 1, **extra}


def telemetry(rig: str, seqs: range, start_ns: int, period_ns: int = 100_000_000,
              site: str = SITE, boot: int | None = 7, cell: str = "cell-1",
              run: str = "run-1", **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"schema": 1, "site": site, "rig": rig, "cell": cell, "run": run,
                         "gateway": "gw-1",
                         "samples": [sample(s, start_ns + s * period_ns, **extra) for s in seqs]}
    if boot is not None:
        p["boot"] = boot
    return p


# PUBACK reason 0x10: "accepted, but no matching subscribers" — a success code, yet the
# broker has discarded the message.
NO_MATCHING_SUBSCRIBERS = 0x10


@dataclass
class Publisher:
    """QoS 1 publisher for tests: ``publish`` returns only once the broker acknowledged
    the message, re-sending (a duplicate is harmless, a loss is not) across broker
    restarts.

    With ``retry_no_subscribers`` a non-retained message the broker acknowledged with
    reason 0x10 (no matching subscribers: accepted and discarded) is re-sent until a
    subscription takes it, as a store-and-forward publisher must when it relies on
    subscribers that may be (re)subscribing, e.g. the ingesters' shared subscriptions
    after a Mosquitto 2.0 restart (docs/cloud.md, "Broker restart")."""

    host: str
    port: int
    client_id: str = "test-publisher"
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    retry_no_subscribers: bool = False
    client: mqtt.Client = field(init=False)
    # Diagnostics: how many PUBACKs said 0x10 (each one a message the broker discarded).
    no_subscribers: int = field(init=False, default=0)
    _reasons: dict[int, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  protocol=mqtt.MQTTv5)
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        if self.tls_ca:
            self.client.tls_set(ca_certs=self.tls_ca)
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        # Runs in paho's thread before the message info is marked published.
        self._reasons[mid] = int(rc.value)

    def publish(self, topic: str, payload: dict[str, Any] | bytes, timeout_s: float = 60,
                retain: bool = False) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.client.is_connected():
                time.sleep(0.05)
                continue
            info = self.client.publish(topic, raw, qos=1, retain=retain)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                time.sleep(0.05)
                continue
            if info.is_published():
                reason = self._reasons.pop(info.mid, 0)
                if reason == NO_MATCHING_SUBSCRIBERS:
                    self.no_subscribers += 1
                    if self.retry_no_subscribers and not retain:
                        time.sleep(0.05)
                        continue
                return
        raise AssertionError(f"could not publish to {topic} within {timeout_s} s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher_factory() -> Iterator[Callable[..., Publisher]]:
    made: list[Publisher] = []

    def make(host: str, port: int, **kw: Any) -> Publisher:
        p = Publisher(host, port, **kw)
        made.append(p)
        wait_until(p.client.is_connected, 10, "publisher connected", 0.02)
        return p

    yield make
    for p in made:
        p.close()


@dataclass
class IngesterProcess:
    """``python -m fieldrig_cloud ingest`` as a real process (so it can be SIGKILLed)."""

    broker: str
    influx: str
    client_id: str
    workdir: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.client_id}.log"

    def start(self) -> IngesterProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "fieldrig_cloud", "ingest", "--broker", self.broker,
                "--influx", self.influx, "--client-id", self.client_id,
                "--health-interval", "1", *self.extra]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
        # Ready once its subscriptions are granted: a shared subscription that does not
        # exist yet does not queue anything.
        before = self.log.read_bytes().count(b"subscribed to")
        wait_until(lambda: self.log.read_bytes().count(b"subscribed to") > before
                   or self.proc is None or self.proc.poll() is not None, 30,
                   f"ingester {self.client_id} connected")
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code


@pytest.fixture
def ingester_factory(tmp_path: Path) -> Iterator[Callable[..., IngesterProcess]]:
    made: list[IngesterProcess] = []

    def make(broker: str, influx: str, client_id: str, *extra: str) -> IngesterProcess:
        p = IngesterProcess(broker, influx, client_id, tmp_path / "ingesters", list(extra))
        made.append(p)
        return p.start()

    yield make
    for p in made:
        if p.proc is not None:
            p.proc.kill()
            p.proc.wait()


def count_seq(influx: Any, rig: str, measurement: str = "cell_sample") -> tuple[int, int, int, int]:
    """(count, distinct, min, max) of seq for one rig, straight from InfluxDB."""
    q = (f"SELECT COUNT(seq), MIN(seq), MAX(seq) FROM {measurement} WHERE rig = '{rig}'; "
         f"SELECT COUNT(DISTINCT(seq)) FROM {measurement} WHERE rig = '{rig}'")
    import httpx

    r = httpx.post(f"{influx.url}/query", params={"db": "fieldrig", "q": q}, timeout=30)
    r.raise_for_status()
    res = r.json()["results"]
    if not res[0].get("series"):
        return (0, 0, -1, -1)
    _, n, mn, mx = res[0]["series"][0]["values"][0]
    distinct = res[1]["series"][0]["values"][0][1]
    return int(n), int(distinct), int(mn), int(mx)


class InProcessIngester:
    """An ``Ingester`` on its own event loop in a thread (for tests that need its stats)."""

    def __init__(self, host: str, port: int, influx_url: str, **kw: Any) -> None:
        import asyncio

        from fieldrig_cloud.influx import InfluxHttp
        from fieldrig_cloud.ingester import IngestConfig, Ingester

        self._asyncio = asyncio
        client_id = kw.pop("client_id", "ingester-test")
        self._influx_url = influx_url
        self.ingester = Ingester(host, port, InfluxHttp(influx_url, "fieldrig"),
                                 client_id=client_id, config=IngestConfig(**kw))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = self._asyncio.get_running_loop()
            self._stop = self._asyncio.Event()
            ready = self._asyncio.Event()
            task = self._asyncio.create_task(self.ingester.run(self._stop, ready))
            await self._asyncio.wait({task, self._asyncio.create_task(ready.wait())},
                                     return_when=self._asyncio.FIRST_COMPLETED)
            self._ready.set()
            try:
                await task
            finally:
                await self.ingester.influx.aclose()

        try:
            self._asyncio.run(run())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            self._ready.set()

    def start(self) -> InProcessIngester:
        self._thread.start()
        assert self._ready.wait(30), "ingester did not subscribe"
        assert self.error is None, self.error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error


@dataclass(frozen=True)
class Filled:
    """A broker + InfluxDB filled through the real ingester and analytics, shared by the
    dashboard and CLI tests: rig-a ran a CCD ladder (short in step 2, run ccd-1) with
    events, one EIS spectrum and set-points; rig-b a plain run; one dead letter."""

    db: InfluxDB
    broker: Mosquitto
    start: int
    end: int
    t0: int
    samples: list[dict[str, Any]]


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    import asyncio

    from synthetic import ladder, spectrum

    from fieldrig_hil.services import InfluxDB, Mosquitto

    base = tmp_path_factory.mktemp("filled")
    broker = Mosquitto(base / "mq").start()
    db = InfluxDB(base / "influx").start()
    try:
        ing = InProcessIngester(broker.host, broker.port, db.url, health_interval_s=0.3).start()
        pub = Publisher(broker.host, broker.port, client_id="gw-dash")
        wait_until(pub.client.is_connected, 10, "publisher")
        t0 = (time.time_ns() // 60_000_000_000 - 40) * 60_000_000_000  # 40 min ago
        samples = ladder(t0, [0.1, 0.2, 0.3, 0.4], short_step=2, per_step=150)
        base_msg = telemetry("rig-a", range(0), t0, run="ccd-1")
        for k in range(0, len(samples), 100):
            pub.publish("fieldrig/v1/lab-1/rig-a/telemetry",
                        dict(base_msg, samples=samples[k:k + 100]))
        pub.publish("fieldrig/v1/lab-1/rig-b/telemetry",
                    telemetry("rig-b", range(100), t0, run="run-b"))
        short_ns = samples[2 * 150 + 30]["time_ns"]
        pub.publish("fieldrig/v1/lab-1/rig-a/events", {
            "schema": 1, "cell": "cell-1", "run": "ccd-1", "boot": 7, "events": [
                {"event": "recipe_step", "time_ns": t0 + 1, "step": 0},
                {"event": "hard_short", "time_ns": short_ns, "z_ohm": 1.9}]})
        f, re_, im = spectrum()
        pub.publish("fieldrig/v1/lab-1/rig-a/eis", {
            "schema": 1, "cell": "cell-1", "run": "ccd-1", "boot": 7, "time_ns": t0 + 10**9,
            "freq_hz": f, "z_real_ohm": re_, "z_imag_ohm": im})
        pub.publish("fieldrig/v1/lab-1/gateway/gw-1/status", {"schema": 1, "state": "online"})
        pub.publish("fieldrig/v1/lab-1/rig-a/telemetry", b"{broken")  # one dead letter
        wait_until(lambda: count_seq(db, "rig-a")[0] == len(samples)
                   and count_seq(db, "rig-b")[0] == 100, 30, "samples")
        time.sleep(1)  # a few more pipeline_health points
        pub.close()
        ing.stop()

        async def post() -> None:
            from fieldrig_cloud import analytics, retention
            from fieldrig_cloud.influx import InfluxHttp

            influx = InfluxHttp(db.url, "fieldrig")
            try:
                result = await analytics.analyze_run(influx, "lab-1", "rig-a", "ccd-1", 0.5)
                assert result.ccd is not None and result.ccd.short_step == 2
                await retention.backfill(influx, t0 - 60 * 10**9, time.time_ns())
            finally:
                await influx.aclose()

        asyncio.run(post())
        yield Filled(db, broker, t0 - 10 * 60 * 10**9, time.time_ns() + 60 * 10**9, t0, samples)
    finally:
        db.stop()
        broker.stop()


