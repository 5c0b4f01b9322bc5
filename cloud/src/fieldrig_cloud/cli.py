"""``fieldrig``: the operator's command line.

  ingest        run an ingester (MQTT -> InfluxDB)
  db            init (database, retention policies, CQs) | backfill (downsample a range)
  recipe send   send a recipe to a rig (MQTT v5 request/response) and follow it
  cmd           send any command to a rig and print the reply
  status        retained rig and gateway status of a site
  analyze       EIS fits, CCD, run summary of a run, stored in InfluxDB
  export        a run to CSV and Parquet (+ EIS tables)
  plot          a run (V, I, T, P, |Z|) and its Nyquist plot to PNG
  dashboards    build (dashboards/ JSON + provisioning) | publish (to Grafana)
  annotate      push a run's events to Grafana as annotations
  broker        generate (Mosquitto passwd, ACL, TLS CA + certificate, config)

Docs: docs/cloud.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]

from fieldrig_cloud import retention
from fieldrig_cloud.influx import InfluxHttp
from fieldrig_cloud.ingester import DEFAULT_BATCH_POINTS, IngestConfig, Ingester
from fieldrig_cloud.mqtt_async import BrokerOptions, TlsOptions


def _hostport(s: str) -> tuple[str, int]:
    host, port = s.rsplit(":", 1)
    return host, int(port)


def _add_influx(p: argparse.ArgumentParser) -> None:
    p.add_argument("--influx", required=True, help="http://HOST:PORT")
    p.add_argument("--database", default="fieldrig")
    p.add_argument("--influx-user", default=os.environ.get("FIELDRIG_INFLUX_USER"))
    p.add_argument("--influx-password", default=os.environ.get("FIELDRIG_INFLUX_PASSWORD"))


def _influx(args: argparse.Namespace) -> InfluxHttp:
    return InfluxHttp(args.influx, args.database, args.influx_user, args.influx_password)


def _add_broker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, help="HOST:PORT")
    p.add_argument("--username", default=os.environ.get("FIELDRIG_MQTT_USER"))
    p.add_argument("--password", default=os.environ.get("FIELDRIG_MQTT_PASSWORD"),
                   help="or FIELDRIG_MQTT_PASSWORD")
    p.add_argument("--tls-ca", type=Path, help="CA certificate: connect with TLS")


def _tls(args: argparse.Namespace) -> TlsOptions | None:
    return TlsOptions(str(args.tls_ca)) if args.tls_ca else None


def cmd_ingest(args: argparse.Namespace) -> int:
    host, port = _hostport(args.broker)
    cfg = IngestConfig(
        share_group=args.share_group, batch_points=args.batch_points,
        batch_wait_s=args.batch_wait, health_interval_s=args.health_interval,
        receive_maximum=args.receive_maximum, dead_letter_file=args.dead_letter_file,
        write_concurrency=args.write_concurrency,
        tls=_tls(args), setup_schema=not args.no_setup,
        retention_cfg=retention.RetentionConfig(raw_duration=args.raw_retention))

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        influx = _influx(args)
        try:
            await Ingester(host, port, influx, client_id=args.client_id,
                           username=args.username, password=args.password,
                           config=cfg).run(stop)
        finally:
            await influx.aclose()

    asyncio.run(_run())
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    async def _run() -> None:
        influx = _influx(args)
        try:
            if args.db_cmd == "init":
                await retention.ensure(
                    influx, retention.RetentionConfig(raw_duration=args.raw_retention))
            else:
                await retention.backfill(influx, args.start_ns, args.end_ns)
        finally:
            await influx.aclose()

    asyncio.run(_run())
    return 0


def _broker_opts(args: argparse.Namespace) -> BrokerOptions:
    host, port = _hostport(args.broker)
    return BrokerOptions(host, port, args.username, args.password, _tls(args))


def _json_arg(text: str) -> dict[str, Any]:
    p = Path(text[1:]) if text.startswith("@") else None
    value = json.loads(p.read_text() if p else text)
    if not isinstance(value, dict):
        raise SystemExit("expected a JSON object")
    return value


def cmd_command(args: argparse.Namespace) -> int:
    from fieldrig_cloud import operator

    broker = _broker_opts(args)
    if args.cmd == "recipe":
        recipe = _json_arg("@" + str(args.recipe))
        name, cmd_args = args.command, {"recipe": recipe}
    else:
        name, cmd_args = args.name, _json_arg(args.args)
    follow = None
    state = operator.FollowState()
    if getattr(args, "follow", False):
        total = len(recipe.get("steps", [])) or None
        bar = tqdm(total=total, unit="step", desc=f"{args.rig}")

        def on_update(st: operator.FollowState) -> None:
            if st.step + 1 > bar.n:
                bar.update(st.step + 1 - bar.n)
            last = st.last
            bar.set_postfix_str(f"cycle {st.cycle} V={last.get('cell_voltage_v', '?')} "
                                f"I={last.get('cell_current_ma', '?')} mA")
            for ev in st.events[len(seen):]:
                bar.write(f"event: {ev.get('event')} {json.dumps(ev)}")
                seen.append(ev)

        seen: list[dict[str, Any]] = []

        async def follow_fn(client: Any) -> None:
            await operator.follow_recipe(client, args.site, args.rig, state, on_update,
                                         args.follow_timeout)
            bar.close()

        follow = follow_fn
    try:
        reply = asyncio.run(operator.send_command(broker, args.site, args.rig, name, cmd_args,
                                                  args.timeout, follow))
    except operator.CommandError as exc:
        print(f"refused: {exc}")
        return 1
    except TimeoutError:
        print(f"no reply from {args.site}/{args.rig} within {args.timeout:.0f} s")
        return 2
    print(json.dumps(reply))
    if follow is not None:
        print(f"ended: {state.ended_by} after {state.samples} samples, last step {state.step}")
        return 0 if state.ended_by in ("recipe_done", "recipe_complete") else 3
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from fieldrig_cloud import operator

    status = asyncio.run(operator.read_status(_broker_opts(args), args.site, args.wait))
    if not status:
        print(f"no retained status under fieldrig/v1/{args.site}/")
        return 1
    for key in sorted(status):
        st = status[key]
        extra = {k: v for k, v in st.items() if k not in ("schema", "state")}
        print(f"{key:24} {st.get('state', '?'):12} {json.dumps(extra) if extra else ''}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from fieldrig_cloud import analytics

    async def _run() -> analytics.RunAnalysis:
        influx = _influx(args)
        try:
            return await analytics.analyze_run(influx, args.site, args.rig, args.run,
                                               args.area_cm2)
        finally:
            await influx.aclose()

    result = asyncio.run(_run())
    out: dict[str, Any] = {"eis_fits": {str(t): f.physical | {"rmse_rel": f.rmse_rel}
                                        for t, f in result.fits.items()}}
    if result.ccd is not None:
        c = result.ccd
        out["ccd"] = {"ccd_ma": c.ccd_ma, "ccd_ma_cm2": c.ccd_ma_cm2, "short_step": c.short_step,
                      "time_to_short_s": c.time_to_short_s, "last_safe_ma": c.last_safe_ma,
                      "last_safe_ma_cm2": c.last_safe_ma_cm2, "detection": c.detection,
                      "source": c.source}
    if result.summary is not None:
        out["summary"] = dataclasses.asdict(result.summary)
    print(json.dumps(out, indent=2))
    return 0


def _load_table(args: argparse.Namespace) -> Any:
    from fieldrig_cloud import export

    async def _run() -> tuple[Any, list[dict[str, Any]]]:
        influx = _influx(args)
        bars: list[Any] = []

        def progress(total: int, _done: int) -> Any:
            bars.append(tqdm(total=total, unit="window", desc="reading"))
            return bars[-1].update

        try:
            table = await export.load_table(influx, args.site, args.rig, args.run,
                                            args.window_s, progress)
            from fieldrig_cloud.analytics import run_filter
            events = await influx.rows('SELECT * FROM "keep"."event" WHERE '
                                       + run_filter(args.site, args.rig, args.run))
            return table, events
        finally:
            for b in bars:
                b.close()
            await influx.aclose()

    return asyncio.run(_run())


def cmd_export(args: argparse.Namespace) -> int:
    from fieldrig_cloud import export

    table, _ = _load_table(args)
    if not table.rows:
        print("no samples for that run")
        return 1
    stem = f"{args.site}_{args.rig}_{args.run}"
    for p in export.export_run(table, args.out, stem, tuple(args.format.split(","))):
        print(p)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from fieldrig_cloud import export

    table, events = _load_table(args)
    if not table.rows:
        print("no samples for that run")
        return 1
    title = f"{args.site} / {args.rig} / {args.run}"
    export.plot_run(table, args.out, title, events)
    print(args.out)
    if args.nyquist is not None:
        export.plot_nyquist(table, args.nyquist, title)
        print(args.nyquist)
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    from fieldrig_cloud import grafana
    from fieldrig_cloud.analytics import run_filter

    async def _events() -> list[dict[str, Any]]:
        influx = _influx(args)
        try:
            return await influx.rows('SELECT * FROM "keep"."event" WHERE '
                                     + run_filter(args.site, args.rig, args.run))
        finally:
            await influx.aclose()

    events = asyncio.run(_events())
    api = grafana.connect(args.grafana, token=args.token or os.environ.get(
        "FIELDRIG_GRAFANA_TOKEN"))
    print(f"{grafana.annotate(api, events)} annotation(s)")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from fieldrig_cloud import broker

    fleet = broker.Fleet.from_toml(args.fleet) if args.fleet else broker.Fleet()
    fleet.gateways += [broker.Fleet.parse_gateway(g) for g in args.gateway]
    fleet.operators += args.operator
    fleet.ingesters += args.ingester
    secrets_file = args.out / "secrets.json"
    existing = json.loads(secrets_file.read_text()) if secrets_file.exists() else None
    sec = broker.generate(args.out, fleet, args.tls_host or None, existing)
    print(f"wrote passwd, acl, secrets.json, ca.crt, server.crt, mosquitto.conf to {args.out}")
    print("users: " + ", ".join(sorted(sec.passwords)))
    return 0


def cmd_dashboards(args: argparse.Namespace) -> int:
    from fieldrig_cloud import dashboards

    if args.dash_cmd == "build":
        for p in dashboards.build(args.out, args.influx_url):
            print(p)
        return 0
    from fieldrig_cloud import grafana

    token = args.token or os.environ.get("FIELDRIG_GRAFANA_TOKEN")
    api = grafana.connect(args.grafana, token=token, user=args.user,
                          password=args.password or os.environ.get("FIELDRIG_GRAFANA_PASSWORD"))
    for line in grafana.publish(api, influx_url=args.influx_url, database=args.database):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fieldrig", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    ing = sub.add_parser("ingest", help="run an ingester: MQTT -> InfluxDB")
    _add_broker(ing)
    _add_influx(ing)
    ing.add_argument("--client-id", default="fieldrig-ingester-1",
                     help="unique per ingester; the broker keeps its session by this id")
    ing.add_argument("--share-group", default="fieldrig-ingest")
    ing.add_argument("--batch-points", type=int, default=DEFAULT_BATCH_POINTS)
    ing.add_argument("--batch-wait", type=float, default=0.05, help="seconds")
    ing.add_argument("--health-interval", type=float, default=10.0, help="seconds")
    ing.add_argument("--receive-maximum", type=int, default=1000)
    ing.add_argument("--write-concurrency", type=int, default=2)
    ing.add_argument("--dead-letter-file", type=Path)
    ing.add_argument("--raw-retention", default="90d")
    ing.add_argument("--no-setup", action="store_true",
                     help="do not create database, retention policies and CQs")
    ing.set_defaults(func=cmd_ingest)

    db = sub.add_parser("db", help="database setup")
    dbsub = db.add_subparsers(dest="db_cmd", required=True)
    init = dbsub.add_parser("init", help="create database, retention policies, CQs")
    _add_influx(init)
    init.add_argument("--raw-retention", default="90d")
    bf = dbsub.add_parser("backfill", help="downsample a time range (late data)")
    _add_influx(bf)
    bf.add_argument("--start-ns", type=int, required=True)
    bf.add_argument("--end-ns", type=int, required=True)
    db.set_defaults(func=cmd_db)

    dsh = sub.add_parser("dashboards", help="Grafana dashboards as code")
    dsub = dsh.add_subparsers(dest="dash_cmd", required=True)
    b = dsub.add_parser("build", help="regenerate dashboards/ (JSON + provisioning)")
    b.add_argument("--out", type=Path, default=Path("dashboards"))
    b.add_argument("--influx-url", default="http://127.0.0.1:8086",
                   help="InfluxDB URL as Grafana reaches it (datasource provisioning)")
    pb = dsub.add_parser("publish", help="push datasource, dashboards, alert rules to Grafana")
    pb.add_argument("--grafana", required=True, help="http(s)://HOST:PORT")
    pb.add_argument("--token", help="service account token (or FIELDRIG_GRAFANA_TOKEN)")
    pb.add_argument("--user")
    pb.add_argument("--password")
    pb.add_argument("--influx-url", default="http://127.0.0.1:8086")
    pb.add_argument("--database", default="fieldrig")
    dsh.set_defaults(func=cmd_dashboards)

    rec = sub.add_parser("recipe", help="send a recipe to a rig")
    rsub = rec.add_subparsers(dest="recipe_cmd", required=True)
    rs = rsub.add_parser("send", help="send a recipe (JSON file) and optionally follow it")
    _add_broker(rs)
    rs.add_argument("--site", required=True)
    rs.add_argument("--rig", required=True)
    rs.add_argument("recipe", type=Path, help="recipe JSON file")
    rs.add_argument("--command", default="run_recipe", help="command name the rig runs")
    rs.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    rs.add_argument("--follow", action="store_true",
                    help="then follow steps, cycles and events until the recipe ends")
    rs.add_argument("--follow-timeout", type=float, default=24 * 3600.0)
    rec.set_defaults(func=cmd_command)

    cm = sub.add_parser("cmd", help="send one command to a rig, print the reply")
    _add_broker(cm)
    cm.add_argument("--site", required=True)
    cm.add_argument("--rig", required=True)
    cm.add_argument("name")
    cm.add_argument("--args", default="{}", help="JSON object, or @file.json")
    cm.add_argument("--timeout", type=float, default=10.0)
    cm.set_defaults(func=cmd_command)

    stt = sub.add_parser("status", help="rig and gateway status (retained) of a site")
    _add_broker(stt)
    stt.add_argument("--site", required=True)
    stt.add_argument("--wait", type=float, default=1.0, help="seconds to collect")
    stt.set_defaults(func=cmd_status)

    for name, func, helptext in (("analyze", cmd_analyze, "EIS fits, CCD, run summary"),
                                 ("export", cmd_export, "a run to CSV / Parquet"),
                                 ("plot", cmd_plot, "a run and its Nyquist plot to PNG"),
                                 ("annotate", cmd_annotate, "events to Grafana annotations")):
        sp = sub.add_parser(name, help=helptext)
        _add_influx(sp)
        sp.add_argument("--site", required=True)
        sp.add_argument("--rig", required=True)
        sp.add_argument("--run", required=True)
        sp.set_defaults(func=func)
        if name == "analyze":
            sp.add_argument("--area-cm2", type=float, help="electrode area, for mA/cm²")
        if name in ("export", "plot"):
            sp.add_argument("--window-s", type=float, default=3600.0,
                            help="read the run in windows of this many seconds")
        if name == "export":
            sp.add_argument("--out", type=Path, default=Path("."))
            sp.add_argument("--format", default="csv,parquet")
        if name == "plot":
            sp.add_argument("--out", type=Path, required=True, help="PNG of the run")
            sp.add_argument("--nyquist", type=Path, help="PNG of its EIS spectra")
        if name == "annotate":
            sp.add_argument("--grafana", required=True)
            sp.add_argument("--token")

    br = sub.add_parser("broker", help="Mosquitto security files")
    bsub = br.add_subparsers(dest="broker_cmd", required=True)
    bg = bsub.add_parser("generate", help="passwd, ACL, TLS CA + server cert, mosquitto.conf")
    bg.add_argument("--out", type=Path, required=True)
    bg.add_argument("--fleet", type=Path, help="fleet TOML (see docs/broker-security.md)")
    bg.add_argument("--gateway", action="append", default=[], help="SITE/GW:RIG[,RIG...]")
    bg.add_argument("--operator", action="append", default=[])
    bg.add_argument("--ingester", action="append", default=[])
    bg.add_argument("--tls-host", action="append", default=[],
                    help="broker host name or IP for its certificate (repeatable)")
    br.set_defaults(func=cmd_broker)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # One line per HTTP request would drown the ingester's own log.
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    code: int = args.func(args)
    return code
