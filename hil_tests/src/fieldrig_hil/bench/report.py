"""Per-scenario bench reports: PNG plots and a short verdict, written to a folder.

``write_report(rig, folder, name)`` draws, against plant time, what the firmware
reported on its link (solid) over the simulated truth (dashed): cell voltage, current,
temperature, stack pressure, |Z| and phase (firmware impedance events when it sends them,
the cell's true impedance at ``TRACK_HZ`` otherwise), with every EVENT as a vertical
line; a Nyquist plot when the firmware sent EIS spectra; and ``<name>.txt``, the verdict:
boots, trips, alarms, the ground truth (nucleation, shorts) and the detection lead time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .rig import BenchRig

TRACK_HZ = (1000.0, 1.0)
DETECTION_EVENTS = ("echem_alarm",)


@dataclass
class ImpedanceTrack:
    """The cell's true impedance every ``every_s`` (for the report; a step hook)."""

    every_s: float = 10.0
    t_s: list[float] = field(default_factory=list)
    z: list[list[complex]] = field(default_factory=list)
    _next: float = 0.0

    def __call__(self, rig: BenchRig) -> None:
        if rig.plant is None or rig.t_s < self._next:
            return
        self._next = rig.t_s + self.every_s
        self.t_s.append(rig.t_s)
        self.z.append([complex(v) for v in rig.plant.cell.impedance(np.array(TRACK_HZ))])


def track_impedance(rig: BenchRig, every_s: float = 10.0) -> ImpedanceTrack:
    tr = ImpedanceTrack(every_s)
    rig.on_step.append(tr)
    return tr


def _firmware_impedance(rig: BenchRig) -> tuple[list[float], list[float], list[float]]:
    """(t, |Z|, phase deg) from firmware events that carry a single impedance."""
    t, mag, ph = [], [], []
    for e in rig.events:
        b = e.body
        re, im = b.get("z_re"), b.get("z_im")
        if isinstance(re, (int, float)) and isinstance(im, (int, float)):
            z = complex(re, im)
            t.append(e.t_s)
            mag.append(abs(z))
            ph.append(math.degrees(math.atan2(z.imag, z.real)))
    return t, mag, ph


def _spectra(rig: BenchRig) -> list[tuple[float, list[float], list[float]]]:
    out = []
    for e in rig.events:
        re, im = e.body.get("z_re"), e.body.get("z_im")
        if isinstance(re, list) and isinstance(im, list) and len(re) == len(im) and re:
            out.append((e.t_s, [float(x) for x in re], [float(x) for x in im]))
    return out


def verdict(rig: BenchRig, name: str) -> str:
    plant = rig.plant
    lines = [f"scenario: {name}", f"seed: {rig.seed}",
             f"virtual time: {rig.t_s:.1f} s in {rig.wall_s:.1f} s wall "
             f"({rig.t_s / rig.wall_s if rig.wall_s else math.nan:.1f}x)",
             f"boots: {len(rig.boots)}, resets: {[r.get('cause') for r in rig.resets]}",
             f"samples stored: {len(rig.edge.samples)}, link decoder errors: "
             f"{rig.edge.decoder.errors}, duplicates dropped: {rig.edge.duplicates}"]
    trips = [(e.t_s, e.body.get("row"), e.body.get("tier")) for e in rig.events
             if e.body.get("event") == "limit_tripped"]
    lines.append("trips: " + (", ".join(f"{row} ({tier}) at {t:.1f} s" for t, row, tier in trips)
                              or "none"))
    alarms = [(e.t_s, e.body.get("kind")) for e in rig.events
              if e.body.get("event") in DETECTION_EVENTS]
    lines.append("alarms: " + (", ".join(f"{k} at {t:.1f} s" for t, k in alarms) or "none"))
    if plant is not None:
        truth = [(ev.kind, ev.t_s) for ev in plant.cell.events]
        lines.append("ground truth: " + (", ".join(f"{k} at {t:.1f} s" for k, t in truth)
                                         or "no degradation event"))
        hard = next((t for k, t in truth if k == "hard_short"), math.nan)
        if alarms and math.isfinite(hard):
            lines.append(f"first alarm {hard - alarms[0][0]:.1f} s before the hard short")
        elif math.isfinite(hard):
            lines.append("hard short NOT detected beforehand")
    if rig.outputs is not None:
        lines.append(f"final outputs: safe={rig.outputs.safe}, dac={rig.outputs.dac_code}, "
                     f"range={rig.outputs.range_index}, heater={rig.outputs.heater_duty:.3f}")
    return "\n".join(lines) + "\n"


