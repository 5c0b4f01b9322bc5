"""The HIL bench core: the real firmware under the real MicroPython interpreter, with real
drivers on emulated buses, in lockstep with the simulated cell (docs/hil.md)."""

from .edge import BenchEdge, LinkFaults
from .plant import BenchPlant, PlantConfig
from .protocol import Inputs, Outputs
from .rig import BenchError, BenchRig, RigEvent, ScenarioDriver

__all__ = ["BenchEdge", "BenchError", "BenchPlant", "BenchRig", "Inputs", "LinkFaults",
           "Outputs", "PlantConfig", "RigEvent", "ScenarioDriver"]
