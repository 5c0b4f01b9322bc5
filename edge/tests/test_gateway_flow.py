"""The gateway against the CPython rig emulator and a real Mosquitto: the normal path.

Every sample arrives exactly once with its values and the rig's uptime, timestamps are
monotonic and within the stated error of the rig's true sampling time, events and status
are published."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from edgekit import Recorder, assert_exactly_once, gateway_config
from rig_emulator import RigEmulator, synthetic, wait_until

from fieldrig_edge.gateway import Gateway


async def _run_until(gw: Gateway, cond: Any, timeout_s: float, what: str) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        await wait_until(lambda: cond() or task.done(), timeout_s, what)
        if task.done():
            task.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def test_two_rigs_every_sample_once_with_values_and_time(
        mosquitto: Any, recorder: Recorder, tmp_path: Path) -> None:
    async def main() -> tuple[RigEmulator, RigEmulator]:
        a = await RigEmulator("rig-a", period_s=0.002, samples=1500, drift_ppm=80).start()
        b = await RigEmulator("rig-b", period_s=0.004, samples=500, drift_ppm=-40).start()
        a.event("pressure_step", mpa=5.25)
        b.event("eis_spectrum", f_hz=[1.0, 10.0], z_re=[100.0, 90.0], z_im=[-5.0, -2.0])
        gw = Gateway(gateway_config(tmp_path, mosquitto, [("rig-a", a.port), ("rig-b", b.port)]))
        try:
            await _run_until(gw, lambda: a.produced[a.boot] == 1500 and a.all_acked()
                             and b.produced[b.boot] == 500 and b.all_acked()
                             and len(recorder.samples()) == 2000, 60, "2000 samples")
        finally:
            await a.stop()
            await b.stop()
        return a, b

    a, b = asyncio.run(main())
    assert_exactly_once(recorder, {("rig-a", a.boot): a.expected_seqs(a.boot),
                                   ("rig-b", b.boot): b.expected_seqs(b.boot)})
    rows = recorder.sample_rows()
    for rig in (a, b):
        times = []
        for seq in range(rig.produced[rig.boot]):
            s = rows[(rig.rig_id, rig.boot, seq)]
            assert (s["cell_voltage_v"], s["cell_current_ma"], s["cell_temp_c"],
                    s["stack_pressure_mpa"]) == synthetic(seq)
            assert s["rig_state"] == 1
            # The rig's own clock travels too: time_ns is only its (clamped) mapping.
            assert s["uptime_ns"] == rig.truth_uptime_ns[(rig.boot, seq)]
            times.append(s["time_ns"])
            # Stated error (docs/edge.md): half the best SYNC round trip plus the
            # correction still being slewed in; on loopback well under 5 ms.
            err = abs(s["time_ns"] - rig.truth_utc[(rig.boot, seq)])
            assert err < 5_000_000, (rig.rig_id, seq, err)
        assert times == sorted(times) and len(set(times)) == len(times)
    tele = recorder.of("telemetry")
    assert all(d.payload["schema"] == 1 and d.payload["gateway"] == "gw-1" and
               d.payload["cell"] == f"cell-{d.payload['rig']}" for d in tele)
    # Batched: far fewer messages than samples.
    assert len(tele) < 2000 / 10
    ev = recorder.events("pressure_step")
    assert len(ev) == 1 and ev[0]["data"] == {"mpa": 5.25} and ev[0]["source"] == "rig"
    boots = recorder.events("boot")
    assert {e["rig"] for e in boots} == {"rig-a", "rig-b"}
    eis = recorder.of("eis")
    assert len(eis) == 1 and eis[0].payload["spectrum"]["z_re"] == [100.0, 90.0]
    status = [d for d in recorder.of("status") if "/gateway/" in d.topic]
    assert status[0].payload["state"] == "online" and status[-1].payload["state"] == "offline"
    assert all(d.retain is False or d.retain for d in status)
    rig_status = [d.payload for d in recorder.of("status") if d.topic.endswith("rig-a/status")]
    assert "online" in [s["state"] for s in rig_status] and rig_status[-1]["state"] == "offline"
    health = recorder.of("health")
    assert health and health[-1].payload["rigs"]["rig-a"]["samples"] == 1500
    assert health[-1].payload["spool"]["rows"] == 0


def test_legacy_rig_without_boot_or_acks_is_served(
        mosquitto: Any, recorder: Recorder, tmp_path: Path) -> None:
    """The pre-reliable firmware: HELLO without boot, ignores ACKs, never resends."""

    async def main() -> RigEmulator:
        r = await RigEmulator("rig-a", period_s=0.002, samples=400, legacy=True).start()
        gw = Gateway(gateway_config(tmp_path, mosquitto, [("rig-a", r.port)]))
        try:
            await _run_until(gw, lambda: len(recorder.samples()) == 400, 30, "400 samples")
        finally:
            await r.stop()
        return r

    asyncio.run(main())
    got = recorder.samples()
    boots = {b for (_rig, b, _s) in got}
    assert len(boots) == 1  # a gateway-chosen boot id for the connection
    assert sorted(s for (_r, _b, s) in got) == list(range(400))
    assert all(n == 1 for n in got.values())
    hello = recorder.events("rig_boot")
    assert hello and hello[0]["data"]["protocol"] == "legacy"
    health = recorder.of("health")[-1].payload["rigs"]["rig-a"]
    assert health["protocol"] == "legacy" and health["time_source"] == "receive"


def test_status_is_retained_and_will_marks_gateway_offline(
        mosquitto: Any, tmp_path: Path) -> None:
    """A crash (no clean disconnect) leaves the last will: gateway offline, its rigs listed."""
    import subprocess
    import sys
    import time

    cfg = tmp_path / "edge.toml"
    cfg.write_text(f"""
site = "lab-1"
gateway = "gw-9"
[broker]
host = "{mosquitto.host}"
port = {mosquitto.port}
keepalive_s = 5
[spool]
path = "spool.sqlite"
[[rigs]]
id = "rig-x"
port = "tcp://127.0.0.1:9"
cell = "cell-x"
""")
    proc = subprocess.Popen([sys.executable, "-m", "fieldrig_edge", "run", "--config", str(cfg)],
                            stderr=subprocess.PIPE)
    rec = Recorder(mosquitto.host, mosquitto.port, topic="fieldrig/v1/lab-1/gateway/#",
                   client_id="will-watch").start()
    try:
        deadline = time.monotonic() + 20
        while not [d for d in rec.of("status") if d.payload.get("state") == "online"]:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        while not [d for d in rec.of("status") if d.payload.get("state") == "offline"]:
            assert time.monotonic() < deadline, "no last will within 20 s"
            time.sleep(0.05)
    finally:
        rec.stop()
        if proc.poll() is None:
            proc.kill()
    will = next(d for d in rec.of("status") if d.payload.get("state") == "offline")
    assert will.payload["rigs"] == ["rig-x"] and will.payload["gateway"] == "gw-9"
    # Retained: a late subscriber sees the offline state at once.
    late = Recorder(mosquitto.host, mosquitto.port, topic="fieldrig/v1/lab-1/gateway/+/status",
                    client_id="late").start()
    try:
        deadline = time.monotonic() + 5
        while not late.of("status"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert late.of("status")[0].retain
        assert json.loads(json.dumps(late.of("status")[0].payload))["state"] == "offline"
    finally:
        late.stop()
