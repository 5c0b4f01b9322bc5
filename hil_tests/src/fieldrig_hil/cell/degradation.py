"""Degradation physics: voids, filaments, shorts, dead Li, interphase, cracks, creep shorts.

Electrode index 0 ("A") is plated by positive current, index 1 ("B", the counter Li or the
cathode) by negative current. Current densities are applied (geometric) values in
mA/cm² unless called ``local``; lengths in µm; times in s.

The critical current densities are closed-form ground truth (:func:`critical_current_density`)
and the *same* functions decide nucleation and void growth inside :func:`advance`, so a
CCD measured on the simulated cell can be scored against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .materials import (
    LI_UM_PER_S_PER_MA_CM2,
    LITHIUM,
    CellGeometry,
    CellParameterError,
    MaterialPreset,
    arrhenius,
    arrhenius_molar,
    check_finite,
)

#: contact at zero pressure (adhesion only) and the pressure scale of asperity flattening;
#: soft Li conforms within ~1 MPa (calibration: c0(3 MPa) = 0.95, Kasemchainan's cells).
CONTACT_MIN = 0.05
CONTACT_PRESSURE_SCALE_MPA = 1.0
#: void depth-equivalent (µm of missing Li) that reduces contact by e (calibration: a few
#: 0.5 mAh/cm² cycles above the stripping CCD lose most contact, Kasemchainan Fig. 3 trend).
VOID_CONTACT_SCALE_UM = 3.0
#: voids close more slowly than a flat interface is resupplied (void roofs carry little of
#: the stack pressure) and plating refills only part of them (Kasemchainan: L3).
VOID_HEAL_FRACTION = 0.2
VOID_REFILL_FRACTION = 0.3
#: dead-Li layer thickness that halves the contact (electronically isolated Li blocks ions).
DEAD_LI_CONTACT_SCALE_UM = 20.0
#: Griffith flaw size from which filaments start, µm (literature_targets: 1 µm flaws).
FLAW_UM = 1.0
#: a freshly bridged filament: ~kΩ (thin Li thread plus constriction); e-fold of its
#: conductance per passed charge (Li deposits along the path) and per creep advance.
SOFT_SHORT_OHM = 2000.0
SHORT_FUSE_MAH_CM2 = 0.03
SHORT_FUSE_CREEP_UM = 5.0
HARD_SHORT_OHM = 10.0
MIN_SHORT_OHM = 0.3
#: plastic extrusion into pores above the flow pressure, µm/s per MPa of excess.
PLASTIC_FLOW_UM_S_PER_MPA = 1.0
#: after a thermal decomposition onset: interphase growth, nm/s, and electronic conductivity
#: multiplication per K above onset (decomposition products such as Ge, Li2S+Li3P conduct).
DECOMPOSITION_INTERPHASE_NM_S = 50.0
DECOMPOSITION_SIGMA_E_PER_K = 0.15


@dataclass(frozen=True)
class PulseProtocol:
    """Current gating: on for ``on_s``, off for ``off_s`` (DC: off_s = 0)."""

    on_s: float
    off_s: float

    def __post_init__(self) -> None:
        if math.isnan(self.on_s) or not self.on_s > 0:
            raise CellParameterError(f"pulse.on_s must be > 0, got {self.on_s}")
        check_finite("pulse.off_s", self.off_s, non_negative=True)

    @classmethod
    def dc(cls) -> PulseProtocol:
        return cls(math.inf, 0.0)

    @classmethod
    def square(cls, frequency_hz: float, duty: float = 0.5) -> PulseProtocol:
        f = check_finite("frequency_hz", frequency_hz, positive=True)
        d = check_finite("duty", duty, positive=True)
        if d > 1.0:
            raise CellParameterError(f"duty must be in (0, 1], got {d}")
        return cls(d / f, (1.0 - d) / f)

    @property
    def duty(self) -> float:
        if math.isinf(self.on_s):
            return 1.0
        return self.on_s / (self.on_s + self.off_s)


def pulse_recovery(preset: MaterialPreset, protocol: PulseProtocol) -> float:
    """Fraction r ∈ [0, 1] of the maximum pulse benefit a protocol obtains.

    Stress at defect tips builds over ``pulse_tau_build_s`` while current flows and relaxes
    over ``pulse_tau_relax_s`` in the rests (grain-boundary relaxation in polycrystals):
    r = (1 - exp(-t_off/τ_relax))·exp(-t_on/τ_build). DC (t_off = 0) gives 0.
    """
    if protocol.off_s <= 0.0 or math.isinf(protocol.on_s):
        return 0.0
    return (1.0 - math.exp(-protocol.off_s / preset.pulse_tau_relax_s)) * math.exp(
        -protocol.on_s / preset.pulse_tau_build_s)


def pulse_ccd_gain(preset: MaterialPreset, protocol: PulseProtocol) -> float:
    """CCD multiplier of a pulse protocol (in pulse amplitude): 1 + (G_max - 1)·r."""
    return 1.0 + (preset.pulse_gain_max - 1.0) * pulse_recovery(preset, protocol)


def growth_rate_um_s_per_ma_cm2(preset: MaterialPreset, protocol: PulseProtocol) -> float:
    """Filament growth speed per unit applied current density (Reisecker 2023)."""
    r = pulse_recovery(preset, protocol)
    return preset.growth_dc_um_s_per_ma_cm2 + r * (
        preset.growth_pulsed_um_s_per_ma_cm2 - preset.growth_dc_um_s_per_ma_cm2)


def initial_contact_fraction(pressure_mpa: float) -> float:
    """Fraction of the nominal area in contact at a stack pressure (asperity flattening)."""
    p = max(pressure_mpa, 0.0)
    return CONTACT_MIN + (1.0 - CONTACT_MIN) * (1.0 - math.exp(-p / CONTACT_PRESSURE_SCALE_MPA))


def stripping_ccd_ma_cm2(pressure_mpa: float, temperature_c: float) -> float:
    """Largest stripping current density Li creep + self-diffusion resupply (no voids).

    j = j_diff·Arr(0.55 eV) + k·p^n_eff·Arr(37 kJ/mol); k, n_eff fitted to Kasemchainan
    (0.2 mA/cm² at 3 MPa, 1.0 at 7 MPa), activation energies from LePage / reviews.
    """
    p = check_finite("pressure_mpa", pressure_mpa, non_negative=True)
    t = check_finite("temperature_c", temperature_c)
    li = LITHIUM
    return float(li.diffusion_resupply_ma_cm2 * arrhenius(li.self_diffusion_ea_ev, t)
                 + li.resupply_k_ma_cm2 * p ** li.resupply_exponent
                 * arrhenius_molar(li.creep_activation_j_mol, t))


def plating_ccd_local_ma_cm2(preset: MaterialPreset, temperature_c: float,
                             protocol: PulseProtocol | None = None) -> float:
    """Local (per contacted area) plating CCD: filament initiation threshold.

    The 25 °C DC value is the preset's; it rises with temperature as creep relaxes the plating
    stress at flaw tips (37 kJ/mol, LePage; Spencer Jolly trend) and with pulse protocols.
    """
    t = check_finite("temperature_c", temperature_c)
    proto = protocol or PulseProtocol.dc()
    return (preset.ccd_plating_local_ma_cm2
            * arrhenius_molar(LITHIUM.creep_activation_j_mol, t)
            * pulse_ccd_gain(preset, proto))


@dataclass(frozen=True)
class CcdResult:
    """Ground-truth critical current densities, mA/cm² (applied, pristine cell)."""

    plating_ma_cm2: float
    stripping_ma_cm2: float
    pulse_gain: float
    griffith_overpotential_mv: float

    @property
    def symmetric_cell_ma_cm2(self) -> float:
        """CCD a Li|SE|Li plate/strip ladder finds when voids do not form first.

        If stripping CCD < plating CCD, voids reduce contact before plating fails; the failure
        current then also depends on the ladder's capacity per step (use a scenario's
        recorded ``nucleation_current_ma_cm2``). The lower bound is returned here.
        """
        return min(self.plating_ma_cm2, self.stripping_ma_cm2)


def critical_current_density(preset: MaterialPreset, pressure_mpa: float, temperature_c: float,
                             protocol: PulseProtocol | None = None) -> CcdResult:
    """Plating and stripping CCDs for a preset at a stack pressure, temperature, protocol."""
    proto = protocol or PulseProtocol.dc()
    c0 = initial_contact_fraction(check_finite("pressure_mpa", pressure_mpa, non_negative=True))
    return CcdResult(
        plating_ma_cm2=plating_ccd_local_ma_cm2(preset, temperature_c, proto) * c0,
        stripping_ma_cm2=stripping_ccd_ma_cm2(pressure_mpa, temperature_c),
        pulse_gain=pulse_ccd_gain(preset, proto),
        griffith_overpotential_mv=preset.griffith_overpotential_mv(FLAW_UM),
    )


def plastic_flow_pressure_mpa(preset: MaterialPreset, temperature_c: float) -> float:
    """Stack pressure above which Li extrudes plastically into the electrolyte's pores.

    A fraction of the micropillar yield (µm-scale pores, Xu et al.: 95 MPa at 298 K, 35 MPa
    at 363 K); calibrated so 75 MPa shorts Li|LPSCl|Li on assembly (Doux 2020).
    """
    return preset.plastic_flow_fraction * LITHIUM.micro_yield_mpa(temperature_c)


def creep_penetration_um_s(preset: MaterialPreset, pressure_mpa: float, temperature_c: float,
                           current_density_ma_cm2: float) -> float:
    """Speed of Li creeping into pores/cracks of the electrolyte, µm/s (works at zero current).

    v = v1·(p - p_th)^m·Arr(37 kJ/mol)·(1 + |j|/j_ref) + plastic extrusion above the flow
    pressure; v1, p_th, m fitted to Doux 2020 (L1).
    """
    excess = pressure_mpa - preset.creep_short_threshold_mpa
    v = 0.0
    if excess > 0.0:
        v = (preset.creep_short_rate_um_h / 3600.0 * excess ** preset.creep_short_exponent
             * arrhenius_molar(LITHIUM.creep_activation_j_mol, temperature_c)
             * (1.0 + abs(current_density_ma_cm2) / preset.creep_short_current_ref_ma_cm2))
    flow = pressure_mpa - plastic_flow_pressure_mpa(preset, temperature_c)
    if flow > 0.0:
        v += PLASTIC_FLOW_UM_S_PER_MPA * flow
    return v


def time_to_creep_short_h(preset: MaterialPreset, geometry: CellGeometry, pressure_mpa: float,
                          temperature_c: float, current_density_ma_cm2: float) -> float:
    """Closed-form time until creep alone bridges the electrolyte (inf if it never does)."""
    v = creep_penetration_um_s(preset, pressure_mpa, temperature_c, current_density_ma_cm2)
    return math.inf if v <= 0.0 else geometry.electrolyte_um / v / 3600.0


@dataclass
class Event:
    """Something that happened to the cell (ground truth for detectors)."""

    t_s: float
    kind: str
    detail: dict[str, float] = field(default_factory=dict)


@dataclass
class DegradationState:
    """Slow physical state of the cell (everything except RC voltages)."""

    void_um: np.ndarray = field(default_factory=lambda: np.zeros(2))
    dead_li_um: np.ndarray = field(default_factory=lambda: np.zeros(2))
    plating_count: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    filament_um: np.ndarray = field(default_factory=lambda: np.zeros(2))
    nucleated: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=bool))
    interphase_nm: np.ndarray = field(default_factory=lambda: np.full(2, 10.0))
    li_um: np.ndarray = field(default_factory=lambda: np.zeros(2))
    creep_um: float = 0.0
    bridged: bool = False
    hard_short: bool = False
    short_conductance_s: float = 0.0
    crack_count: int = 0
    crack_factor: float = 1.0
    decomposed: bool = False
    sigma_e_factor: float = 1.0
    last_sign: int = 0
    soc: float = 0.5  # cathode cells only
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class Drive:
    """What acted on the cell during one physics tick."""

    dt_s: float
    j_mean_ma_cm2: float  # signed, charge-rate average
    j_amp_ma_cm2: float  # signed amplitude while current flows (pulse peak)
    protocol: PulseProtocol
    temperature_c: float
    pressure_mpa: float


def contact_fraction(st: DegradationState, pressure_mpa: float) -> np.ndarray:
    """Contact fraction per electrode: pressure asperity contact x voids x dead Li."""
    c0 = initial_contact_fraction(pressure_mpa)
    c = c0 * np.exp(-st.void_um / VOID_CONTACT_SCALE_UM) / (
        1.0 + st.dead_li_um / DEAD_LI_CONTACT_SCALE_UM)
    return np.clip(c, 1e-3, 1.0)


def advance(st: DegradationState, preset: MaterialPreset, geom: CellGeometry, d: Drive,
            t_s: float, cathode: bool) -> None:
    """Integrate the degradation state over one tick (explicit, rates frozen in the tick)."""
    dt = d.dt_s
    u = LI_UM_PER_S_PER_MA_CM2
    j = d.j_mean_ma_cm2
    sign = 1 if j > 0 else (-1 if j < 0 else 0)
    plate = 0 if sign > 0 else 1
    strip = 1 - plate
    j_res = stripping_ccd_ma_cm2(d.pressure_mpa, d.temperature_c)
    li_electrodes = (0,) if cathode else (0, 1)

    # --- half-cycle bookkeeping (dead Li appears from the 2nd plating cycle on) ---
    if sign != 0 and sign != st.last_sign:
        st.plating_count[plate] += 1
        st.last_sign = sign

    # --- voids: stripping beyond creep + diffusion resupply; partial refill on plating ---
    for e in li_electrodes:
        if sign != 0 and e == strip:
            rate = j_res - abs(j)
            dh = -u * rate * dt if rate < 0 else -u * VOID_HEAL_FRACTION * rate * dt
        elif sign != 0 and e == plate:
            dh = -u * (VOID_HEAL_FRACTION * j_res + VOID_REFILL_FRACTION * abs(j)) * dt
        else:
            dh = -u * VOID_HEAL_FRACTION * j_res * dt
        if dh > 0 and st.void_um[e] == 0.0:
            st.events.append(Event(t_s, "void_onset", {"electrode": e, "j_ma_cm2": abs(j),
                                                        "stripping_ccd_ma_cm2": j_res}))
        st.void_um[e] = max(0.0, st.void_um[e] + dh)
        # Li inventory and dead Li
        if sign != 0:
            if e == strip:
                st.li_um[e] -= u * abs(j) * dt
                if st.plating_count[e] >= 2:
                    st.dead_li_um[e] += preset.dead_li_fraction * u * abs(j) * dt
            else:
                st.li_um[e] += u * abs(j) * dt
    if cathode and sign != 0:
        st.soc = float(np.clip(st.soc + sign * abs(j) * dt / 3600.0
                               / geom.cathode_capacity_mah_cm2, 0.0, 1.0))

    c = contact_fraction(st, d.pressure_mpa)

    # --- filaments: nucleation above the local plating CCD, Griffith-weakened propagation --
    if sign != 0 and plate in li_electrodes:
        j_local = abs(d.j_amp_ma_cm2) / c[plate]
        ccd_local = plating_ccd_local_ma_cm2(preset, d.temperature_c, d.protocol)
        if not st.nucleated[plate] and j_local > ccd_local:
            st.nucleated[plate] = True
            st.filament_um[plate] = FLAW_UM
            st.events.append(Event(t_s, "filament_nucleation", {
                "electrode": plate, "j_applied_ma_cm2": abs(d.j_amp_ma_cm2),
                "j_local_ma_cm2": j_local, "ccd_local_ma_cm2": ccd_local}))
        if st.nucleated[plate]:
            j_prop = ccd_local * math.sqrt(FLAW_UM / (FLAW_UM + st.filament_um[plate]))
            if j_local > j_prop:
                v = growth_rate_um_s_per_ma_cm2(preset, d.protocol) * abs(j)
                st.filament_um[plate] = min(st.filament_um[plate] + v * dt,
                                            geom.electrolyte_um)

    # --- creep penetration (pressure-driven, also at zero current) ---
    v_creep = creep_penetration_um_s(preset, d.pressure_mpa, d.temperature_c, j)
    st.creep_um = min(st.creep_um + v_creep * dt, geom.electrolyte_um)

    # --- bridging and the soft -> hard short ---
    reach = float(np.max(st.filament_um)) + st.creep_um
    if not st.bridged and reach >= geom.electrolyte_um:
        st.bridged = True
        st.short_conductance_s = 1.0 / SOFT_SHORT_OHM
        st.events.append(Event(t_s, "soft_short", {"r_short_ohm": SOFT_SHORT_OHM,
                                                   "creep_um": st.creep_um}))
    elif st.bridged:
        rate = abs(j) * dt / 3600.0 / SHORT_FUSE_MAH_CM2 + v_creep * dt / SHORT_FUSE_CREEP_UM
        st.short_conductance_s = min(st.short_conductance_s * math.exp(rate),
                                     1.0 / MIN_SHORT_OHM)
        if not st.hard_short and st.short_conductance_s >= 1.0 / HARD_SHORT_OHM:
            st.hard_short = True
            st.events.append(Event(t_s, "hard_short", {
                "r_short_ohm": 1.0 / st.short_conductance_s}))

    # --- interphase growth (parabolic + charge-driven at the plating electrode) ---
    k_ip = preset.interphase_rate_nm2_h / 3600.0 * arrhenius(preset.interphase_ea_ev,
                                                             d.temperature_c)
    for e in li_electrodes:
        growth = k_ip / (2.0 * st.interphase_nm[e]) * dt
        if sign != 0 and e == plate:
            growth += preset.interphase_per_charge_nm_per_mah_cm2 * abs(j) * dt / 3600.0
        if st.decomposed:
            growth += DECOMPOSITION_INTERPHASE_NM_S * dt
        st.interphase_nm[e] += growth

    # --- fracture when the interphase's expansion stress opens flaws (Tippens) ---
    if preset.crack_interphase_nm > 0.0:
        threshold = preset.crack_interphase_nm * (1.0 + 0.3 * st.crack_count)
        if float(np.max(st.interphase_nm)) >= threshold:
            severed = preset.crack_severed_fraction if st.crack_count == 0 else 0.15
            st.crack_factor /= (1.0 - severed)
            st.crack_count += 1
            st.events.append(Event(t_s, "crack", {"count": st.crack_count,
                                                  "resistance_factor": st.crack_factor}))

    # --- thermal decomposition above the interlock limit ---
    over = d.temperature_c - preset.decomposition_onset_c
    if over > 0.0:
        if not st.decomposed:
            st.decomposed = True
            st.events.append(Event(t_s, "thermal_decomposition",
                                   {"temperature_c": d.temperature_c}))
        st.sigma_e_factor *= math.exp(DECOMPOSITION_SIGMA_E_PER_K * over * dt / 60.0)
