"""Material presets, cell geometry and physical constants for the simulated cell.

Every number that is not a universal constant carries its source or its calibration
rationale in ``PRESET_SOURCES`` / the field docstrings; ``docs/cell_model.md`` renders the
same table. Values are at the reference temperature ``T_REF_C`` (25 °C) unless a field says
otherwise. Areas are in cm², thicknesses in µm, conductivities in S/cm, activation energies
in eV, current densities in mA/cm².
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

FARADAY_C_MOL = 96485.33212
GAS_J_MOL_K = 8.314462618
BOLTZMANN_EV_K = 8.617333262e-5
T_REF_C = 25.0
T_REF_K = T_REF_C + 273.15

#: Li molar volume, cm³/mol (Porz et al.; literature_targets "Li molar volume").
LI_MOLAR_VOLUME_CM3_MOL = 13.0
#: µm of Li plated/stripped per second at 1 mA/cm²: Vm·j/F (= 1.347e-3 µm/s).
LI_UM_PER_S_PER_MA_CM2 = LI_MOLAR_VOLUME_CM3_MOL * 1e-3 / FARADAY_C_MOL * 1e4
#: Li bulk resistivity, Ω·cm (CRC handbook, 9.3 µΩ·cm at 20 °C) - filament path resistance.
LI_RESISTIVITY_OHM_CM = 9.3e-6


class CellParameterError(ValueError):
    """Invalid cell / preset / drive parameter. The message names the parameter."""


class UnknownPresetError(CellParameterError, KeyError):
    """A preset or scenario name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


def check_finite(name: str, value: float, *, positive: bool = False,
                 non_negative: bool = False) -> float:
    """Return ``float(value)`` or raise :class:`CellParameterError` naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise CellParameterError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(v):
        raise CellParameterError(f"{name} must be finite, got {v!r}")
    if positive and v <= 0.0:
        raise CellParameterError(f"{name} must be > 0, got {v!r}")
    if non_negative and v < 0.0:
        raise CellParameterError(f"{name} must be >= 0, got {v!r}")
    return v


def arrhenius(ea_ev: float, temperature_c: float) -> float:
    """Rate factor exp(-Ea/k (1/T - 1/T_ref)); 1 at 25 °C, > 1 when hotter."""
    t_k = temperature_c + 273.15
    return math.exp(-ea_ev / BOLTZMANN_EV_K * (1.0 / t_k - 1.0 / T_REF_K))


def arrhenius_molar(ea_j_mol: float, temperature_c: float) -> float:
    """Same as :func:`arrhenius` with the activation energy in J/mol."""
    t_k = temperature_c + 273.15
    return math.exp(-ea_j_mol / GAS_J_MOL_K * (1.0 / t_k - 1.0 / T_REF_K))


@dataclass(frozen=True)
class LithiumMechanics:
    """Li metal properties shared by every preset (Li is Li whatever the electrolyte)."""

    young_modulus_gpa: float = 7.82  # Masias et al.
    shear_modulus_gpa: float = 2.83  # Masias et al.
    bulk_yield_mpa: float = 0.73  # Masias et al. (spread 0.41-0.89)
    #: micropillar yield at 298 K and 363 K (Xu et al.), log-linear in between.
    micro_yield_298k_mpa: float = 95.0
    micro_yield_363k_mpa: float = 35.0
    #: power-law creep (LePage et al.): Q = 37 kJ/mol, n = 6.56.
    creep_activation_j_mol: float = 37e3
    creep_stress_exponent: float = 6.56
    #: uniaxial creep rate at 1 MPa, 25 °C, 1/s. Order of LePage's 298 K data; sets how
    #: fast a stiff press loses force as the foils extrude (calibration, see docs).
    creep_rate_1mpa_per_s: float = 2e-5
    #: Li self-diffusion at 0 °C ~1e-12 cm²/s (reviews); activation 0.55 eV (bulk vacancy
    #: migration, reviews). Sets the pressure-free share of void resupply.
    self_diffusion_0c_cm2_s: float = 1e-12
    self_diffusion_ea_ev: float = 0.55
    #: pressure-free resupply current density at 25 °C, mA/cm² (diffusion-limited flux;
    #: ~0.04 mA/cm², consistent with the ~0.1 mA/cm² zero-pressure stripping limits reported
    #: for Li|LLZO - calibration).
    diffusion_resupply_ma_cm2: float = 0.04
    #: creep-resupply law j_res = k·(p/1 MPa)^n_eff·exp(-Q/R(1/T-1/Tref)); n_eff and k are
    #: fitted to Kasemchainan's stripping CCDs (0.2 mA/cm² at 3 MPa, 1.0 at 7 MPa).
    resupply_k_ma_cm2: float = 0.01567
    resupply_exponent: float = 2.115

    def micro_yield_mpa(self, temperature_c: float) -> float:
        """Micropillar yield strength, log-interpolated in 1/T between Xu's two points."""
        t_k = temperature_c + 273.15
        x = (1.0 / t_k - 1.0 / 298.0) / (1.0 / 363.0 - 1.0 / 298.0)
        return float(self.micro_yield_298k_mpa
                     * (self.micro_yield_363k_mpa / self.micro_yield_298k_mpa) ** x)


