"""Export a run to CSV and Parquet, and plot it (columns: docs/cloud.md).

Samples are read in time windows (so months of 10 Hz data never sit in one response)
with a progress bar, joined with the single-frequency impedance stored at the same
timestamps, the polled set-points carried onto every row (``carry_setpoints``), and
written with stable, documented column names and units.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fieldrig_cloud.analytics import group_sweeps, run_filter
from fieldrig_cloud.influx import InfluxHttp

# (column, source measurement, source field, arrow type, unit)
RUN_COLUMNS: list[tuple[str, str, str, str, str]] = [
    ("time", "", "", "timestamp", "UTC"),
    ("time_ns", "", "", "int64", "ns since epoch, UTC"),
    ("boot", "cell_sample", "boot", "string", ""),
    ("seq", "cell_sample", "seq", "int64", ""),
    ("step", "cell_sample", "step", "int64", ""),
    ("cycle", "cell_sample", "cycle", "int64", ""),
    ("rig_state", "cell_sample", "rig_state", "int64", ""),
    ("current_ma", "cell_sample", "cell_current_ma", "float64", "mA"),
    ("voltage_v", "cell_sample", "cell_voltage_v", "float64", "V"),
    ("temperature_c", "cell_sample", "cell_temp_c", "float64", "°C"),
    ("pressure_mpa", "cell_sample", "stack_pressure_mpa", "float64", "MPa"),
    ("current_setpoint_ma", "actuator_state", "current_setpoint_ma", "float64", "mA"),
    ("temp_setpoint_c", "actuator_state", "temp_setpoint_c", "float64", "°C"),
    ("pressure_setpoint_mpa", "actuator_state", "pressure_setpoint_mpa", "float64", "MPa"),
    ("heater_duty", "actuator_state", "heater_duty", "float64", "0..1"),
    ("impedance_freq_hz", "impedance", "z_freq_hz", "float64", "Hz"),
    ("impedance_ohm", "impedance", "z_mag_ohm", "float64", "Ω"),
    ("impedance_phase_deg", "impedance", "z_phase_deg", "float64", "°"),
]
EIS_COLUMNS: list[tuple[str, str, str]] = [
    ("spectrum_time", "timestamp", "UTC, start of the sweep"),
    ("spectrum_ns", "int64", "ns since epoch, UTC"),
    ("idx", "int64", "point index within the sweep"),
    ("f_hz", "float64", "Hz"),
    ("z_real_ohm", "float64", "Ω (Z′)"),
    ("z_imag_ohm", "float64", "Ω (Z″, negative when capacitive)"),
    ("z_mag_ohm", "float64", "Ω"),
    ("z_phase_deg", "float64", "°"),
    ("rel_err", "float64", "1-sigma relative uncertainty of Z"),
    ("quality", "string", "good / fair / poor / skipped (nothing measured)"),
    ("boot", "string", "rig boot of a chunked sweep"),
    ("sweep_seq", "int64", "sweep id within the boot (reliable seq of its chunk 0)"),
    ("eis_seq", "int64", "the recipe's EIS counter"),
    ("complete", "bool", "every chunk of the sweep stored"),
]

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class RunTable:
    rows: list[dict[str, Any]]
    eis: list[dict[str, Any]]


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="microseconds")


async def run_bounds(influx: InfluxHttp, site: str, rig: str, run: str) -> tuple[int, int] | None:
    w = run_filter(site, rig, run)
    first = await influx.query(f'SELECT first("seq") FROM "raw"."cell_sample" WHERE {w}')
    last = await influx.query(f'SELECT last("seq") FROM "raw"."cell_sample" WHERE {w}')
    if not first or not last:
        return None
    return int(first[0]["values"][0][0]), int(last[0]["values"][0][0])


async def load_table(influx: InfluxHttp, site: str, rig: str, run: str,
                     window_s: float = 3600.0,
                     progress: Callable[[int, int], Progress] | None = None) -> RunTable:
    """All rows of a run in time order; ``progress(total_windows)`` returns a per-window
    callback (the CLI passes a tqdm bar)."""
    bounds = await run_bounds(influx, site, rig, run)
    if bounds is None:
        return RunTable([], [])
    start, end = bounds
    step = int(window_s * 1e9)
    n_windows = max(1, math.ceil((end - start + 1) / step))
    tick = progress(n_windows, 0) if progress else None
    w = run_filter(site, rig, run)
    rows: dict[int, dict[str, Any]] = {}
    states: dict[int, dict[str, Any]] = {}
    for k in range(n_windows):
        a, b = start + k * step, min(start + (k + 1) * step, end + 1)
        tw = f"{w} AND time >= {a} AND time < {b}"
        for measurement in ("cell_sample", "actuator_state", "impedance"):
            into = states if measurement == "actuator_state" else rows
            for r in await influx.rows(f'SELECT * FROM "raw"."{measurement}" WHERE {tw}'):
                t = int(r["time"])
                row = into.setdefault(t, {"time": _iso(t), "time_ns": t})
                for col, src, fld, _, _ in RUN_COLUMNS:
                    if src == measurement and r.get(fld) is not None:
                        row[col] = r[fld]
        if tick:
            tick(1)
    carry_setpoints(rows, states)
    eis = []
    for sw in group_sweeps(await influx.rows(f'SELECT * FROM "keep"."eis_spectrum" WHERE {w}')):
        # One row per point in sweep order (chunk, then place in the chunk), skipped
        # points included with their frequency: the table is the sweep as measured.
        for idx, r in enumerate(sw.rows):
            eis.append({"spectrum_time": _iso(sw.start_ns), "spectrum_ns": sw.start_ns,
                        "idx": idx, "f_hz": r["freq_hz"], "z_real_ohm": r.get("z_real_ohm"),
                        "z_imag_ohm": r.get("z_imag_ohm"), "z_mag_ohm": r.get("z_mag_ohm"),
                        "z_phase_deg": r.get("z_phase_deg"), "rel_err": r.get("rel_err"),
                        "quality": r.get("quality"), "boot": sw.boot or None,
                        "sweep_seq": sw.sweep_seq, "eis_seq": sw.eis_seq,
                        "complete": sw.complete})
    ordered = [rows[t] for t in sorted(rows)]
    for r in ordered:
        for col, _, _, kind, _ in RUN_COLUMNS:
            v = r.get(col)
            if v is not None and kind == "int64":
                r[col] = int(v)
    return RunTable(ordered, eis)


SETPOINT_COLUMNS = [c for c, src, *_ in RUN_COLUMNS if src == "actuator_state"]


def carry_setpoints(rows: dict[int, dict[str, Any]],
                    states: dict[int, dict[str, Any]]) -> None:
    """Set-points are a state, polled at their own instants (the gateway's ``status``
    poll): each sample and impedance row (time -> row) gets the latest state at or
    before its time; a state at a row's own time is that row's. A state is never a row
    of its own (a table of samples with a set-point row every 5 s between them)."""
    last: dict[str, Any] = {}
    order = sorted(states)
    j = 0
    for t in sorted(rows):
        while j < len(order) and order[j] <= t:
            st = states[order[j]]
            last = {c: st[c] for c in SETPOINT_COLUMNS if c in st}
            j += 1
        row = rows[t]
        for c, v in last.items():
            row.setdefault(c, v)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def write_parquet(path: Path, rows: list[dict[str, Any]],
                  columns: list[tuple[str, str, str]]) -> None:
    """Typed columns, units as field metadata; times as UTC timestamps (ns)."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    types = {"timestamp": pa.timestamp("ns", tz="UTC"), "int64": pa.int64(),
             "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_()}
    fields, arrays = [], []
    for name, kind, unit in columns:
        if kind == "timestamp":
            src = "time_ns" if name == "time" else "spectrum_ns"
            values: list[Any] = [r.get(src) for r in rows]
        else:
            values = [r.get(name) for r in rows]
        fields.append(pa.field(name, types[kind], metadata={"unit": unit}))
        arrays.append(pa.array(values, type=types[kind]))
    pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), path)


