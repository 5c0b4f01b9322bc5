"""Presets, input constants from literature_targets.md, and parameter validation."""

import math

import numpy as np
import pytest

from fieldrig_hil.cell import Cell, CellGeometry, CellParameterError, get_preset, list_presets
from fieldrig_hil.cell.circuit import Arc, CircuitElements
from fieldrig_hil.cell.degradation import PulseProtocol
from fieldrig_hil.cell.materials import (
    FARADAY_C_MOL,
    LI_MOLAR_VOLUME_CM3_MOL,
    LITHIUM,
    UnknownPresetError,
    with_overrides,
)
from fieldrig_hil.cell.scenarios import build_scenario


def test_required_presets_exist() -> None:
    assert {"lpscl", "llzo_poly", "llzo_single", "lgps", "lagp"} <= set(list_presets())


def test_li_mechanics_inputs() -> None:
    assert LITHIUM.young_modulus_gpa == pytest.approx(7.82)
    assert LITHIUM.shear_modulus_gpa == pytest.approx(2.83)
    assert 0.41 <= LITHIUM.bulk_yield_mpa <= 0.89
    assert LITHIUM.micro_yield_mpa(25.0 - 0.15) == pytest.approx(95.0, rel=0.01)
    assert LITHIUM.micro_yield_mpa(89.85) == pytest.approx(35.0, rel=0.01)
    assert LITHIUM.creep_activation_j_mol == pytest.approx(37e3)
    # plating stress per mV: F·Δφ/Vm ≈ 7.4 MPa/mV (Porz)
    mpa_per_mv = FARADAY_C_MOL * 1e-3 / (LI_MOLAR_VOLUME_CM3_MOL * 1e-6) / 1e6
    assert mpa_per_mv == pytest.approx(7.4, rel=0.01)


def test_griffith_overpotentials() -> None:
    assert get_preset("lpscl").griffith_overpotential_mv(1.0) == pytest.approx(17.0, rel=0.05)
    llzo = get_preset("llzo_poly")
    lo = with_overrides(llzo, k_ic_mpa_m05=0.86).griffith_overpotential_mv(1.0)
    hi = with_overrides(llzo, k_ic_mpa_m05=1.63).griffith_overpotential_mv(1.0)
    assert lo == pytest.approx(65.0, rel=0.05) and hi == pytest.approx(124.0, rel=0.05)
    assert lo < llzo.griffith_overpotential_mv(1.0) < hi


def test_material_inputs_match_targets() -> None:
    assert get_preset("lgps").sigma_bulk_s_cm == pytest.approx(12e-3)
    assert get_preset("lpscl").shear_modulus_gpa == pytest.approx(8.3)
    assert get_preset("llzo_poly").shear_modulus_gpa == pytest.approx(61.0)
    assert 0.86 <= get_preset("llzo_poly").k_ic_mpa_m05 <= 1.63
    assert get_preset("lpscl").k_ic_mpa_m05 == pytest.approx(0.23)


def test_l12_interlock_limits() -> None:
    assert get_preset("lagp").decomposition_onset_c == pytest.approx(200.0)
    assert get_preset("llzo_poly").decomposition_onset_c == pytest.approx(250.0)
    assert get_preset("llzo_single").decomposition_onset_c == pytest.approx(250.0)


@pytest.mark.parametrize("kw,name", [
    ({"electrolyte_um": -5.0}, "electrolyte_um"),
    ({"li_um": 0.0}, "li_um"),
    ({"area_cm2": math.nan}, "area_cm2"),
    ({"counter": "nmc"}, "counter"),
])
def test_bad_geometry(kw: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CellGeometry(**kw)  # type: ignore[arg-type]


def test_unknown_preset() -> None:
    with pytest.raises(UnknownPresetError, match="unobtainium"):
        Cell("unobtainium")
    with pytest.raises(ValueError):
        get_preset("unobtainium")
    with pytest.raises(ValueError, match="scenario"):
        build_scenario("no_such_scenario")


def test_bad_step_inputs() -> None:
    cell = Cell("lpscl")
    with pytest.raises(CellParameterError, match="current_a"):
        cell.step(1e-3, np.array([0.0, math.nan]))
    with pytest.raises(CellParameterError, match="current_a"):
        cell.step(1e-3, math.inf)
    with pytest.raises(CellParameterError, match="dt_s"):
        cell.step(-1.0, 0.0)
    with pytest.raises(CellParameterError, match="hold"):
        cell.step(1.0, 0.0, hold="cubic")
    with pytest.raises(CellParameterError, match="temperature_c"):
        cell.set_conditions(temperature_c=math.nan)
    with pytest.raises(CellParameterError, match="pressure_mpa"):
        cell.set_conditions(pressure_mpa=-1.0)
    with pytest.raises(CellParameterError, match="pressure_mpa"):
        Cell("lpscl", pressure_mpa=-3.0)
    with pytest.raises(CellParameterError, match="f_hz"):
        cell.impedance([1.0, -2.0])
    with pytest.raises(CellParameterError, match=r"pulse\.on_s"):
        PulseProtocol(0.0, 1e-6)
    with pytest.raises(CellParameterError, match=r"unknown preset parameter"):
        Cell("lpscl", overrides={"nonsense": 1.0})
    with pytest.raises(CellParameterError, match=r"gb\.alpha"):
        Arc("gb", 1.0, 1e-6, 1.5)
    with pytest.raises(CellParameterError, match="r_parallel_ohm"):
        CircuitElements(1.0, (), 0.0, 1.0, math.nan)
    # nothing above changed the cell
    assert cell.t_s == 0.0