def write_report(rig: BenchRig, folder: Path, name: str,
                 track: ImpedanceTrack | None = None) -> Path:
    """Write ``<name>.png`` (+ ``<name>_nyquist.png``) and ``<name>.txt``; returns the
    folder."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = rig.samples()
    ts = np.array([t for t, _ in samples])
    trace = rig.plant.trace if rig.plant is not None else []
    tt = np.array([r.t_s for r in trace])
    fig, axes = plt.subplots(6, 1, figsize=(10, 13), sharex=True)
    rows = (("cell voltage (V)", "cell_voltage_v", "voltage_v", 1.0),
            ("cell current (mA)", "cell_current_ma", "current_a", 1000.0),
            ("temperature (°C)", "cell_temp_c", "temperature_c", 1.0),
            ("stack pressure (MPa)", "stack_pressure_mpa", "pressure_mpa", 1.0))
    for ax, (label, fw_key, truth_key, k) in zip(axes[:4], rows, strict=True):
        if samples:
            ax.plot(ts, [getattr(s, fw_key) for _, s in samples], lw=1, label="firmware")
        if trace:
            ax.plot(tt, [getattr(r, truth_key) * k for r in trace], "--", lw=0.8,
                    label="simulated truth")
        ax.set_ylabel(label)
    axes[0].legend(loc="upper right", fontsize=7)
    ft, fmag, fph = _firmware_impedance(rig)
    if ft:
        axes[4].semilogy(ft, fmag, "o", ms=3, label="firmware")
        axes[5].plot(ft, fph, "o", ms=3, label="firmware")
    if track is not None and track.t_s:
        z = np.array(track.z)
        for j, f in enumerate(TRACK_HZ):
            axes[4].semilogy(track.t_s, np.abs(z[:, j]), "--", lw=0.8, label=f"truth {f:g} Hz")
            axes[5].plot(track.t_s, np.degrees(np.angle(z[:, j])), "--", lw=0.8,
                         label=f"truth {f:g} Hz")
        axes[4].legend(loc="upper right", fontsize=7)
    axes[4].set_ylabel("|Z| (Ω)")
    axes[5].set_ylabel("phase (°)")
    axes[5].set_xlabel("time (s)")
    for e in rig.events:
        name_ = e.body.get("event")
        if name_ is None:
            continue
        color = "r" if name_ in ("limit_tripped", *DETECTION_EVENTS) else "0.6"
        for ax in axes:
            ax.axvline(e.t_s, color=color, lw=0.6, alpha=0.7)
        axes[0].text(e.t_s, 1.0, str(name_), rotation=90, fontsize=6, va="top",
                     transform=axes[0].get_xaxis_transform())
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(folder / f"{name}.png", dpi=90)
    plt.close(fig)
    spectra = _spectra(rig)
    if spectra:
        fig, ax = plt.subplots(figsize=(6, 5))
        for t, re, im in spectra:
            ax.plot(re, [-x for x in im], "o-", ms=2, label=f"{t:.0f} s")
        ax.set_xlabel("Re Z (Ω)")
        ax.set_ylabel("-Im Z (Ω)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(fontsize=6)
        fig.savefig(folder / f"{name}_nyquist.png", dpi=90)
        plt.close(fig)
    (folder / f"{name}.txt").write_text(verdict(rig, name))
    return folder
