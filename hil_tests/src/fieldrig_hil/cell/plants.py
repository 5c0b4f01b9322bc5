"""Plants around the cell: heater + thermal mass, stepper screw press, and sensors.

The sensor models turn physical values into what the rig's converters report (codes with
noise, quantisation, offset, and injectable failures). The chip-level register emulation
(MAX31865, NAU7802, ADS131M04 frames) lives in the bench and uses these transfer functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .materials import LITHIUM, CellParameterError, arrhenius_molar, check_finite
from .model import Cell

FloatArray = npt.NDArray[np.float64]


@dataclass
class HeaterPlant:
    """Cartridge heater on a cell holder: C·dT/dt = P·duty - (T - T_amb)/R_th.

    Defaults: 20 W heater, 60 J/K holder, 4 K/W to ambient (max rise 80 K, τ = 240 s).
    ``stuck_on_after_s`` injects the MOSFET-shorted fault (full power whatever the duty).
    """

    power_w: float = 20.0
    heat_capacity_j_k: float = 60.0
    r_thermal_k_w: float = 4.0
    ambient_c: float = 25.0
    temperature_c: float = 25.0
    stuck_on_after_s: float = math.inf
    t_s: float = 0.0

    def __post_init__(self) -> None:
        check_finite("power_w", self.power_w, non_negative=True)
        check_finite("heat_capacity_j_k", self.heat_capacity_j_k, positive=True)
        check_finite("r_thermal_k_w", self.r_thermal_k_w, positive=True)
        check_finite("ambient_c", self.ambient_c)
        check_finite("temperature_c", self.temperature_c)

    def step(self, dt_s: float, duty: float, extra_heat_w: float = 0.0) -> float:
        """Advance by ``dt_s`` with PWM duty in [0, 1]; return the holder temperature, °C."""
        dt = check_finite("dt_s", dt_s, positive=True)
        d = check_finite("duty", duty)
        if not 0.0 <= d <= 1.0:
            raise CellParameterError(f"duty must be in [0, 1], got {d}")
        if self.t_s >= self.stuck_on_after_s:
            d = 1.0
        tau = self.heat_capacity_j_k * self.r_thermal_k_w
        t_inf = self.ambient_c + (self.power_w * d + extra_heat_w) * self.r_thermal_k_w
        # exact for the held duty: first-order response over dt
        self.temperature_c = t_inf + (self.temperature_c - t_inf) * math.exp(-dt / tau)
        self.t_s += dt
        return self.temperature_c


@dataclass
class ScrewPress:
    """Stepper-driven screw press loading the cell through a frame stiffness.

    Force = k·(screw travel - cell compliance take-up - Li creep thinning). Li creep
    (power law, LePage: n = 6.56, Q = 37 kJ/mol) thins the foils as they extrude sideways,
    so at fixed screw position the stack pressure relaxes. The effective extrusion stress of
    a thin foil is p·3t/r (thin-film squeeze with sticking friction).
    """

    stiffness_n_um: float = 5.0
    um_per_step: float = 0.05  # 2 mm lead, 200 steps x 16 microsteps / 4:1 gearing ... ≈ 0.05
    area_cm2: float = 0.785
    li_um_total: float = 200.0
    position_um: float = 0.0  # screw travel beyond first contact
    creep_um: float = 0.0
    max_force_n: float = 20000.0
    endstop_um: float = 5000.0

    def __post_init__(self) -> None:
        check_finite("stiffness_n_um", self.stiffness_n_um, positive=True)
        check_finite("um_per_step", self.um_per_step, positive=True)
        check_finite("area_cm2", self.area_cm2, positive=True)

    @classmethod
    def at_pressure(cls, pressure_mpa: float, **kw: float) -> ScrewPress:
        """A press preloaded to ``pressure_mpa``."""
        press = cls(**kw)
        p = check_finite("pressure_mpa", pressure_mpa, non_negative=True)
        press.position_um = p * press.area_cm2 * 100.0 / press.stiffness_n_um
        return press

    @property
    def force_n(self) -> float:
        return min(max(0.0, self.stiffness_n_um * (self.position_um - self.creep_um)),
                   self.max_force_n)

    @property
    def pressure_mpa(self) -> float:
        return self.force_n / (self.area_cm2 * 100.0)  # 1 MPa on 1 cm² = 100 N

    @property
    def at_endstop(self) -> bool:
        return self.position_um <= 0.0 or self.position_um >= self.endstop_um

    def move(self, steps: int) -> None:
        """Turn the screw by ``steps`` (positive tightens); end stops clamp the travel."""
        if not isinstance(steps, (int, np.integer)):
            raise CellParameterError(f"steps must be an int, got {steps!r}")
        self.position_um = min(max(self.position_um + int(steps) * self.um_per_step, 0.0),
                               self.endstop_um)

    def step(self, dt_s: float, temperature_c: float) -> float:
        """Let Li creep for ``dt_s``; return the stack pressure, MPa."""
        dt = check_finite("dt_s", dt_s, positive=True)
        p = self.pressure_mpa
        radius_cm = math.sqrt(self.area_cm2 / math.pi)
        # foils get thinner as they extrude, which lowers their extrusion stress: self-limiting
        thickness_um = max(self.li_um_total - self.creep_um, 0.05 * self.li_um_total)
        sigma_eff = p * 3.0 * (thickness_um / 2.0) * 1e-4 / radius_cm
        li = LITHIUM
        rate = (li.creep_rate_1mpa_per_s * sigma_eff ** li.creep_stress_exponent
                * arrhenius_molar(li.creep_activation_j_mol, temperature_c))
        # thinning limited to the elastic take-up available (creep cannot pull the screw)
        d = min(rate * thickness_um * dt, max(0.0, self.position_um - self.creep_um),
                max(0.0, 0.95 * self.li_um_total - self.creep_um))
        self.creep_um += d
        return self.pressure_mpa


@dataclass
class SensorFaults:
    """Injectable sensor failures, active from the given time on (s)."""

    rtd_open_after_s: float = math.inf
    rtd_short_after_s: float = math.inf
    loadcell_saturated_after_s: float = math.inf
    adc_rail_after_s: float = math.inf


@dataclass
class RtdSensor:
    """PT100 read by a MAX31865 (15-bit ratio to a 430 Ω reference; fault bit on open/short)."""

    r0_ohm: float = 100.0
    r_ref_ohm: float = 430.0
    noise_c: float = 0.02
    offset_c: float = 0.0

    def resistance_ohm(self, temperature_c: float) -> float:
        """Callendar-Van Dusen (IEC 60751) for T >= 0 °C, used here for the whole range."""
        a, b = 3.9083e-3, -5.775e-7
        t = temperature_c
        return self.r0_ohm * (1.0 + a * t + b * t * t)

    def read(self, temperature_c: float, rng: np.random.Generator, *, open_circuit: bool = False,
             short_circuit: bool = False) -> tuple[int, bool]:
        """(15-bit ADC code, fault flag)."""
        if open_circuit:
            return 0x7FFF, True
        if short_circuit:
            return 0, True
        t = temperature_c + self.offset_c + self.noise_c * float(rng.standard_normal())
        code = round(self.resistance_ohm(t) / self.r_ref_ohm * 32768.0)
        return min(max(code, 0), 0x7FFF), False

    def code_to_c(self, code: int) -> float:
        """Invert the code to °C (quadratic CVD)."""
        r = code / 32768.0 * self.r_ref_ohm
        a, b = 3.9083e-3, -5.775e-7
        return (-a + math.sqrt(a * a - 4 * b * (1 - r / self.r0_ohm))) / (2 * b)


@dataclass
class LoadCellSensor:
    """Load cell (2 mV/V at full scale) on a NAU7802, 24-bit signed, gain 128."""

    full_scale_n: float = 10000.0
    noise_n: float = 0.5
    offset_n: float = 0.0

    def read(self, force_n: float, rng: np.random.Generator, *, saturated: bool = False) -> int:
        """Signed 24-bit code; the bridge output clips at the ADC's full scale."""
        if saturated:
            return 0x7FFFFF
        f = force_n + self.offset_n + self.noise_n * float(rng.standard_normal())
        code = round(f / self.full_scale_n * 0x7FFFFF)
        return min(max(code, -0x800000), 0x7FFFFF)


