"""Simulated solid-state Li-metal cell: the plant behind the HIL bench.

This package owns the physics of the cell and its surroundings, nothing else:

* ``materials`` - electrolyte presets (LPSCl, LLZO poly/single crystal, LGPS, LAGP), Li
  mechanics, geometry, parameter validation (``CellParameterError``).
* ``circuit`` - equivalent circuit: closed-form Z(f), its rational (Foster) realisation and
  the exact ZOH/FOH time-domain integrator.
* ``degradation`` - voids, filaments and CCDs (closed-form ground truth), soft/hard shorts,
  creep shorts, dead Li, interphase growth, cracks, thermal decomposition.
* ``model`` - ``Cell``: the steppable device (``step``, ``state``, ``impedance``).
* ``plants`` - heater/thermal mass, screw press, sensors with faults; ``Rig`` composes them.
* ``scenarios`` - the named scenario library with ground truth for detector scoring.
* ``report`` - regenerates docs/cell_model.md figures (``python -m fieldrig_hil.cell.report``).

The chip-level bus emulation, the firmware and the detectors live elsewhere.
"""

from .circuit import Arc, CircuitElements, closed_form_impedance, realise
from .degradation import CcdResult, Event, PulseProtocol, critical_current_density
from .materials import (
    PRESETS,
    CellGeometry,
    CellParameterError,
    MaterialPreset,
    UnknownPresetError,
    get_preset,
    list_presets,
)
from .model import Cell, CellState, StepResult

__all__ = [
    "PRESETS", "Arc", "CcdResult", "Cell", "CellGeometry", "CellParameterError", "CellState",
    "CircuitElements", "Event", "MaterialPreset", "PulseProtocol", "StepResult",
    "UnknownPresetError", "closed_form_impedance", "critical_current_density", "get_preset",
    "list_presets", "realise",
]
