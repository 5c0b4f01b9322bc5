"""The demo's report folder: per rig a PNG of what the firmware reported over the
simulated truth, a Nyquist plot, and for the lab an events table and the summary.

- ``<rig>.png``: cell voltage, current, temperature, stack pressure and |Z| against
  virtual time; firmware telemetry solid, the simulated cell dashed ("truth"), firmware
  |Z| from its IMPEDANCE messages as points (per tracking tone), firmware EVENTs as
  vertical lines (red: alarms and trips, orange: mitigation, grey: the rest).
- ``<rig>_nyquist.png``: the firmware's EIS spectra when its recipe swept one, and the
  simulated cell's true spectrum at the start and the end of the run (dashed, labelled
  as the simulation).
- ``events.csv``: every EVENT and REPLY the firmware sent and every command the demo sent
  through the gateway, in time order per rig.
- ``summary.txt``: the summary printed at the end.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fieldrig_hil.bench.report import TRACK_HZ
from fieldrig_hil.demo_lab import LabRig

ALARM_NAMES = frozenset({"echem_alarm", "limit_tripped", "safe_state", "interlock"})
NYQUIST_HZ = np.logspace(4, -1, 41)


def truth_spectrum(r: LabRig) -> np.ndarray | None:
    plant = r.bench.plant
    if plant is None:
        return None
    try:
        return np.asarray(plant.cell.impedance(NYQUIST_HZ), dtype=complex)
    except Exception:
        return None


def eis_spectra(r: LabRig) -> list[tuple[float, list[tuple[float, float, float]]]]:
    """Firmware EIS sweeps from its MSG_EIS chunks: (t, [(f, z_re, z_im)])."""
    by_seq: dict[tuple[int, Any], dict[int, list[Any]]] = {}
    t_of: dict[tuple[int, Any], float] = {}
    for e in r.obs.events:
        if e.kind != "eis":
            continue
        key = (e.boot, e.body.get("eis_seq"))
        chunk = e.body.get("chunk")
        pts = e.body.get("points")
        if isinstance(chunk, int) and isinstance(pts, list):
            by_seq.setdefault(key, {})[chunk] = pts
            t_of.setdefault(key, e.t_s)
    out = []
    for key, chunks in by_seq.items():
        pts = [p for c in sorted(chunks) for p in chunks[c]]
        good = [(float(p[0]), float(p[1]), float(p[2])) for p in pts
                if isinstance(p, list) and len(p) >= 3
                and all(isinstance(x, (int, float)) for x in p[:3])
                and all(math.isfinite(float(x)) for x in p[:3])]
        if good:
            out.append((t_of[key], good))
    return out


def rig_png(r: LabRig, folder: Path, track: Any = None) -> Path:
    obs = r.obs
    path = folder / f"{r.rig_id}.png"
    fig, axes = plt.subplots(5, 1, figsize=(10, 12), sharex=True)
    ts = np.array([t for t, _, _ in obs.samples])
    trace = r.bench.plant.trace if r.bench.plant is not None else []
    tt = np.array([row.t_s for row in trace])
    rows = (("cell voltage (V)", "cell_voltage_v", "voltage_v", 1.0),
            ("cell current (mA)", "cell_current_ma", "current_a", 1000.0),
            ("temperature (°C)", "cell_temp_c", "temperature_c", 1.0),
            ("stack pressure (MPa)", "stack_pressure_mpa", "pressure_mpa", 1.0))
    for ax, (label, fw_key, truth_key, k) in zip(axes[:4], rows, strict=True):
        if len(tt):
            ax.plot(tt, [getattr(row, truth_key) * k for row in trace], "--", lw=0.8,
                    color="0.45", label="simulated cell (truth)")
        if len(ts):
            ax.plot(ts, [getattr(s, fw_key) for _, _, s in obs.samples], lw=1,
                    color="C0", label="firmware telemetry")
        ax.set_ylabel(label)
    axes[0].legend(loc="upper right", fontsize=7)
    zax = axes[4]
    freqs = sorted({round(z.f_hz, 1) for z in obs.impedance})
    for j, f in enumerate(freqs[:6]):
        pts = [(z.t_s, z.mag) for z in obs.impedance if round(z.f_hz, 1) == f and z.mag > 0]
        if pts:
            zax.semilogy([p[0] for p in pts], [p[1] for p in pts], "o", ms=2.5,
                         color=f"C{j}", label=f"firmware {f:g} Hz")
    if track is not None and getattr(track, "t_s", None):
        z = np.array(track.z)
        for j, f in enumerate(TRACK_HZ):
            zax.semilogy(track.t_s, np.abs(z[:, j]), "--", lw=0.8, color=f"C{j + 6}",
                         label=f"truth {f:g} Hz")
    if freqs or (track is not None and getattr(track, "t_s", None)):
        zax.legend(loc="upper right", fontsize=7)
    else:
        zax.text(0.5, 0.5, "no impedance from the firmware", ha="center",
                 transform=zax.transAxes, color="0.5")
    zax.set_ylabel("|Z| (Ω)")
    zax.set_xlabel("virtual time (s)")
    for e in obs.events:
        if e.kind != "event":
            continue
        n = e.name
        if n in ("recipe_step", "recipe_started", "boot", "config_defaults"):
            continue
        color = "r" if n in ALARM_NAMES else ("orange" if n.startswith("mitigation") else "0.6")
        for ax in axes:
            ax.axvline(e.t_s, color=color, lw=0.7, alpha=0.7)
        label = n if n != "echem_alarm" else f"alarm {e.body.get('kind')}"
        if n == "mitigation":
            label = f"mitigation {e.body.get('action')}"
        axes[0].text(e.t_s, 1.0, label, rotation=90, fontsize=6, va="top",
                     transform=axes[0].get_xaxis_transform())
    fig.suptitle(f"{r.rig_id}: {r.program.title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def nyquist_png(r: LabRig, folder: Path, z_start: np.ndarray | None) -> Path:
    path = folder / f"{r.rig_id}_nyquist.png"
    fig, ax = plt.subplots(figsize=(6, 5))
    for t, pts in eis_spectra(r):
        ax.plot([p[1] for p in pts], [-p[2] for p in pts], "o-", ms=3,
                label=f"firmware EIS at {t:.0f} s")
    z_end = truth_spectrum(r)
    for z, label, style in ((z_start, "simulated cell, start", "--"),
                            (z_end, "simulated cell, end", ":")):
        if z is not None:
            ax.plot(z.real, -z.imag, style, lw=1.2, label=f"{label} (truth)")
    ax.set_xlabel("Re Z (Ω)")
    ax.set_ylabel("−Im Z (Ω)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7)
    ax.set_title(f"{r.rig_id}: Nyquist", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def events_csv(rigs: list[LabRig], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rig", "virtual_time_s", "source", "boot", "seq", "name", "body"])
        for r in rigs:
            rows: list[tuple[float, list[Any]]] = []
            for e in r.obs.events:
                if e.kind == "eis":
                    continue
                rows.append((e.t_s, [r.rig_id, f"{e.t_s:.3f}", f"firmware {e.kind}", e.boot,
                                     e.seq, e.name, json.dumps(e.body, sort_keys=True)]))
            for c in r.commands:
                rows.append((c.t_s, [r.rig_id, f"{c.t_s:.3f}", "demo command via gateway",
                                     "", "", c.cmd, json.dumps(
                                         {"args": c.args if c.cmd != "recipe_load" else
                                          {k: v for k, v in c.args.items() if k != "text"},
                                          "ok": c.ok, "result": c.result}, default=str)]))
            for _, row in sorted(rows, key=lambda x: x[0]):
                w.writerow(row)
    return path