@dataclass
class AdcChannel:
    """One ADS131M04 channel: ±1.2 V / gain, 24-bit two's complement, white noise."""

    gain: float = 1.0
    vref_v: float = 1.2
    noise_v: float = 2e-6
    offset_v: float = 0.0
    scale: float = 1.0  # physical units per volt at the input (e.g. shunt: A -> V)

    def read(self, values: npt.ArrayLike, rng: np.random.Generator, *, railed: bool = False
             ) -> npt.NDArray[np.int64]:
        """Codes for an array of physical values; ``railed`` pins the input to +full scale."""
        x = np.asarray(values, dtype=np.float64) * self.scale + self.offset_v
        x = x + self.noise_v * rng.standard_normal(x.shape)
        fs = self.vref_v / self.gain
        if railed:
            x = np.full(x.shape, 2.0 * fs)
        codes = np.round(x / fs * 0x7FFFFF)
        return np.clip(codes, -0x800000, 0x7FFFFF).astype(np.int64)

    def to_physical(self, codes: npt.ArrayLike) -> FloatArray:
        fs = self.vref_v / self.gain
        v = np.asarray(codes, dtype=np.float64) / 0x7FFFFF * fs
        return np.asarray((v - self.offset_v) / self.scale, dtype=np.float64)


@dataclass
class RigReading:
    """What the rig's sensors report for one block."""

    t_s: FloatArray
    cell_voltage_code: npt.NDArray[np.int64]
    cell_current_code: npt.NDArray[np.int64]
    rtd_code: int
    rtd_fault: bool
    load_code: int
    voltage_v: FloatArray  # the true values, for scoring
    current_a: FloatArray
    temperature_c: float
    pressure_mpa: float


