"""Impedance end to end: the CPython rig sends samples, MSG_IMPEDANCE points (tracking
blocks of three at one uptime, and the points of an EIS sweep) and the sweep's MSG_EIS
chunks; the gateway publishes them to a real Mosquitto, the ingester writes them to a
real InfluxDB, and the analytics fit the stored sweep.

Proves: every telemetry seq of the boot (sample or impedance point) is stored exactly
once with its values, through a link drop (the rig retransmits what was not acked) and a
message the broker delivers twice; the sweep's chunks are stored as one sweep and its
fit recovers the circuit; a malformed chunk is reported by the gateway
(``unknown_message``) and a malformed message by the ingester (``dead_letter``)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from edgekit import gateway_config
from paho.mqtt.enums import CallbackAPIVersion
from rig_emulator import RigEmulator, wait_until

from fieldrig_cloud import analytics
from fieldrig_cloud.influx import InfluxHttp
from fieldrig_cloud.ingester import IngestConfig, Ingester
from fieldrig_edge.gateway import Gateway

# A cell whose arcs fall inside the firmware's sweep range (10 kHz .. 10 mHz here).
TRUTH = [20.0, 150.0, 9.4e-7, 0.9, 400.0, 1.33e-4, 0.85, 100.0, 10.0]
SWEEP_F_HZ = [float(f) for f in np.logspace(4, -2, 31)]
SKIPPED = {30}  # the 10 mHz point: too long a block for the rig (sent as skipped)
POINTS_PER_CHUNK = 6  # firmware/fieldrig/measure.py EIS_POINTS_PER_CHUNK


def _sig(x: float) -> float:
    # The firmware rounds MSG_EIS values to 5 significant digits (measure._sig).
    return round(x, 4 - math.floor(math.log10(abs(x))))


def query(url: str, q: str) -> list[dict[str, Any]]:
    r = httpx.post(f"{url}/query", params={"db": "fieldrig", "q": q, "epoch": "ns"}, timeout=30)
    r.raise_for_status()
    out = []
    for series in r.json()["results"][0].get("series") or []:
        for values in series["values"]:
            out.append({**series.get("tags", {}), **dict(zip(series["columns"], values,
                                                             strict=True))})
    return out


async def _drive(rig: RigEmulator) -> None:
    """While samples flow: tracking blocks, a dropped link, a sweep and its chunks."""
    for block in range(12):
        await asyncio.sleep(0.03)
        up = rig.uptime_ns()
        for k, f_hz in enumerate((31.25, 156.25, 1031.25)):
            rig.add_impedance(f_hz, 146.0 - 10 * k + block / 8, -18.875 + k, 0.0009765625,
                              k % 3, uptime_ns=up)  # flags: tracking, good/fair/poor
        if block == 5:
            rig.disconnect()  # unacked samples and points are sent again
    z = analytics.simulate_spectrum(TRUTH, SWEEP_F_HZ)
    points: list[list[Any]] = []
    for k, (f_hz, zk) in enumerate(zip(SWEEP_F_HZ, z, strict=True)):
        if k in SKIPPED:
            points.append([_sig(f_hz), None, None, None, 3])
            continue
        rig.add_impedance(f_hz, zk.real, zk.imag, 0.001, 0x10)  # source: sweep
        points.append([_sig(f_hz), _sig(zk.real), _sig(zk.imag), 0.001, 0])
    chunks = [points[i:i + POINTS_PER_CHUNK] for i in range(0, len(points), POINTS_PER_CHUNK)]
    for c, part in enumerate(chunks):
        rig.eis_chunk({"eis_seq": 1, "chunk": c, "chunks": len(chunks), "points": part})
    rig.eis_chunk(b'{"eis_seq": 2, "chunk": 0, "chunks": 1, "points": "lost"}')


def test_every_impedance_point_and_sweep_chunk_is_stored_exactly_once(
        mosquitto: Any, influxdb: Any, tmp_path: Path) -> None:
    n_samples = 800

    async def main() -> RigEmulator:
        influx = InfluxHttp(influxdb.url, "fieldrig")
        stop_ingest, ready = asyncio.Event(), asyncio.Event()
        ingester = Ingester(mosquitto.host, mosquitto.port, influx, client_id="ing-imp",
                            config=IngestConfig(health_interval_s=1.0))
        ingest_task = asyncio.create_task(ingester.run(stop_ingest, ready))
        await asyncio.wait_for(ready.wait(), 15)
        rig = await RigEmulator("rig-a", period_s=0.002, samples=n_samples).start()
        gw = Gateway(gateway_config(tmp_path, mosquitto, [("rig-a", rig.port)],
                                    confirm_stored=True))
        stop_gw = asyncio.Event()
        gw_task = asyncio.create_task(gw.run(stop_gw))
        try:
            await _drive(rig)
            total = n_samples + 12 * 3 + len(SWEEP_F_HZ) - len(SKIPPED)

            def stored() -> int:
                return sum(len(query(influxdb.url, f'SELECT seq FROM "{m}" WHERE rig = '
                                     "'rig-a'")) for m in ("cell_sample", "impedance"))

            await wait_until(lambda: rig.produced[rig.boot] == total and rig.all_acked()
                             and gw.spool.stats.rows == 0, 30, "rig drained, spool empty")
            await wait_until(lambda: stored() >= total, 30, f"{total} telemetry seqs stored",
                             step_s=0.3)
            # A broker's at-least-once: the same impedance message again (as after a
            # broker restart mid-delivery) changes nothing.
            again = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            again.connect(mosquitto.host, mosquitto.port)
            again.loop_start()
            seq0 = min(rig.impedance[rig.boot])
            point = query(influxdb.url, f"SELECT * FROM impedance WHERE seq = {seq0}")[0]
            dup = {"schema": 1, "site": "lab-1", "rig": "rig-a", "cell": "cell-rig-a",
                   "run": "run-1", "gateway": "gw-1", "boot": rig.boot, "points": [{
                       "seq": seq0, "time_ns": int(point["time"]), "f_hz": point["z_freq_hz"],
                       "z_re_ohm": point["z_re_ohm"], "z_im_ohm": point["z_im_ohm"],
                       "rel_err": point["rel_err"], "quality": point["quality"],
                       "source": "tracking"}]}
            bad = dict(dup, points=[dict(dup["points"][0], quality="excellent")])
            for p in (dup, bad):
                again.publish("fieldrig/v1/lab-1/rig-a/impedance", json.dumps(p), qos=1
                              ).wait_for_publish(5)
            again.loop_stop()
            again.disconnect()
            await wait_until(lambda: bool(query(
                influxdb.url, 'SELECT * FROM "keep"."dead_letter"')), 15, "the dead letter",
                step_s=0.3)
            result = await analytics.analyze_run(influx, "lab-1", "rig-a", "run-1")
            assert len(result.fits) == 1, result.fits
            fit = next(iter(result.fits.values()))
            for name, true in zip(analytics.PARAM_NAMES, TRUTH, strict=True):
                assert fit.params[name] == pytest.approx(true, rel=0.01), name
        finally:
            stop_gw.set()
            await asyncio.wait_for(gw_task, 30)
            await rig.stop()
            stop_ingest.set()
            await asyncio.wait_for(ingest_task, 30)
            await influx.aclose()
        return rig

    rig = asyncio.run(main())
    url = influxdb.url
    imp = rig.impedance[rig.boot]
    # Accounting: samples and impedance points share the telemetry seq space; together
    # they are every seq of the boot, each stored once.
    sample_seqs = [int(r["seq"]) for r in query(url, "SELECT seq FROM cell_sample")]
    rows = query(url, 'SELECT * FROM impedance GROUP BY "source"')
    imp_seqs = [int(r["seq"]) for r in rows]
    assert len(imp_seqs) == len(set(imp_seqs)) == len(imp) == 12 * 3 + 30
    assert len(sample_seqs) == len(set(sample_seqs)) == n_samples
    assert sorted(sample_seqs + imp_seqs) == list(range(rig.produced[rig.boot]))
    for r in rows:
        f_hz, z_re, z_im, rel, flags = imp[int(r["seq"])]
        assert (r["z_freq_hz"], r["z_re_ohm"], r["z_im_ohm"], r["rel_err"]) == (
            f_hz, z_re, z_im, rel)  # the float32 the rig sent, exactly
        assert r["source"] == ("sweep" if flags & 0x10 else "tracking")
        assert r["quality"] == ("good", "fair", "poor")[flags & 3]
        assert r["z_mag_ohm"] == pytest.approx(math.hypot(z_re, z_im), rel=1e-12)
        assert r["boot"] == str(rig.boot) and r["cell"] == "cell-rig-a"
    # The three points of a tracking block share an uptime, yet have their own keys.
    tracking = sorted(int(r["time"]) for r in rows if r["source"] == "tracking")
    assert len(set(tracking)) == 36 and tracking[2] - tracking[0] < 1000
    # The sweep: 31 points in 6 chunks, one skipped, in sweep order.
    [sweep] = analytics.group_sweeps(query(url, 'SELECT * FROM "keep"."eis_spectrum"'))
    assert (sweep.complete, sweep.eis_seq, len(sweep.rows), len(sweep.measured)) == (
        True, 1, 31, 30)
    assert [r["freq_hz"] for r in sweep.rows] == [_sig(f) for f in SWEEP_F_HZ]
    assert sweep.rows[30]["quality"] == "skipped" and sweep.rows[30].get("z_real_ohm") is None
    [fit] = query(url, 'SELECT * FROM "keep"."eis_fit"')
    assert fit["circuit"] == analytics.CIRCUIT and int(fit["sweep_seq"]) == sweep.sweep_seq
    # The malformed chunk: accepted on the link (its seq is used), reported by the gateway.
    [unknown] = query(url, "SELECT * FROM \"keep\".\"event\" WHERE \"event\" = "
                      "'unknown_message'")
    assert json.loads(unknown["detail"])["data"]["type"] == 0x22
    # The malformed message: one dead letter naming why; the duplicate changed nothing.
    [dead] = query(url, 'SELECT * FROM "keep"."dead_letter"')
    assert "quality 'excellent'" in dead["reason"] and dead["rig"] == "rig-a"
