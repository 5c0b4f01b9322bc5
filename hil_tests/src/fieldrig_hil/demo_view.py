"""The demo's live terminal view: one row per rig, refreshed in place on a terminal
(plain ANSI escapes), or a few plain lines every ``line_every_s`` when stdout is not a
terminal (CI logs). Notable firmware EVENTs (alarms, trips, mitigation, recipe results)
are printed as they arrive in both modes.

Every value shown comes from the firmware's link (through the tap): V, I, T, P from its
samples, |Z| from its IMPEDANCE messages ('—' when it sent none recently), the state from
its samples and recipe EVENTs.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from typing import TextIO

from fieldrig_hil.demo_lab import Lab, LabRig, fmt_duration
from fieldrig_hil.demo_tap import TapEvent

DASH = "—"
RIG_STATES = {0: "idle", 1: "running", 2: "TRIPPED"}
NOTABLE = frozenset({"echem_alarm", "echem_alarm_cleared", "limit_tripped", "safe_state",
                     "mitigation", "recipe_done", "recipe_held", "recipe_started",
                     "telemetry_dropped", "reliable_dropped", "eis_done", "interlock"})


def firmware_state(r: LabRig) -> str:
    """What the firmware says it is doing: rig state, recipe and its current step."""
    obs = r.obs
    s = obs.last_sample
    if s is not None and s.rig_state == 2:
        return "TRIPPED (safe)"
    recipe = ""
    for e in reversed(obs.events):
        n = e.name
        if n == "recipe_done":
            res = e.body.get("result", "done")
            recipe = f"recipe {res}"
            break
        if n == "recipe_held":
            recipe = "recipe held"
            break
        if n == "recipe_step" and e.body.get("phase") == "start":
            label = e.body.get("label") or e.body.get("type") or "step"
            recipe = str(label)
            break
        if n == "recipe_started":
            recipe = "recipe started"
            break
    if recipe:
        return recipe
    if s is None:
        return r.phase
    return RIG_STATES.get(s.rig_state, str(s.rig_state))


def event_text(e: TapEvent) -> str:
    b = e.body
    n = e.name
    if n == "echem_alarm":
        return f"ALARM {b.get('kind')} (conf {_num(b.get('confidence'), 2)})"
    if n == "echem_alarm_cleared":
        return f"alarm {b.get('kind')} cleared"
    if n == "limit_tripped":
        return f"TRIP {b.get('row')} ({b.get('tier')})"
    if n == "mitigation":
        return (f"mitigation {b.get('action')} for {b.get('alarm')}"
                + ("" if b.get("applied", True) else " (not applied)"))
    if n == "recipe_done":
        extra = ""
        if b.get("ccd_ma_cm2") is not None:
            extra = f", CCD {b.get('ccd_ma_cm2')} mA/cm²"
        reason = f" ({b.get('reason')})" if b.get("reason") else ""
        return f"recipe {b.get('result')}{reason}{extra}"
    if n == "eis_done":
        return f"EIS sweep done ({b.get('measured')} points)"
    return n


def _num(v: object, digits: int) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return DASH
    return f"{v:.{digits}f}"


def _bar(frac: float, width: int) -> str:
    frac = min(max(frac, 0.0), 1.0)
    full = int(frac * width)
    return "█" * full + ("▌" if frac * width - full >= 0.5 else "") + \
        " " * (width - full - (1 if frac * width - full >= 0.5 else 0))


class LiveView:
    def __init__(self, lab: Lab, out: TextIO | None = None, tty: bool | None = None,
                 line_every_s: float = 15.0) -> None:
        self.lab = lab
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.line_every_s = line_every_s
        self._drawn = 0
        self._last_lines = 0.0
        self._events_seen = {r.rig_id: 0 for r in lab.rigs}

    # -- rows ------------------------------------------------------------------------
    def header(self) -> list[str]:
        lab = self.lab
        wall = time.monotonic() - lab.started_mono if lab.started_mono else 0.0
        vt = min((r.t_s for r in lab.rigs), default=0.0)
        speed = vt / wall if wall > 1 else math.nan
        target = max((r.target_s for r in lab.rigs), default=0.0)
        frac = sum(min(r.t_s / r.target_s, 1.0) for r in lab.rigs) / max(len(lab.rigs), 1)
        return [f"wall {fmt_duration(wall)}  virtual {fmt_duration(vt)} / "
                f"{fmt_duration(target)}  ({_num(speed, 1)}x real time)  "
                f"[{_bar(frac, 24)}] {frac * 100:3.0f} %"]

    def row_cells(self, r: LabRig) -> list[str]:
        obs = r.obs
        s = obs.last_sample
        z = obs.last_z(max_age_s=max(60.0, 3 * (r.program.track_period_s or 30.0)))
        alarm = obs.last_alarm()
        stored = "" if r.stored is None else str(r.stored)
        sent = len(obs.samples)
        frac = r.t_s / r.target_s if r.target_s else 0.0
        return [
            r.rig_id,
            firmware_state(r)[:22],
            f"{fmt_duration(r.t_s)}/{fmt_duration(r.target_s)} {_bar(frac, 6)}",
            _num(s.cell_voltage_v if s else None, 4),
            _num(s.cell_current_ma if s else None, 3),
            _num(s.cell_temp_c if s else None, 1),
            _num(s.stack_pressure_mpa if s else None, 2),
            _num(z.mag if z else None, 2),
            (event_text(alarm) if alarm else DASH)[:34],
            f"{sent}" if r.stored is None else f"{stored}/{sent}",
        ]

    COLS = ("rig", "firmware", "virtual time", "V", "I mA", "T °C", "P MPa", "|Z| Ω",
            "last alarm / action", "stored/sent")
    RIGHT = frozenset({3, 4, 5, 6, 7, 9})

    def table(self) -> list[str]:
        rows = [list(self.COLS)] + [self.row_cells(r) for r in self.lab.rigs]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self.COLS))]
        lines = []
        for k, row in enumerate(rows):
            cells = [c.rjust(w) if i in self.RIGHT else c.ljust(w)
                     for i, (c, w) in enumerate(zip(row, widths, strict=True))]
            lines.append("  ".join(cells).rstrip())
            if k == 0:
                lines.append("  ".join("─" * w for w in widths))
        return lines

    def new_events(self) -> list[str]:
        out = []
        for r in self.lab.rigs:
            evs = r.obs.events
            for e in evs[self._events_seen[r.rig_id]:]:
                if e.name in NOTABLE and e.name != "recipe_started":
                    out.append(f"  [{fmt_duration(e.t_s)}] {r.rig_id}: {event_text(e)}")
            self._events_seen[r.rig_id] = len(evs)
        return out

    # -- drawing -----------------------------------------------------------------------
    def __call__(self) -> None:
        events = self.new_events()
        if self.tty:
            width = shutil.get_terminal_size((120, 40)).columns
            lines = [*self.header(), *self.table()]
            buf = []
            if self._drawn:
                buf.append(f"\x1b[{self._drawn}F")
            for ev in events:  # scroll events above the table
                buf.append("\x1b[2K" + ev[:width] + "\n")
            for ln in lines:
                buf.append("\x1b[2K" + ln[:width] + "\n")
            self.out.write("".join(buf))
            self.out.flush()
            self._drawn = len(lines)
            return
        for ev in events:
            print(ev, file=self.out)
        now = time.monotonic()
        if now - self._last_lines >= self.line_every_s:
            self._last_lines = now
            print(self.header()[0], file=self.out)
            for r in self.lab.rigs:
                c = self.row_cells(r)
                print(f"  {c[0]}: {c[1]} | t {c[2].split()[0]} | V {c[3]} I {c[4]} mA "
                      f"T {c[5]} °C P {c[6]} MPa |Z| {c[7]} Ω | {c[8]} | "
                      f"stored/sent {c[9]}", file=self.out)
        self.out.flush()

    def final(self) -> None:
        """Draw once more (the last state stays on screen)."""
        self._last_lines = 0.0
        self()