LITHIUM = LithiumMechanics()


@dataclass(frozen=True)
class MaterialPreset:
    """One solid electrolyte (and its interface with Li). All values at 25 °C."""

    key: str
    name: str
    family: str  # "sulfide" | "garnet" | "nasicon"
    polycrystalline: bool
    # --- ionic transport (impedance) ---
    sigma_bulk_s_cm: float
    ea_bulk_ev: float
    #: grain-boundary resistance as a multiple of the bulk resistance (0: single crystal).
    gb_ratio: float
    ea_gb_ev: float
    gb_peak_hz: float  # characteristic frequency of the gb arc at 25 °C
    gb_alpha: float
    #: Li|SE interface charge-transfer ASR at full contact, Ω·cm², and its arc.
    r_int_ohm_cm2: float
    ea_int_ev: float
    int_capacitance_f_cm2: float
    int_alpha: float
    #: exchange current density, mA/cm² (sets the Butler-Volmer curvature at high j).
    i0_ma_cm2: float
    #: finite-length Warburg (Li-vacancy diffusion in the near-interface Li), Ω·cm² and s.
    warburg_ohm_cm2: float
    warburg_tau_s: float
    # --- electronic leakage ---
    sigma_e_s_cm: float
    ea_e_ev: float
    # --- mechanics and failure ---
    shear_modulus_gpa: float
    k_ic_mpa_m05: float
    #: local (per contacted area) DC plating CCD at 25 °C with full contact, mA/cm².
    ccd_plating_local_ma_cm2: float
    #: maximum CCD gain from short-pulse protocols (Reisecker: 6 polycrystal, 1 single crystal)
    pulse_gain_max: float
    #: pulse kinetics: stress at defect tips builds over tau_build and relaxes over tau_relax
    pulse_tau_build_s: float
    pulse_tau_relax_s: float
    #: filament growth rate per unit applied current, µm·s⁻¹/(mA·cm⁻²), DC and pulsed.
    growth_dc_um_s_per_ma_cm2: float
    growth_pulsed_um_s_per_ma_cm2: float
    #: creep-driven penetration of Li into the electrolyte's pores and cracks.
    creep_short_threshold_mpa: float
    creep_short_rate_um_h: float  # at (p - p_th) = 1 MPa, 25 °C, no current
    creep_short_exponent: float
    creep_short_current_ref_ma_cm2: float  # cycling at this j doubles the penetration rate
    #: fraction of the Li micropillar yield at which Li extrudes plastically into the pores
    plastic_flow_fraction: float
    # --- interphase (Li reduces the electrolyte) and fracture ---
    interphase_rate_nm2_h: float  # parabolic rate constant δ² = k t, nm²/h at 25 °C
    interphase_ea_ev: float
    interphase_per_charge_nm_per_mah_cm2: float
    interphase_resistivity_ohm_cm: float
    crack_interphase_nm: float  # interphase thickness at first fracture (0: no cracking)
    crack_severed_fraction: float  # ionic cross-section lost at the first fracture
    #: thermal interlock limits
    decomposition_onset_c: float
    # --- dead Li (Kazyak): fraction of stripped charge stranded per cycle from cycle 2 ---
    dead_li_fraction: float = 0.02
    notes: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.type in ("float", float):
                value = getattr(self, f.name)
                check_finite(f"{self.key}.{f.name}", value, non_negative=True)
        for name in ("sigma_bulk_s_cm", "r_int_ohm_cm2", "ccd_plating_local_ma_cm2",
                     "pulse_gain_max", "i0_ma_cm2", "sigma_e_s_cm"):
            check_finite(f"{self.key}.{name}", getattr(self, name), positive=True)
        for name in ("gb_alpha", "int_alpha"):
            a = getattr(self, name)
            if not 0.3 <= a <= 1.0:
                raise CellParameterError(f"{self.key}.{name} must be in [0.3, 1], got {a}")

    def griffith_overpotential_mv(self, flaw_um: float = 1.0) -> float:
        """Minimum plating overpotential that opens a flaw of size ``flaw_um`` (Porz et al.).

        Δφ = K_IC·Vm / (F·√(πa)) - the plating stress F·Δφ/Vm reaching the Griffith stress.
        """
        a_m = check_finite("flaw_um", flaw_um, positive=True) * 1e-6
        vm_m3 = LI_MOLAR_VOLUME_CM3_MOL * 1e-6
        return self.k_ic_mpa_m05 * 1e6 * vm_m3 / (FARADAY_C_MOL * math.sqrt(math.pi * a_m)) * 1e3


