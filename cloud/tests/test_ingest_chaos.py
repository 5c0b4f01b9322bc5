"""Chaos: real Mosquitto, real InfluxDB, ingesters as real processes sharing one
subscription; kill -9 an ingester, kill -9 InfluxDB, restart the broker — all while
telemetry flows. Every sequence number must be stored exactly once (a query)."""

from __future__ import annotations

import time
from collections.abc import Callable

from conftest import IngesterProcess, Publisher, count_seq, t0_ns, telemetry, wait_until

from fieldrig_hil.services import InfluxDB, Mosquitto

SAMPLES_PER_MSG = 50
MESSAGES = 120


def test_every_seq_stored_exactly_once_through_crashes_and_restarts(
    mosquitto: Mosquitto, influxdb: InfluxDB,
    ingester_factory: Callable[..., IngesterProcess],
    publisher_factory: Callable[..., Publisher],
) -> None:
    broker = f"{mosquitto.host}:{mosquitto.port}"
    ing_a = ingester_factory(broker, influxdb.url, "ingester-a")
    ing_b = ingester_factory(broker, influxdb.url, "ingester-b")
    pub = publisher_factory(mosquitto.host, mosquitto.port, client_id="gw-chaos")
    start = t0_ns()
    sent = 0

    def publish_until(k_end: int) -> None:
        nonlocal sent
        for k in range(sent, k_end):
            seqs = range(k * SAMPLES_PER_MSG, (k + 1) * SAMPLES_PER_MSG)
            pub.publish("fieldrig/v1/lab-1/rig-a/telemetry", telemetry("rig-a", seqs, start))
        sent = k_end

    # The pauses let each fault take hold (queues fill, retries back off) while the
    # stream continues; no assertion depends on timing.
    publish_until(20)
    ing_a.kill()  # SIGKILL with messages in flight: unacked ones stay with the broker
    publish_until(35)
    time.sleep(1)
    ing_a.start()  # same client id: resumes its persistent session
    publish_until(50)
    influxdb.kill()  # database crash: writes fail, nothing is acked, ingesters retry
    publish_until(65)
    time.sleep(2)
    influxdb.start()
    publish_until(80)
    mosquitto.restart()  # broker restart: sessions and queued messages persist
    publish_until(95)
    ing_b.kill()
    publish_until(105)
    time.sleep(1)
    ing_b.start()
    publish_until(MESSAGES)

    total = MESSAGES * SAMPLES_PER_MSG
    wait_until(lambda: count_seq(influxdb, "rig-a")[0] >= total, 120,
               f"{total} samples in InfluxDB", 0.5)
    n, distinct, mn, mx = count_seq(influxdb, "rig-a")
    assert (n, distinct, mn, mx) == (total, total, 0, total - 1)

    # Both ingesters of the shared subscription stored samples (their own health).
    def per_ingester() -> dict[str, float]:
        rows = influxdb.query('SELECT max("points_total") FROM "pipeline_health" '
                              'GROUP BY "ingester"')
        return {str(s["tags"]["ingester"]): float(s["values"][0][1])  # type: ignore[index]
                for s in rows}

    wait_until(lambda: len(per_ingester()) == 2, 30, "health of both ingesters")
    assert all(v > 0 for v in per_ingester().values()), per_ingester()
    for ing in (ing_a, ing_b):
        assert ing.stop() == 0, ing.log.read_text()[-3000:]