def export_run(table: RunTable, out: Path, stem: str, formats: tuple[str, ...] = ("csv",
                                                                                   "parquet")
               ) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    run_cols = [(c, k, u) for c, _, _, k, u in RUN_COLUMNS]
    if "csv" in formats:
        written.append(out / f"{stem}.csv")
        write_csv(written[-1], table.rows, [c for c, _, _ in run_cols])
        if table.eis:
            written.append(out / f"{stem}_eis.csv")
            write_csv(written[-1], table.eis, [c for c, _, _ in EIS_COLUMNS])
    if "parquet" in formats:
        written.append(out / f"{stem}.parquet")
        write_parquet(written[-1], table.rows, run_cols)
        if table.eis:
            written.append(out / f"{stem}_eis.parquet")
            write_parquet(written[-1], table.eis, EIS_COLUMNS)
    return written


def plot_run(table: RunTable, path: Path, title: str,
             events: list[dict[str, Any]] | None = None) -> None:
    """V, I (and set-point), T, P and |Z| against time; events as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.rows
    t0 = rows[0]["time_ns"] if rows else 0
    x = [(r["time_ns"] - t0) / 3600e9 for r in rows]
    panels = [("voltage_v", "V (V)"), ("current_ma", "I (mA)"), ("temperature_c", "T (°C)"),
              ("pressure_mpa", "P (MPa)"), ("impedance_ohm", "|Z| (Ω)")]
    panels = [p for p in panels if any(r.get(p[0]) is not None for r in rows)]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(10, 2 * len(panels) + 1),
                             squeeze=False)
    for ax, (col, label) in zip(axes[:, 0], panels, strict=True):
        ax.plot(x, [r.get(col, math.nan) for r in rows], lw=0.8)
        if col == "current_ma" and any("current_setpoint_ma" in r for r in rows):
            ax.plot(x, [r.get("current_setpoint_ma", math.nan) for r in rows], lw=0.8,
                    ls="--", label="set-point")
            ax.legend(loc="upper left", fontsize=7)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        for e in events or []:
            ax.axvline((int(e["time"]) - t0) / 3600e9,
                       color="red" if e.get("severity") == "alarm" else "grey", lw=0.7)
    axes[-1, 0].set_xlabel("time since run start (h)")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_nyquist(table: RunTable, path: Path, title: str,
                 fits: dict[int, list[complex]] | None = None) -> None:
    """−Z″ against Z′ per spectrum (equal axes), fitted curves dashed when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    spectra: dict[int, list[dict[str, Any]]] = {}
    for e in table.eis:
        spectra.setdefault(e["spectrum_ns"], []).append(e)
    for t0, pts in sorted(spectra.items()):
        pts = [p for p in pts if p["z_real_ohm"] is not None and p["z_imag_ohm"] is not None]
        ax.plot([p["z_real_ohm"] for p in pts], [-p["z_imag_ohm"] for p in pts], "o", ms=3,
                label=_iso(t0)[:19])
        if fits and t0 in fits:
            ax.plot([z.real for z in fits[t0]], [-z.imag for z in fits[t0]], "--", lw=1)
    ax.set_xlabel("Z′ (Ω)")
    ax.set_ylabel("−Z″ (Ω)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if spectra:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
