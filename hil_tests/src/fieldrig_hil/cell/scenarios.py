"""Named, parameterised scenarios with ground truth, for the bench, the demo and the tests.

A :class:`Scenario` says which cell (preset, geometry), the initial conditions, the external
drive over time (current density waveform, optional pulse gate, temperature and pressure
set-points) and the faults to inject. :func:`run_scenario` steps a :class:`~.plants.Rig`
(cell + heater + press + sensors, with simple stand-in controllers for heater and press)
and returns the traces plus :class:`GroundTruth` (times of nucleation, soft and hard short,
true CCD, ...) so detectors can be scored on lead time.

``list_scenarios()`` names them; ``build_scenario(name, **params)`` makes one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from . import degradation as dg
from .materials import (
    CellGeometry,
    CellParameterError,
    UnknownPresetError,
    check_finite,
    get_preset,
)
from .model import Cell
from .plants import HeaterPlant, Rig, SensorFaults

FloatArray = npt.NDArray[np.float64]


# ------------------------------------------------------------------------- waveforms
@dataclass(frozen=True)
class Constant:
    """Constant current density, mA/cm² (positive plates electrode A)."""

    j_ma_cm2: float

    def __call__(self, t_s: FloatArray) -> FloatArray:
        return np.full(t_s.shape, self.j_ma_cm2)


@dataclass(frozen=True)
class Cycling:
    """Galvanostatic plate/strip cycling: +j for half_s, -j for half_s, optional rests."""

    j_ma_cm2: float
    half_s: float = 3600.0
    rest_s: float = 0.0

    def __call__(self, t_s: FloatArray) -> FloatArray:
        period = 2.0 * (self.half_s + self.rest_s)
        ph = np.mod(t_s, period)
        h = self.half_s + self.rest_s
        out = np.where(ph < self.half_s, self.j_ma_cm2, 0.0)
        return np.where((ph >= h) & (ph < h + self.half_s), -self.j_ma_cm2, out)


@dataclass(frozen=True)
class Ladder:
    """CCD ladder: j0, j0+dj, ... each for ``cycles`` plate/strip cycles of ``half_s``."""

    j0_ma_cm2: float
    dj_ma_cm2: float
    half_s: float = 600.0
    cycles: int = 1

    @property
    def step_s(self) -> float:
        return 2.0 * self.half_s * self.cycles

    def level(self, t_s: FloatArray) -> FloatArray:
        return self.j0_ma_cm2 + self.dj_ma_cm2 * np.floor(t_s / self.step_s)

    def __call__(self, t_s: FloatArray) -> FloatArray:
        sign = np.where(np.mod(t_s, 2.0 * self.half_s) < self.half_s, 1.0, -1.0)
        return sign * self.level(t_s)


@dataclass(frozen=True)
class Steps:
    """Piecewise-constant profile: value ``values[k]`` from ``times_s[k]`` on."""

    times_s: tuple[float, ...]
    values: tuple[float, ...]

    def __call__(self, t_s: FloatArray) -> FloatArray:
        idx = np.searchsorted(np.asarray(self.times_s), t_s, side="right") - 1
        return np.asarray(self.values, dtype=np.float64)[np.clip(idx, 0, None)]


Profile = Callable[[FloatArray], FloatArray]


# ------------------------------------------------------------------------- scenario
@dataclass(frozen=True)
class Scenario:
    """A reproducible experiment on one simulated rig."""

    name: str
    description: str
    preset: str = "lpscl"
    geometry: CellGeometry = field(default_factory=CellGeometry)
    temperature_c: float = 25.0
    pressure_mpa: float = 5.0
    duration_s: float = 3600.0
    dt_s: float = 1.0  # sample interval of the returned traces
    block_s: float = 10.0  # controller / rig block
    current: Profile = Constant(0.0)
    pulse: dg.PulseProtocol | None = None
    temperature_setpoint: Profile | None = None
    pressure_setpoint: Profile | None = None
    heater: HeaterPlant = field(default_factory=HeaterPlant)
    faults: SensorFaults = field(default_factory=SensorFaults)
    expect_short: bool = False
    #: the firmware's over-temperature interlock limit used for scoring heater faults
    interlock_c: float = 80.0
    stop_after_hard_short_s: float = 120.0

    def __post_init__(self) -> None:
        get_preset(self.preset)
        check_finite("duration_s", self.duration_s, positive=True)
        check_finite("dt_s", self.dt_s, positive=True)
        check_finite("block_s", self.block_s, positive=True)
        check_finite("temperature_c", self.temperature_c)
        check_finite("pressure_mpa", self.pressure_mpa, non_negative=True)
        if self.block_s < self.dt_s:
            raise CellParameterError("block_s must be >= dt_s")

    def true_ccd(self) -> dg.CcdResult:
        """Closed-form CCDs at the scenario's initial conditions and pulse protocol."""
        return dg.critical_current_density(get_preset(self.preset), self.pressure_mpa,
                                           self.temperature_c, self.pulse)


