"""``fieldrig-edge``: run the gateway."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from fieldrig_edge.gateway import BrokerConfig, Gateway, RigConfig


def parse_rig(spec: str) -> RigConfig:
    """``RIG=HOST:PORT[,cell=ID][,run=ID]`` -> RigConfig."""
    try:
        rig, rest = spec.split("=", 1)
        addr, *opts = rest.split(",")
        host, port = addr.rsplit(":", 1)
        kv = dict(o.split("=", 1) for o in opts)
        return RigConfig(rig=rig, host=host, port=int(port), **kv)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(
            f"bad rig {spec!r}: expected RIG=HOST:PORT[,cell=ID][,run=ID]"
        ) from exc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fieldrig-edge", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="connect rigs and publish to the broker")
    run.add_argument("--site", required=True)
    run.add_argument("--gateway", default="gw-1")
    run.add_argument("--broker", required=True, help="HOST:PORT")
    run.add_argument("--rig", action="append", type=parse_rig, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host, port = args.broker.rsplit(":", 1)
    gw = Gateway(args.site, args.gateway, BrokerConfig(host, int(port)), args.rig)

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await gw.run(stop)

    asyncio.run(_run())
    return 0
