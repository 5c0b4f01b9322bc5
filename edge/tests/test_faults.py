"""Fault tests with end-to-end sequence accounting (real Mosquitto, rig emulator).

For each fault: every sample the rig numbered reaches the broker's subscriber exactly
once, counted by (rig, boot, seq), or the rig reported it dropped. Faults: broker
restart mid-stream, gateway kill -9 and restart, a corrupting and dropping line with
cable pulls, rig resets, and a rig backlog that overflowed while no gateway was there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgekit import Recorder, assert_exactly_once, gateway_config
from rig_emulator import LineFaults, RigEmulator, wait_until

from fieldrig_edge.gateway import Gateway


def _config_toml(tmp_path: Path, broker: Any, rigs: list[tuple[str, int]]) -> Path:
    lines = [f'site = "lab-1"\ngateway = "gw-1"\n[broker]\nhost = "{broker.host}"\n'
             f'port = {broker.port}\n[spool]\npath = "spool.sqlite"\n'
             '[publish]\nbatch_wait_ms = 50\nhealth_interval_s = 1\nconfirm_stored = false\n'
             '[link]\nreconnect_max_s = 0.3\n[log]\nformat = "json"\n']
    for rig, port in rigs:
        lines.append(f'[[rigs]]\nid = "{rig}"\nport = "tcp://127.0.0.1:{port}"\n'
                     f'cell = "cell-{rig}"\n')
    p = tmp_path / "edge.toml"
    p.write_text("\n".join(lines))
    return p


def test_broker_restart_mid_stream(mosquitto: Any, recorder: Recorder, tmp_path: Path) -> None:
    n = 3000

    async def main() -> tuple[RigEmulator, Gateway]:
        rig = await RigEmulator("rig-a", period_s=0.001, samples=n).start()
        gw = Gateway(gateway_config(tmp_path, mosquitto, [("rig-a", rig.port)]))
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            await wait_until(lambda: len(recorder.samples()) > 600, 30, "first deliveries")
            await asyncio.to_thread(mosquitto.stop)
            during = rig.produced[rig.boot]
            # The rig keeps producing and the gateway keeps acking into its spool.
            await wait_until(lambda: rig.produced[rig.boot] > during + 500 and rig.all_acked(),
                             30, "spooling while the broker is down")
            assert gw.spool.stats.rows > 0
            await asyncio.to_thread(mosquitto.start)
            await wait_until(lambda: rig.produced[rig.boot] == n and rig.all_acked()
                             and len(recorder.samples(include_dup=True)) == n, 60,
                             "all samples after the restart")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await rig.stop()
        return rig, gw

    rig, gw = asyncio.run(main())
    assert_exactly_once(recorder, {("rig-a", rig.boot): set(range(n))})
    assert gw.stats.broker_connects >= 2


def test_gateway_kill_9_and_restart(mosquitto: Any, recorder: Recorder, tmp_path: Path) -> None:
    """The gateway runs as its own process (``python -m fieldrig_edge``) and is killed
    with SIGKILL three times mid-stream; the spool and the witness make it exactly once."""
    n = 4000
    log = (tmp_path / "gateway.log").open("ab")

    def spawn(cfg: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "fieldrig_edge", "run", "--config",
                                 str(cfg)], stdout=log, stderr=log, cwd=tmp_path)

    async def main() -> RigEmulator:
        # A gateway process restart takes about a second (imports, broker): at 1000
        # samples/s the rig's backlog must ride that out (overflow is tested apart).
        rig = await RigEmulator("rig-a", period_s=0.001, samples=n, backlog=8192).start()
        cfg = _config_toml(tmp_path, mosquitto, [("rig-a", rig.port)])
        proc = spawn(cfg)
        try:
            for k, at in enumerate((500, 1500, 2500)):
                await wait_until(lambda at=at: len(recorder.samples()) >= at, 60,
                                 f"{at} deliveries before kill {k}")
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                await asyncio.sleep(0.2)
                proc = spawn(cfg)
            await wait_until(lambda: rig.produced[rig.boot] == n and rig.all_acked()
                             and len(recorder.samples()) >= n, 60, "all samples")
            await asyncio.sleep(0.5)  # a late duplicate would show up now
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            await rig.stop()
        return rig

    rig = asyncio.run(main())
    log.close()
    assert_exactly_once(recorder, {("rig-a", rig.boot): set(range(n))})
    # The rig saw the gateway come back three times and went back to its oldest unacked.
    assert rig.connections >= 4


def _noisy_run(mosquitto: Any, recorder: Recorder, tmp_path: Path, n: int, seed: int,
               lose_hello: set[int] | None = None, deaf: dict[int, float] | None = None,
               ) -> tuple[RigEmulator, Gateway, LineFaults, LineFaults]:
    # About 1 frame in 60 damaged each way: far worse than a USB cable, and enough for
    # every kind of damage to hit data, ACKs, SYNCs and HELLOs in one run. (Go-back-N
    # with a 500 ms timeout loses throughput fast with noise: the rig's 200 samples/s
    # still get through.)
    tx = LineFaults(seed=seed, p_flip=0.006, p_drop=0.006, p_noise=0.003, p_cut=0.003)
    rx = LineFaults(seed=seed + 1, p_flip=0.03, p_drop=0.03, p_noise=0.01, p_cut=0.01)

    async def main() -> tuple[RigEmulator, Gateway]:
        rig = await RigEmulator("rig-a", period_s=0.005, samples=n, tx_faults=tx,
                                rx_faults=rx, backlog=4096, lose_hello=lose_hello,
                                deaf=deaf).start()
        for i in range(10):
            rig.event("note", i=i)
        gw = Gateway(gateway_config(tmp_path, mosquitto, [("rig-a", rig.port)]))
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            for _ in range(4):  # cable pulls
                await asyncio.sleep(0.6)
                rig.disconnect()
            await wait_until(lambda: rig.produced[rig.boot] == n, 30, "production")
            await wait_until(lambda: rig.all_acked() and gw.spool.stats.rows == 0, 60,
                             "everything acked and published through the noisy line")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await rig.stop()
        return rig, gw

    rig, gw = asyncio.run(main())
    return rig, gw, tx, rx


def test_corrupt_and_dropping_line_with_cable_pulls(
        mosquitto: Any, recorder: Recorder, tmp_path: Path) -> None:
    """The rig keeps every message until acked (docs/link.md): nothing may be lost."""
    n = 1500
    rig, gw, tx, rx = _noisy_run(mosquitto, recorder, tmp_path, n, seed=7)
    assert_exactly_once(recorder, {("rig-a", rig.boot): set(range(n))})
    h = gw.sessions["rig-a"].health
    assert h.link_errors > 0 and (h.duplicates + h.out_of_order) > 0, h
    assert h.connects >= 5
    assert sum(tx.stats.values()) > 20 and sum(rx.stats.values()) > 0
    notes = sorted(e["data"]["i"] for e in recorder.events("note"))
    assert notes == list(range(10))
    assert not recorder.events("telemetry_gap") and not recorder.events("reliable_gap")
    assert h.resyncs == 0


def test_lost_hello_and_lost_acks_on_a_noisy_line_lose_nothing(
        mosquitto: Any, recorder: Recorder, tmp_path: Path) -> None:
    """The HELLO of the 2nd connection is lost, and on the 3rd and 5th every ACK of the
    first 1.5 s is lost: the old firmware freed what it sent then (a loss the rig never
    reported). Now the rig repeats HELLO, keeps what is not acked and goes back to the
    edge's first ACK: every sample exactly once, no gap of any kind."""
    n = 1500
    rig, gw, _tx, _rx = _noisy_run(mosquitto, recorder, tmp_path, n, seed=11,
                                   lose_hello={2}, deaf={3: 1.5, 5: 1.5})
    assert_exactly_once(recorder, {("rig-a", rig.boot): set(range(n))})
    assert not recorder.events("telemetry_gap") and not recorder.events("reliable_gap")
    assert not recorder.events("telemetry_dropped")
    assert sorted(e["data"]["i"] for e in recorder.events("note")) == list(range(10))
    h = gw.sessions["rig-a"].health
    assert rig.hellos > rig.connections  # the lost HELLO was repeated
    assert h.hello_repeats >= 1  # repeats on a live link were answered, nothing reset
    assert h.resyncs == 0 and h.gaps_unexplained == 0


