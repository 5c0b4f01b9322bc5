"""The ``fieldrig`` CLI against real services: a recipe sent with MQTT v5
request/response and followed (the test plays the gateway's side), status, analyze,
export to CSV/Parquet with the documented columns, plots to PNG."""

from __future__ import annotations

import csv
import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import Filled, t0_ns
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fieldrig_cloud.cli import main
from fieldrig_cloud.export import EIS_COLUMNS, RUN_COLUMNS
from fieldrig_hil.services import Mosquitto


class GatewaySide:
    """Answers commands on fieldrig/v1/lab-1/rig-a/cmd as the gateway contract says:
    reply on the request's response topic with its correlation data; for an accepted
    recipe, then publish telemetry through its steps and a ``recipe_done`` event."""

    def __init__(self, broker: Mosquitto, ok: bool = True) -> None:
        self.ok = ok
        self.requests: list[dict[str, Any]] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-side",
                             protocol=mqtt.MQTTv5)
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        self.c.subscribe("fieldrig/v1/lab-1/rig-a/cmd", qos=1)
        assert subscribed.wait(10)

    def _on_message(self, c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        req = json.loads(msg.payload)
        self.requests.append(req)
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = msg.properties.CorrelationData
        if not self.ok:
            reply = {"schema": 1, "ok": False, "error": "out_of_range",
                     "detail": "current 50 mA above the rig limit"}
            c.publish(msg.properties.ResponseTopic, json.dumps(reply), qos=1, properties=props)
            return
        # A stale reply with another correlation id first: the CLI must ignore it.
        stale = Properties(PacketTypes.PUBLISH)
        stale.CorrelationData = b"someone-else"
        c.publish(msg.properties.ResponseTopic, json.dumps({"ok": True, "result": "stale"}),
                  qos=1, properties=stale)
        c.publish(msg.properties.ResponseTopic, json.dumps(
            {"schema": 1, "ok": True, "result": {"accepted": True, "run": "run-9"}}),
            qos=1, properties=props)
        t0 = t0_ns(1)
        steps = len(req["args"]["recipe"]["steps"])
        for k in range(steps):
            c.publish("fieldrig/v1/lab-1/rig-a/telemetry", json.dumps({
                "schema": 1, "site": "lab-1", "rig": "rig-a", "cell": "c", "run": "run-9",
                "samples": [{"seq": k, "time_ns": t0 + k, "cell_voltage_v": 0.01,
                             "cell_current_ma": 0.1 * (k + 1), "cell_temp_c": 25.0,
                             "stack_pressure_mpa": 5.0, "rig_state": 1, "step": k,
                             "cycle": 0}]}), qos=1)
        c.publish("fieldrig/v1/lab-1/rig-a/events", json.dumps({
            "schema": 1, "events": [{"event": "recipe_done", "time_ns": t0 + steps}]}), qos=1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    p = tmp_path / "ccd.json"
    p.write_text(json.dumps({"name": "ccd ladder", "steps": [
        {"current_ma": 0.1 * (k + 1), "duration_s": 600} for k in range(4)]}))
    return p


def test_recipe_send_and_follow(mosquitto: Mosquitto, recipe: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    gw = GatewaySide(mosquitto)
    try:
        code = main(["recipe", "send", "--broker", f"{mosquitto.host}:{mosquitto.port}",
                     "--site", "lab-1", "--rig", "rig-a", str(recipe), "--follow",
                     "--follow-timeout", "30"])
    finally:
        gw.close()
    out = capsys.readouterr().out
    assert code == 0, out
    assert gw.requests[0]["cmd"] == "run_recipe"
    assert gw.requests[0]["args"]["recipe"] == json.loads(recipe.read_text())
    assert '"run": "run-9"' in out and "stale" not in out
    assert "ended: recipe_done after 4 samples, last step 3" in out


def test_command_refused_and_unanswered(mosquitto: Mosquitto,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    broker = f"{mosquitto.host}:{mosquitto.port}"
    # Nobody listening: a clear timeout, exit code 2.
    assert main(["cmd", "--broker", broker, "--site", "lab-1", "--rig", "rig-a", "stop",
                 "--timeout", "1"]) == 2
    assert "no reply from lab-1/rig-a" in capsys.readouterr().out
    gw = GatewaySide(mosquitto, ok=False)
    try:
        code = main(["cmd", "--broker", broker, "--site", "lab-1", "--rig", "rig-a",
                     "set_current", "--args", '{"current_ma": 50}'])
    finally:
        gw.close()
    assert code == 1
    assert "refused: out_of_range: current 50 mA above the rig limit" in capsys.readouterr().out
    assert gw.requests == [{"schema": 1, "cmd": "set_current", "args": {"current_ma": 50}}]


def test_status_lists_retained_rig_and_gateway_states(
        mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    for topic, body in [("fieldrig/v1/lab-1/rig-a/status", {"schema": 1, "state": "running",
                                                             "recipe": "ccd"}),
                        ("fieldrig/v1/lab-1/rig-b/status", {"schema": 1, "state": "idle"}),
                        ("fieldrig/v1/lab-1/gateway/gw-1/status", {"schema": 1,
                                                                   "state": "offline"})]:
        c.publish(topic, json.dumps(body), qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
    assert main(["status", "--broker", f"{mosquitto.host}:{mosquitto.port}", "--site",
                 "lab-1", "--wait", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    states = {ln.split()[0]: ln.split()[1] for ln in lines}
    assert states == {"rig-a": "running", "rig-b": "idle", "gateway/gw-1": "offline"}
    assert '"recipe": "ccd"' in lines[1]


@pytest.fixture
def influx_args(filled: Filled) -> Iterator[list[str]]:
    yield ["--influx", filled.db.url, "--site", "lab-1", "--rig", "rig-a", "--run", "ccd-1"]


@pytest.mark.integration
def test_analyze_prints_ccd_and_summary(filled: Filled, influx_args: list[str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", *influx_args, "--area-cm2", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ccd"]["short_step"] == 2 and out["ccd"]["ccd_ma"] == pytest.approx(0.3)
    assert out["ccd"]["ccd_ma_cm2"] == pytest.approx(0.6)
    # The synthetic run has no firmware result: found in the samples.
    assert out["ccd"]["source"] == "analytics"
    assert out["summary"]["samples"] == len(filled.samples)
    [fit] = out["eis_fits"].values()
    assert fit["r_interface_ohm"] == pytest.approx(400, rel=0.1)


@pytest.mark.integration
def test_export_csv_and_parquet_with_documented_columns(
        filled: Filled, influx_args: list[str], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    # Small windows: the run is read in several chunks and must come out whole, in order.
    assert main(["export", *influx_args, "--out", str(tmp_path), "--window-s", "10"]) == 0
    stem = tmp_path / "lab-1_rig-a_ccd-1"
    with (stem.with_suffix(".csv")).open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [c for c, *_ in RUN_COLUMNS]
    assert len(rows) == len(filled.samples)
    for row, s in zip(rows, filled.samples, strict=True):
        assert int(row["time_ns"]) == s["time_ns"] and int(row["seq"]) == s["seq"]
        assert float(row["voltage_v"]) == s["cell_voltage_v"]
        assert float(row["current_setpoint_ma"]) == s["current_setpoint_ma"]
        assert float(row["impedance_ohm"]) == s["z_mag_ohm"]
        assert row["boot"] == "7" and int(row["step"]) == s["step"]
    table = pq.read_table(stem.with_suffix(".parquet"))
    assert table.column_names == [c for c, *_ in RUN_COLUMNS]
    assert table.schema.field("current_ma").metadata == {b"unit": b"mA"}
    assert str(table.schema.field("time").type) == "timestamp[ns, tz=UTC]"
    assert table.column("seq").to_pylist() == [s["seq"] for s in filled.samples]
    eis = pq.read_table(tmp_path / "lab-1_rig-a_ccd-1_eis.parquet")
    assert eis.column_names == [c for c, *_ in EIS_COLUMNS] and eis.num_rows == 40
    f_hz = eis.column("f_hz").to_pylist()
    assert f_hz == sorted(f_hz, reverse=True)  # sweep order kept (1 MHz first)
    with (tmp_path / "lab-1_rig-a_ccd-1_eis.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 40


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


@pytest.mark.integration
def test_plot_run_and_nyquist(filled: Filled, influx_args: list[str], tmp_path: Path) -> None:
    run_png, nyq_png = tmp_path / "run.png", tmp_path / "nyquist.png"
    assert main(["plot", *influx_args, "--out", str(run_png), "--nyquist", str(nyq_png)]) == 0
    w, h = _png_size(run_png)
    assert w == 1000 and h == 1100  # five panels (V, I, T, P, |Z|) at 100 dpi
    assert _png_size(nyq_png) == (600, 500)
    assert main(["plot", "--influx", filled.db.url, "--site", "lab-1", "--rig", "nope",
                 "--run", "x", "--out", str(tmp_path / "none.png")]) == 1


def test_broker_generate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('operators = ["alice"]\ningesters = ["ing-1"]\n'
                     '[[gateway]]\nsite = "lab-1"\nid = "gw-1"\nrigs = ["rig-a"]\n')
    out = tmp_path / "sec"
    assert main(["broker", "generate", "--out", str(out), "--fleet", str(fleet),
                 "--gateway", "lab-2/gw-7:rig-x,rig-y", "--tls-host", "broker.lab"]) == 0
    first = json.loads((out / "secrets.json").read_text())
    assert sorted(first) == ["gw.lab-1.gw-1", "gw.lab-2.gw-7", "ingest.ing-1", "op.alice"]
    assert "topic readwrite fieldrig/v1/lab-2/rig-y/telemetry" in (out / "acl").read_text()
    # Re-running keeps the credentials already handed out.
    assert main(["broker", "generate", "--out", str(out), "--fleet", str(fleet)]) == 0
    second = json.loads((out / "secrets.json").read_text())
    assert second["op.alice"] == first["op.alice"]
    from cryptography import x509
    cert = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]  # default hosts on rerun
    capsys.readouterr()

