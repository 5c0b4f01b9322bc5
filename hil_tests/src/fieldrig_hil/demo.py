"""``make demo``: a simulated lab end to end, printed as it happens.

For now the walking skeleton: rigs running the real firmware under ``micropython``
send numbered samples through the edge gateway, a private Mosquitto, the ingester
and a private InfluxDB; the demo reads back how many samples were stored per rig.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from fieldrig_hil.pipeline import run_thin_path
from fieldrig_hil.services import (
    FirmwareRig,
    InfluxDB,
    Mosquitto,
    ServiceFailed,
    ServiceMissing,
    running,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fieldrig-demo", description=__doc__)
    ap.add_argument("--rigs", type=int, default=3, help="number of simulated rigs")
    ap.add_argument("--samples", type=int, default=200, help="samples per rig")
    ap.add_argument("--period-ms", type=int, default=20, help="sampling period per rig")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="fieldrig-demo-"))
    print(f"fieldrig demo: working folder {work}")
    broker = Mosquitto(work / "mosquitto")
    influx = InfluxDB(work / "influxdb")
    rigs = [FirmwareRig(work / "rigs", rig_id=f"rig-{i + 1}", samples=args.samples,
                        period_ms=args.period_ms) for i in range(args.rigs)]
    t0 = time.monotonic()
    try:
        with running(broker, influx, *rigs):
            print(f"  mosquitto  mqtt://{broker.host}:{broker.port}")
            print(f"  influxd    {influx.url}")
            for r in rigs:
                print(f"  firmware   {r.rig_id} under micropython, link tcp://{r.host}:{r.port}")
            last = [""]

            def progress(msg: str) -> None:
                if msg != last[0]:
                    print(f"  {msg}", flush=True)
                    last[0] = msg

            accounts = asyncio.run(run_thin_path(broker, influx, rigs, progress=progress))
    except (ServiceMissing, ServiceFailed) as exc:
        print(f"fieldrig demo: {exc}", file=sys.stderr)
        return 2
    print(f"\nstored in InfluxDB (read back by query), {time.monotonic() - t0:.1f} s:")
    ok = True
    for a in accounts:
        verdict = "complete" if a.complete else "INCOMPLETE"
        ok &= a.complete
        print(f"  {a.rig}: {a.stored} of {a.expected} samples stored, "
              f"{a.distinct_seq} distinct seq [{a.min_seq}..{a.max_seq}] -> {verdict}")
    total = sum(a.stored for a in accounts)
    print(f"total stored samples: {total}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
