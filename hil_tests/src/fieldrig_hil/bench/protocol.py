"""The lockstep exchange between the bench (CPython) and ``firmware/boards/bench.py``.

One Unix-domain stream socket, one message each way per step. Every message is
``length u32 | type u8 | payload`` (little-endian; length counts the payload only).
The formats here and in the board file must stay identical; ``tests/hil`` checks a round
trip through the real firmware on every run.

=========  =========  =================================================================
type       direction  payload
=========  =========  =================================================================
BOOT 01h   rig->bench JSON: protocol, rig, pins, analog front end, plant constants
OUT 02h    rig->bench ``OUT`` struct: actuator outputs at the end of a step
RESET 03h  rig->bench JSON: ``{"cause", "t_ns"}``, the MCU resets (process ends)
INPUT 81h  bench->rig ``INPUT`` struct, then ``n_block`` float32 cell volts and
                      ``n_block`` float32 cell amps (one per ADC conversion)
NETWORK    bench->rig ``NETWORK`` struct (enabled, r0_ohm, n), then n float32 r_ohm and
82h                   n float32 tau_s: the cell's small-signal network, sent before an
                      INPUT whenever it changed (``hil_tests/mp/electrical.py``)
=========  =========  =================================================================
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

PROTOCOL = 1
MSG_BOOT = 0x01
MSG_OUT = 0x02
MSG_RESET = 0x03
MSG_INPUT = 0x81
MSG_NETWORK = 0x82

HEADER = struct.Struct("<IB")
OUT = struct.Struct("<qHbBBBfffffiBBBIfIIIIIII")
INPUT = struct.Struct("<qffffffBBBHhHIH")
NETWORK = struct.Struct("<BfH")
MAX_RELAXATIONS = 64

RTD_OK = 0
RTD_OPEN = 1
RTD_SHORT = 2
RTD_FORCE_OPEN = 3
RTD_OVERVOLTAGE = 4
RTD_MODES = {"ok": RTD_OK, "open": RTD_OPEN, "short": RTD_SHORT,
             "force_open": RTD_FORCE_OPEN, "overvoltage": RTD_OVERVOLTAGE}

ENDSTOP_MIN = 0x01
ENDSTOP_MAX = 0x02
FLAG_STOP = 0x01
FLAG_RESET = 0x02
NAK_CLEAR = -2
NAK_UNTIL_CLEARED = -1
MAX_BLOCK = 8192
EDGE_LIVE = 0xFFFF  # no lockstep edge: the rig's link runs live (a real gateway)

DAC_MID = 0x8000  # DAC8551 mid-scale: zero current on the bipolar V->I stage


@dataclass(frozen=True, slots=True)
class Outputs:
    """What the firmware drives, read from the chip models at a step end."""

    t_ns: int  # firmware uptime (virtual), ns
    dac_code: int
    range_index: int  # -1: stage disconnected
    dac_pd: int  # DAC8551 power-down mode (0 = normal)
    gate_level: int
    gate_pio: bool  # a PIO state machine drives the pulse gate
    gate_duty: float  # fraction of the step the gate was high
    gate_period_s: float  # NaN unless the PIO pattern is periodic
    gate_high_s: float
    heater_duty: float
    heater_j: float  # heater energy during the step
    press_pos_256: int  # screw position, 1/256 full steps
    press_enabled: bool
    endstop_min: int  # pin levels: 1 = switch open (triggered)
    endstop_max: int
    wdt_feeds: int
    adc_rate_hz: float
    adc_read: int
    adc_lost: int
    adc_underruns: int
    bus_errors: int
    rtd_conversions: int
    loadcell_conversions: int
    link_tx: int = 0  # bytes the rig wrote on its link connection so far

    @classmethod
    def unpack(cls, payload: bytes) -> Outputs:
        f = OUT.unpack(payload)
        return cls(f[0], f[1], f[2], f[3], f[4], bool(f[5]), f[6], f[7], f[8], f[9], f[10],
                   f[11], bool(f[12]), f[13], f[14], f[15], f[16], f[17], f[18], f[19],
                   f[20], f[21], f[22], f[23])

    def dac_fraction(self, vref_v: float = 2.5) -> float:
        """The DAC output as -1..1 of the stage's full scale (power-down: 0 V out)."""
        if self.dac_pd:
            return -1.0
        del vref_v  # the fraction is ratiometric to VREF
        return (self.dac_code - DAC_MID) / DAC_MID

    @property
    def safe(self) -> bool:
        """The rig's safe state as the outputs show it: current off (DAC at mid-scale or
        the stage disconnected), heater duty 0 (the press is checked by the caller: its
        position must not move)."""
        current_off = self.range_index < 0 or (self.dac_code == DAC_MID and not self.dac_pd)
        return current_off and self.heater_duty == 0.0


