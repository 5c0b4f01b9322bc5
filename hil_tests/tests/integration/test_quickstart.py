"""docs/quickstart.md works as written: every ```bash block of the page runs, in order,
in one bash from the repository root, and succeeds.

Convention (stated on the page): ```bash blocks are run here, ```sh blocks are shown
only (``make demo`` / ``make test``, which CI runs anyway, and what needs a board, Docker
or a Grafana). The environment is what ``. .venv/bin/activate`` gives a reader: this
interpreter's bin folder first on PATH. Ports come from free ports (the page's
``MQTT_PORT`` etc. default to the usual ones only when unset) and HOME is a temporary
folder, so ``~/fieldrig-lab`` is private to the test. Every process the page starts is
in the test's own process group, which is stopped at the end whatever happened.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fieldrig_hil.services import free_port

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "quickstart.md"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def bash_blocks(text: str) -> list[str]:
    """The ```bash fenced blocks of a Markdown page (top level, in order)."""
    return re.findall(r"^```bash\n(.*?)^```$", text, re.M | re.S)


def test_page_has_runnable_blocks_and_shows_make() -> None:
    text = PAGE.read_text()
    blocks = bash_blocks(text)
    assert len(blocks) >= 8
    joined = "\n".join(blocks)
    for cmd in ("fieldrig-demo", "fieldrig-edge check-config", "fieldrig status",
                "fieldrig cmd", "fieldrig export", "fieldrig dashboards build"):
        assert cmd in joined, cmd
    # make demo / make test are on the page, in blocks that are not run here.
    shown = re.findall(r"^```sh\n(.*?)^```$", text, re.M | re.S)
    assert any("make demo" in b and "make test" in b for b in shown)
    assert "make " not in joined


def test_quickstart_commands_work_as_written(tmp_path: Path) -> None:
    script = "set -euo pipefail\n" + "\n".join(bash_blocks(PAGE.read_text()))
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), MPLBACKEND="Agg",
               PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                     os.environ.get("PATH", ""), "/usr/sbin"]),
               MQTT_PORT=str(free_port()), INFLUX_PORT=str(free_port()),
               INFLUX_RPC_PORT=str(free_port()), RIG_PORT=str(free_port()))
    (tmp_path / "quickstart.sh").write_text(script)
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", str(tmp_path / "quickstart.sh")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"quickstart did not finish in 300 s:\n{out[-4000:]}")
    finally:
        # Whatever the page started in the background and did not stop.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            time.sleep(1)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, f"quickstart failed (exit {proc.returncode}):\n{out[-6000:]}"
    # What the page tells the reader they will see.
    assert "-> complete" in out, out[-3000:]
    assert '"ok": true' in out  # check-config
    assert "600,0,599" in out  # every sample stored, by sequence number
    assert "valid" in out  # the recipe validator
    lab = home / "fieldrig-lab"
    for name in ("demo-report/summary.txt", "demo-report/cycling.png",
                 "report/lab-1_rig-1_run-1.csv", "report/lab-1_rig-1_run-1.parquet",
                 "report/run-1.png"):
        assert (lab / name).stat().st_size > 0, name
    grafana = lab / "grafana"
    assert (grafana / "provisioning" / "datasources" / "fieldrig.yaml").exists()
    assert len(list(grafana.glob("*.json"))) >= 5
    print(f"quickstart ran in {elapsed:.0f} s")