@dataclass(frozen=True)
class CellGeometry:
    """Cell geometry. Area cm², electrolyte and Li thicknesses µm."""

    area_cm2: float = 0.785  # 10 mm diameter pellet
    electrolyte_um: float = 600.0
    li_um: float = 100.0  # each Li electrode
    counter: str = "li"  # "li" (symmetric Li|SE|Li) or "cathode" (Li|SE|NMC)
    cathode_capacity_mah_cm2: float = 2.0

    def __post_init__(self) -> None:
        check_finite("area_cm2", self.area_cm2, positive=True)
        check_finite("electrolyte_um", self.electrolyte_um, positive=True)
        check_finite("li_um", self.li_um, positive=True)
        check_finite("cathode_capacity_mah_cm2", self.cathode_capacity_mah_cm2, positive=True)
        if self.counter not in ("li", "cathode"):
            raise CellParameterError(
                f"counter must be 'li' or 'cathode', got {self.counter!r}")

    @property
    def radius_cm(self) -> float:
        return math.sqrt(self.area_cm2 / math.pi)


_SULFIDE_COMMON: dict[str, float] = dict(
    shear_modulus_gpa=8.3, k_ic_mpa_m05=0.23, plastic_flow_fraction=0.65,
)

PRESETS: dict[str, MaterialPreset] = {}


def _add(p: MaterialPreset) -> None:
    PRESETS[p.key] = p