@dataclass(slots=True)
class Inputs:
    """The world the firmware sees during the next step."""

    t_end_ns: int
    cell_v: float
    cell_i_a: float
    ref_v: float = 0.0
    temp_c: float = 25.0
    force_n: float = 0.0
    force_slope: float = 0.0  # N per 1/256 full step of the screw, applied in the rig
    rtd_mode: int = RTD_OK
    endstops: int = 0
    flags: int = 0
    crc_corrupt: int = 0
    i2c_nak: int = 0
    edge_conns: int = EDGE_LIVE  # connections the lockstep edge opened to this boot
    edge_tx: int = 0  # bytes it wrote on the current one
    block_v: npt.NDArray[np.float64] | None = None
    block_i: npt.NDArray[np.float64] | None = None

    def pack(self) -> bytes:
        n = 0 if self.block_v is None else len(self.block_v)
        if self.block_i is not None and len(self.block_i) != n:
            raise ValueError("voltage and current blocks differ in length")
        if n > MAX_BLOCK:
            raise ValueError(f"block of {n} conversions exceeds {MAX_BLOCK}")
        for name in ("cell_v", "cell_i_a", "ref_v", "temp_c", "force_n", "force_slope"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        body = INPUT.pack(self.t_end_ns, self.cell_v, self.cell_i_a, self.ref_v, self.temp_c,
                          self.force_n, self.force_slope, self.rtd_mode, self.endstops, self.flags,
                          self.crc_corrupt, self.i2c_nak, self.edge_conns,
                          self.edge_tx & 0xFFFFFFFF, n)
        if n:
            assert self.block_v is not None and self.block_i is not None
            body += (np.asarray(self.block_v, dtype="<f4").tobytes()
                     + np.asarray(self.block_i, dtype="<f4").tobytes())
        return HEADER.pack(len(body), MSG_INPUT) + body


@dataclass(frozen=True, slots=True)
class Network:
    """The cell's linearised network for the rig's small-signal cell:
    Z(s) = r0_ohm + sum r_ohm[k] / (1 + s tau_s[k]); disabled while the plant drives a
    current the stage does not command (a failed stage, the gate pin as enable)."""

    enabled: bool
    r0_ohm: float
    r_ohm: tuple[float, ...] = ()
    tau_s: tuple[float, ...] = ()

    def pack(self) -> bytes:
        n = len(self.r_ohm)
        if len(self.tau_s) != n:
            raise ValueError("r_ohm and tau_s differ in length")
        if n > MAX_RELAXATIONS:
            raise ValueError(f"{n} relaxations exceed {MAX_RELAXATIONS}")
        values = (self.r0_ohm, *self.r_ohm, *self.tau_s)
        if not all(math.isfinite(v) and v >= 0.0 for v in values):
            raise ValueError("network values must be finite and >= 0")
        if any(t <= 0.0 for t in self.tau_s):
            raise ValueError("time constants must be > 0")
        body = NETWORK.pack(1 if self.enabled else 0, self.r0_ohm, n)
        body += (np.asarray(self.r_ohm, dtype="<f4").tobytes()
                 + np.asarray(self.tau_s, dtype="<f4").tobytes())
        return HEADER.pack(len(body), MSG_NETWORK) + body
