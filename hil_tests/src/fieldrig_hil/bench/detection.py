"""Detection on the bench: a scenario played through the firmware with impedance tracking,
judged by the firmware's own ``echem_alarm`` EVENTs against the simulated cell's truth.

One ``play`` is one run: the scenario's current / temperature / pressure program goes to
the firmware as commands (``ScenarioDriver``), the firmware tracks impedance every
``track_period_s`` and its detector raises what it sees. The run ends at the first
``soft_short`` alarm (``until="alarm"``), or runs on to the cell's hard short or the
firmware's safe state (``until="short"``: the lead time is then measured on the bench
itself). ``hil_tests/tests/hil/test_bench_detection.py`` checks the verdicts in CI and
``bench/bench_detection.py`` records the lead times and false alarms in
docs/benchmarks.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldrig_hil.cell.scenarios import build_scenario, run_scenario

from ..firmware_build import firmware_module
from .rig import BenchRig

# The scenarios that grow a filament to a short (expect_short), and the parameters that
# make each short within about 1.5 h of virtual time: what CI plays. The full-length
# defaults are the slow set and the benchmark's.
DENDRITE_SCENARIOS: dict[str, dict[str, Any]] = {
    "dendrite_over_ccd": {},                                   # LPSCl, 2.6 mA/cm2 > CCD
    "soft_to_hard_short": {"j_ma_cm2": 1.5},                   # LLZO, kOhm bridge, fuses
    "ccd_ladder": {"half_s": 120.0, "j0_ma_cm2": 1.0},         # 0.25 mA/cm2 rungs
    "pulsed_single_crystal": {},                               # no pulse gain: shorts
    "voids_low_pressure": {"j_ma_cm2": 0.8, "hours": 2.0},     # voids, then a filament
}
# Healthy cells with every condition change a lab makes: no alarm allowed.
FALSE_ALARM_SCENARIOS: dict[str, dict[str, Any]] = {
    "healthy_cycling": {"hours": 1.0, "half_s": 600.0},
    "false_alarm_steps": {"hours": 1.0},                       # T, p and j steps
}
TRACK_PERIOD_S = 30.0
# CCD ladders (``ladder`` keyword arguments) of CI and the benchmark. A pulsed filament
# grows about 12x slower in polycrystalline LLZO (1.1 vs 13.7 um/s per mA/cm2): a rung
# must pass enough charge to bridge the 600 um separator once it nucleates (0.2 mAh/cm2
# per half, not 0.02), and at 12 MPa the stripping half stays below the stripping CCD
# (3.0 mA/cm2; at 8 MPa 1.3, below the train's mean current: voids, not the CCD).
CCD_LADDERS: dict[str, dict[str, Any]] = {
    "llzo_poly_dc": {"preset": "llzo_poly", "start_ma_cm2": 0.3, "step_ma_cm2": 0.1,
                     "max_ma_cm2": 1.2, "pressure_mpa": 12.0},
    "llzo_poly_pulsed": {"preset": "llzo_poly", "start_ma_cm2": 2.0, "step_ma_cm2": 0.5,
                         "max_ma_cm2": 6.0, "pressure_mpa": 12.0, "pulse_hz": 1e6,
                         "capacity_mah_cm2": 0.2},
    "llzo_single_dc": {"preset": "llzo_single", "start_ma_cm2": 0.25, "step_ma_cm2": 0.1,
                       "max_ma_cm2": 1.2},
    "llzo_single_pulsed": {"preset": "llzo_single", "start_ma_cm2": 0.25,
                           "step_ma_cm2": 0.1, "max_ma_cm2": 1.2, "pulse_hz": 1e6},
}


@dataclass
class DetectionRun:
    """What one run showed. Times are virtual seconds from boot; NaN: did not happen."""

    scenario: str
    params: dict[str, Any]
    seed: int
    alarms: list[tuple[float, str, float]] = field(default_factory=list)  # t, kind, conf
    soft_short_s: float = math.nan      # the cell's soft short (filament bridged)
    hard_short_s: float = math.nan      # the cell's hard short on the bench
    expected_hard_short_s: float = math.nan  # the same scenario without firmware reaction
    safe_state_s: float = math.nan      # firmware latched its safe state (echem row)
    # Firmware resets (cause, t): a rebooted detector has forgotten its baselines, so a
    # run with one says nothing about false alarms (the rig keeps running, as a board).
    resets: list[tuple[str, float]] = field(default_factory=list)
    virtual_s: float = 0.0
    wall_s: float = 0.0

    def first(self, kind: str) -> float:
        return next((t for t, k, _ in self.alarms if k == kind), math.nan)

    @property
    def short_s(self) -> float:
        """When the cell shorted hard: on the bench, or (the run stopped before, or the
        firmware's safe state prevented it) when the scenario shorts without firmware."""
        return self.hard_short_s if math.isfinite(self.hard_short_s) else (
            self.expected_hard_short_s)

    @property
    def lead_s(self) -> float:
        """Warning time: the hard short minus the first soft_short alarm."""
        return self.short_s - self.first("soft_short")

    @property
    def caught(self) -> bool:
        """A soft_short alarm before the cell's hard short."""
        t = self.first("soft_short")
        return math.isfinite(t) and not (math.isfinite(self.hard_short_s)
                                         and self.hard_short_s <= t)

    def line(self) -> str:
        def f(x: float) -> str:
            return "-" if not math.isfinite(x) else f"{x:.0f}"
        kinds = ", ".join(f"{k} {t:.0f} s ({c:.2f})" for t, k, c in self.alarms) or "none"
        return (f"{self.scenario} {self.params}: alarms {kinds}; cell soft short "
                f"{f(self.soft_short_s)} s, hard short {f(self.hard_short_s)} s (without "
                f"firmware {f(self.expected_hard_short_s)} s); lead {f(self.lead_s)} s; "
                + (f"RESETS {self.resets}; " if self.resets else "")
                + f"{self.virtual_s:.0f} s virtual in {self.wall_s:.0f} s wall")


def expected_hard_short_s(name: str, params: dict[str, Any], seed: int) -> float:
    """The scenario's hard short with nobody reacting (the cell model alone)."""
    return run_scenario(build_scenario(name, **params), seed=seed).truth.hard_short_s


def play(workdir: Path, name: str, params: dict[str, Any] | None = None, seed: int = 56,
         until: str = "alarm", track_period_s: float = TRACK_PERIOD_S,
         step_ms: int = 250) -> DetectionRun:
    """Play one scenario with tracking; see the module doc for ``until``."""
    if until not in ("alarm", "short", "end"):
        raise ValueError(f"until must be 'alarm', 'short' or 'end', got {until!r}")
    p = dict(params or {})
    run = DetectionRun(name, p, seed)
    sc = build_scenario(name, **p)
    if sc.expect_short:
        run.expected_hard_short_s = expected_hard_short_s(name, p, seed)
    t0 = time.perf_counter()
    with BenchRig(workdir, scenario=sc, seed=seed, drive=True, step_ms=step_ms) as rig:
        reply = rig.command("track_impedance", {"period_s": track_period_s})
        if reply.get("ok") is not True:
            raise RuntimeError(f"firmware refused track_impedance: {reply}")
        plant = rig.plant
        assert plant is not None

        def cell_event(kind: str) -> float:
            return next((e.t_s for e in plant.cell.events if e.kind == kind), math.nan)

        def done() -> bool:
            if rig.t_s >= sc.duration_s:
                return True
            if until == "alarm" and rig.event_bodies("echem_alarm"):
                return any(b.get("kind") == "soft_short"
                           for b in rig.event_bodies("echem_alarm"))
            if until in ("alarm", "short"):
                return (math.isfinite(cell_event("hard_short"))
                        or bool(rig.outputs is not None and rig.outputs.safe
                                and rig.first_event("limit_tripped") is not None))
            return False

        while not done():
            rig.step()
        for e in rig.events:
            if e.body.get("event") == "echem_alarm":
                conf = e.body.get("confidence")
                run.alarms.append((e.t_s, str(e.body.get("kind")),
                                   float(conf) if isinstance(conf, (int, float)) else math.nan))
        trip = next((e for e in rig.events if e.body.get("event") == "limit_tripped"
                     and str(e.body.get("row", "")).startswith("echem_")), None)
        run.safe_state_s = trip.t_s if trip is not None else math.nan
        for r in rig.resets:
            t = r.get("t_s")
            run.resets.append((str(r.get("cause")), float(t) if isinstance(t, (int, float))
                               else math.nan))
        run.soft_short_s = cell_event("soft_short")
        run.hard_short_s = cell_event("hard_short")
        run.virtual_s = rig.t_s
    run.wall_s = time.perf_counter() - t0
    return run


# -- CCD ladders -----------------------------------------------------------------------

@dataclass
class LadderRun:
    """A CCD-ladder recipe run by the firmware on one simulated cell."""

    preset: str
    pressure_mpa: float
    pulse_hz: float
    ccd_ma_cm2: float            # the firmware's recipe_done ccd_ma_cm2 (NaN: none)
    last_passed_ma_cm2: float
    true_ccd_ma_cm2: float       # the cell's plating CCD for this protocol
    true_dc_ccd_ma_cm2: float    # the same cell's DC plating CCD
    reason: str
    virtual_s: float
    wall_s: float

    @property
    def error(self) -> float:
        return self.ccd_ma_cm2 / self.true_ccd_ma_cm2 - 1.0

    def line(self) -> str:
        proto = f"{self.pulse_hz:g} Hz pulses" if self.pulse_hz else "DC"
        return (f"{self.preset} {self.pressure_mpa:g} MPa {proto}: CCD {self.ccd_ma_cm2:g} "
                f"mA/cm2 (last passed {self.last_passed_ma_cm2:g}; cell {self.true_ccd_ma_cm2:.3f}"
                f", {100 * self.error:+.1f} %), {self.reason}; {self.virtual_s:.0f} s virtual in "
                f"{self.wall_s:.0f} s wall")


def ladder(workdir: Path, preset: str, start_ma_cm2: float, step_ma_cm2: float,
           max_ma_cm2: float, pressure_mpa: float = 8.0, pulse_hz: float = 0.0,
           capacity_mah_cm2: float = 0.02, rest_s: float = 30.0, seed: int = 57,
           track_period_s: float = 10.0, step_ms: int = 250) -> LadderRun:
    """Run the firmware's built-in ``ccd_ladder`` (after a set_pressure step) on a cell of
    ``preset`` until its recipe_done; compare its CCD with the cell's own."""
    from fieldrig_hil.cell import degradation as dg
    from fieldrig_hil.cell.materials import get_preset
    from fieldrig_hil.demo_programs import recipe_load_parts

    recipes: Any = firmware_module("fieldrig.echem.recipe")
    sc = build_scenario("ccd_ladder", preset=preset, pressure_mpa=pressure_mpa)
    area = sc.geometry.area_cm2
    r = recipes.ccd_ladder(area, start_ma_cm2, step_ma_cm2, max_ma_cm2, capacity_mah_cm2,
                           rest_s, "ccd ladder", pulse_hz, 0.5)
    r["steps"].insert(0, {"type": "set_pressure", "pressure_mpa": pressure_mpa,
                          "tolerance_mpa": 0.3, "until": {"time_s": 60}})
    proto = dg.PulseProtocol.square(pulse_hz, 0.5) if pulse_hz else None
    true_ccd = dg.critical_current_density(get_preset(preset), pressure_mpa, sc.temperature_c,
                                           proto).plating_ma_cm2
    true_dc = dg.critical_current_density(get_preset(preset), pressure_mpa,
                                          sc.temperature_c).plating_ma_cm2
    t0 = time.perf_counter()
    with BenchRig(workdir, scenario=sc, seed=seed, drive=False, step_ms=step_ms) as rig:
        for part in recipe_load_parts(r):
            reply = rig.command("recipe_load", part)
            if reply.get("ok") is not True:
                raise RuntimeError(f"recipe refused: {reply}")
        reply = rig.command("track_impedance", {"period_s": track_period_s})
        if reply.get("ok") is not True:
            raise RuntimeError(f"firmware refused track_impedance: {reply}")
        if rig.command("recipe_start", {}).get("ok") is not True:
            raise RuntimeError("recipe_start refused")
        rig.run_until(lambda: bool(rig.event_bodies("recipe_done")), 6 * 3600.0,
                      "recipe_done")
        done = rig.event_bodies("recipe_done")[0]
        virtual = rig.t_s

    def num(key: str) -> float:
        v = done.get(key)
        return float(v) if isinstance(v, (int, float)) else math.nan

    return LadderRun(preset, pressure_mpa, pulse_hz, num("ccd_ma_cm2"),
                     num("last_passed_ma_cm2"), true_ccd, true_dc, str(done.get("reason")),
                     virtual, time.perf_counter() - t0)


# -- mitigation --------------------------------------------------------------------------

@dataclass
class MitigationRun:
    """A dendrite recipe with a soft-short mitigation policy, run to well past the time
    the same cell shorts without one."""

    expected_hard_short_s: float   # the scenario's hard short with nobody reacting
    hard_short_s: float            # on the bench, with the firmware's mitigation (NaN: none)
    alarm_s: float                 # first soft_short alarm
    actions: list[tuple[float, str, int]]  # t, action, attempt
    result: str                    # recipe_done result:reason
    virtual_s: float
    wall_s: float

    def line(self) -> str:
        acts = ", ".join(f"{a}#{n} {t:.0f} s" for t, a, n in self.actions)
        hs = "none" if not math.isfinite(self.hard_short_s) else f"{self.hard_short_s:.0f} s"
        return (f"without mitigation hard short at {self.expected_hard_short_s:.0f} s; with it: "
                f"soft_short alarm {self.alarm_s:.0f} s, {acts}; recipe {self.result}; hard "
                f"short {hs} by {self.virtual_s:.0f} s ({self.wall_s:.0f} s wall)")


def mitigated_dendrite(workdir: Path, seed: int = 56, after_s: float = 600.0,
                       track_period_s: float = TRACK_PERIOD_S) -> MitigationRun:
    """dendrite_over_ccd's current program (0.3 mA/cm2 for 600 s, then 2.6 mA/cm2, above
    the plating CCD) as a recipe whose soft_short policy stops plating, rests and lowers
    the current, rechecking after each rest; run to ``after_s`` past the unmitigated short."""
    from fieldrig_hil.demo_programs import recipe_load_parts

    name = "dendrite_over_ccd"
    expected = expected_hard_short_s(name, {}, seed)
    sc = build_scenario(name)
    recipe = {"recipe": 1, "name": "fast plating with dendrite watch",
              "area_cm2": sc.geometry.area_cm2,
              "mitigation": {"soft_short": {
                  "actions": ["stop_plating", "rest", "lower_current"], "rest_s": 60,
                  "lower_factor": 0.1, "max_attempts": 2, "recheck": True}},
              "steps": [
                  {"type": "plate", "label": "below CCD", "current_ma_cm2": 0.3,
                   "until": {"time_s": 599}},
                  {"type": "plate", "label": "above CCD", "current_ma_cm2": 2.6,
                   "until": {"time_s": 7200}}]}
    t0 = time.perf_counter()
    with BenchRig(workdir, scenario=sc, seed=seed, drive=False, step_ms=250) as rig:
        for part in recipe_load_parts(recipe):
            reply = rig.command("recipe_load", part)
            if reply.get("ok") is not True:
                raise RuntimeError(f"recipe refused: {reply}")
        if rig.command("track_impedance", {"period_s": track_period_s}).get("ok") is not True:
            raise RuntimeError("firmware refused track_impedance")
        if rig.command("recipe_start", {}).get("ok") is not True:
            raise RuntimeError("recipe_start refused")
        plant = rig.plant
        assert plant is not None

        def shorted() -> bool:
            return any(e.kind == "hard_short" for e in plant.cell.events)

        while rig.t_s < expected + after_s and not shorted():
            rig.step()
        alarm = rig.first_event("echem_alarm", kind="soft_short")
        done = rig.event_bodies("recipe_done")
        hard = next((e.t_s for e in plant.cell.events if e.kind == "hard_short"), math.nan)
        return MitigationRun(
            expected, hard, alarm.t_s if alarm is not None else math.nan,
            [(e.t_s, str(e.body.get("action")), _int(e.body.get("attempt")))
             for e in rig.events if e.body.get("event") == "mitigation"],
            f"{done[-1].get('result')}:{done[-1].get('reason')}" if done else "running",
            rig.t_s, time.perf_counter() - t0)


def _int(v: object) -> int:
    return int(v) if isinstance(v, (int, float)) else 0