def test_rig_reliable_queue_overflow_is_reported_by_a_tombstone(
        mosquitto: Any, recorder: Recorder, tmp_path: Path) -> None:
    """The rig's reliable queue (4 here) overflowed before any gateway came: the oldest
    events were replaced by one reliable_dropped tombstone at the seq of the last one
    it replaced, so the gateway's in-order stream has no hole and waits for nothing;
    the rig's own report says exactly which messages are gone."""

    async def main() -> RigEmulator:
        rig = await RigEmulator("rig-a", period_s=0.01, queue=4).start()
        for i in range(12):
            rig.event("note", i=i)
        gw = Gateway(gateway_config(tmp_path, mosquitto, [("rig-a", rig.port)]))
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            await wait_until(lambda: rig.all_acked() and len(recorder.events("note")) == 3, 20,
                             "the tombstone and the newest events")
            assert gw.sessions["rig-a"].health.resyncs == 0
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await rig.stop()
        return rig

    asyncio.run(main())
    # boot + 12 notes = reliable seqs 0..12 in 4 slots: 0..9 became the tombstone.
    assert sorted(e["data"]["i"] for e in recorder.events("note")) == [9, 10, 11]
    tomb = recorder.events("reliable_dropped")
    assert len(tomb) == 1 and tomb[0]["source"] == "rig" and tomb[0]["seq"] == 9
    assert tomb[0]["data"] == {"first_seq": 0, "last_seq": 9, "count": 10}
    assert not recorder.events("reliable_gap") and not recorder.events("telemetry_gap")