@dataclass
class GroundTruth:
    """What really happened (NaN: did not happen)."""

    nucleation_s: float = math.nan
    nucleation_current_ma_cm2: float = math.nan
    void_onset_s: float = math.nan
    soft_short_s: float = math.nan
    hard_short_s: float = math.nan
    crack_s: float = math.nan
    decomposition_s: float = math.nan
    over_interlock_s: float = math.nan
    true_plating_ccd_ma_cm2: float = math.nan
    true_stripping_ccd_ma_cm2: float = math.nan
    events: list[dg.Event] = field(default_factory=list)


@dataclass
class ScenarioResult:
    scenario: Scenario
    t_s: FloatArray
    current_a: FloatArray
    voltage_v: FloatArray
    temperature_c: FloatArray
    pressure_mpa: FloatArray
    r_short_ohm: FloatArray
    min_contact: FloatArray
    max_filament_um: FloatArray
    rtd_fault: npt.NDArray[np.bool_]
    load_code: npt.NDArray[np.int64]
    truth: GroundTruth
    cell: Cell


def run_scenario(sc: Scenario, seed: int = 0) -> ScenarioResult:
    """Run a scenario in virtual time; deterministic for a given seed."""
    cell = Cell(sc.preset, sc.geometry, temperature_c=sc.temperature_c,
                pressure_mpa=sc.pressure_mpa, seed=seed,
                physics_dt_s=min(60.0, sc.block_s))
    heater = replace(sc.heater, temperature_c=sc.temperature_c)
    rig = Rig(cell, heater=heater, faults=sc.faults, seed=seed + 1)
    n_block = max(1, round(sc.block_s / sc.dt_s))
    n_total = round(sc.duration_s / sc.dt_s)
    area = sc.geometry.area_cm2
    ts, cur, volt, temp, pres, rsh, cmin, fil, rf, lc = ([] for _ in range(10))
    integ = 0.0
    truth = GroundTruth()
    ccd = sc.true_ccd()
    truth.true_plating_ccd_ma_cm2 = ccd.plating_ma_cm2
    truth.true_stripping_ccd_ma_cm2 = ccd.stripping_ma_cm2
    done = 0
    while done < n_total:
        n = min(n_block, n_total - done)
        t_block = np.asarray(cell.t_s + sc.dt_s * np.arange(n), dtype=np.float64)
        i = sc.current(t_block) * 1e-3 * area
        # stand-in heater controller (the firmware's PID in the bench): PI on the set-point
        duty = 0.0
        if sc.temperature_setpoint is not None:
            sp = float(sc.temperature_setpoint(np.array([cell.t_s]))[0])
        else:
            sp = sc.temperature_c
        err = sp - rig.heater.temperature_c
        integ = float(np.clip(integ + err * sc.block_s * 0.002, 0.0, 1.0))
        duty = float(np.clip(0.08 * err + integ, 0.0, 1.0))
        # stand-in press controller: step toward the pressure set-point
        steps = 0
        if rig.press is not None:
            psp = (float(sc.pressure_setpoint(np.array([cell.t_s]))[0])
                   if sc.pressure_setpoint is not None else sc.pressure_mpa)
            dp = psp - rig.press.pressure_mpa
            mpa_per_step = rig.press.stiffness_n_um * rig.press.um_per_step / (area * 100.0)
            steps = int(np.clip(round(dp / mpa_per_step), -2000, 2000))
        r = rig.step(sc.dt_s, i, heater_duty=duty, press_steps=steps, pulse=sc.pulse)
        st = cell.state
        ts.append(r.t_s)
        cur.append(r.current_a)
        volt.append(r.voltage_v)
        temp.append(np.full(n, r.temperature_c))
        pres.append(np.full(n, r.pressure_mpa))
        rsh.append(np.full(n, st.r_short_ohm))
        cmin.append(np.full(n, min(st.contact_fraction)))
        fil.append(np.full(n, max(st.filament_um)))
        rf.append(np.full(n, r.rtd_fault))
        lc.append(np.full(n, r.load_code, dtype=np.int64))
        if math.isnan(truth.over_interlock_s) and r.temperature_c > sc.interlock_c:
            truth.over_interlock_s = cell.t_s
        done += n
        if st.hard_short and cell.t_s - _first(cell.events, "hard_short") \
                > sc.stop_after_hard_short_s:
            break
    truth.events = list(cell.events)
    truth.nucleation_s = _first(cell.events, "filament_nucleation")
    for ev in cell.events:
        if ev.kind == "filament_nucleation":
            truth.nucleation_current_ma_cm2 = ev.detail["j_applied_ma_cm2"]
            break
    truth.void_onset_s = _first(cell.events, "void_onset")
    truth.soft_short_s = _first(cell.events, "soft_short")
    truth.hard_short_s = _first(cell.events, "hard_short")
    truth.crack_s = _first(cell.events, "crack")
    truth.decomposition_s = _first(cell.events, "thermal_decomposition")

    def cat(x: list[npt.NDArray[np.generic]]) -> npt.NDArray[np.generic]:
        return np.concatenate(x)

    return ScenarioResult(sc, cat(ts), cat(cur), cat(volt), cat(temp), cat(pres),  # type: ignore[arg-type]
                          cat(rsh), cat(cmin), cat(fil), cat(rf), cat(lc), truth, cell)  # type: ignore[arg-type]


