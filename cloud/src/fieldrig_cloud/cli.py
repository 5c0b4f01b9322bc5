"""``fieldrig``: the operator's command line (ingest for now)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from fieldrig_cloud.influx import InfluxHttp
from fieldrig_cloud.ingester import Ingester


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fieldrig", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ing = sub.add_parser("ingest", help="run an ingester: MQTT telemetry -> InfluxDB")
    ing.add_argument("--broker", required=True, help="HOST:PORT")
    ing.add_argument("--influx", required=True, help="http://HOST:PORT")
    ing.add_argument("--database", default="fieldrig")
    ing.add_argument("--client-id", default="fieldrig-ingester-1")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host, port = args.broker.rsplit(":", 1)

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        influx = InfluxHttp(args.influx, args.database)
        await influx.create_database()
        try:
            await Ingester(host, int(port), influx, client_id=args.client_id).run(stop)
        finally:
            await influx.aclose()

    asyncio.run(_run())
    return 0
