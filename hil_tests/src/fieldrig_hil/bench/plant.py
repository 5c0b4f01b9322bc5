"""The physical world behind the chip models: the simulated cell in its rig, stepped in
lockstep with the firmware.

``BenchPlant`` turns the firmware's outputs (DAC code, range, pulse gate, heater duty,
screw position) into the cell current, heater power and press travel, steps
``fieldrig_hil.cell.plants.Rig`` (cell + heater + press) over the step, and returns what
the sensors see during it: one cell V/I value per ADC conversion (a block, as DMA would
move it), the RTD temperature and the load-cell force, with sensor faults applied.

Only the cell package's public API is used: ``Cell``, ``plants.Rig`` (with its
``HeaterPlant`` and ``ScrewPress``), ``scenarios``. The press is positioned absolutely
from the screw the firmware turned (travel beyond first contact), not by step counts, so
a retract past contact and back can never drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from fieldrig_hil.cell import Cell, CellGeometry
from fieldrig_hil.cell.degradation import PulseProtocol
from fieldrig_hil.cell.plants import HeaterPlant, Rig, ScrewPress, SensorFaults
from fieldrig_hil.cell.scenarios import Scenario

from .protocol import MAX_RELAXATIONS, RTD_OK, RTD_OPEN, RTD_SHORT, Network, Outputs

FloatArray = npt.NDArray[np.float64]

# What the front end reports beyond its range: a railed ADC (2x its full scale) and a
# load cell pushed far past the NAU7802's input range (either rail).
RAIL_FACTOR = 2.0
LOADCELL_OVERLOAD = 3.0
# The rig's small-signal cell (hil_tests/mp/electrical.py) gets the Foster network with
# relaxations faster than 1/1000 of a conversion (settled within it) folded into r0 and the
# rest merged into bins of a third of a decade: 16-23 relaxations instead of ~150, Z(f)
# within 0.2 % / 0.2 deg of the closed form from 1 Hz to 1 kHz (tests/test_bench_network.py).
# (At 1/30 the folded relaxations' low-frequency tails cost up to 1.4 deg at 25 C.)
SMALL_SIGNAL_FAST = 1e-3
SMALL_SIGNAL_PER_DECADE = 3


@dataclass
class PlantConfig:
    """The cell and its surroundings for one bench run (see ``from_scenario``)."""

    preset: str = "lpscl"
    geometry: CellGeometry = field(default_factory=CellGeometry)
    temperature_c: float = 25.0
    pressure_mpa: float = 5.0
    heater: HeaterPlant = field(default_factory=HeaterPlant)
    faults: SensorFaults = field(default_factory=SensorFaults)
    # Input-referred ADC noise (V rms at the ADS131M04 pins): the chip model has none.
    adc_noise_v: float = 2e-6
    # Cell sample interval; None = one sample per ADC conversion (exact). A coarser one
    # is held over the conversions (faster bench, ZOH current steps stay exact).
    cell_dt_s: float | None = None
    # How the V->I stage is connected (docs/hil.md): "range" = by the range switch (the
    # pulse gate only matters while a PIO program drives it); "pin" = only while the
    # pulse-gate pin is high.
    stage_enable: str = "range"
    physics_dt_s: float = 1.0

    @classmethod
    def from_scenario(cls, sc: Scenario, **overrides: object) -> PlantConfig:
        cfg = cls(preset=sc.preset, geometry=sc.geometry, temperature_c=sc.temperature_c,
                  pressure_mpa=sc.pressure_mpa,
                  heater=replace(sc.heater, temperature_c=sc.temperature_c),
                  faults=sc.faults)
        return replace(cfg, **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SensorView:
    """What the sensors are given for one step."""

    block_v: FloatArray
    block_i: FloatArray
    cell_v: float  # static value held after the block
    cell_i_a: float
    temp_c: float
    force_n: float
    force_slope: float  # dF/d(screw position), N per 1/256 full step (0: hold force_n)
    rtd_mode: int


@dataclass(slots=True)
class TraceRow:
    t_s: float
    voltage_v: float  # mean over the step (truth, before the ADC)
    current_a: float
    temperature_c: float
    pressure_mpa: float
    heater_duty: float
    press_travel_mm: float
    dac_current_a: float


class BenchPlant:
    def __init__(self, cfg: PlantConfig, front: dict[str, object], seed: int = 0) -> None:
        if cfg.stage_enable not in ("range", "pin"):
            raise ValueError("stage_enable must be 'range' or 'pin'")
        self.cfg = cfg
        analog = front["analog"]
        plant = front["plant"]
        assert isinstance(analog, dict) and isinstance(plant, dict)
        self.analog = {str(k): float(v) for k, v in analog.items()}
        self.ranges_a = [float(r) / 1000.0 for r in plant["ranges_ma"]]
        self.lead_mm = float(plant["press_lead_mm"])
        self.full_steps_per_rev = float(plant["press_full_steps_per_rev"])
        self.loadcell_capacity_n = float(plant["loadcell_capacity_n"])
        start_mm = float(plant["press_start_mm"])
        cell = Cell(cfg.preset, cfg.geometry, temperature_c=cfg.temperature_c,
                    pressure_mpa=cfg.pressure_mpa, seed=seed, physics_dt_s=cfg.physics_dt_s)
        press = ScrewPress.at_pressure(cfg.pressure_mpa, area_cm2=cfg.geometry.area_cm2)
        # The screw starts where the wiring says; first contact is where the preload of
        # the scenario's stack pressure is reached at that travel.
        self.contact_um = start_mm * 1000.0 - press.position_um
        self.rig = Rig(cell, heater=replace(cfg.heater), press=press, faults=cfg.faults,
                       seed=seed + 1)
        self.rng = np.random.default_rng(seed + 2)
        self.t_s = 0.0
        self.trace: list[TraceRow] = []
        # Bench-injected faults (besides the scenario's SensorFaults schedule).
        self.rtd_mode: int | None = None
        self.loadcell_saturated = False
        self.adc_railed = False
        # A failed V->I stage (e.g. its output transistor shorted): this current flows
        # whatever the DAC and range say.
        self.current_override_a: float | None = None
        self.last_v = 0.0
        self.last_i = 0.0

    def small_signal_network(self, conversion_period_s: float) -> Network:
        """The cell's present linearised network, reduced for the rig (see above)."""
        enabled = self.current_override_a is None and self.cfg.stage_enable == "range"
        if not enabled or conversion_period_s <= 0:
            return Network(False, 0.0)
        f = self.cell.foster
        return reduce_network(f.r0_ohm, f.r_ohm, f.tau_s, conversion_period_s)

    @property
    def cell(self) -> Cell:
        return self.rig.cell

    @property
    def temperature_c(self) -> float:
        return self.rig.heater.temperature_c

    @property
    def pressure_mpa(self) -> float:
        assert self.rig.press is not None
        return self.rig.press.pressure_mpa

    @property
    def force_n(self) -> float:
        assert self.rig.press is not None
        return self.rig.press.force_n

    # -- firmware outputs -> physical drive ---------------------------------------------
    def press_travel_mm(self, out: Outputs) -> float:
        return out.press_pos_256 / 256.0 / self.full_steps_per_rev * self.lead_mm

    def commanded_current_a(self, out: Outputs) -> tuple[float, PulseProtocol | None]:
        """Cell current the V->I stage drives for these outputs, and the PIO pulse
        protocol when the gate is pulsed by a periodic PIO program."""
        if self.current_override_a is not None:
            return self.current_override_a, None
        if out.range_index < 0 or out.range_index >= len(self.ranges_a):
            return 0.0, None
        i = out.dac_fraction() * self.ranges_a[out.range_index]
        if out.gate_pio:
            if math.isfinite(out.gate_period_s) and 0.0 < out.gate_high_s < out.gate_period_s:
                # The cell sees the amplitude gated by the protocol (Cell.step(pulse=)).
                return i, PulseProtocol(out.gate_high_s, out.gate_period_s - out.gate_high_s)
            return i * out.gate_duty, None
        if self.cfg.stage_enable == "pin":
            return i * out.gate_duty, None
        return i, None

    # -- one step -----------------------------------------------------------------------
    def sensor_view(self) -> SensorView:
        """The sensors' view of the present state (static values, no block)."""
        assert self.rig.press is not None
        return self._view(np.empty(0), np.empty(0), self.rig.heater.temperature_c,
                          self.rig.press.force_n)

    def travel_mm(self) -> float:
        """Screw travel (mm) of the present press position (for the next boot)."""
        assert self.rig.press is not None
        return (self.rig.press.position_um + self.contact_um) / 1000.0

    def advance(self, t_end_s: float, out: Outputs, n_block: int) -> SensorView:
        """Step the plant from ``t_s`` to ``t_end_s`` with the outputs held; return the
        sensors' view of it (``n_block`` ADC conversions, 0 = static values only)."""
        span = t_end_s - self.t_s
        i_cmd, pulse = self.commanded_current_a(out)
        assert self.rig.press is not None
        travel_mm = self.press_travel_mm(out)
        self.rig.press.position_um = max(0.0, travel_mm * 1000.0 - self.contact_um)
        # The sensors read the state at the step start (zero-order hold, causal).
        view_temp = self.rig.heater.temperature_c
        view_force = self.rig.press.force_n
        if span <= 0:
            return self._view(np.empty(0), np.empty(0), view_temp, view_force)
        n_cell = n_block
        dt = span / n_block if n_block else span
        if self.cfg.cell_dt_s is not None or n_block == 0:
            step = self.cfg.cell_dt_s or span
            n_cell = max(1, round(span / step))
            dt = span / n_cell
        duty = min(1.0, max(0.0, out.heater_duty))
        r = self.rig.step(dt, np.full(n_cell, i_cmd), heater_duty=duty, press_steps=0,
                          pulse=pulse)
        v = np.asarray(r.voltage_v, dtype=np.float64)
        i = np.asarray(r.current_a, dtype=np.float64)
        self.t_s = t_end_s
        self.trace.append(TraceRow(t_end_s, float(v.mean()), float(i.mean()), r.temperature_c,
                                   r.pressure_mpa, out.heater_duty, travel_mm, i_cmd))
        if n_block and n_cell != n_block:
            idx = (np.arange(n_block) * n_cell) // n_block
            v = v[idx]
            i = i[idx]
        self.last_v = float(v[-1])
        self.last_i = float(i[-1])
        if n_block == 0:
            return self._view(np.empty(0), np.empty(0), view_temp, view_force)
        return self._view(v, i, view_temp, view_force)

    def _view(self, v: FloatArray, i: FloatArray, temp_c: float, force_n: float) -> SensorView:
        a = self.analog
        noise = self.cfg.adc_noise_v
        if noise > 0 and v.size:
            v = v + self.rng.normal(0.0, noise * a["cell_v_divider"], v.size)
            i = i + self.rng.normal(0.0, noise / a["shunt_ohm"], i.size)
        f = self.cfg.faults
        t = self.t_s
        cell_v = self.last_v
        if self.adc_railed or t >= f.adc_rail_after_s:
            rail_v = RAIL_FACTOR * 1.2 * a["cell_v_divider"]
            v = np.full(v.size, rail_v)
            cell_v = rail_v
        press = self.rig.press
        assert press is not None
        slope = 0.0
        if self.loadcell_saturated or t >= f.loadcell_saturated_after_s:
            force_n = LOADCELL_OVERLOAD * self.loadcell_capacity_n
        elif force_n > 0.0:
            # In contact: the frame is linear-elastic, the rig moves the force with the
            # screw inside the step (below contact it clamps at 0).
            um_per_256 = self.lead_mm * 1000.0 / (self.full_steps_per_rev * 256.0)
            slope = press.stiffness_n_um * um_per_256
        rtd = RTD_OK
        if t >= f.rtd_open_after_s:
            rtd = RTD_OPEN
        elif t >= f.rtd_short_after_s:
            rtd = RTD_SHORT
        if self.rtd_mode is not None:
            rtd = self.rtd_mode
        return SensorView(v, i, cell_v, self.last_i, temp_c, force_n, slope, rtd)

    def truth_at(self, t_s: float) -> TraceRow | None:
        """The trace row of the step that contains ``t_s`` (for comparisons)."""
        if not self.trace:
            return None
        times = [row.t_s for row in self.trace]
        k = int(np.searchsorted(times, t_s, side="left"))
        if k >= len(self.trace):
            return None
        return self.trace[k]


def reduce_network(r0_ohm: float, r_ohm: FloatArray, tau_s: FloatArray,
                   conversion_period_s: float) -> Network:
    """Foster network -> the rig's reduced one: relaxations settled within a conversion
    become series resistance, the others are merged per third of a decade (summed R at
    the R-weighted geometric mean tau)."""
    fast = tau_s < conversion_period_s * SMALL_SIGNAL_FAST
    r0 = float(r0_ohm + r_ohm[fast].sum())
    r = r_ohm[~fast]
    tau = tau_s[~fast]
    keep = r > 0.0
    r, tau = r[keep], tau[keep]
    if r.size == 0:
        return Network(True, r0)
    bins = np.floor(np.log10(tau) * SMALL_SIGNAL_PER_DECADE).astype(np.int64)
    uniq, inv = np.unique(bins, return_inverse=True)
    r_sum = np.bincount(inv, weights=r)
    log_tau = np.bincount(inv, weights=r * np.log(tau)) / r_sum
    if uniq.size > MAX_RELAXATIONS:
        raise ValueError(f"{uniq.size} relaxations after reduction (max {MAX_RELAXATIONS})")
    return Network(True, r0, tuple(float(v) for v in r_sum),
                   tuple(float(v) for v in np.exp(log_tau)))