def test_rig_resets_start_new_boots(mosquitto: Any, recorder: Recorder, tmp_path: Path) -> None:
    async def main() -> tuple[RigEmulator, list[tuple[int, int]]]:
        rig = await RigEmulator("rig-a", period_s=0.001).start()
        gw = Gateway(gateway_config(tmp_path, mosquitto, [("rig-a", rig.port)]))
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        boots: list[tuple[int, int]] = []
        try:
            for _ in range(2):
                await wait_until(lambda: rig.produced[rig.boot] > 700, 30, "samples of this boot")
                # Let everything produced so far be acked: a reset then loses nothing.
                rig.paused = True
                await wait_until(rig.all_acked, 10, "acks before the reset")
                boots.append((rig.boot, rig.produced[rig.boot]))
                rig.reset()
                rig.paused = False
            await wait_until(lambda: rig.produced[rig.boot] > 500, 30, "third boot")
            rig.paused = True
            await wait_until(lambda: rig.all_acked() and len(recorder.samples()) ==
                             sum(c for _b, c in boots) + rig.produced[rig.boot], 30, "all")
            boots.append((rig.boot, rig.produced[rig.boot]))
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await rig.stop()
        return rig, boots

    _rig, boots = asyncio.run(main())
    assert len({b for b, _ in boots}) == 3
    assert_exactly_once(recorder, {("rig-a", b): set(range(c)) for b, c in boots})
    assert {e["boot"] for e in recorder.events("rig_boot")} == {b for b, _ in boots}


def test_rig_reset_with_unacked_backlog_loses_only_what_never_left_the_rig(
        mosquitto: Any, recorder: Recorder, tmp_path: Path) -> None:
    """A power cut at an arbitrary moment: samples that reached the gateway are all
    delivered; what only the rig's RAM held is gone with it, as the accounting shows."""

    async def main() -> tuple[RigEmulator, int, set[int], int]:
        rig = await RigEmulator("rig-a", period_s=0.001).start()
        gw = Gateway(gateway_config(tmp_path, mosquitto, [("rig-a", rig.port)]))
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            await wait_until(lambda: rig.produced[rig.boot] > 800, 30, "samples")
            acked_before = rig.tele.base
            sent = set(range(rig.tele.tx))
            old = rig.reset()
            await wait_until(lambda: rig.produced[rig.boot] > 200, 30, "second boot")
            rig.paused = True
            await wait_until(rig.all_acked, 10, "acks")
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await rig.stop()
        return rig, old, sent, acked_before

    rig, old, sent, acked_before = asyncio.run(main())
    got_old = {s for (_r, b, s) in recorder.samples() if b == old}
    # Everything the gateway acked is delivered; nothing is delivered twice; nothing
    # beyond what the rig transmitted.
    assert set(range(acked_before)) <= got_old <= sent
    assert_exactly_once(recorder, {("rig-a", old): got_old,
                                   ("rig-a", rig.boot): set(range(rig.produced[rig.boot]))})


