"""``make demo``: a simulated lab end to end, shown live, with a report at the end.

Several bench rigs -- the real firmware under ``micropython``, in lockstep with simulated
solid-state cells -- run recipes on the firmware's recipe engine: a healthy cycling run,
a CCD ladder, fast plating that grows a dendrite (caught by the firmware's detector and
mitigated), and low-pressure cycling whose voids are rescued by stack pressure. The real
edge gateway serves their TCP links; where Mosquitto and InfluxDB are installed, the
gateway publishes to a private Mosquitto and the real ingester stores into a private
InfluxDB, and every sample the firmware sent is found there by sequence number.

Time is virtual and accelerated. See docs/demo.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldrig_hil.demo_programs import DEFAULT_PROGRAMS, PROGRAMS, Program, resolve

if TYPE_CHECKING:
    from fieldrig_hil.demo_lab import Lab, LabRig
    from fieldrig_hil.services import InfluxDB

APT_LINE = "sudo apt-get install -y mosquitto influxdb"


@dataclass
class Account:
    """End-to-end accounting of one rig's samples, by firmware sequence number."""

    rig: str
    sent: int  # distinct samples the firmware put on its link
    stored: int  # cell_sample points found (InfluxDB), or spooled by the gateway
    where: str  # "InfluxDB" | "gateway spool"
    missing: int
    duplicates: int
    seq_range: str

    @property
    def complete(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.sent > 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    programs = "\n".join(f"  {k:<11} {p.title}" for k, p in PROGRAMS.items())
    ap = argparse.ArgumentParser(
        prog="fieldrig-demo", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog=f"scenarios (rig programs):\n{programs}\n"
               "  any name from fieldrig_hil.cell.scenarios also works: its current,\n"
               "  temperature and pressure profile is sent as commands through the gateway.\n\n"
               "examples:\n"
               "  make demo\n"
               "  make demo DEMO_ARGS=\"--scenarios dendrite,voids --duration 1200\"\n"
               "  make demo DEMO_ARGS=\"--rigs 2 --duration 300 --no-pipeline\"\n")
    ap.add_argument("--scenarios", default=",".join(DEFAULT_PROGRAMS),
                    help="comma-separated rig programs, one rig each (default: %(default)s)")
    ap.add_argument("--rigs", type=int, default=None,
                    help="number of rigs: the first N scenarios, or the list repeated "
                         "(with other seeds) to reach N (default: one per scenario)")
    ap.add_argument("--duration", type=float, default=600.0, metavar="S",
                    help="virtual seconds each rig runs (default: %(default)s)")
    ap.add_argument("--speed", type=float, default=None, metavar="X",
                    help="at most X virtual seconds per wall second per rig (default: as "
                         "fast as the machine goes, about 3-10x)")
    ap.add_argument("--report-dir", type=Path, default=None,
                    help="where to write the report (default: a new folder under /tmp)")
    ap.add_argument("--no-pipeline", action="store_true",
                    help="bench + gateway only: no Mosquitto, ingester or InfluxDB")
    ap.add_argument("--seed", type=int, default=1, help="simulation seed (default: 1)")
    ap.add_argument("--plain", action="store_true",
                    help="line-per-update output even on a terminal")
    args = ap.parse_args(argv)
    if args.duration <= 0:
        ap.error("--duration must be > 0")
    if args.speed is not None and args.speed <= 0:
        ap.error("--speed must be > 0")
    if args.rigs is not None and not 1 <= args.rigs <= 12:
        ap.error("--rigs must be 1..12")
    return args


def choose_programs(spec: str, rigs: int | None) -> list[Program]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError("--scenarios is empty")
    progs = [resolve(n) for n in names]
    n = rigs or len(progs)
    return [progs[i % len(progs)] for i in range(n)]


# ----------------------------------------------------------------------------- summary
def account(lab: Lab, influx: InfluxDB | None) -> list[Account]:
    from fieldrig_hil.demo_lab import SITE

    out = []
    for r in lab.rigs:
        sent_keys = r.obs.sample_keys()
        sent = Counter(seq for _, seq in sent_keys)
        seqs = sorted(sent)
        rng = f"seq {seqs[0]}..{seqs[-1]}" if seqs else "no samples"
        if influx is not None:
            stored_seqs: Counter[int] = Counter()
            with contextlib.suppress(Exception):
                series = influx.query(
                    f'SELECT "seq" FROM "cell_sample" WHERE site = \'{SITE}\' AND '
                    f'rig = \'{r.rig_id}\' AND run = \'{lab.cfg.run}\'')
                for s in series:
                    values: Any = s["values"]
                    stored_seqs.update(int(v[1]) for v in values)
            missing = sum((sent - stored_seqs).values())
            dup = sum(stored_seqs.values()) - len(stored_seqs)
            out.append(Account(r.rig_id, len(sent_keys), sum(stored_seqs.values()),
                               "InfluxDB", missing, dup, rng))
        else:
            spooled = lab.spooled(r)
            out.append(Account(r.rig_id, len(sent_keys), spooled, "gateway spool",
                               max(0, len(sent_keys) - spooled), 0, rng))
    return out


def _first_truth(r: LabRig, kind: str) -> float:
    plant = r.bench.plant
    if plant is None:
        return math.nan
    return float(next((ev.t_s for ev in plant.cell.events if ev.kind == kind), math.nan))


def _strip_resistance(r: LabRig, t0: float, t1: float) -> float:
    """Median |V/I| of the firmware's stripping samples in [t0, t1) (ohm)."""
    vals = [abs(s.cell_voltage_v / s.cell_current_ma * 1000.0)
            for t, _, s in r.obs.samples
            if t0 <= t < t1 and s.cell_current_ma < -0.05 and math.isfinite(s.cell_voltage_v)]
    if not vals:
        return math.nan
    vals.sort()
    return vals[len(vals) // 2]


def verdict(r: LabRig) -> list[str]:
    """What happened on one rig, from the firmware's own messages (and the truth)."""
    from fieldrig_hil.demo_view import event_text

    obs = r.obs
    prog: Program = r.program
    alarms = obs.named("echem_alarm")
    trips = obs.named("limit_tripped")
    mitig = obs.named("mitigation")
    done = obs.named("recipe_done")
    lines = []
    ev = [f"{event_text(e)} at {e.t_s:.0f} s" for e in (*alarms, *trips, *mitig, *done)]
    ev.sort(key=lambda s: float(s.rsplit(" at ", 1)[1].split()[0]))
    lines.append("firmware: " + ("; ".join(ev) if ev else "no alarm, no trip"))
    truth = []
    plant = r.bench.plant
    if plant is not None:
        seen = set()
        for e in plant.cell.events:
            if e.kind not in seen:
                seen.add(e.kind)
                truth.append(f"{e.kind} at {e.t_s:.0f} s")
    lines.append("simulated cell: " + (", ".join(truth) or "no degradation event"))
    hard = _first_truth(r, "hard_short")
    bridge = _first_truth(r, "soft_short")
    first_alarm = alarms[0] if alarms else None
    if prog.expect == "clean":
        ok = not alarms and not trips
        lines.append("verdict: " + ("healthy, no alarm (as expected)" if ok
                                    else "ALARM on a healthy cell"))
    elif prog.expect == "ccd":
        ccd = next((e.body.get("ccd_ma_cm2") for e in done
                    if e.body.get("ccd_ma_cm2") is not None), None)
        sc = r.bench.scenario
        true_ccd = sc.true_ccd().plating_ma_cm2 if sc is not None else math.nan
        if ccd is not None:
            lines.append(f"verdict: CCD {ccd} mA/cm² measured by the recipe "
                         f"(simulated plating CCD {true_ccd:.2f} mA/cm²)")
        elif first_alarm is not None:
            lines.append(f"verdict: short alarm ({first_alarm.body.get('kind')}) at "
                         f"{first_alarm.t_s:.0f} s; recipe gave no CCD")
        elif math.isfinite(bridge):
            lines.append(f"verdict: the simulated cell shorted (filament bridged at "
                         f"{bridge:.0f} s) but the firmware raised no short alarm within "
                         f"the run (simulated plating CCD {true_ccd:.2f} mA/cm²)")
        else:
            lines.append("verdict: no short within the run (the CCD lies above the last "
                         f"level reached; simulated plating CCD {true_ccd:.2f} mA/cm²)")
    elif prog.expect == "mitigated":
        soft = [a for a in alarms if a.body.get("kind") == "soft_short"]
        if soft and mitig:
            when = soft[0].t_s
            lead = f", {hard - when:.0f} s before the hard short" if math.isfinite(hard) \
                else ", no hard short by the end"
            since = f" ({when - bridge:.0f} s after the filament bridged)" \
                if math.isfinite(bridge) else ""
            lines.append(f"verdict: dendrite caught at {when:.0f} s{since} and mitigated "
                         f"({', '.join(str(m.body.get('action')) for m in mitig[:4])})"
                         f"{lead}")
        elif alarms:
            lines.append(f"verdict: caught as {alarms[0].body.get('kind')} at "
                         f"{alarms[0].t_s:.0f} s (no soft-short alarm before it)")
        else:
            lines.append("verdict: NOT caught by the firmware within the run")
    elif prog.expect == "rescued":
        raised = [m for m in mitig if m.body.get("action") == "raise_pressure"]
        rescue = next((e.t_s for e in obs.events if e.name == "recipe_step"
                       and str(e.body.get("label", "")).startswith("rescue")), math.nan)
        t_raise = min([m.t_s for m in raised] + ([rescue] if math.isfinite(rescue) else []),
                      default=math.nan)
        if math.isfinite(t_raise):
            before = _strip_resistance(r, t_raise - 150.0, t_raise)
            after = _strip_resistance(r, r.t_s - 150.0, r.t_s + 1)
            how = "void alarm -> mitigation raise_pressure" if raised else "recipe rescue step"
            lines.append(f"verdict: stack pressure raised at {t_raise:.0f} s ({how}); "
                         f"stripping |V/I| {before:.1f} Ω before, {after:.1f} Ω at the end")
        else:
            lines.append("verdict: pressure never raised within the run")
    else:
        lines.append(f"verdict: {len(alarms)} alarm(s), {len(trips)} trip(s)")
    return lines


def summary_text(lab: Lab, accounts: list[Account], mode: str, wall_s: float) -> str:
    rigs = lab.rigs
    out = [f"fieldrig demo summary ({mode})",
           f"wall time {wall_s:.0f} s; virtual time per rig "
           f"{max((r.t_s for r in rigs), default=0):.0f} s", ""]
    acc = {a.rig: a for a in accounts}
    for r in rigs:
        a = acc[r.rig_id]
        out.append(f"{r.rig_id} — {r.program.title}")
        if r.error is not None:
            out.append(f"  FAILED: {r.error}")
        if r.phase.startswith("failed"):
            out.append(f"  program {r.phase}")
        state = "complete" if a.complete else "INCOMPLETE"
        extra = ""
        if a.missing:
            extra += f", {a.missing} missing"
        if a.duplicates:
            extra += f", {a.duplicates} duplicated"
        out.append(f"  samples: {a.sent} sent by the firmware ({a.seq_range}), "
                   f"{a.stored} in {a.where}{extra} -> {state}")
        zs = r.obs.impedance
        if zs:
            out.append(f"  impedance: {len(zs)} points from the firmware, last |Z| "
                       f"{zs[-1].mag:.2f} Ω at {zs[-1].f_hz:g} Hz")
        out += [f"  {ln}" for ln in verdict(r)]
        out.append("")
    return "\n".join(out)


# -------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        programs = choose_programs(args.scenarios, args.rigs)
    except ValueError as exc:
        print(f"fieldrig-demo: {exc}", file=sys.stderr)
        return 2

    from fieldrig_hil.bench.report import track_impedance
    from fieldrig_hil.demo_lab import Lab, LabConfig, fmt_duration
    from fieldrig_hil.demo_report import events_csv, nyquist_png, rig_png, truth_spectrum
    from fieldrig_hil.demo_view import LiveView
    from fieldrig_hil.services import InfluxDB, Mosquitto, ServiceFailed, ServiceMissing

    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fieldrig-demo-"))
    report_dir = (args.report_dir or work / "report").resolve()
    logging.basicConfig(filename=str(work / "demo.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("fieldrig.edge.mqtt").setLevel(logging.WARNING)
    # fieldrig_edge.session logs each command at INFO with extra={"args": ...}, which the
    # logging module refuses (KeyError: "Attempt to overwrite 'args' in LogRecord") and
    # which then fails the command: keep that logger above INFO.
    logging.getLogger("fieldrig.edge.rig").setLevel(logging.WARNING)
    print(f"fieldrig demo: {len(programs)} rig(s), {fmt_duration(args.duration)} of virtual "
          f"time each, working folder {work}")

    broker: Mosquitto | None = None
    influx: InfluxDB | None = None
    mode = "bench + gateway (no pipeline: --no-pipeline)"
    if not args.no_pipeline:
        try:
            broker = Mosquitto(work / "mosquitto").start()
            influx = InfluxDB(work / "influxdb").start()
            mode = "full pipeline: bench -> gateway -> Mosquitto -> ingester -> InfluxDB"
        except ServiceMissing as exc:
            for s in (influx, broker):
                if s is not None:
                    s.stop()
            broker = influx = None
            mode = "bench + gateway only (Mosquitto / InfluxDB not installed)"
            print(f"  NOTE: {exc}")
            print("  NOTE: no embedded broker: the gateway needs MQTT v5 (the pure-Python "
                  "brokers speak 3.1.1), so this run stops at the gateway, which spools "
                  "everything it would publish.")
            print(f"  NOTE: for the full stack: {APT_LINE}  (or run 'make demo' as root)")
        except ServiceFailed as exc:
            for s in (influx, broker):
                if s is not None:
                    s.stop()
            print(f"fieldrig-demo: a service did not start: {exc}", file=sys.stderr)
            return 2
    print(f"  mode: {mode}")
    if broker is not None and influx is not None:
        print(f"  mosquitto  mqtt://{broker.host}:{broker.port}   influxd  {influx.url}")

    cfg = LabConfig(duration_s=args.duration, speed=args.speed, pipeline=influx is not None,
                    seed=args.seed, run=f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    lab = Lab(work, programs, cfg, broker, influx)
    tracks = {}
    z_start = {}
    rc = 0
    accounts: list[Account] = []
    try:
        print("  starting the firmware (micropython, .mpy) on the bench rigs ...", flush=True)
        lab.start_rigs()
        for r in lab.rigs:
            print(f"  {r.rig_id:<12} {r.program.title}  "
                  f"[micropython pid {r.bench.proc.pid if r.bench.proc else '?'}, "
                  f"link tcp://127.0.0.1:{r.bench.port}]")
            tracks[r.rig_id] = track_impedance(r.bench, every_s=10.0)
            z_start[r.rig_id] = truth_spectrum(r)
        speed = f"at most {args.speed:g}x" if args.speed else "as fast as it goes"
        print(f"  running {fmt_duration(args.duration)} of virtual time, {speed}; "
              f"values below are the firmware's own (via its link)\n", flush=True)
        view = LiveView(lab, tty=False if args.plain else None)
        try:
            asyncio.run(lab.run(view=view, view_every_s=0.5 if view.tty else 1.0))
        except KeyboardInterrupt:
            lab.stop_requested.set()
            print("\ninterrupted: stopping and writing what there is", flush=True)
            rc = 130
        except Exception as exc:
            lab.stop_requested.set()
            logging.exception("the lab failed")
            print(f"\nfieldrig-demo: the lab failed: {exc!r} (log: {work}/demo.log)",
                  flush=True)
            rc = 1
        view.final()
        accounts = account(lab, influx)
    finally:
        lab.stop_rigs()
        for s in (influx, broker):
            if s is not None:
                s.stop()
    wall = time.monotonic() - t_start
    report_dir.mkdir(parents=True, exist_ok=True)
    for r in lab.rigs:
        with contextlib.suppress(Exception):
            rig_png(r, report_dir, tracks.get(r.rig_id))
        with contextlib.suppress(Exception):
            nyquist_png(r, report_dir, z_start.get(r.rig_id))
    events_csv(lab.rigs, report_dir / "events.csv")
    text = summary_text(lab, accounts, mode, wall)
    (report_dir / "summary.txt").write_text(text)
    print("\n" + text)
    if influx is None and not args.no_pipeline:
        print(f"(bench + gateway only; for the full pipeline into InfluxDB: {APT_LINE})")
    failed = [r.rig_id for r in lab.rigs if r.error is not None or r.phase.startswith("failed")]
    incomplete = [a.rig for a in accounts if not a.complete]
    if failed:
        print(f"rigs that failed: {', '.join(failed)} (logs: {work}/rigs, {work}/demo.log)")
    if incomplete:
        print(f"sample accounting incomplete for: {', '.join(incomplete)}")
    print(f"report: {report_dir}")
    if rc:
        return rc
    return 1 if failed or incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
