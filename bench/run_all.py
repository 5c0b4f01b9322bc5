"""Run every benchmark in bench/ and write the summary, docs/benchmarks.md.

    python bench/run_all.py            # the full set (about 15-25 min on 2 cores)
    python bench/run_all.py --quick    # smaller runs of the same benchmarks (a few min)
    python bench/run_all.py --only heap,impedance    # some of them; the other rows of
                                                     # docs/benchmarks.md are kept

Each benchmark runs as its own process, one after the other (they would skew each
other's figures on a shared machine), with the exact command shown in the summary row.
The scripts that keep their own page (docs/benchmarks_*.md) rewrite it as they always
do: ``bench_cell.py`` and ``bench_impedance.py`` on every run, ``bench_edge.py`` and
``bench_ingest.py`` only in the full run (``--write`` / ``--write-doc``; quick figures go
to the summary only). The firmware heap figures are measured here: the firmware compiled
as deployed (mpy-cross for the RP2350, ``fieldrig_hil.firmware_build``), run under the
MicroPython unix port in its steady state (``firmware/tests/steady_main.py``, the same
runs as ``firmware/tests/test_steady.py``). Full output of each benchmark:
``build/bench-logs/<name>.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
LOGS = ROOT / "build" / "bench-logs"
RESULTS_BEGIN, RESULTS_END = "<!-- run_all results", "-->"


@dataclass
class Row:
    figure: str
    value: str
    target: str
    command: str
    date: str
    page: str = ""  # the benchmark's own page, when it has one
    bench: str = ""


@dataclass
class Outcome:
    name: str
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


def _tool_first_line(argv: list[str]) -> str:
    exe = shutil.which(argv[0]) or next(
        (str(Path(d) / argv[0]) for d in ("/usr/sbin", "/usr/bin", str(Path(sys.executable).parent))
         if (Path(d) / argv[0]).exists()), None)
    if exe is None:
        return "not installed"
    try:
        r = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (r.stdout or r.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    mp = _tool_first_line(["micropython", "-c", "import sys; print(sys.version)"])
    return {
        "cpus": str(os.cpu_count()),
        "cpu model": model,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "micropython": f"unix port {mp}",
        "mpy-cross": _tool_first_line(["mpy-cross", "--version"]),
        "mosquitto": _tool_first_line(["mosquitto", "-h"]),
        "influxd": _tool_first_line(["influxd", "version"]),
    }


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def run(name: str, argv: list[str], timeout_s: float, env: dict[str, str] | None = None,
        ok_codes: tuple[int, ...] = (0,)) -> str:
    """Run one benchmark from the repository root; its output goes to the log."""
    log = LOGS / f"{name}.log"
    LOGS.mkdir(parents=True, exist_ok=True)
    print(f"[run_all] {name}: {shlex.join(argv)}", flush=True)
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                       env=env)
    log.write_text(f"$ {shlex.join(argv)}\n{r.stdout}\n--- stderr\n{r.stderr}")
    if r.returncode not in ok_codes:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"exit {r.returncode}:\n{tail}")
    return r.stdout


def _shown(argv: list[str]) -> str:
    """The command as a person types it from the repository root."""
    out = list(argv)
    if out and out[0] == sys.executable:
        out[0] = "python"
    elif out and Path(out[0]).name == "micropython":
        out[0] = "micropython"
    return shlex.join(out)


def _search(pattern: str, text: str, what: str) -> re.Match[str]:
    m = re.search(pattern, text, re.M)
    if m is None:
        raise RuntimeError(f"could not read {what} from the output (pattern {pattern!r})")
    return m


def _num(s: str) -> float:
    return float(s.replace(",", ""))


# ---------------------------------------------------------------- the benchmarks

def bench_hil(quick: bool, today: str) -> list[Row]:
    # The figure the HIL issue asks for: a 10 h symmetric-cycling recipe with tracking.
    hours = "0.25" if quick else "10"
    argv = [sys.executable, "bench/bench_hil.py", "--hours", hours]
    out = run("hil", argv, 3600)
    line = next(x.strip() for x in reversed(out.splitlines()) if x.strip().startswith("{"))
    r = json.loads(line)
    rows = [Row(f"HIL speed: {float(hours):g} h symmetric-cycling recipe with impedance "
                "tracking every 30 s, real firmware vs simulated cell (simulated / wall time)",
                f"{r['speed_x']:.1f}x wall, {r['speed_x_cpu']:.1f}x by CPU time "
                f"({r['virtual_s']:.0f} s in {r['wall_s']:.0f} s)",
                "100x (docs/benchmarks_hil.md)", _shown(argv), today, "benchmarks_hil.md", "hil")]
    return rows


def bench_hil_firmware(quick: bool, today: str) -> list[Row]:
    argv = [sys.executable, "bench/bench_hil.py", "--firmware-only", "--seconds",
            "20" if quick else "60"]
    out = run("hil-firmware", argv, 1800)
    on = _search(r"coalescing on, .*?: ([\d.]+)x real time", out, "firmware-only speed")
    off = _search(r"coalescing off, .*?: ([\d.]+)x real time", out, "firmware-only speed")
    return [Row("HIL speed: the firmware alone on the chip models (no cell, no link), ADC "
                "coalescing on / off", f"{float(on.group(1)):.1f}x / {float(off.group(1)):.1f}x",
                "—", _shown(argv), today, "benchmarks_hil.md", "hil-firmware")]


def bench_cell(quick: bool, today: str) -> list[Row]:
    argv = [sys.executable, "bench/bench_cell.py"]
    out = run("cell", argv, 600)
    hour = _search(r"^\| 1 h at 1 s resolution.*?\| ([\d.]+ ms) \| ([\d,]+) \|", out, "1 h case")
    lock = _search(r"^\| lockstep: .*?\| ([\d.]+ ms) \| ([\d,]+) \|", out, "lockstep case")
    return [
        Row("Simulated cell: 1 h at 1 s resolution in one call (simulated s per wall s)",
            f"{hour.group(2)} ({hour.group(1)})", "—", _shown(argv), today,
            "benchmarks_cell.md", "cell"),
        Row("Simulated cell: lockstep, 1000 calls of 1 ms (simulated s per wall s)",
            f"{lock.group(2)} ({lock.group(1)})", "—", _shown(argv), today,
            "benchmarks_cell.md", "cell"),
    ]


def bench_chips(quick: bool, today: str) -> list[Row]:
    from fieldrig_hil.services import micropython_binary

    argv = [micropython_binary(), "bench/bench_chips.py"]
    out = run("chips", argv, 600)
    bus = _search(r"DRDY IRQ \+ SPI frames: .*?\(([\d.]+) frames/s, ([\d.]+)x real time", out,
                  "bus path")
    rows = [Row("Chip models: ADS131M04 DRDY IRQ + SPI frames, 8 kSPS block (x real time)",
                f"{float(bus.group(2)):.2f}x ({float(bus.group(1)):,.0f} frames/s)",
                "> 1x: faster than the part (bench/bench_chips.py)", _shown(argv), today,
                "hil.md#speed", "chips")]
    drv = re.search(r"read_block_codes_into: .*?\(([\d.]+)x real time\)", out)
    if drv:
        rows.append(Row("Chip models: firmware ADS131M04 driver block read, 8 kSPS (x real time)",
                        f"{float(drv.group(1)):.2f}x", "> 1x", _shown(argv), today,
                        "hil.md#speed", "chips"))
    return rows


def bench_impedance(quick: bool, today: str) -> list[Row]:
    argv = [sys.executable, "bench/bench_impedance.py"]
    out = run("impedance", argv, 900)
    rows = []
    for n in ("1024", "4096"):
        m = _search(rf"^\| {n} \| viper \(native\) \| (\d+) \| (\d+) \| [\d.]+ \| "
                    r"(\d+) \| (\d+) \|", out, f"viper N={n}")
        p = _search(rf"^\| {n} \| plain bytecode \| (\d+) \|", out, f"plain N={n}")
        rows.append(Row(f"Impedance: cost per estimate, N={n} samples (unix port; viper / "
                        "plain bytecode)",
                        f"{m.group(1)} µs / {p.group(1)} µs, {m.group(4)} B allocated, "
                        f"{m.group(3)} B in the kernels", "0 B in the kernels (docs/echem.md)",
                        _shown(argv), today, "benchmarks_impedance.md", "impedance"))
    acc = _search(r"codes with noise and drift: (\d+) tone estimates, worst relative\s+"
                  r"difference ([\d.e+-]+)", out, "cross-check")
    rows.append(Row("Impedance accuracy: firmware fixed-point fit vs numpy least squares "
                    f"(worst of {acc.group(1)} tones)", f"{float(acc.group(2)):.2e} relative",
                    "≤ 1e-5 (docs/echem.md)", _shown(argv), today, "benchmarks_impedance.md",
                    "impedance"))
    return rows


def bench_edge(quick: bool, today: str) -> list[Row]:
    if quick:
        argv = [sys.executable, "bench/bench_edge.py", "--rigs", "4", "--rate", "2500",
                "--seconds", "5", "--replay", "20000"]
    else:
        argv = [sys.executable, "bench/bench_edge.py", "--rigs", "4", "--rate", "2500",
                "--seconds", "15", "--replay", "100000", "--write", "docs/benchmarks_edge.md"]
    out = run("edge", argv, 1800, ok_codes=(0, 1))
    offered = _search(r"\| samples offered by the rigs \| ([\d,]+) /s \|", out, "offered")
    sus = _search(r"sustained samples through the gateway to the broker\*\* \| \*\*([\d,]+) /s",
                  out, "sustained rate")
    rep = _search(r"spool replay after the broker returned\*\* \| \*\*([\d,]+) /s\*\* "
                  r"\(([\d.]+) s\)", out, "replay rate")
    spooled = _search(r"\| samples spooled while the broker was down \| ([\d,]+) \|", out,
                      "spooled")
    tot = _search(r"delivered in total / missing / duplicated \| ([\d,]+) / ([\d,]+) / ([\d,]+)",
                  out, "totals")
    return [
        Row(f"Gateway throughput: sustained samples/s to the broker ({offered.group(1)}/s "
            "offered by 4 rigs)", f"{sus.group(1)} /s", "≥ 800 /s: 8 rigs at 100 Hz "
            "(docs/edge.md)", _shown(argv), today, "benchmarks_edge.md", "edge"),
        Row(f"Gateway spool replay after a broker outage ({spooled.group(1)} samples)",
            f"{rep.group(1)} /s ({rep.group(2)} s)", "—", _shown(argv), today,
            "benchmarks_edge.md", "edge"),
        Row("Gateway: samples delivered / missing / duplicated",
            f"{tot.group(1)} / {tot.group(2)} / {tot.group(3)}", "missing 0, duplicated 0",
            _shown(argv), today, "benchmarks_edge.md", "edge"),
    ]


def bench_ingest(quick: bool, today: str) -> list[Row]:
    if quick:
        argv = [sys.executable, "bench/bench_ingest.py", "--samples", "60000",
                "--ingesters", "1"]
    else:
        argv = [sys.executable, "bench/bench_ingest.py", "--samples", "300000",
                "--ingesters", "1,2", "--write-doc"]
    # Exit 1 = below the 0.5-of-raw target: still a measurement.
    out = run("ingest", argv, 1800, ok_codes=(0, 1))
    raw = _search(r"raw batched writes .*?:\s+([\d.]+) points/s", out, "raw rate")
    rows = [Row("Ingest: raw batched line-protocol writes to InfluxDB (points/s)",
                f"{_num(raw.group(1)):,.0f} /s", "—", _shown(argv), today,
                "benchmarks_ingest.md", "ingest")]
    for m in re.finditer(r"broker \+ (\d+) ingester\(s\)\s*:\s+([\d.]+) points/s\s+"
                         r"\(([\d.]+) of raw\)", out):
        rows.append(Row(f"Ingest: broker + {m.group(1)} ingester(s) into the same InfluxDB "
                        "(points/s, share of raw)",
                        f"{_num(m.group(2)):,.0f} /s ({m.group(3)} of raw)", "≥ 0.5 of raw",
                        _shown(argv), today, "benchmarks_ingest.md", "ingest"))
    if len(rows) == 1:
        raise RuntimeError("no pipeline figure in the output")
    return rows


STEADY_RE = (r"boot_alloc (\d+) warm_alloc (\d+) end_alloc (\d+) free (\d+) uptime_s (\d+)")


def _steady(out_dir: Path, heap: str, call: str, expect: str) -> tuple[bool, str]:
    from fieldrig_hil.services import micropython_binary

    module = call.split(".")[0]
    env = dict(os.environ, MICROPYPATH=str(out_dir))
    r = subprocess.run([micropython_binary(), "-X", f"heapsize={heap}", "-c",
                        f"import {module}; {call}"], cwd=out_dir, env=env, capture_output=True,
                       text=True, timeout=1800)
    text = r.stdout + r.stderr
    return (r.returncode == 0 and expect in text), text


def bench_heap(quick: bool, today: str) -> list[Row]:
    """Firmware heap use as deployed: every module compiled with mpy-cross for the
    RP2350 (tools/mpy_compile.py does the same), run by the unix port from .mpy (the
    viper kernels are ARM code there, so impedance uses the bit-identical plain ones)."""
    from fieldrig_hil.firmware_build import BOARD_MARCH, FIRMWARE_DIR, compile_tree, mpy_cross

    passes = 20_000 if quick else 100_000
    echem_passes = 12_000 if quick else 50_000
    cmd = "python bench/run_all.py --only heap" + (" --quick" if quick else "")
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fieldrig-heap-") as tmp:
        out = Path(tmp)
        errors = compile_tree(out, BOARD_MARCH)
        for mod in ("steady_main", "test_steady"):
            src = FIRMWARE_DIR / "tests" / f"{mod}.py"
            r = subprocess.run([mpy_cross(), f"-march={BOARD_MARCH}", "-o",
                                str(out / f"{mod}.mpy"), "-s", f"tests/{mod}.py", str(src)],
                               capture_output=True, text=True)
            if r.returncode:
                errors.append(r.stderr)
        if errors:
            raise RuntimeError("mpy-cross failed: " + "; ".join(errors))
        print(f"[run_all] heap: core steady state, {passes} passes", flush=True)
        ok, core = _steady(out, "256K", f"steady_main.main({passes})", "STEADY OK")
        log.append(core)
        if not ok:
            raise RuntimeError("core steady state failed in 256K:\n" + core[-1500:])
        boot, warm, end, _, _ = (int(x) for x in _search(STEADY_RE, core, "core").groups())
        small = min(passes, 20_000)
        core_min = _smallest_heap(out, 96 * 1024, 256 * 1024,
                                  f"steady_main.main({small})", "STEADY OK")
        print(f"[run_all] heap: electrochemistry steady state, {echem_passes} passes",
              flush=True)
        ok, echem = _steady(out, "512K", f"test_steady.echem_steady({echem_passes})",
                            "ECHEM STEADY OK")
        log.append(echem)
        if not ok:
            raise RuntimeError("electrochemistry steady state failed in 512K:\n"
                               + echem[-1500:])
        _, e_warm, e_end, _, _ = (int(x) for x in _search(STEADY_RE, echem, "echem").groups())
        echem_min = _smallest_heap(out, 256 * 1024, 512 * 1024,
                                   "test_steady.echem_steady(6000)", "ECHEM STEADY OK")
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / "heap.log").write_text("\n".join(log))
    page = "firmware.md#resource-budget-measured"
    return [
        Row("Firmware heap after boot, core (.mpy; unix port, 64-bit: objects about twice "
            f"their RP2350 size); growth over {passes:,} scheduler passes after warm-up",
            f"{boot:,} B; {end - warm:+,} B", "growth ≤ 256 B (firmware/tests/test_steady.py)",
            cmd, today, page, "heap"),
        Row(f"Firmware heap: smallest -X heapsize running the core ({small:,} passes)",
            f"{core_min:,} B ({core_min / 1024:.2f} KiB)",
            "≤ 131,072 B (128 KiB, test_steady.py)", cmd, today, page, "heap"),
        Row("Firmware heap in use with a cycling recipe, impedance tracking and the detector; "
            f"growth over {echem_passes:,} passes", f"{e_end:,} B; {e_end - e_warm:+,} B",
            "flat (test_steady.py)", cmd, today, page, "heap"),
        Row("Firmware heap: smallest -X heapsize running recipe + impedance + detector",
            f"{echem_min:,} B ({echem_min / 1024:.2f} KiB)",
            "≤ 344,064 B (336 KiB, test_steady.py)", cmd, today, page, "heap"),
    ]


def _smallest_heap(out_dir: Path, lo: int, hi: int, call: str, expect: str) -> int:
    """Smallest -X heapsize (bytes, to 256 B) in (lo, hi] that runs call; hi must run."""
    if not _steady(out_dir, str(hi), call, expect)[0]:
        raise RuntimeError(f"{call} does not run in {hi} B")
    if _steady(out_dir, str(lo), call, expect)[0]:
        return lo
    while hi - lo > 256:
        mid = (lo + hi) // 2 // 256 * 256
        print(f"[run_all] heap: {call} in {mid} B", flush=True)
        if _steady(out_dir, str(mid), call, expect)[0]:
            hi = mid
        else:
            lo = mid
    return hi


def bench_detection(quick: bool, today: str) -> list[Row]:
    argv = [sys.executable, "bench/bench_detection.py"] + (["--quick"] if quick else ["--write"])
    out = run("detection", argv, 5400)
    line = next(x.strip() for x in reversed(out.splitlines()) if x.strip().startswith("{"))
    r = json.loads(line)
    rows = [Row("Detection: firmware `soft_short` alarm before the hard short over the dendrite "
                "scenarios (caught / total; lead time min / median)",
                f"{r['dendrite_caught']}/{r['dendrite_total']}; {r['lead_min_s']:.0f} s / "
                f"{r['lead_median_s']:.0f} s", "every dendrite scenario detected before the "
                "hard short (DESIGN.md)", _shown(argv), today, "benchmarks_detection.md",
                "detection")]
    if "false_alarms" in r:
        rows.append(Row("Detection: false alarms over the healthy scenarios with T / p / j "
                        "steps (healthy_cycling, false_alarm_steps)",
                        f"{r['false_alarms']} in {r['healthy_hours']:.1f} h", "0 (DESIGN.md)",
                        _shown(argv), today, "benchmarks_detection.md", "detection"))
    return rows


BENCHES: dict[str, Callable[[bool, str], list[Row]]] = {
    "hil": bench_hil,
    "hil-firmware": bench_hil_firmware,
    "impedance": bench_impedance,
    "detection": bench_detection,
    "edge": bench_edge,
    "ingest": bench_ingest,
    "heap": bench_heap,
    "cell": bench_cell,
    "chips": bench_chips,
}


# ---------------------------------------------------------------- the page

def _previous() -> dict[str, object]:
    if not DOC.exists():
        return {}
    text = DOC.read_text()
    i = text.find(RESULTS_BEGIN)
    if i < 0:
        return {}
    j = text.find(RESULTS_END, i)
    try:
        data: dict[str, object] = json.loads(text[i + len(RESULTS_BEGIN):j])
    except ValueError:
        return {}
    return data


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _code(s: str) -> str:
    return s if s.startswith("pending") else f"`{s}`"


def render(outcomes: dict[str, dict[str, object]], mach: dict[str, str], meta: dict[str, str],
           ) -> str:
    rows: list[Row] = []
    failed: list[str] = []
    for name in BENCHES:
        o = outcomes.get(name)
        if o is None:
            continue
        rows += [Row(**r) for r in o["rows"]]  # type: ignore[attr-defined]
        if o.get("error"):
            failed.append(f"- **{name}** ({o.get('date', '?')}): " + _cell(str(o["error"]))[:600])
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python bench/run_all.py` (do not edit by hand: run it again). "
        f"Last run: `{meta['command']}` on {meta['date']}, {meta['minutes']} min in all.",
        "Every figure below names the command that produced it (from the repository root,",
        "with the development environment active) and the date it was measured; the machine",
        "is described under the table. Quick runs (`--quick`) use smaller sizes than the",
        "full run; the command shows which.",
        "",
        "| figure | value | target | command | date |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        fig = f"[{_cell(r.figure)}]({r.page})" if r.page else _cell(r.figure)
        lines.append(f"| {fig} | {_cell(r.value)} | {_cell(r.target)} | "
                     f"{_cell(_code(r.command))} | {r.date} |")
    lines += ["", "## Machine", "",
              "All figures share this machine with the broker, the database and each other "
              "(nothing else is stopped for a run): they are floors, not capacities of dedicated "
              "hosts.", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in mach.items()]
    lines += [f"| load average (1 min) at start / end | {meta['load_start']} / "
              f"{meta['load_end']} |", ""]
    lines += ["## Per-benchmark pages", "",
              "- [HIL bench speed](benchmarks_hil.md) — `bench/bench_hil.py` (what bounds it)",
              "- [Simulated cell](benchmarks_cell.md) — `bench/bench_cell.py`",
              "- [Impedance estimate](benchmarks_impedance.md) — `bench/bench_impedance.py`",
              "- [Edge gateway](benchmarks_edge.md) — `bench/bench_edge.py`",
              "- [Ingest](benchmarks_ingest.md) — `bench/bench_ingest.py`",
              "- [Firmware resource budget](firmware.md#resource-budget-measured) — heap figures "
              "and what they mean on the RP2350",
              "- [Chip models](hil.md#speed) — `micropython bench/bench_chips.py`",
              "", "## Durations", "",
              "| benchmark | wall time of its run | date |", "|---|---|---|"]
    for name in BENCHES:
        o = outcomes.get(name)
        if o is not None:
            secs = float(str(o.get("seconds", 0.0)))
            lines.append(f"| {name} | {secs:.0f} s | {o.get('date')} |")
    if failed:
        lines += ["", "## Benchmarks that failed in their last run", "", *failed]
    lines += ["", RESULTS_BEGIN, json.dumps({"outcomes": outcomes}, indent=1, ensure_ascii=False),
              RESULTS_END, ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs (a few minutes)")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    ap.add_argument("--out", type=Path, default=DOC, help="the summary page")
    args = ap.parse_args()
    names = list(BENCHES) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHES)}")
    today = time.strftime("%Y-%m-%d")
    prev = _previous() if args.only else {}
    outcomes: dict[str, dict[str, object]] = dict(prev.get("outcomes", {}))  # type: ignore[call-overload]
    load_start = loadavg()
    t_all = time.monotonic()
    status = 0
    for name in names:
        t0 = time.monotonic()
        o = Outcome(name)
        try:
            o.rows = BENCHES[name](args.quick, today)
        except Exception as exc:  # one benchmark failing must not lose the others' figures
            o.error = f"{type(exc).__name__}: {exc}"
            print(f"[run_all] {name} FAILED: {o.error}", file=sys.stderr, flush=True)
            status = 1
            old = outcomes.get(name)
            if old and old.get("rows"):  # keep the last good figures (with their dates)
                o.rows = [Row(**r) for r in old["rows"]]  # type: ignore[attr-defined]
            else:
                o.rows = [Row(f"{name}: no figure", "failed (see below)", "—",
                              f"python bench/run_all.py --only {name}", today, bench=name)]
        o.seconds = time.monotonic() - t0
        d = asdict(o)
        d["date"] = today
        outcomes[name] = d
        for r in o.rows:
            print(f"[run_all]   {r.figure}: {r.value}", flush=True)
    minutes = (time.monotonic() - t_all) / 60
    cmd = "python bench/run_all.py" + (" --quick" if args.quick else "") + (
        f" --only {args.only}" if args.only else "")
    meta = {"command": cmd, "date": today, "minutes": f"{minutes:.1f}",
            "load_start": load_start, "load_end": loadavg()}
    args.out.write_text(render(outcomes, machine(), meta))
    print(f"[run_all] wrote {args.out} ({minutes:.1f} min)")
    return status


if __name__ == "__main__":
    sys.exit(main())
