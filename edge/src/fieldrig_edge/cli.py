"""``fieldrig-edge``: run the gateway, check a config, list its rigs (docs/edge.md).

    fieldrig-edge run --config /etc/fieldrig/edge.toml
    fieldrig-edge check-config --config /etc/fieldrig/edge.toml
    fieldrig-edge list-rigs --config /etc/fieldrig/edge.toml [--json]

Exit codes: 0 done, 1 the gateway failed, 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from fieldrig_edge import config as config_mod
from fieldrig_edge import logs
from fieldrig_edge.config import ConfigError, GatewayConfig
from fieldrig_edge.gateway import Gateway
from fieldrig_edge.mqtt import tls_context

log = logging.getLogger("fieldrig.edge.cli")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fieldrig-edge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="connect the rigs and publish to the broker")
    run.add_argument("--config", required=True, type=Path, help="gateway TOML file")
    run.add_argument("--log-level", help="override log.level")
    run.add_argument("--log-format", choices=["json", "text"], help="override log.format")
    chk = sub.add_parser("check-config", help="validate a config; print it, secrets masked")
    chk.add_argument("--config", required=True, type=Path)
    ls = sub.add_parser("list-rigs", help="the rigs a config declares")
    ls.add_argument("--config", required=True, type=Path)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        print(f"fieldrig-edge: invalid config {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "check-config":
        return check_config(cfg)
    if args.cmd == "list-rigs":
        return list_rigs(cfg, as_json=args.json)
    return run(cfg, level=args.log_level or cfg.log_level, fmt=args.log_format or cfg.log_format)


def check_config(cfg: GatewayConfig) -> int:
    problems: list[str] = []
    warnings: list[str] = []
    spool_dir = cfg.spool.path.parent
    if spool_dir.exists() and not os.access(spool_dir, os.W_OK):
        problems.append(f"spool directory {spool_dir} is not writable")
    if cfg.broker.tls is not None:
        try:
            tls_context(cfg.broker)
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"broker.tls: {exc}")
    if cfg.broker.password is not None and cfg.broker.tls is None:
        warnings.append("broker password without TLS: it crosses the network in clear text")
    for r in cfg.rigs:
        kind, where, _ = r.transport
        if kind == "serial" and not Path(where).exists():
            warnings.append(f"rig {r.rig}: {where} not present now (waited for when running)")
    if not cfg.rigs:
        warnings.append("no rigs configured")
    print(json.dumps({"ok": not problems, "problems": problems, "warnings": warnings,
                      "config": cfg.redacted()}, indent=2))
    return 0 if not problems else 2


def list_rigs(cfg: GatewayConfig, as_json: bool = False) -> int:
    rows = [{"id": r.rig, "port": r.port, "transport": r.transport[0], "cell": r.cell,
             "run": r.run} for r in cfg.rigs]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["id", "port", "transport", "cell", "run"]
    width = {c: max([len(c)] + [len(str(x[c])) for x in rows]) for c in cols}
    print("  ".join(c.upper().ljust(width[c]) for c in cols).rstrip())
    for x in rows:
        print("  ".join(str(x[c]).ljust(width[c]) for c in cols).rstrip())
    return 0


def run(cfg: GatewayConfig, level: str = "INFO", fmt: str = "json") -> int:
    logs.setup(level.upper(), fmt, secrets=[cfg.broker.password])
    gw = Gateway(cfg)

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await gw.run(stop)

    try:
        asyncio.run(_run())
    except Exception:
        log.critical("gateway failed", exc_info=True)
        return 1
    return 0
