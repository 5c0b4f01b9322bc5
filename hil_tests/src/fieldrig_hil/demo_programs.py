"""The demo's rig programs: which simulated cell each rig holds and what the firmware runs
on it (a recipe for the firmware's recipe engine, docs/echem.md), sized to the run's
virtual duration.

A program names a scenario of ``fieldrig_hil.cell.scenarios`` for the cell (preset,
geometry, temperature, stack pressure, heater); the current, temperature and pressure
then come from the firmware running the recipe, not from the scenario's own profile.
Any other registered scenario can be played too (``driven``): its current, temperature
and pressure profile is sent as ``set_current`` / ``set_temperature`` / ``set_pressure``
commands through the gateway, as ``ScenarioDriver`` does on the bench's own edge.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fieldrig_hil.cell.scenarios import list_scenarios

AREA_CM2 = 0.785  # 10 mm pellet, the scenarios' CellGeometry default
# Impedance tracking period while a recipe runs (the firmware's track_impedance command):
# the detector learns its baselines from 20 observations, so they must come quickly.
TRACK_PERIOD_S = 5.0
# An EIS sweep inside the band the bench board measures, about 8 to 400 Hz (its ADC's
# 1 kSPS, and a period plus settle within the firmware's 250 ms block limit); outside it
# the firmware reports points as skipped. 21 points in a few virtual seconds: enough for
# the cloud's circuit fit (at least 10 measured points).
EIS_SWEEP: dict[str, Any] = {"f_start_hz": 400.0, "f_stop_hz": 8.0, "points_per_decade": 12,
                             "amplitude_mv": 10.0}


@dataclass(frozen=True)
class Program:
    """One rig's story: the cell (a registered scenario) and the firmware's recipe."""

    key: str
    title: str
    scenario: str
    scenario_params: dict[str, Any] = field(default_factory=dict)
    recipe: Callable[[float], dict[str, Any]] | None = None  # duration_s -> recipe JSON
    track_period_s: float | None = TRACK_PERIOD_S
    # What a good run shows (used for the verdict): "clean", "ccd", "mitigated", "rescued".
    expect: str = "clean"
    note: str = ""

    @property
    def driven(self) -> bool:
        return self.recipe is None


def _until(s: float) -> dict[str, float]:
    return {"time_s": round(s, 3)}


def cycling_recipe(duration_s: float) -> dict[str, Any]:
    """Symmetric plate/strip cycling well below both CCDs, heated to 30 °C at 5 MPa."""
    half_s, rest_s = 90.0, 10.0
    cycles = max(1, math.ceil(duration_s / (2 * (half_s + rest_s))))
    return {"recipe": 1, "name": "healthy cycling 0.3 mA/cm2", "area_cm2": AREA_CM2,
            "stop_on": ["hard_short"],
            "steps": [
                {"type": "set_pressure", "pressure_mpa": 5.0, "tolerance_mpa": 0.3,
                 "until": _until(60)},
                {"type": "set_temperature", "temp_c": 30.0, "wait": False},
                {"type": "loop", "count": cycles, "steps": [
                    {"type": "plate", "current_ma_cm2": 0.3, "until": _until(half_s)},
                    {"type": "rest", "until": _until(rest_s)},
                    {"type": "strip", "current_ma_cm2": 0.3, "until": _until(half_s)},
                    {"type": "rest", "until": _until(rest_s)}]}]}


def ccd_ladder_recipe(duration_s: float) -> dict[str, Any]:
    """An EIS sweep of the pristine cell at 12 MPa, then plate/strip at rising current
    densities until the firmware sees a short; the recipe stops there and reports the
    CCD (``recipe_done`` ``ccd_ma_cm2``)."""
    half_s, rest_s = 40.0, 10.0
    steps: list[dict[str, Any]] = [
        {"type": "set_pressure", "pressure_mpa": 12.0, "tolerance_mpa": 0.3,
         "until": _until(60)},
        {"type": "eis", "label": "pristine cell", **EIS_SWEEP}]
    j = 1.0
    while len(steps) + 4 <= 60 and j <= 6.0 + 1e-9:
        label = f"ccd {j:g} mA/cm2"
        steps += [
            {"type": "plate", "label": label, "current_ma_cm2": j, "until": _until(half_s)},
            {"type": "rest", "until": _until(rest_s)},
            {"type": "strip", "label": label, "current_ma_cm2": j, "until": _until(half_s)},
            {"type": "rest", "until": _until(rest_s)}]
        j = round(j + 1.0, 6)
    return {"recipe": 1, "name": "ccd ladder 1 mA/cm2 steps", "area_cm2": AREA_CM2,
            "stop_on": ["soft_short", "hard_short"], "steps": steps}


def dendrite_recipe(duration_s: float) -> dict[str, Any]:
    """A baseline below the CCD (the detector learns the healthy cell), then fast
    plating above it: a filament grows and bridges; on the soft-short alarm the
    firmware's mitigation stops plating, rests and continues at a tenth of the current."""
    return {"recipe": 1, "name": "fast plating with dendrite watch", "area_cm2": AREA_CM2,
            "stop_on": ["hard_short"],
            "mitigation": {"soft_short": {
                "actions": ["stop_plating", "rest", "lower_current"],
                "rest_s": 60, "lower_factor": 0.1, "max_attempts": 3}},
            "steps": [
                {"type": "set_pressure", "pressure_mpa": 7.0, "tolerance_mpa": 0.3,
                 "until": _until(60)},
                {"type": "plate", "label": "baseline 0.3 mA/cm2", "current_ma_cm2": 0.3,
                 "until": _until(110)},
                {"type": "plate", "label": "fast charge 2.6 mA/cm2", "current_ma_cm2": 2.6,
                 "until": _until(max(60.0, duration_s))}]}


