"""Benchmark: one edge gateway to a local Mosquitto on this machine.

    python bench/bench_edge.py [--rigs 4] [--rate 2500] [--seconds 10]
                               [--replay 100000] [--write docs/benchmarks_edge.md]

1. Sustained throughput: ``--rigs`` emulated rigs (edge/tests/rig_emulator.py, the rig
   side of docs/link.md over TCP) each offer ``--rate`` samples/s to one gateway process
   (``python -m fieldrig_edge run``, the production entry point, spool on disk,
   synchronous=FULL). A QoS 1 subscriber counts what the broker delivers. The figure is
   the delivered rate over the measuring window after a warm-up; if the gateway cannot
   keep up, the rigs' windows fill and the delivered rate is the gateway's capacity.
2. Replay: with the broker stopped, the gateway spools ``--replay`` samples; then the
   rigs pause, the broker starts and the time until the subscriber has them all gives
   the spool's replay rate.

Every delivered sample is checked once by (rig, boot, seq): a benchmark that loses or
doubles data would measure the wrong thing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "edge" / "tests"))

from rig_emulator import RigEmulator  # noqa: E402

from fieldrig_hil.services import Mosquitto  # noqa: E402


def _count(host: str, port: int, n: Any, dups: Any, health: Any, ready: Any) -> None:
    """Subscriber process (its own GIL): counts distinct (rig, boot, seq) delivered, and
    follows the gateway's published_samples from its retained health messages."""
    seen: set[tuple[str, int, int]] = set()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter",
                    protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600

    def on_connect(cl: mqtt.Client, *_a: object) -> None:
        cl.subscribe([("fieldrig/v1/+/+/telemetry", 1), ("fieldrig/v1/+/gateway/+/health", 1)])

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        p = json.loads(m.payload)
        if m.topic.endswith("/health"):
            health.value = int(p["broker"]["published_samples"])
            return
        for smp in p["samples"]:
            k = (p["rig"], p["boot"], smp["seq"])
            if k in seen:
                if not m.dup:
                    dups.value += 1
            else:
                seen.add(k)
        n.value = len(seen)

    c.on_connect = on_connect
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = on_message
    c.reconnect_delay_set(0.05, 0.5)
    c.connect(host, port, clean_start=False, properties=props)
    c.loop_forever()


class Counter:
    def __init__(self, host: str, port: int) -> None:
        ctx = mp.get_context("fork")
        self._n = ctx.Value("q", 0)
        self._dups = ctx.Value("q", 0)
        self._health = ctx.Value("q", 0)
        ready = ctx.Event()
        self.proc = ctx.Process(target=_count, args=(host, port, self._n, self._dups,
                                                     self._health, ready), daemon=True)
        self.proc.start()
        if not ready.wait(10):
            raise RuntimeError("counter did not subscribe")

    @property
    def n(self) -> int:
        return int(self._n.value)

    @property
    def dups(self) -> int:
        return int(self._dups.value)

    @property
    def published(self) -> int:
        """Samples the gateway has had PUBACKed, from its last health message."""
        return int(self._health.value)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join(5)


def write_config(work: Path, broker: Mosquitto, rigs: list[RigEmulator]) -> Path:
    lines = [f'site = "bench"\ngateway = "gw-bench"\n[broker]\nhost = "{broker.host}"\n'
             f'port = {broker.port}\n[spool]\npath = "spool.sqlite"\nmax_mb = 4096\n'
             '[publish]\nbatch_max = 500\nbatch_wait_ms = 200\nhealth_interval_s = 0.5\n'
             'confirm_stored = false\n'  # no ingester here: the broker's PUBACK frees rows
             '[log]\nlevel = "WARNING"\n']
    for r in rigs:
        lines.append(f'[[rigs]]\nid = "{r.rig_id}"\nport = "tcp://127.0.0.1:{r.port}"\n'
                     f'cell = "cell-{r.rig_id}"\n')
    p = work / "edge.toml"
    p.write_text("\n".join(lines))
    return p