@dataclass
class Rig:
    """A cell in its rig: heater, press and sensors, stepped together in virtual time.

    The heater's holder temperature is the cell temperature (thin cell, good contact); the
    press's pressure is the cell's stack pressure.
    """

    cell: Cell
    heater: HeaterPlant = field(default_factory=HeaterPlant)
    press: ScrewPress | None = None
    faults: SensorFaults = field(default_factory=SensorFaults)
    rtd: RtdSensor = field(default_factory=RtdSensor)
    load_cell: LoadCellSensor = field(default_factory=LoadCellSensor)
    v_adc: AdcChannel = field(default_factory=AdcChannel)
    i_adc: AdcChannel = field(default_factory=lambda: AdcChannel(scale=10.0))  # 10 Ω shunt
    seed: int = 1

    def __post_init__(self) -> None:
        if self.press is None:
            self.press = ScrewPress.at_pressure(self.cell.pressure_mpa,
                                                area_cm2=self.cell.geometry.area_cm2)
        self.heater.temperature_c = self.cell.temperature_c
        self.rng = np.random.default_rng(self.seed)

    def step(self, dt_s: float, current_a: npt.ArrayLike | float, *, heater_duty: float = 0.0,
             press_steps: int = 0, **cell_kw: object) -> RigReading:
        """Move the press, heat, then step the cell over the block; read the sensors."""
        assert self.press is not None
        self.press.move(press_steps)
        n = 1 if np.ndim(current_a) == 0 else int(np.size(current_a))
        span = dt_s * n
        temp = self.heater.step(span, heater_duty)
        pressure = self.press.step(span, temp)
        self.cell.set_conditions(temperature_c=temp, pressure_mpa=pressure)
        res = self.cell.step(dt_s, current_a, **cell_kw)  # type: ignore[arg-type]
        t = self.cell.t_s
        f = self.faults
        rtd_code, rtd_fault = self.rtd.read(temp, self.rng, open_circuit=t >= f.rtd_open_after_s,
                                            short_circuit=t >= f.rtd_short_after_s)
        load = self.load_cell.read(self.press.force_n, self.rng,
                                   saturated=t >= f.loadcell_saturated_after_s)
        railed = t >= f.adc_rail_after_s
        return RigReading(res.t_s, self.v_adc.read(res.voltage_v, self.rng, railed=railed),
                          self.i_adc.read(res.current_a, self.rng), rtd_code, rtd_fault, load,
                          res.voltage_v, res.current_a, temp, pressure)