_add(MaterialPreset(
    key="lpscl", name="Li6PS5Cl (argyrodite)", family="sulfide", polycrystalline=True,
    sigma_bulk_s_cm=2.5e-3, ea_bulk_ev=0.38, gb_ratio=0.35, ea_gb_ev=0.42,
    gb_peak_hz=2.0e6, gb_alpha=0.85,
    r_int_ohm_cm2=15.0, ea_int_ev=0.45, int_capacitance_f_cm2=2e-6, int_alpha=0.85,
    i0_ma_cm2=1.0, warburg_ohm_cm2=3.0, warburg_tau_s=20.0,
    sigma_e_s_cm=1e-9, ea_e_ev=0.6, **_SULFIDE_COMMON,
    ccd_plating_local_ma_cm2=2.1, pulse_gain_max=2.0,
    pulse_tau_build_s=2e-5, pulse_tau_relax_s=2e-6,
    growth_dc_um_s_per_ma_cm2=6.0, growth_pulsed_um_s_per_ma_cm2=3.0,
    creep_short_threshold_mpa=5.0, creep_short_rate_um_h=0.031, creep_short_exponent=1.65,
    creep_short_current_ref_ma_cm2=0.2,
    interphase_rate_nm2_h=50.0, interphase_ea_ev=0.5, interphase_per_charge_nm_per_mah_cm2=0.0,
    interphase_resistivity_ohm_cm=2e5, crack_interphase_nm=0.0, crack_severed_fraction=0.0,
    decomposition_onset_c=200.0,
    notes="Kasemchainan 2019 (CCDs), Doux 2020 (stack pressure), Porz 2017 (G, K_IC of LPS)",
))
_add(MaterialPreset(
    key="llzo_poly", name="Li7La3Zr2O12 / LLZTO (polycrystalline garnet)", family="garnet",
    polycrystalline=True,
    sigma_bulk_s_cm=6e-4, ea_bulk_ev=0.40, gb_ratio=0.6, ea_gb_ev=0.45,
    gb_peak_hz=3.0e5, gb_alpha=0.8,
    r_int_ohm_cm2=40.0, ea_int_ev=0.5, int_capacitance_f_cm2=1e-6, int_alpha=0.85,
    i0_ma_cm2=0.5, warburg_ohm_cm2=5.0, warburg_tau_s=30.0,
    sigma_e_s_cm=1e-8, ea_e_ev=1.0,
    shear_modulus_gpa=61.0, k_ic_mpa_m05=1.25, plastic_flow_fraction=0.9,
    ccd_plating_local_ma_cm2=0.65, pulse_gain_max=6.0,
    pulse_tau_build_s=1e-4, pulse_tau_relax_s=5e-8,
    growth_dc_um_s_per_ma_cm2=13.7, growth_pulsed_um_s_per_ma_cm2=1.1,
    creep_short_threshold_mpa=30.0, creep_short_rate_um_h=0.05, creep_short_exponent=1.65,
    creep_short_current_ref_ma_cm2=0.2,
    interphase_rate_nm2_h=0.0, interphase_ea_ev=0.5, interphase_per_charge_nm_per_mah_cm2=0.0,
    interphase_resistivity_ohm_cm=1e6, crack_interphase_nm=0.0, crack_severed_fraction=0.0,
    decomposition_onset_c=250.0,
    notes="Reisecker 2023 (pulse CCD x6, growth 13.7 -> 1.1), reviews (CCD 0.5-1.0, K_IC)",
))
_add(MaterialPreset(
    key="llzo_single", name="LLZO single crystal", family="garnet", polycrystalline=False,
    sigma_bulk_s_cm=8e-4, ea_bulk_ev=0.40, gb_ratio=0.0, ea_gb_ev=0.45,
    gb_peak_hz=3.0e5, gb_alpha=0.8,
    r_int_ohm_cm2=40.0, ea_int_ev=0.5, int_capacitance_f_cm2=1e-6, int_alpha=0.85,
    i0_ma_cm2=0.5, warburg_ohm_cm2=5.0, warburg_tau_s=30.0,
    sigma_e_s_cm=5e-9, ea_e_ev=1.0,
    shear_modulus_gpa=61.0, k_ic_mpa_m05=1.25, plastic_flow_fraction=0.9,
    ccd_plating_local_ma_cm2=0.5, pulse_gain_max=1.0,
    pulse_tau_build_s=3e-5, pulse_tau_relax_s=5e-8,
    growth_dc_um_s_per_ma_cm2=8.4, growth_pulsed_um_s_per_ma_cm2=10.5,
    creep_short_threshold_mpa=40.0, creep_short_rate_um_h=0.02, creep_short_exponent=1.65,
    creep_short_current_ref_ma_cm2=0.2,
    interphase_rate_nm2_h=0.0, interphase_ea_ev=0.5, interphase_per_charge_nm_per_mah_cm2=0.0,
    interphase_resistivity_ohm_cm=1e6, crack_interphase_nm=0.0, crack_severed_fraction=0.0,
    decomposition_onset_c=250.0,
    notes="Reisecker 2023 (no pulse gain; growth 8.4 DC vs 10.5 pulsed)",
))
_add(MaterialPreset(
    key="lgps", name="Li10GeP2S12 (LGPS)", family="sulfide", polycrystalline=True,
    sigma_bulk_s_cm=12e-3, ea_bulk_ev=0.25, gb_ratio=0.25, ea_gb_ev=0.30,
    gb_peak_hz=5.0e6, gb_alpha=0.85,
    r_int_ohm_cm2=25.0, ea_int_ev=0.45, int_capacitance_f_cm2=3e-6, int_alpha=0.85,
    i0_ma_cm2=0.8, warburg_ohm_cm2=3.0, warburg_tau_s=20.0,
    sigma_e_s_cm=5e-9, ea_e_ev=0.6, **_SULFIDE_COMMON,
    ccd_plating_local_ma_cm2=0.8, pulse_gain_max=2.0,
    pulse_tau_build_s=2e-5, pulse_tau_relax_s=2e-6,
    growth_dc_um_s_per_ma_cm2=6.0, growth_pulsed_um_s_per_ma_cm2=3.0,
    creep_short_threshold_mpa=5.0, creep_short_rate_um_h=0.031, creep_short_exponent=1.65,
    creep_short_current_ref_ma_cm2=0.2,
    interphase_rate_nm2_h=4.0e4, interphase_ea_ev=0.5,
    interphase_per_charge_nm_per_mah_cm2=5.0, interphase_resistivity_ohm_cm=5e5,
    crack_interphase_nm=0.0, crack_severed_fraction=0.0,
    decomposition_onset_c=200.0,
    notes="Liang et al. / Kamaya (12 mS/cm); reductive interphase at Li (reviews)",
))
_add(MaterialPreset(
    key="lagp", name="Li1.5Al0.5Ge1.5(PO4)3 (LAGP)", family="nasicon", polycrystalline=True,
    sigma_bulk_s_cm=4e-4, ea_bulk_ev=0.35, gb_ratio=1.0, ea_gb_ev=0.42,
    gb_peak_hz=1.0e6, gb_alpha=0.8,
    r_int_ohm_cm2=60.0, ea_int_ev=0.5, int_capacitance_f_cm2=1e-6, int_alpha=0.85,
    i0_ma_cm2=0.3, warburg_ohm_cm2=5.0, warburg_tau_s=30.0,
    sigma_e_s_cm=1e-9, ea_e_ev=0.8,
    shear_modulus_gpa=45.0, k_ic_mpa_m05=1.1, plastic_flow_fraction=0.9,
    ccd_plating_local_ma_cm2=0.3, pulse_gain_max=3.0,
    pulse_tau_build_s=3e-5, pulse_tau_relax_s=1e-7,
    growth_dc_um_s_per_ma_cm2=10.0, growth_pulsed_um_s_per_ma_cm2=3.0,
    creep_short_threshold_mpa=30.0, creep_short_rate_um_h=0.05, creep_short_exponent=1.65,
    creep_short_current_ref_ma_cm2=0.2,
    interphase_rate_nm2_h=2.0e5, interphase_ea_ev=0.5,
    interphase_per_charge_nm_per_mah_cm2=300.0, interphase_resistivity_ohm_cm=1.25e6,
    crack_interphase_nm=9000.0, crack_severed_fraction=0.587,
    decomposition_onset_c=200.0,
    notes="Tippens 2019 (interphase growth, fracture 2.81 -> 6.80 kOhm cm2); LATP K_IC proxy",
))