def _first(events: list[dg.Event], kind: str) -> float:
    for ev in events:
        if ev.kind == kind:
            return ev.t_s
    return math.nan


# ------------------------------------------------------------------------- registry
_REGISTRY: dict[str, tuple[str, Callable[..., Scenario]]] = {}


def _register(name: str, doc: str) -> Callable[[Callable[..., Scenario]], Callable[..., Scenario]]:
    def deco(fn: Callable[..., Scenario]) -> Callable[..., Scenario]:
        _REGISTRY[name] = (doc, fn)
        return fn
    return deco


def list_scenarios() -> dict[str, str]:
    """Scenario names and one-line descriptions."""
    return {k: v[0] for k, v in sorted(_REGISTRY.items())}


def build_scenario(name: str, **params: object) -> Scenario:
    """Build a registered scenario; keyword parameters override its defaults."""
    if name not in _REGISTRY:
        raise UnknownPresetError(
            f"unknown scenario {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name][1](**params)
    except TypeError as exc:
        raise CellParameterError(f"bad parameter for scenario {name!r}: {exc}") from exc


@_register("healthy_cycling", "Li|LPSCl|Li cycling at the 5 MPa optimum, below both CCDs")
def healthy_cycling(j_ma_cm2: float = 0.3, pressure_mpa: float = 5.0, hours: float = 24.0,
                    half_s: float = 3600.0) -> Scenario:
    return Scenario("healthy_cycling", "healthy cycling at the pressure optimum", "lpscl",
                    pressure_mpa=pressure_mpa, duration_s=hours * 3600.0, dt_s=10.0,
                    block_s=60.0, current=Cycling(j_ma_cm2, half_s))


@_register("voids_low_pressure", "stripping above the creep-resupply limit at 2 MPa: voids")
def voids_low_pressure(j_ma_cm2: float = 0.5, pressure_mpa: float = 2.0, hours: float = 48.0,
                       half_s: float = 3600.0) -> Scenario:
    return Scenario("voids_low_pressure", "voids accumulate at low stack pressure", "lpscl",
                    pressure_mpa=pressure_mpa, duration_s=hours * 3600.0, dt_s=10.0,
                    block_s=60.0, current=Cycling(j_ma_cm2, half_s), expect_short=True)


@_register("dendrite_over_ccd", "continuous plating above the plating CCD -> filament, short")
def dendrite_over_ccd(j_ma_cm2: float = 2.6, pressure_mpa: float = 7.0, hours: float = 2.0,
                      preset: str = "lpscl") -> Scenario:
    return Scenario("dendrite_over_ccd", "plating above CCD grows a filament", preset,
                    pressure_mpa=pressure_mpa, duration_s=hours * 3600.0, dt_s=1.0,
                    block_s=10.0, current=Steps((0.0, 600.0), (0.3, j_ma_cm2)),
                    expect_short=True)


@_register("soft_to_hard_short", "LLZO above CCD: filament bridges (kΩ), fuses to a hard short")
def soft_to_hard_short(j_ma_cm2: float = 0.9, hours: float = 3.0) -> Scenario:
    return Scenario("soft_to_hard_short", "soft short developing into a hard short",
                    "llzo_poly", pressure_mpa=5.0, duration_s=hours * 3600.0, dt_s=1.0,
                    block_s=10.0, current=Steps((0.0, 300.0), (0.2, j_ma_cm2)),
                    expect_short=True)


@_register("pulsed_polycrystal", "1 MHz pulses on polycrystalline LLZO: CCD x~6, no short")
def pulsed_polycrystal(j_ma_cm2: float = 2.0, frequency_hz: float = 1e6,
                       hours: float = 1.0, preset: str = "llzo_poly",
                       pulsed: bool = True, pressure_mpa: float = 8.0) -> Scenario:
    pulse = dg.PulseProtocol.square(frequency_hz, 0.5) if pulsed else None
    return Scenario("pulsed_polycrystal" if preset == "llzo_poly" else "pulsed_single_crystal",
                    "pulsed protocol vs CCD", preset, pressure_mpa=pressure_mpa,
                    duration_s=hours * 3600.0, dt_s=1.0, block_s=10.0,
                    current=Constant(j_ma_cm2), pulse=pulse,
                    expect_short=not (pulsed and get_preset(preset).pulse_gain_max > 3))


@_register("pulsed_single_crystal", "1 MHz pulses on single-crystal LLZO: no gain, shorts")
def pulsed_single_crystal(j_ma_cm2: float = 2.0, frequency_hz: float = 1e6,
                          hours: float = 1.0) -> Scenario:
    return pulsed_polycrystal(j_ma_cm2, frequency_hz, hours, "llzo_single", True)


@_register("ccd_ladder", "stepped plate/strip current until short; truth = plating CCD")
def ccd_ladder(j0_ma_cm2: float = 0.25, dj_ma_cm2: float = 0.25, half_s: float = 600.0,
               pressure_mpa: float = 12.0, temperature_c: float = 25.0,
               preset: str = "lpscl") -> Scenario:
    lad = Ladder(j0_ma_cm2, dj_ma_cm2, half_s)
    ccd = dg.critical_current_density(get_preset(preset), pressure_mpa, temperature_c)
    n_steps = math.ceil((ccd.plating_ma_cm2 * 1.6 - j0_ma_cm2) / dj_ma_cm2) + 2
    return Scenario("ccd_ladder", "CCD ladder", preset, temperature_c=temperature_c,
                    pressure_mpa=pressure_mpa, duration_s=n_steps * lad.step_s, dt_s=1.0,
                    block_s=10.0, current=lad, expect_short=True)


@_register("creep_short_high_pressure", "40 MPa on Li|LPSCl|Li at rest: Li creeps through")
def creep_short_high_pressure(pressure_mpa: float = 40.0, hours: float = 30.0) -> Scenario:
    return Scenario("creep_short_high_pressure", "creep-driven short at high stack pressure",
                    "lpscl", pressure_mpa=pressure_mpa, duration_s=hours * 3600.0, dt_s=10.0,
                    block_s=60.0, current=Constant(0.0), expect_short=True)


@_register("heater_stuck_on", "heater MOSFET fails on at 10 min: LAGP cell runs past 200 °C")
def heater_stuck_on(after_s: float = 600.0, hours: float = 1.5) -> Scenario:
    return Scenario("heater_stuck_on", "heater stuck on", "lagp", temperature_c=40.0,
                    duration_s=hours * 3600.0, dt_s=1.0, block_s=5.0,
                    current=Cycling(0.05, 900.0),
                    heater=HeaterPlant(power_w=60.0, stuck_on_after_s=after_s))


@_register("sensor_faults", "healthy cell; RTD opens, load cell saturates, V ADC rails")
def sensor_faults(hours: float = 1.0) -> Scenario:
    d = hours * 3600.0
    return Scenario("sensor_faults", "sensor failures on a healthy cell", "lpscl",
                    duration_s=d, dt_s=1.0, block_s=10.0, current=Cycling(0.2, 600.0),
                    faults=SensorFaults(rtd_open_after_s=0.25 * d,
                                        loadcell_saturated_after_s=0.5 * d,
                                        adc_rail_after_s=0.75 * d))


@_register("false_alarm_steps", "temperature, pressure and current steps on a healthy cell")
def false_alarm_steps(hours: float = 4.0) -> Scenario:
    d = hours * 3600.0
    return Scenario("false_alarm_steps", "healthy cell with T / p / j steps (no alarm)", "lpscl",
                    temperature_c=25.0, pressure_mpa=5.0, duration_s=d, dt_s=1.0, block_s=10.0,
                    current=_StepCycling(Steps((0.0, 0.5 * d), (0.2, 0.4)), 900.0),
                    temperature_setpoint=Steps((0.0, 0.25 * d), (25.0, 45.0)),
                    pressure_setpoint=Steps((0.0, 0.7 * d), (5.0, 8.0)))


@dataclass(frozen=True)
class _StepCycling:
    amplitude: Steps
    half_s: float

    def __call__(self, t_s: FloatArray) -> FloatArray:
        sign = np.where(np.mod(t_s, 2.0 * self.half_s) < self.half_s, 1.0, -1.0)
        return sign * self.amplitude(t_s)
