"""How fast does the HIL bench run the real firmware against the simulated cell?

    python bench/bench_hil.py                      # 10 h symmetric cycling, the figure
    python bench/bench_hil.py --hours 0.5          # a quicker look
    python bench/bench_hil.py --firmware-only      # the firmware alone on the chip models

The run: Li|LPSCl|Li (``healthy_cycling`` cell, heater and press), the firmware's own
built-in ``symmetric_cycling`` recipe (0.3 mA/cm2, 0.3 mAh/cm2 per half: 1 h plating, 1 h
stripping) loaded and started over the link, stack pressure 5 MPa and 30 °C set by
command (heater PID, pressure loop, galvanostat and recipe engine all active), operando
impedance tracking every ``--track-period`` s (30 s: the firmware's default while a
recipe runs) feeding the dendrite detector, the bench's edge acking every sample. It
prints simulated time per wall time and per CPU time, and where the wall time went: the
firmware process (its interpreted work on the chip models, plus the lockstep IPC), the
plant (cell + heater + press, CPython), the link (edge).

``--firmware-only`` runs the firmware's scheduler on the bench board's drivers and chip
models inside one MicroPython process with no exchange, no cell and no link, and reports
per-task cost (ms of wall time per virtual second), i.e. the ceiling the interpreter sets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fieldrig_edge import link
from fieldrig_hil.bench import BenchRig
from fieldrig_hil.bench.mpbuild import micropypath
from fieldrig_hil.services import micropython_binary

FIRMWARE_ONLY = r'''
import sys
import utime  # the host clock: vtime shadows only "time"
import machine
from machine import BENCH
import wiring
from boards import pico2w, bench as bb
from fieldrig.app import Rig

SECONDS = int(sys.argv[1])
PERIOD_MS = int(sys.argv[2])
COALESCE = sys.argv[3] == "1"


class NoLink:
    def poll_accept(self):
        return False

    def write(self, d):
        return True

    def readinto(self, b):
        return 0


class Clock(bb.BenchClock):
    def _wait_ns(self, target_ns):
        BENCH.advance_to_ns(target_ns)
        self.update()


w = wiring.Wiring(coalesce_adc=COALESCE)
d = pico2w.build({"loadcell_n_per_code": repr(bb.loadcell_n_per_code(w.plant)),
                  "rtd_settle_ms": "70"}, machine=machine, link=NoLink())
bb.watch_range_switch(w)
w.apply_inputs(cell_v=0.02, cell_i_a=0.000235, temp_c=30.0, force_n=392.0)
board = dict(d)
board["config_path"] = None
rig = Rig(board, Clock(None), period_ms=PERIOD_MS)
rig.set_temperature(30.0)
rig.set_pressure(5.0)
rig.set_current(0.235)
acc = {}
for task in rig.sched.tasks:
    def timed(fn=task.fn, name=task.name):
        t0 = utime.ticks_us()
        fn()
        acc[name] = acc.get(name, 0) + utime.ticks_diff(utime.ticks_us(), t0)
    task.fn = timed
t0 = utime.ticks_us()
rig.sched.run_for_ms(SECONDS * 1000)
el = utime.ticks_diff(utime.ticks_us(), t0)
out = {"virtual_s": SECONDS, "wall_s": el / 1e6, "passes": rig.sched.passes,
       "ms_per_virtual_s": {k: v / 1000 / SECONDS for k, v in acc.items()}}
out["ms_per_virtual_s"]["scheduler + chip events"] = (el - sum(acc.values())) / 1000 / SECONDS
print("RESULT " + repr(out).replace("'", '"'))
'''


def firmware_only(seconds: int, period_ms: int, coalesce: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "fw_only.py"
        script.write_text(FIRMWARE_ONLY)
        env = dict(os.environ, MICROPYPATH=micropypath())
        r = subprocess.run([micropython_binary(), "-X", "heapsize=2M", str(script),
                            str(seconds), str(period_ms), "1" if coalesce else "0"],
                           env=env, capture_output=True, text=True, cwd=d, timeout=3600)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"firmware-only run failed:\n{r.stdout}\n{r.stderr}")
    result: dict[str, object] = json.loads(line[7:])
    return result


def cycling(hours: float, step_ms: int, period_ms: int, cell_dt_s: float | None,
            seed: int, impedance: bool = True, track_period_s: float = 30.0
            ) -> dict[str, object]:
    from typing import Any

    from fieldrig_hil.bench import PlantConfig
    from fieldrig_hil.cell.scenarios import build_scenario
    from fieldrig_hil.demo_programs import recipe_load_parts
    from fieldrig_hil.firmware_build import firmware_module

    sc = build_scenario("healthy_cycling", hours=hours, half_s=3600.0)
    plant = PlantConfig.from_scenario(sc, cell_dt_s=cell_dt_s)
    # The firmware's own built-in recipe, sent over the link as a lab would: 1 h plating,
    # 1 h stripping at 0.3 mA/cm2 (0.3 mAh/cm2 per half), as many cycles as the run holds.
    recipes: Any = firmware_module("fieldrig.echem.recipe")
    cycles = max(1, math.ceil(hours / 2))
    recipe = recipes.symmetric_cycling(sc.geometry.area_cm2, 0.3, 0.3, cycles,
                                       name="bench-hil cycling")
    # Without impedance: the firmware's own cadence while a recipe runs goes to 0 too
    # (board option echem_track_period_s), else it would track every 30 s regardless.
    opts = {} if impedance else {"echem_track_period_s": "0"}
    with tempfile.TemporaryDirectory() as d:
        rig = BenchRig(Path(d), sc, seed, step_ms=step_ms, period_ms=period_ms, drive=False,
                       plant=plant, firmware_opts=opts)
        rig.start()
        try:
            rig.call("set_pressure", pressure_mpa=5.0)
            rig.call("set_temperature", temp_c=30.0)
            for part in recipe_load_parts(recipe):
                rig.call("recipe_load", **part)
            tracking = False
            if impedance:
                reply = rig.command("track_impedance", {"period_s": track_period_s})
                tracking = reply.get("ok") is True
            rig.call("recipe_start")
            t0 = time.perf_counter()
            cpu0 = (rig.firmware_cpu_s(), time.process_time())
            w0 = (rig.wall_firmware_s, rig.wall_plant_s, rig.wall_link_s)
            v0 = rig.t_s
            end = v0 + hours * 3600.0
            last = t0
            while rig.t_s < end:
                rig.run_for(min(600.0, end - rig.t_s))
                if time.perf_counter() - last > 60:
                    last = time.perf_counter()
                    print(f"  {(rig.t_s - v0) / 3600:.2f} h simulated, "
                          f"{(rig.t_s - v0) / (last - t0):.1f}x", file=sys.stderr)
            wall = time.perf_counter() - t0
            virtual = rig.t_s - v0
            # Lockstep: the two processes take turns, so on an otherwise idle machine the
            # wall time is their CPU times added; under load, CPU time is the fair figure.
            cpu_fw = rig.firmware_cpu_s() - cpu0[0]
            cpu_py = time.process_time() - cpu0[1]
            trips = [b.get("row") for b in rig.event_bodies("limit_tripped")]
            alarms = [b.get("kind") for b in rig.event_bodies("echem_alarm")]
            # Tracking on or off is what the firmware did, not what was asked.
            impedance_points = sum(1 for _, pk in rig.edge.telemetry_other
                                   if pk.msg_type == link.MSG_IMPEDANCE)
            return {
                "virtual_s": virtual, "wall_s": wall, "speed_x": virtual / wall,
                "cpu_firmware_s": cpu_fw, "cpu_bench_s": cpu_py,
                "speed_x_cpu": virtual / (cpu_fw + cpu_py),
                "wall_firmware_s": rig.wall_firmware_s - w0[0],
                "wall_plant_s": rig.wall_plant_s - w0[1],
                "wall_link_s": rig.wall_link_s - w0[2],
                "steps": len(rig.steps), "samples": len(rig.edge.samples),
                "impedance_tracking": tracking,
                "track_period_s": track_period_s if impedance else 0.0,
                "impedance_points": impedance_points,
                "recipe_done": bool(rig.event_bodies("recipe_done")),
                "trips": trips, "alarms": alarms,
                "step_ms": step_ms, "period_ms": period_ms, "cell_dt_s": cell_dt_s,
            }
        finally:
            rig.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=10.0)
    ap.add_argument("--step-ms", type=int, default=500, help="lockstep step")
    ap.add_argument("--period-ms", type=int, default=1000, help="telemetry period")
    ap.add_argument("--cell-dt", type=float, default=0.01,
                    help="cell sample interval (s); 0 = one per ADC conversion")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--firmware-only", action="store_true")
    ap.add_argument("--no-impedance", action="store_true",
                    help="do not ask the firmware for operando impedance tracking")
    ap.add_argument("--track-period", type=float, default=30.0,
                    help="impedance tracking period, s (30: the firmware's default while "
                         "a recipe runs)")
    ap.add_argument("--seconds", type=int, default=60, help="virtual s for --firmware-only")
    args = ap.parse_args()
    if args.firmware_only:
        for coalesce in (True, False):
            r = firmware_only(args.seconds, args.period_ms, coalesce)
            wall = float(r["wall_s"])  # type: ignore[arg-type]
            print(f"firmware alone, ADC coalescing {'on' if coalesce else 'off'}, "
                  f"telemetry {args.period_ms} ms: {args.seconds / wall:.1f}x real time")
            costs = r["ms_per_virtual_s"]
            assert isinstance(costs, dict)
            for k, v in sorted(costs.items(), key=lambda kv: -kv[1]):
                print(f"  {k:<26} {v:6.2f} ms wall per virtual s")
        return 0
    r = cycling(args.hours, args.step_ms, args.period_ms, args.cell_dt or None, args.seed,
                not args.no_impedance, args.track_period)
    wall = float(r["wall_s"])  # type: ignore[arg-type]
    print(f"{args.hours:g} h symmetric cycling: {float(r['virtual_s']):.0f} s simulated in "  # type: ignore[arg-type]
          f"{wall:.1f} s wall = {float(r['speed_x']):.1f}x real time")  # type: ignore[arg-type]
    print(f"  by CPU time (firmware {float(r['cpu_firmware_s']):.1f} s + bench "  # type: ignore[arg-type]
          f"{float(r['cpu_bench_s']):.1f} s): {float(r['speed_x_cpu']):.1f}x")  # type: ignore[arg-type]
    for k in ("wall_firmware_s", "wall_plant_s", "wall_link_s"):
        v = float(r[k])  # type: ignore[arg-type]
        print(f"  {k:<16} {v:8.1f} s ({100 * v / wall:4.1f} %)")
    print("  " + json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
