"""Detection benchmark: the firmware's detector over the scenario library on the HIL bench.

    python bench/bench_detection.py --write      # the set CI checks, run to the short
    python bench/bench_detection.py --quick      # dendrite scenarios only, to the alarm

For every dendrite scenario (``fieldrig_hil.bench.detection.DENDRITE_SCENARIOS``, sized
to short within about 1.5 h) the firmware tracks impedance every 30 s and the run goes
on to the cell's hard short (or the firmware's safe state): the lead time is the hard
short minus the first ``soft_short`` alarm, both on the bench. Healthy scenarios with
temperature, pressure and current steps count false alarms. CCD ladders (the firmware's
built-in ``ccd_ladder`` recipe, DC and 1 MHz pulses: ``CCD_LADDERS``) compare the
recipe's CCD with the cell's. ``--write`` puts the tables in
docs/benchmarks_detection.md; the last line of output is a JSON summary
(``bench/run_all.py`` reads it).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

from fieldrig_hil.bench.detection import (
    CCD_LADDERS,
    DENDRITE_SCENARIOS,
    FALSE_ALARM_SCENARIOS,
    ladder,
    mitigated_dendrite,
    play,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks_detection.md"


def _f(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="dendrite scenarios to the alarm only")
    ap.add_argument("--write", action="store_true", help="write docs/benchmarks_detection.md")
    ap.add_argument("--healthy-hours", type=float, default=2.0)
    a = ap.parse_args()
    t_start = time.perf_counter()
    lines: list[str] = []
    summary: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="fieldrig-detect-") as tmp:
        work = Path(tmp)
        runs = []
        for name, params in DENDRITE_SCENARIOS.items():
            r = play(work / name, name, params, until="alarm" if a.quick else "short")
            print(r.line(), flush=True)
            runs.append(r)
        leads = [r.lead_s for r in runs]
        summary["dendrite_caught"] = sum(r.caught for r in runs)
        summary["dendrite_total"] = len(runs)
        summary["lead_min_s"] = min(leads)
        summary["lead_median_s"] = sorted(leads)[len(leads) // 2]
        lines += ["## Lead time over the dendrite scenarios", "",
                  "Each run goes on to the cell's hard short or the firmware's safe state. "
                  "The lead time is the hard short the same cell has without any firmware "
                  "reaction (`fieldrig_hil.cell.scenarios.run_scenario`, same seed and current "
                  "program) minus the first `soft_short` alarm; where the firmware's "
                  "hard_short alarm took the safe state first, the cell never shorted hard "
                  "on the bench. The scenarios are sized to short within about 1.5 h "
                  "(`DENDRITE_SCENARIOS`).", "",
                  "| scenario | parameters | cell soft short (s) | first soft_short alarm (s) "
                  "| hard short (s) | lead (s) | other alarms | wall (s) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in runs:
            hard = (_f(r.hard_short_s) if math.isfinite(r.hard_short_s) else
                    f"none on the bench (firmware safe state {_f(r.safe_state_s)}); "
                    f"{_f(r.expected_hard_short_s)} without firmware")
            other = ", ".join(f"{k} {t:.0f} s" for t, k, _ in r.alarms if k != "soft_short")
            lines.append(f"| {r.scenario} | `{json.dumps(r.params)}` | {_f(r.soft_short_s)} | "
                         f"{_f(r.first('soft_short'))} | {hard} | {_f(r.lead_s)} | "
                         f"{other or '—'} | {r.wall_s:.0f} |")
        if not a.quick:
            healthy = []
            for name, params in FALSE_ALARM_SCENARIOS.items():
                p = {**params, "hours": a.healthy_hours}
                r = play(work / name, name, p, until="end")
                print(r.line(), flush=True)
                healthy.append(r)
            summary["false_alarms"] = sum(len(r.alarms) for r in healthy)
            summary["healthy_hours"] = sum(r.virtual_s for r in healthy) / 3600.0
            lines += ["", "## False alarms over the healthy scenarios", "",
                      "Healthy cells with every condition change a lab makes (healthy_cycling: "
                      "plate / strip every 10 min; false_alarm_steps: heating 25 → 45 °C at "
                      "a quarter of the run, current doubled at half, stack pressure 5 → 8 "
                      "MPa at 0.7 of it, 15 min halves), tracking every 30 s; any "
                      "`echem_alarm` counts.", "",
                      "| scenario | parameters | virtual time (h) | alarms | firmware resets "
                      "| wall (s) |", "|---|---|---|---|---|---|"]
            for r in healthy:
                what = ", ".join(f"{k} at {t:.0f} s" for t, k, _ in r.alarms)
                lines.append(f"| {r.scenario} | `{json.dumps(r.params)}` | "
                             f"{r.virtual_s / 3600:.2f} | {len(r.alarms)}"
                             f"{': ' + what if what else ''} | {len(r.resets)} | "
                             f"{r.wall_s:.0f} |")
            lads = []
            for lname, kwargs in CCD_LADDERS.items():
                lr = ladder(work / f"ladder-{lname}", **kwargs)
                print(lr.line(), flush=True)
                lads.append(lr)
            summary["ccd_worst_error"] = max(abs(x.error) for x in lads)
            lines += ["", "## CCD ladders (the firmware's built-in recipe)", "",
                      "| cell | protocol | recipe CCD (mA/cm²) | last passed | cell's CCD | "
                      "error | cell's DC CCD | wall (s) |", "|---|---|---|---|---|---|---|---|"]
            for x in lads:
                proto = f"{x.pulse_hz / 1e6:g} MHz pulses, 50 %" if x.pulse_hz else "DC"
                lines.append(f"| {x.preset}, {x.pressure_mpa:g} MPa | {proto} | "
                             f"{x.ccd_ma_cm2:g} | {x.last_passed_ma_cm2:g} | "
                             f"{x.true_ccd_ma_cm2:.3f} | {100 * x.error:+.1f} % | "
                             f"{x.true_dc_ccd_ma_cm2:.3f} | {x.wall_s:.0f} |")
            m = mitigated_dendrite(work / "mitigation")
            print(m.line(), flush=True)
            summary["mitigation"] = m.line()
            lines += ["", "## Mitigation", "", m.line()]
    wall = time.perf_counter() - t_start
    summary["wall_s"] = wall
    if a.write:
        cmd = "python bench/bench_detection.py --write"
        head = ["# Detection benchmark", "",
                f"`{cmd}`, {time.strftime('%Y-%m-%d')}, {platform.node() and 'this machine'}: "
                f"{platform.processor() or platform.machine()}, Python "
                f"{platform.python_version()}, {wall / 60:.0f} min. The firmware runs under "
                "the MicroPython unix port against the simulated cell (docs/hil.md); tracking "
                "every 30 s at 15 / 85 / 485 Hz; seed 56 (ladders 57). How the detector "
                "works and its limits: [echem.md](echem.md#detection-detectpy).", ""]
        DOC.write_text("\n".join(head + lines) + "\n")
        print(f"wrote {DOC.relative_to(ROOT)}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