#: Source / calibration rationale per field, rendered into docs/cell_model.md.
PRESET_SOURCES: dict[str, str] = {
    "sigma_bulk_s_cm": "LPSCl 2-3 mS/cm cold-pressed (reviews); LGPS 12 mS/cm (Liang/Kamaya); "
                       "LLZTO 0.5-1 mS/cm, LAGP 0.1-0.5 mS/cm (reviews)",
    "ea_bulk_ev": "typical reported activation energies (reviews)",
    "gb_ratio": "grain-boundary share of the ionic resistance; 0 for single crystal",
    "r_int_ohm_cm2": "Li|SE interface ASR with good contact (reviews: 5-50 sulfides, "
                     "10-100 garnet after surface cleaning)",
    "sigma_e_s_cm": "electronic conductivity 1e-9..1e-8 S/cm (Han et al. for LLZO; reviews)",
    "shear_modulus_gpa": "Porz et al. (LPS 8.3, LLZTO 61 GPa)",
    "k_ic_mpa_m05": "reviews: LLZO 0.86-1.63 (mid 1.25), LATP 1.1 (used for LAGP), LPS 0.23",
    "ccd_plating_local_ma_cm2": "LPSCl: Kasemchainan plating CCD 2.0 mA/cm² at 3 MPa divided "
                                "by contact 0.95; LLZO poly 0.65 (L11 range 0.5-1.0); others "
                                "assumed inside the review range",
    "pulse_gain_max": "Reisecker 2023: ×6 polycrystalline, ×1 single crystal; sulfide/NASICON "
                      "values are assumptions (no data in the targets)",
    "growth": "Reisecker 2023: 13.7 -> 1.1 (poly), 8.4 -> 10.5 (single crystal) µm/s per "
              "mA/cm²; sulfides assumed",
    "creep_short": "fitted to Doux 2020 time-to-short vs stack pressure (L1)",
    "interphase": "LAGP: fitted to Tippens 2019 (fracture at 2.81 kΩ·cm²); LGPS reactive, "
                  "LPSCl self-limiting (reviews)",
    "decomposition_onset_c": "L12: LAGP/Li interphase > 200 °C, oxides vs Li > 250 °C; "
                             "sulfides set to 200 °C (assumption, conservative)",
}


def get_preset(name: str) -> MaterialPreset:
    """Look a preset up by key (case-insensitive). Unknown keys raise UnknownPresetError."""
    if not isinstance(name, str):
        raise CellParameterError(f"preset must be a string, got {name!r}")
    key = name.strip().lower()
    if key not in PRESETS:
        raise UnknownPresetError(
            f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[key]


def list_presets() -> list[str]:
    """Keys of all material presets."""
    return sorted(PRESETS)


def with_overrides(preset: MaterialPreset, **overrides: float) -> MaterialPreset:
    """A copy of ``preset`` with fields replaced (validated like the original)."""
    valid = {f.name for f in fields(preset)}
    for k in overrides:
        if k not in valid:
            raise CellParameterError(f"unknown preset parameter {k!r}")
    return replace(preset, **overrides)  # type: ignore[arg-type]


