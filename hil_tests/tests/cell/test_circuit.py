"""Z(f): closed form vs realisation, fits with impedance.py, time domain vs Z(f)."""

import math
import warnings

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldrig_hil.cell import Cell, closed_form_impedance
from fieldrig_hil.cell.circuit import (
    Arc,
    CircuitElements,
    realisation_error,
    realised_impedance,
)
from fieldrig_hil.cell.materials import list_presets

F_BAND = np.logspace(-3, 6, 300)


def _shorted(preset: str, r_short_ohm: float) -> Cell:
    cell = Cell(preset, flicker_sigma=0.0, physics_dt_s=1e9)
    cell.deg.bridged = True
    cell.deg.short_conductance_s = 1.0 / r_short_ohm
    cell._maybe_retarget()
    return cell


@pytest.mark.parametrize("preset", list_presets())
def test_realisation_matches_closed_form(preset: str) -> None:
    cell = Cell(preset)
    assert realisation_error(cell.elements(), F_BAND, cell.realisation_tol) < 1e-3
    z_c = cell.impedance(F_BAND)
    z_r = cell.realised_impedance(F_BAND)
    assert np.max(np.abs(z_r - z_c) / np.abs(z_c)) < 1e-3


@settings(max_examples=15, deadline=None)
@given(r1=st.floats(1.0, 1e4), r2=st.floats(1.0, 1e4), a1=st.floats(0.6, 0.95),
       a2=st.floats(0.6, 0.95), t1=st.floats(-8, -2), t2=st.floats(-5, 0),
       rp=st.sampled_from([math.inf, 1e5, 500.0, 5.0]))
def test_realisation_error_bound(r1: float, r2: float, a1: float, a2: float, t1: float,
                                 t2: float, rp: float) -> None:
    arcs = (Arc("gb", r1, (10 ** t1) ** a1 / r1, a1), Arc("int", r2, (10 ** t2) ** a2 / r2, a2))
    el = CircuitElements(20.0, arcs, 5.0, 10.0, rp)
    # documented bound: |Z_realised - Z| <= tol·(ΣR_arc + R_w) at every frequency
    dz = np.abs(realised_impedance(el, F_BAND, 5e-4) - closed_form_impedance(el, F_BAND))
    assert np.max(dz) <= 5e-4 * (r1 + r2 + 5.0)


def _fit(cell: Cell) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    from impedance.models.circuits import CustomCircuit

    el = cell.elements()
    circuit, p = el.impedance_py()
    f = np.logspace(-3, 8, 150)
    z = closed_form_impedance(el, f)
    p_true = np.array(p)
    guess = p_true * np.where(p_true < 1.0, 0.97, 1.2)  # α (<1) nudged, R/Q/τ +20 %
    cc = CustomCircuit(circuit, initial_guess=list(guess))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cc.fit(f, z, weight_by_modulus=True)
    return np.asarray(cc.parameters_), p_true


@pytest.mark.parametrize("preset", ["lpscl", "llzo_poly", "lgps"])
def test_impedance_py_recovers_elements(preset: str) -> None:
    fitted, true = _fit(Cell(preset))
    assert np.max(np.abs(fitted / true - 1.0)) < 0.02


def _sine_z(cell: Cell, f: float, amp_a: float = 2e-6, ppp: int = 64) -> complex:
    """Lock-in: least-squares sin/cos + quadratic drift over 6 periods after 10."""
    dt = 1.0 / (f * ppp)
    settle, meas = 10, 6
    t = dt * np.arange(1, (settle + meas) * ppp + 1)
    i = amp_a * np.sin(2 * np.pi * f * t)
    v = cell.step(dt, i, hold="foh").voltage_v
    s = slice(settle * ppp, None)
    tt = t[s] - t[s][0]
    basis = np.column_stack([np.sin(2 * np.pi * f * t[s]), np.cos(2 * np.pi * f * t[s]),
                             np.ones_like(tt), tt, tt ** 2])
    co = np.linalg.lstsq(basis, v[s], rcond=None)[0]
    return complex(co[0], co[1]) / amp_a


@pytest.mark.parametrize("preset,r_short", [("lpscl", math.inf), ("llzo_poly", math.inf),
                                            ("lpscl", 200.0)])
def test_time_domain_sine_matches_z(preset: str, r_short: float) -> None:
    cell = Cell(preset, physics_dt_s=1e9) if math.isinf(r_short) else _shorted(preset, r_short)
    for f in np.logspace(-1, 4, 11):
        z_td = _sine_z(cell, float(f))
        z = cell.impedance(f)[0]
        assert abs(abs(z_td) / abs(z) - 1.0) < 0.01, f
        assert abs(math.degrees(np.angle(z_td / z))) < 1.0, f


def test_zoh_dc_step_reaches_z0() -> None:
    cell = Cell("lpscl", physics_dt_s=1e9)
    i = 1e-5
    v = cell.step(1.0, np.full(400, i)).voltage_v
    assert v[-1] == pytest.approx(i * cell.elements().dc_resistance_ohm(), rel=1e-3)
    # instant response of a µs pulse is the bulk (+ fast arcs) - far below the DC value
    cell2 = Cell("lpscl", physics_dt_s=1e9)
    v2 = cell2.step(1e-7, np.full(5, i)).voltage_v
    assert v2[0] < 0.6 * v[-1]


def test_block_size_independence() -> None:
    i = 2e-4 * np.sin(np.linspace(0, 20, 2000))
    a = Cell("llzo_poly", physics_dt_s=1e9)
    b = Cell("llzo_poly", physics_dt_s=1e9)
    va = a.step(1e-3, i).voltage_v
    vb = np.concatenate([b.step(1e-3, i[k:k + 37]).voltage_v for k in range(0, i.size, 37)])
    assert np.allclose(va, vb, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("hold", ["zoh", "foh"])
@pytest.mark.parametrize("n", [1, 50, 500])
def test_piecewise_constant_current_matches_the_general_integration(
        hold: str, n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bench holds the stage current over a step: such blocks take the closed form per
    # constant stretch; it must give the recursion's voltages and states (carried on).
    from fieldrig_hil.cell import circuit

    foster = circuit.realise(Cell("llzo_poly", physics_dt_s=1e9).elements())
    fast = circuit.FosterSimulator(foster)
    slow = circuit.FosterSimulator(foster)
    blocks = [np.full(n, 3e-4), np.concatenate([np.full(n // 2, 3e-4), np.full(n - n // 2, -1e-4)]),
              np.zeros(n), np.full(n, 1e-5)]
    for u in blocks:
        v_fast = fast.run(1e-2, u, hold)
        monkeypatch.setattr(circuit, "MAX_PIECEWISE_RUNS", 0)
        v_slow = slow.run(1e-2, u, hold)
        monkeypatch.setattr(circuit, "MAX_PIECEWISE_RUNS", 8)
        assert np.allclose(v_fast, v_slow, rtol=1e-9, atol=1e-12)
        assert np.allclose(fast.x_v, slow.x_v, rtol=1e-9, atol=1e-15)
