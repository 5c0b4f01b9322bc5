"""``fieldrig-demo`` end to end, short: two bench rigs (the real firmware under
micropython) running recipes through the real gateway, a private Mosquitto, the ingester
and a private InfluxDB; exit 0, a report folder with plots, every sample stored once."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_short_run_reports_and_accounts_for_every_sample(tmp_path: Path) -> None:
    report = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "fieldrig_hil.demo", "--scenarios", "cycling,dendrite",
         "--duration", "60", "--report-dir", str(report), "--plain"],
        capture_output=True, text=True, timeout=150)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "mode: full pipeline" in out, out[-2000:]
    assert f"report: {report.resolve()}" in out
    for rig in ("cycling", "dendrite"):
        for name in (f"{rig}.png", f"{rig}_nyquist.png"):
            assert (report / name).stat().st_size > 10_000, name
    summary = (report / "summary.txt").read_text()
    complete = [ln for ln in summary.splitlines() if "in InfluxDB" in ln]
    assert len(complete) == 2 and all(ln.endswith("-> complete") for ln in complete), summary
    assert "INCOMPLETE" not in summary
    # The recipes reached the firmware through the gateway and ran.
    with (report / "events.csv").open() as f:
        rows = list(csv.DictReader(f))
    for rig in ("cycling", "dendrite"):
        names = {r["name"] for r in rows if r["rig"] == rig}
        assert {"recipe_load", "recipe_start", "recipe_started"} <= names, (rig, names)


def test_demo_options_are_checked() -> None:
    proc = subprocess.run([sys.executable, "-m", "fieldrig_hil.demo", "--scenarios", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown scenario 'nope'" in proc.stderr
