"""Regenerate the model-vs-literature table and figures of docs/cell_model.md.

Run ``python -m fieldrig_hil.cell.report --out docs``: writes docs/img/cell/*.png and
rewrites the generated sections (between ``<!-- cell_report:... -->`` markers) of
docs/cell_model.md. Every number comes from running the model; nothing is typed in.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from . import degradation as dg
from .materials import PRESET_SOURCES, PRESETS, CellGeometry, get_preset
from .model import Cell
from .scenarios import build_scenario, run_scenario

AREA = CellGeometry().area_cm2


def _ma(j: float) -> float:
    return j * 1e-3 * AREA


def time_to_short_h(pressure_mpa: float, j_ma_cm2: float = 0.2, max_h: float = 2000.0) -> float:
    cell = Cell("lpscl", pressure_mpa=pressure_mpa, physics_dt_s=3600.0)
    n = int(max_h)
    i = np.where(np.arange(n) % 2 == 0, _ma(j_ma_cm2), -_ma(j_ma_cm2))
    for k in range(0, n, 50):
        cell.step(3600.0, i[k:k + 50])
        if cell.deg.bridged:
            break
    ev = [e.t_s for e in cell.events if e.kind == "soft_short"]
    return ev[0] / 3600.0 if ev else math.inf


def crack_asr() -> tuple[float, float]:
    cell = Cell("lagp", pressure_mpa=5.0, physics_dt_s=600.0)
    for _ in range(400):
        before = cell.elements().dc_resistance_ohm() * AREA
        cell.step(600.0, np.array([_ma(0.1)] * 3 + [-_ma(0.1)] * 3))
        if cell.deg.crack_count:
            return before, cell.elements().dc_resistance_ohm() * AREA
    return math.nan, math.nan


def growth_rate(preset: str, pulse: dg.PulseProtocol | None, j: float = 2.0) -> float:
    cell = Cell(preset, pressure_mpa=20.0, physics_dt_s=1.0)
    cell.step(1.0, _ma(5.0), n_samples=2)
    l0 = cell.deg.filament_um[0]
    amp = j / (pulse.duty if pulse else 1.0)
    cell.step(0.5, _ma(amp), n_samples=4, pulse=pulse)
    return float((cell.deg.filament_um[0] - l0) / 2.0 / j)


def literature_rows() -> list[tuple[str, str, str, str]]:
    """(row, quantity, literature, model) - computed now."""
    lps, poly, single = get_preset("lpscl"), get_preset("llzo_poly"), get_preset("llzo_single")
    mhz = dg.PulseProtocol.square(1e6, 0.5)
    rows: list[tuple[str, str, str, str]] = []
    lit = {5.0: ">1000", 10.0: "474", 15.0: "272", 20.0: "190", 25.0: "48"}
    for p, target in lit.items():
        t = time_to_short_h(p, max_h=1200.0 if p == 5.0 else 2000.0)
        rows.append(("L1", f"time to short at {p:g} MPa, h", target,
                     ">1200" if math.isinf(t) else f"{t:.0f}"))
    c75 = Cell("lpscl", pressure_mpa=75.0)
    c75.step(1.0, 0.0, n_samples=600)
    t75 = [e.t_s for e in c75.events if e.kind == "soft_short"]
    rows.append(("L1", "75 MPa, no current", "short before current flows",
                 f"short after {t75[0]:.0f} s at rest" if t75 else "no short"))
    c3, c7 = dg.critical_current_density(lps, 3, 25), dg.critical_current_density(lps, 7, 25)
    rows += [("L2", "plating CCD at 3 MPa, mA/cm²", "2.0", f"{c3.plating_ma_cm2:.2f}"),
             ("L2", "stripping CCD at 3 MPa, mA/cm²", "0.2", f"{c3.stripping_ma_cm2:.2f}"),
             ("L2", "stripping CCD at 7 MPa, mA/cm²", "1.0", f"{c7.stripping_ma_cm2:.2f}")]
    rows.append(("L3", "contact loss over 6 cycles (3 MPa vs 7 MPa, 0.5 mA/cm²)",
                 "cumulative at low p, none at optimum",
                 f"{1 - _contact_after(3.0):.0%} vs {1 - _contact_after(7.0):.1%}"))
    rows += [("L4", "CCD gain, 1 MHz pulses, polycrystalline LLZO", "≈6",
              f"{dg.pulse_ccd_gain(poly, mhz):.1f}"),
             ("L4", "growth rate DC → pulsed, µm·s⁻¹/(mA·cm⁻²)", "13.7 → 1.1",
              f"{growth_rate('llzo_poly', None):.1f} → {growth_rate('llzo_poly', mhz):.1f}"),
             ("L5", "CCD gain, single crystal", "none", f"{dg.pulse_ccd_gain(single, mhz):.2f}"),
             ("L5", "growth rate DC → pulsed, single crystal", "8.4 → 10.5",
              f"{growth_rate('llzo_single', None):.1f} → {growth_rate('llzo_single', mhz):.1f}")]
    c25, c60 = dg.critical_current_density(lps, 5, 25), dg.critical_current_density(lps, 5, 60)
    ea = 8.314 * math.log(c60.plating_ma_cm2 / c25.plating_ma_cm2) / (1 / 298.15 - 1 / 333.15)
    rows.append(("L6", "plating CCD 25 → 60 °C (5 MPa), mA/cm²", "rises (37 kJ/mol)",
                 f"{c25.plating_ma_cm2:.2f} → {c60.plating_ma_cm2:.2f} "
                 f"(Ea {ea / 1e3:.0f} kJ/mol)"))
    a0, a1 = crack_asr()
    rows.append(("L7", "ASR at first fracture (LAGP), kΩ·cm²", "2.81 → 6.80",
                 f"{a0 / 1e3:.2f} → {a1 / 1e3:.2f}"))
    v1 = growth_rate("lpscl", None, 3.0) * 3.0
    v2 = growth_rate("lpscl", None, 6.0) * 6.0
    rows.append(("L8", "filament speed at 6 vs 3 mA/cm²", "∝ current", f"ratio {v2 / v1:.2f}"))
    rows.append(("L9", "dead Li after cycle 1 / 2 / 4, µm", "0 then growing", _dead_li()))
    res = run_scenario(build_scenario("dendrite_over_ccd"), seed=0)
    tr = res.truth
    rows.append(("L10", "soft → hard short (dendrite_over_ccd)", "soft precedes hard",
                 f"soft at {tr.soft_short_s:.0f} s, hard at {tr.hard_short_s:.0f} s"))
    rows.append(("L11", "polycrystalline LLZO DC CCD, 25 °C, mA/cm²", "0.5–1.0",
                 f"{dg.critical_current_density(poly, 5, 25).plating_ma_cm2:.2f}"))
    rows.append(("L12", "decomposition onset LAGP / LLZO, °C", ">200 / >250",
                 f"{get_preset('lagp').decomposition_onset_c:.0f} / "
                 f"{poly.decomposition_onset_c:.0f}"))
    return rows


def _contact_after(pressure: float) -> float:
    cell = Cell("lpscl", pressure_mpa=pressure)
    for _ in range(6):
        for s in (1, -1):
            cell.step(60.0, s * _ma(0.5), n_samples=60)
    return min(cell.state.contact_fraction)


def _dead_li() -> str:
    cell = Cell("lpscl", pressure_mpa=7.0)
    out = []
    for k in range(4):
        for s in (1, -1):
            cell.step(60.0, s * _ma(0.3), n_samples=30)
        if k in (0, 1, 3):
            out.append(f"{sum(cell.state.dead_li_um):.3f}")
    return " / ".join(out)


def make_figures(img: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    names = []
    # 1. Nyquist of every preset, closed form vs realised
    fig, ax = plt.subplots(figsize=(6, 4))
    f = np.logspace(-2, 7, 200)
    for key in sorted(PRESETS):
        cell = Cell(key)
        z = cell.impedance(f) * AREA
        zr = cell.realised_impedance(f[::8]) * AREA
        ax.plot(z.real, -z.imag, label=key)
        ax.plot(zr.real, -zr.imag, "k.", ms=2)
    ax.set_xlabel("Z' / Ω·cm²")
    ax.set_ylabel("-Z'' / Ω·cm²")
    ax.set_title("Pristine cells at 25 °C (lines: closed form, dots: realised)")
    ax.set_xscale("symlog")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(img / "nyquist_presets.png", dpi=110)
    names.append("nyquist_presets.png")
    plt.close(fig)
    # 2. time to short vs pressure
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ps = np.array([10.0, 15.0, 20.0, 25.0])
    lit = np.array([474.0, 272.0, 190.0, 48.0])
    ax.semilogy(ps, lit, "o", label="Doux 2020")
    ax.fill_between(ps, lit / 2, lit * 2, alpha=0.15, label="×2 band")
    pm = np.linspace(6, 30, 13)
    ax.semilogy(pm, [time_to_short_h(p) for p in pm], "-", label="model")
    ax.set_xlabel("stack pressure / MPa")
    ax.set_ylabel("time to short / h")
    ax.legend()
    fig.tight_layout()
    fig.savefig(img / "time_to_short.png", dpi=110)
    names.append("time_to_short.png")
    plt.close(fig)
    # 3. CCDs vs pressure and temperature
    fig, ax = plt.subplots(figsize=(5, 3.5))
    pp = np.linspace(0.5, 15, 60)
    lps = get_preset("lpscl")
    for t in (25.0, 60.0):
        ax.plot(pp, [dg.critical_current_density(lps, p, t).plating_ma_cm2 for p in pp],
                label=f"plating {t:.0f} °C")
        ax.plot(pp, [dg.stripping_ccd_ma_cm2(p, t) for p in pp], "--",
                label=f"stripping {t:.0f} °C")
    ax.plot([3, 3, 7], [2.0, 0.2, 1.0], "ko", label="Kasemchainan 2019")
    ax.set_ylim(0, 6)
    ax.set_xlabel("stack pressure / MPa")
    ax.set_ylabel("CCD / mA·cm⁻²")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(img / "ccd_pressure.png", dpi=110)
    names.append("ccd_pressure.png")
    plt.close(fig)
    # 4. dendrite scenario: voltage and short resistance
    res = run_scenario(build_scenario("dendrite_over_ccd"), seed=0)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6, 4.5), sharex=True)
    a1.plot(res.t_s, res.voltage_v * 1e3)
    a1.set_ylabel("cell voltage / mV")
    a2.semilogy(res.t_s, np.where(np.isfinite(res.r_short_ohm), res.r_short_ohm, np.nan))
    a2.set_ylabel("R_short / Ω")
    a2.set_xlabel("time / s")
    for ax_ in (a1, a2):
        for k, c in (("soft_short_s", "orange"), ("hard_short_s", "red")):
            ax_.axvline(getattr(res.truth, k), color=c, lw=0.8)
    a1.set_title("dendrite_over_ccd: nucleation, soft short (orange), hard short (red)")
    fig.tight_layout()
    fig.savefig(img / "dendrite_scenario.png", dpi=110)
    names.append("dendrite_scenario.png")
    plt.close(fig)
    # 5. contact over cycles at low vs optimum pressure
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for p in (2.0, 3.0, 7.0):
        cell = Cell("lpscl", pressure_mpa=p)
        contact: list[float] = []
        for _ in range(8):
            for s in (1, -1):
                cell.step(60.0, s * _ma(0.5), n_samples=60)
                contact.append(min(cell.state.contact_fraction))
        ax.plot(np.arange(1, 17) / 2, contact, "o-", ms=3, label=f"{p:g} MPa")
    ax.set_xlabel("cycle (0.5 mA/cm², 0.5 mAh/cm²)")
    ax.set_ylabel("min contact fraction")
    ax.legend()
    fig.tight_layout()
    fig.savefig(img / "voids_cycles.png", dpi=110)
    names.append("voids_cycles.png")
    plt.close(fig)
    return names


def materials_table() -> str:
    head = ("| preset | σ_bulk mS/cm | Ea eV | R_gb/R_b | R_int Ω·cm² | σ_e S/cm | G GPa | "
            "K_IC MPa·m½ | Δφ_Griffith(1 µm) mV | CCD_local mA/cm² | pulse gain max | "
            "growth DC/pulsed | T_decomp °C |")
    lines = [head, "|" + "---|" * 13]
    for k in sorted(PRESETS):
        p = PRESETS[k]
        lines.append(
            f"| {k} ({p.name}) | {p.sigma_bulk_s_cm * 1e3:g} | {p.ea_bulk_ev:g} | "
            f"{p.gb_ratio:g} | {p.r_int_ohm_cm2:g} | {p.sigma_e_s_cm:g} | "
            f"{p.shear_modulus_gpa:g} | {p.k_ic_mpa_m05:g} | "
            f"{p.griffith_overpotential_mv():.0f} | {p.ccd_plating_local_ma_cm2:g} | "
            f"{p.pulse_gain_max:g} | {p.growth_dc_um_s_per_ma_cm2:g}/"
            f"{p.growth_pulsed_um_s_per_ma_cm2:g} | {p.decomposition_onset_c:g} |")
    lines.append("")
    lines.append("Sources and calibration rationale per parameter:")
    lines.append("")
    for name, src in PRESET_SOURCES.items():
        lines.append(f"- `{name}`: {src}")
    return "\n".join(lines)


def _replace_section(doc: str, tag: str, body: str) -> str:
    b, e = f"<!-- cell_report:{tag}:begin -->", f"<!-- cell_report:{tag}:end -->"
    block = f"{b}\n{body}\n{e}"
    if b in doc and e in doc:
        return doc[:doc.index(b)] + block + doc[doc.index(e) + len(e):]
    return doc.rstrip() + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs", help="docs folder (default: docs)")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    names = make_figures(out_dir / "img" / "cell")
    rows = literature_rows()
    table = ["| row | quantity | literature | model |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    figs = "\n\n".join(f"![{n}](img/cell/{n})" for n in names)
    doc_path = out_dir / "cell_model.md"
    doc = doc_path.read_text() if doc_path.exists() else "# Simulated cell model\n"
    doc = _replace_section(doc, "materials", materials_table())
    doc = _replace_section(doc, "literature", "\n".join(table))
    doc = _replace_section(doc, "figures", figs)
    doc_path.write_text(doc)
    print("\n".join(table))


if __name__ == "__main__":
    main()