async def wait_for(cond: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def bench(args: argparse.Namespace) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    broker = Mosquitto(work / "mosquitto").start()
    rigs = [await RigEmulator(f"rig-{i}", period_s=1.0 / args.rate, backlog=8192,
                              window=256).start() for i in range(args.rigs)]
    counter = Counter(broker.host, broker.port)
    cfg = write_config(work, broker, rigs)
    log = (work / "gateway.log").open("ab")
    gw = subprocess.Popen([sys.executable, "-m", "fieldrig_edge", "run", "--config", str(cfg)],
                          stdout=log, stderr=log, cwd=work)
    out: dict[str, float] = {}
    try:
        # 1. sustained
        # PUBACKed by the broker, from the gateway's own health messages: the subscriber
        # shares the machine, and its lag must not count against the gateway.
        await asyncio.sleep(args.warmup)
        p0 = counter.published
        await wait_for(lambda: counter.published != p0, 10, "a health message")
        p0, t0 = counter.published, time.monotonic()
        await asyncio.sleep(args.seconds)
        p1 = counter.published
        await wait_for(lambda: counter.published != p1, 10, "a health message")
        p1, t1 = counter.published, time.monotonic()
        out["offered_per_s"] = args.rigs * args.rate
        out["sustained_per_s"] = (p1 - p0) / (t1 - t0)
        # 2. replay
        await asyncio.to_thread(broker.stop)
        before = sum(r.produced[r.boot] for r in rigs)
        produced0 = sum(r.produced[r.boot] for r in rigs)
        await wait_for(lambda: sum(r.produced[r.boot] for r in rigs) - produced0 >= args.replay,
                       600, "samples to spool")
        for r in rigs:
            r.paused = True
        await wait_for(lambda: all(r.all_acked() for r in rigs), 120, "rigs acked")
        total = sum(r.produced[r.boot] for r in rigs)
        spooled = total - before  # plus whatever the gateway had not sent yet
        t_start = time.monotonic()
        await asyncio.to_thread(broker.start)
        await wait_for(lambda: counter.n >= total, 600, "replay to finish")
        t_replay = time.monotonic() - t_start
        out["replay_samples"] = spooled
        out["replay_s"] = t_replay
        out["replay_per_s"] = spooled / t_replay
        out["delivered"] = counter.n
        out["duplicates"] = counter.dups
        missing = total - counter.n
        out["missing"] = missing
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(30)
        except subprocess.TimeoutExpired:
            gw.kill()
        log.close()
        counter.stop()
        for r in rigs:
            await r.stop()
        broker.stop()
    return out


def report(args: argparse.Namespace, r: dict[str, float]) -> str:
    cpu = platform.processor() or platform.machine()
    replay = f"**{r['replay_per_s']:,.0f} /s** ({r['replay_s']:.1f} s)"
    totals = f"{r['delivered']:,.0f} / {r['missing']:,.0f} / {r['duplicates']:,.0f}"
    return f"""# Edge gateway benchmark

Written by `bench/bench_edge.py` (run it again to refresh this file):

```sh
python bench/bench_edge.py --rigs {args.rigs} --rate {args.rate:g} --seconds {args.seconds:g} \\
    --replay {args.replay} --write docs/benchmarks_edge.md
```

Machine: {os.cpu_count()} CPU(s), {cpu}, Python {platform.python_version()},
{platform.system()} {platform.release()}. One gateway process (`python -m fieldrig_edge
run`, spool on local disk with `synchronous=FULL`), a private Mosquitto, {args.rigs}
emulated rigs over TCP (edge/tests/rig_emulator.py) and a QoS 1 subscriber, all on this
machine and sharing its CPUs: the figures are a floor for a dedicated gateway host.

| figure | value |
|---|---|
| samples offered by the rigs | {r['offered_per_s']:,.0f} /s |
| **sustained samples through the gateway to the broker** | **{r['sustained_per_s']:,.0f} /s** |
| samples spooled while the broker was down | {r['replay_samples']:,.0f} |
| **spool replay after the broker returned** | {replay} |
| samples delivered in total / missing / duplicated | {totals} |

How to read it: a rig samples at 10 Hz to 1 kHz, so one gateway serves its bench with a
wide margin; the replay rate says how fast a backlog after a broker outage drains (an
hour of 8 rigs at 100 Hz is 2.9 M samples). When the offered rate exceeds the sustained
one, the rigs hold the rest in their backlogs (go-back-N windows): nothing is lost, it
arrives later.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rigs", type=int, default=4)
    ap.add_argument("--rate", type=float, default=2500, help="samples/s offered per rig")
    ap.add_argument("--seconds", type=float, default=10, help="measuring window")
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--replay", type=int, default=100_000, help="samples to spool")
    ap.add_argument("--write", type=Path, help="write the report (docs/benchmarks_edge.md)")
    args = ap.parse_args()
    r = asyncio.run(bench(args))
    text = report(args, r)
    print(text)
    if args.write:
        args.write.write_text(text)
    return 0 if r["missing"] == 0 and r["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
