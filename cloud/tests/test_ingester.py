"""The ingester against real Mosquitto and InfluxDB: every message kind lands in its
measurement and retention policy, bad messages become dead letters without holding the
stream, health is reported, and the continuous queries downsample."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from conftest import InProcessIngester, Publisher, count_seq, t0_ns, telemetry, wait_until

from fieldrig_hil.services import InfluxDB, Mosquitto


def scalar(influx: InfluxDB, q: str) -> float:
    series = influx.query(q)
    return float(series[0]["values"][0][1]) if series else 0.0  # type: ignore[index]


def test_every_kind_lands_and_bad_messages_become_dead_letters(
    mosquitto: Mosquitto, influxdb: InfluxDB, publisher_factory: Callable[..., Publisher],
    tmp_path: Path,
) -> None:
    dlq = tmp_path / "dead.jsonl"
    ing = InProcessIngester(mosquitto.host, mosquitto.port, influxdb.url,
                            dead_letter_file=dlq, max_payload_bytes=20_000,
                            health_interval_s=0.5).start()
    pub = publisher_factory(mosquitto.host, mosquitto.port)
    t0 = t0_ns()
    base = "fieldrig/v1/lab-1/rig-a"
    bad: list[tuple[str, bytes]] = [
        (f"{base}/telemetry", b"not json"),
        (f"{base}/telemetry",
         json.dumps(telemetry("rig-a", range(1), t0) | {"schema": 9}).encode()),
        # A payload naming another rig than its topic: refused, not written to rig-b.
        (f"{base}/telemetry", json.dumps(telemetry("rig-b", range(1), t0)).encode()),
        (f"{base}/telemetry", json.dumps(telemetry("rig-a", range(1000), t0)).encode()),  # too big
        (f"{base}/events", b'{"schema": 1, "events": []}'),
    ]
    try:
        # Interleave: good, bad, good... the stream must never stall on a bad one.
        for k in range(10):
            pub.publish(f"{base}/telemetry", telemetry("rig-a", range(k * 20, k * 20 + 20), t0))
            if k < len(bad):
                pub.publish(*bad[k])
        pub.publish(f"{base}/events", {"schema": 1, "cell": "cell-1", "run": "run-1", "events": [
            {"event": "soft_short", "time_ns": t0 + 5, "seq": 3}]})
        pub.publish(f"{base}/eis", {"schema": 1, "cell": "cell-1", "run": "run-1",
                                    "time_ns": t0, "freq_hz": [1e5, 1e2, 1.0],
                                    "z_real_ohm": [10.0, 50.0, 90.0],
                                    "z_imag_ohm": [-2.0, -30.0, -10.0]})
        pub.publish(f"{base}/status", {"schema": 1, "state": "running", "time_ns": t0})
        # Field-type conflict: the second health message's uptime is a string. InfluxDB
        # refuses it (400); the ingester isolates it and dead-letters only that one.
        gw = "fieldrig/v1/lab-1/gateway/gw-1/health"
        pub.publish(gw, {"schema": 1, "time_ns": t0, "uptime": 1.5})
        pub.publish(gw, {"schema": 1, "time_ns": t0 + 1, "uptime": "long"})
        pub.publish(f"{base}/telemetry", telemetry("rig-a", range(200, 220), t0))

        wait_until(lambda: count_seq(influxdb, "rig-a")[0] >= 220, 30, "good samples")
        wait_until(lambda: scalar(influxdb, 'SELECT count("reason") FROM "keep"."dead_letter"')
                   >= len(bad) + 1, 30, "dead letters")
        wait_until(lambda: scalar(influxdb, 'SELECT count("points_total") FROM '
                                  '"pipeline_health"') >= 2, 30, "health points")
    finally:
        ing.stop()

    assert count_seq(influxdb, "rig-a") == (220, 220, 0, 219)
    assert count_seq(influxdb, "rig-b") == (0, 0, -1, -1)
    dead = influxdb.query('SELECT "reason", "code", "digest" FROM "keep"."dead_letter"')
    reasons = [row[1] for row in dead[0]["values"]]  # type: ignore[index]
    codes = sorted(row[2] for row in dead[0]["values"])  # type: ignore[index]
    assert codes == ["influx_rejected"] + ["invalid"] * len(bad)
    for needle in ("not JSON", "unsupported schema 9", "does not match topic rig",
                   "exceeds 20000", "non-empty list", "field type conflict"):
        assert any(needle in r for r in reasons), (needle, reasons)
    # The local record holds the whole payload, to replay after a fix.
    records = [json.loads(ln) for ln in dlq.read_text().splitlines()]
    assert len(records) == len(bad) + 1
    assert {base64.b64decode(r["payload_b64"]) for r in records} >= {raw for _, raw in bad}
    # Each kind in its measurement and retention policy.
    assert scalar(influxdb, 'SELECT count("title") FROM "keep"."event"') == 1
    assert scalar(influxdb, 'SELECT count("z_real_ohm") FROM "keep"."eis_spectrum"') == 3
    assert scalar(influxdb, 'SELECT count("state") FROM "rig_status"') == 1
    assert scalar(influxdb, 'SELECT count("uptime") FROM "gateway_health"') == 1
    stats = ing.ingester.stats
    assert stats.points == 220 and stats.rejected == len(bad) + 1
    health = influxdb.query('SELECT last("points_total"), last("dead_letters_total") '
                            'FROM "pipeline_health"')
    assert health[0]["values"][0][1] > 0  # type: ignore[index]


def test_influxdb_down_at_start_and_during_ingest_loses_nothing(
    mosquitto: Mosquitto, influxdb: InfluxDB, publisher_factory: Callable[..., Publisher],
) -> None:
    # First run: subscribe (creates the session), then stop.
    InProcessIngester(mosquitto.host, mosquitto.port, influxdb.url).start().stop()
    influxdb.stop()
    pub = publisher_factory(mosquitto.host, mosquitto.port)
    t0 = t0_ns()
    for k in range(5):  # queued by the broker for the stopped ingester's session
        pub.publish("fieldrig/v1/lab-1/rig-q/telemetry",
                    telemetry("rig-q", range(k * 10, k * 10 + 10), t0))
    ing = InProcessIngester(mosquitto.host, mosquitto.port, influxdb.url)
    import threading
    # The ingester waits for InfluxDB (schema setup retries) without acking anything.
    threading.Timer(1.5, influxdb.start).start()
    ing.start()
    try:
        for k in range(5, 10):
            pub.publish("fieldrig/v1/lab-1/rig-q/telemetry",
                        telemetry("rig-q", range(k * 10, k * 10 + 10), t0))
        wait_until(lambda: influxdb.running and count_seq(influxdb, "rig-q")[0] >= 100, 60,
                   "all samples")
    finally:
        ing.stop()
    assert count_seq(influxdb, "rig-q") == (100, 100, 0, 99)


def test_continuous_queries_and_backfill_downsample(
    mosquitto: Mosquitto, influxdb: InfluxDB, publisher_factory: Callable[..., Publisher],
) -> None:
    ing = InProcessIngester(mosquitto.host, mosquitto.port, influxdb.url).start()
    pub = publisher_factory(mosquitto.host, mosquitto.port)
    try:
        # Recent data (the CQs' window) and old data (only a backfill reaches it).
        recent = (time.time_ns() // 10**10 - 6) * 10**10  # 60 s ago, on a 10 s boundary
        pub.publish("fieldrig/v1/lab-1/rig-n/telemetry",
                    telemetry("rig-n", range(300), recent, current_setpoint_ma=0.5))
        old = (recent - 3 * 3600 * 10**9) // (60 * 10**9) * (60 * 10**9)  # whole minute
        pub.publish("fieldrig/v1/lab-1/rig-o/telemetry", telemetry("rig-o", range(600), old))
        wait_until(lambda: count_seq(influxdb, "rig-n")[0] == 300
                   and count_seq(influxdb, "rig-o")[0] == 600, 30, "raw samples")
    finally:
        ing.stop()

    agg = 'SELECT sum("samples") FROM "agg_10s"."cell_sample" WHERE rig = \'{}\''
    # The CQ runs every 10 s (InfluxDB checks each second): its window covers rig-n.
    wait_until(lambda: scalar(influxdb, agg.format("rig-n")) == 300, 40, "CQ aggregates", 1)
    assert scalar(influxdb, 'SELECT count("current_setpoint_ma") FROM "agg_10s"."actuator_state"'
                  " WHERE rig = 'rig-n'") == 3  # 30 s of 10 Hz data: three 10 s buckets
    assert scalar(influxdb, agg.format("rig-o")) == 0
    r = httpx.post(f"{influxdb.url}/query", params={"q": "SHOW CONTINUOUS QUERIES"})
    assert "cq_cell_sample_10s" in r.text and "cq_cell_sample_1m" in r.text

    from fieldrig_cloud.cli import main
    assert main(["db", "backfill", "--influx", influxdb.url, "--start-ns", str(old),
                 "--end-ns", str(old + 3600 * 10**9)]) == 0
    assert scalar(influxdb, agg.format("rig-o")) == 600
    assert scalar(influxdb, agg.replace("agg_10s", "agg_1m").format("rig-o")) == 600
    means = influxdb.query('SELECT mean("cell_voltage_v") FROM "cell_sample" WHERE rig = '
                           "'rig-o'")
    agg_mean = scalar(influxdb, 'SELECT mean("cell_voltage_v") FROM "agg_1m"."cell_sample" '
                      "WHERE rig = 'rig-o'")
    # 600 samples in whole minutes: mean of per-minute means == overall mean.
    assert abs(agg_mean - float(means[0]["values"][0][1])) < 1e-9  # type: ignore[index]