def voids_recipe(duration_s: float) -> dict[str, Any]:
    """Cycling at 0.5 mA/cm2 and 2 MPa: stripping outruns creep and voids open (the
    overpotential climbs). The firmware's void mitigation raises the stack pressure on a
    void alarm; the recipe's rescue step takes it to 7 MPa after a third of the run,
    where creep refills the interface and the overpotential falls back."""
    half_s, rest_s = 60.0, 5.0
    cycle_s = 2 * (half_s + rest_s)
    before = max(1, round(duration_s / 3 / cycle_s))
    after = max(1, math.ceil(duration_s / cycle_s))
    cycle = [{"type": "strip", "current_ma_cm2": 0.5, "until": _until(half_s)},
             {"type": "rest", "until": _until(rest_s)},
             {"type": "plate", "current_ma_cm2": 0.5, "until": _until(half_s)},
             {"type": "rest", "until": _until(rest_s)}]
    return {"recipe": 1, "name": "low-pressure cycling, pressure rescue", "area_cm2": AREA_CM2,
            "stop_on": ["hard_short"],
            "mitigation": {"void": {"actions": ["raise_pressure"], "pressure_step_mpa": 2.0,
                                    "pressure_max_mpa": 9.0, "max_attempts": 3}},
            "steps": [
                {"type": "set_pressure", "pressure_mpa": 2.0, "tolerance_mpa": 0.3,
                 "until": _until(60)},
                {"type": "loop", "label": "2 MPa", "count": before, "steps": cycle},
                {"type": "set_pressure", "label": "rescue: 7 MPa", "pressure_mpa": 7.0,
                 "tolerance_mpa": 0.3, "until": _until(60)},
                {"type": "loop", "label": "7 MPa", "count": after, "steps": cycle}]}


PROGRAMS: dict[str, Program] = {p.key: p for p in (
    Program("cycling", "healthy cycling, Li|LPSCl|Li, 0.3 mA/cm², 30 °C, 5 MPa",
            "healthy_cycling", recipe=cycling_recipe, expect="clean", track_period_s=15.0,
            note="below both CCDs: no alarm expected"),
    Program("ccd_ladder", "EIS, then CCD ladder, Li|LPSCl|Li, 12 MPa, 1 mA/cm² steps",
            "ccd_ladder", recipe=ccd_ladder_recipe, expect="ccd", track_period_s=10.0,
            note="EIS of the pristine cell; the recipe stops at the first short and "
                 "reports the CCD"),
    Program("dendrite", "fast plating 2.6 mA/cm² > CCD, Li|LPSCl|Li, 7 MPa",
            "dendrite_over_ccd", recipe=dendrite_recipe, expect="mitigated",
            note="soft short caught by the detector, current cut by the mitigation"),
    Program("voids", "low-pressure cycling 0.5 mA/cm² at 2 MPa, rescue to 7 MPa",
            "voids_low_pressure", recipe=voids_recipe, expect="rescued", track_period_s=15.0,
            note="voids at 2 MPa; stack pressure raised (mitigation or rescue step)"),
)}
DEFAULT_PROGRAMS = ("cycling", "ccd_ladder", "dendrite", "voids")


def resolve(name: str) -> Program:
    """A demo program by key, or any registered scenario played through commands."""
    if name in PROGRAMS:
        return PROGRAMS[name]
    if name in list_scenarios():
        return Program(name, f"scenario {name} (profile played as commands)", name,
                       recipe=None, track_period_s=None, expect="scenario")
    known = ", ".join([*PROGRAMS, *list_scenarios()])
    raise ValueError(f"unknown scenario {name!r}; known: {known}")


def recipe_load_parts(recipe: dict[str, Any], max_body: int = 440) -> list[dict[str, Any]]:
    """``recipe_load`` argument sets that each fit one link frame (the link body limit
    is 480 bytes: docs/link.md): the compact JSON text in ``part``/``parts`` chunks."""
    text = json.dumps(recipe, separators=(",", ":"))
    chunks: list[str] = []
    i = 0
    while i < len(text):
        n = min(len(text) - i, 400)
        while n > 1:
            body = json.dumps({"cmd": "recipe_load", "args": {
                "text": text[i:i + n], "part": 63, "parts": 64}}, separators=(",", ":"))
            if len(body.encode()) <= max_body:
                break
            n -= 10
        chunks.append(text[i:i + n])
        i += n
    return [{"text": c, "part": k, "parts": len(chunks)} for k, c in enumerate(chunks)]