def test_rig_backlog_overflow_is_reported_not_silent(
        mosquitto: Any, recorder: Recorder, tmp_path: Path) -> None:
    """No gateway for a while: the rig's 200-sample ring overflows; the rig reports the
    drops and the gateway publishes the rest, so every number is accounted for. The
    ring may go on overflowing for a moment after the gateway came (1 kHz against the
    gateway's first acks): a seq sent and then dropped before its ack is both delivered
    and reported (docs/link.md), so delivered + reported covers every seq, once each."""

    async def main() -> RigEmulator:
        rig = await RigEmulator("rig-a", period_s=0.001, backlog=200).start()
        await wait_until(lambda: rig.produced[rig.boot] > 700, 30, "overflow")
        gw = Gateway(gateway_config(tmp_path, mosquitto, [("rig-a", rig.port)]))
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            await wait_until(lambda: rig.produced[rig.boot] > 1200, 30, "run")
            rig.paused = True
            await wait_until(rig.all_acked, 10, "acks")
            await wait_until(lambda: rig.expected_seqs(rig.boot) <= {
                s for (_r, _b, s) in recorder.samples()}, 10, "deliveries")
            await asyncio.sleep(0.3)  # a late duplicate would show up now
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await rig.stop()
        return rig

    rig = asyncio.run(main())
    n = rig.produced[rig.boot]
    got = {s for (_r, _b, s) in recorder.samples()}
    reported: list[int] = []
    for e in recorder.events("telemetry_dropped"):
        reported.extend(range(e["data"]["first_seq"], e["data"]["last_seq"] + 1))
    # The reports are the rig's drops, each seq once; at least the 500 before contact.
    assert sorted(reported) == sorted(set(range(n)) - rig.expected_seqs(rig.boot))
    assert len(reported) == len(set(reported)) >= 500
    # Every seq delivered (once) or reported dropped; nothing the rig did not number.
    assert got | set(reported) == set(range(n))
    assert_exactly_once(recorder, {("rig-a", rig.boot): got})
    gap = recorder.events("telemetry_gap")
    assert gap and gap[0]["data"]["reason"] == "before_first_contact"
    _ = time


def test_overflow_while_the_gateway_is_away_agrees_with_the_rigs_report(
        mosquitto: Any, recorder: Recorder, tmp_path: Path) -> None:
    """A boot the gateway knows: it stops, the rig's 200-sample ring overflows, it comes
    back. The rig reports the drops (telemetry_dropped); the gateway adds no gap report
    of its own for them: the missing samples are exactly the reported ones, once."""

    async def main() -> RigEmulator:
        rig = await RigEmulator("rig-a", period_s=0.001, backlog=200).start()
        rig.paused = True  # no overflow before the first contact (tested above)
        cfg = gateway_config(tmp_path, mosquitto, [("rig-a", rig.port)])
        for k in range(2):
            gw = Gateway(cfg)
            stop = asyncio.Event()
            task = asyncio.create_task(gw.run(stop))
            try:
                await wait_until(lambda gw=gw: gw.sessions["rig-a"].link is not None, 20,
                                 "HELLO")
                rig.paused = False
                at = rig.produced[rig.boot]
                await wait_until(lambda at=at: rig.produced[rig.boot] > at + 500
                                 and rig.tele.base > at + 300, 30, "acked run")
                if k == 1:
                    rig.paused = True
                    await wait_until(rig.all_acked, 10, "acks")
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
            if k == 0:
                before = rig.produced[rig.boot]
                await wait_until(lambda b=before: rig.produced[rig.boot] > b + 600, 30,
                                 "overflow while no gateway")
        await wait_until(lambda: rig.expected_seqs(rig.boot) <= {
            s for (_r, _b, s) in recorder.samples()}, 10, "deliveries")
        await asyncio.sleep(0.3)  # a late duplicate would show up now
        await rig.stop()
        return rig

    rig = asyncio.run(main())
    n = rig.produced[rig.boot]
    got = {s for (_r, _b, s) in recorder.samples()}
    reported: list[int] = []
    for e in recorder.events("telemetry_dropped"):
        reported.extend(range(e["data"]["first_seq"], e["data"]["last_seq"] + 1))
    # The rig's own ground truth is its reports, and each seq is reported once.
    assert sorted(reported) == sorted(set(range(n)) - rig.expected_seqs(rig.boot))
    assert len(reported) == len(set(reported)) >= 300
    # Every sample delivered once, or reported dropped. (Some reported ones were also
    # delivered: sent to the first gateway, spooled at its shutdown, never acked.)
    assert got | set(reported) == set(range(n))
    assert_exactly_once(recorder, {("rig-a", rig.boot): got})
    assert not recorder.events("telemetry_gap")
