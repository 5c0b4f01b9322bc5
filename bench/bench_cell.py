"""Benchmark of the simulated cell: simulated seconds per wall-clock second.

Run ``python bench/bench_cell.py``; prints the figures and rewrites the section between
the markers in docs/benchmarks_cell.md.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from fieldrig_hil.cell import Cell

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks_cell.md"
BEGIN, END = "<!-- bench_cell:begin -->", "<!-- bench_cell:end -->"


def _best(fn: object, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    area = 0.785
    j = 0.5e-3 * area
    hour = np.where((np.arange(3600) // 1800) % 2 == 0, j, -j)
    cell_h = Cell("lpscl", pressure_mpa=5.0)
    cell_h.step(1.0, hour)  # warm up (first realisation, caches)
    t_hour = _best(lambda: cell_h.step(1.0, hour))
    cell_k = Cell("lpscl", pressure_mpa=5.0)
    win = j + 1e-5 * np.sin(2 * np.pi * 50 * np.arange(8000) / 8000)
    cell_k.step(1 / 8000, win)
    t_8k = _best(lambda: cell_k.step(1 / 8000, win))
    cell_b = Cell("lpscl", pressure_mpa=5.0)
    blk = win[:8]
    cell_b.step(1 / 8000, blk)
    t_blk = _best(lambda: [cell_b.step(1 / 8000, blk) for _ in range(1000)], 3)
    rows = [
        ("1 h at 1 s resolution (3600 samples, one call)", 3600.0, t_hour),
        ("1 s window at 8 kHz (8000 samples, one call)", 1.0, t_8k),
        ("lockstep: 1000 calls of 1 ms (8 samples at 8 kHz)", 1.0, t_blk),
    ]
    lines = ["| case | wall time | simulated s per wall s |", "|---|---|---|"]
    for name, sim_s, wall in rows:
        lines.append(f"| {name} | {wall * 1e3:.1f} ms | {sim_s / wall:,.0f} |")
    env = f"Python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}"
    text = ("\n".join(lines)
            + f"\n\nMeasured with `python bench/bench_cell.py` ({env}); best of 5.\n")
    print(text)
    section = f"{BEGIN}\n{text}{END}"
    if DOC.exists():
        doc = DOC.read_text()
        if BEGIN in doc and END in doc:
            doc = doc[:doc.index(BEGIN)] + section + doc[doc.index(END) + len(END):]
        else:
            doc = doc.rstrip() + "\n\n" + section + "\n"
    else:
        doc = ("# Simulated cell benchmarks\n\nSpeed of `fieldrig_hil.cell.Cell.step` "
               "(Li|LPSCl|Li, healthy state).\n\n" + section + "\n")
    DOC.write_text(doc)


if __name__ == "__main__":
    main()
