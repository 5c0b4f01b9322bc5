"""The small-signal network the bench sends the rig (NETWORK message): the reduction keeps
Z(f), and a network the rig could not integrate is refused before it is sent."""

from __future__ import annotations

import numpy as np
import pytest

from fieldrig_hil.bench import protocol as P
from fieldrig_hil.bench.plant import reduce_network
from fieldrig_hil.cell import Cell, list_presets

F_HZ = np.logspace(0.0, 3.0, 31)


def _z(net: P.Network, f_hz: np.ndarray) -> np.ndarray:
    r = np.asarray(net.r_ohm)
    tau = np.asarray(net.tau_s)
    jw = 2j * np.pi * f_hz
    return net.r0_ohm + np.sum(r[None, :] / (1.0 + jw[:, None] * tau[None, :]), axis=1)


@pytest.mark.parametrize("preset", list_presets())
@pytest.mark.parametrize("temp_c", [25.0, 60.0])
@pytest.mark.parametrize("fs_hz", [1000.0, 16000.0])
def test_reduced_network_keeps_the_cells_impedance(preset: str, temp_c: float,
                                                   fs_hz: float) -> None:
    cell = Cell(preset, temperature_c=temp_c, pressure_mpa=10.0)
    f = cell.foster
    net = reduce_network(f.r0_ohm, f.r_ohm, f.tau_s, 1.0 / fs_hz)
    assert 0 < len(net.r_ohm) <= P.MAX_RELAXATIONS < f.n_states
    zc = cell.impedance(F_HZ)
    zr = _z(net, F_HZ)
    assert np.max(np.abs(np.abs(zr) / np.abs(zc) - 1.0)) < 2e-3
    assert np.max(np.abs(np.degrees(np.angle(zr) - np.angle(zc)))) < 0.2


def test_network_message_layout() -> None:
    data = P.Network(True, 1.5, (2.0, 3.0), (1e-3, 1e-1)).pack()
    length, msg_type = P.HEADER.unpack_from(data)
    assert msg_type == P.MSG_NETWORK and length == P.NETWORK.size + 16 == len(data) - 5
    assert P.NETWORK.unpack_from(data, 5) == (1, 1.5, 2)
    assert np.frombuffer(data[5 + P.NETWORK.size:], "<f4").tolist() == pytest.approx(
        [2.0, 3.0, 1e-3, 1e-1])


@pytest.mark.parametrize("net, match", [
    (P.Network(True, 1.0, (1.0,), ()), "differ in length"),
    (P.Network(True, 1.0, (-1.0,), (1e-3,)), "finite and >= 0"),
    (P.Network(True, float("nan")), "finite and >= 0"),
    (P.Network(True, 1.0, (1.0,), (0.0,)), "time constants"),
    (P.Network(True, 1.0, (1.0,) * 65, (1e-3,) * 65), "exceed"),
])
def test_a_network_the_rig_cannot_integrate_is_refused(net: P.Network, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        net.pack()
