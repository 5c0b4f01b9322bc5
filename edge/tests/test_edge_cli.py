"""Configuration, CLI and logs: every mistake is named, secrets never printed; TLS with
username/password to a real broker."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from edgekit import Recorder
from rig_emulator import RigEmulator, wait_until

from fieldrig_edge import cli, config, logs
from fieldrig_edge.config import ConfigError
from fieldrig_hil.services import Mosquitto

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "edge.toml"

BASE = """
site = "lab-1"
gateway = "gw-1"
[broker]
host = "127.0.0.1"
[spool]
path = "spool.sqlite"
[[rigs]]
id = "rig-a"
port = "tcp://127.0.0.1:7000"
cell = "cell-1"
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> config.GatewayConfig:
    p = tmp_path / "edge.toml"
    p.write_text(text)
    return config.load(p, env=env or {})


def test_example_config_is_valid(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace('password_file = "/etc/fieldrig/broker-password"',
                                       'password_env = "PW"')
    cfg = load(tmp_path, text, env={"PW": "s3cret-pw"})
    assert [r.rig for r in cfg.rigs] == ["rig-a", "rig-b"]
    assert cfg.rigs[0].transport[0] == "serial" and cfg.rigs[1].transport == (
        "tcp", "192.168.7.21", 7000)
    assert cfg.rigs[0].limits["set_current.current_ma"] == (-5.0, 5.0)
    assert cfg.broker.password == "s3cret-pw" and "s3cret" not in repr(cfg)
    assert cfg.batch_wait_s == 0.2 and cfg.spool.max_bytes == 2048 * 1024 * 1024
    assert cfg.actuator_poll_s == 5.0
    off = load(tmp_path, BASE.replace("[spool]", "[publish]\nactuator_poll_s = 0\n[spool]"))
    assert off.actuator_poll_s == 0.0


@pytest.mark.parametrize("patch,error", [
    (("[spool]", "[spool]\nmax_gb = 3"), "spool: unknown key(s) max_gb"),
    (('id = "rig-a"', 'id = "rig a"'), "rig id 'rig a'"),
    (('port = "tcp://127.0.0.1:7000"', 'port = "127.0.0.1"'), "expected tcp://HOST:PORT"),
    (('host = "127.0.0.1"', 'host = 5'), "broker.host: expected a string"),
    (('host = "127.0.0.1"', 'host = "h"\nport = 0'), "broker.port: 0 not within"),
    (('cell = "cell-1"', 'cell = "cell-1"\n[rigs.limits]\n"set_current.current_ma" = [-500, 5]'),
     "must lie within"),
    (('cell = "cell-1"', 'cell = "cell-1"\n[rigs.limits]\n"fly.speed" = [0, 1]'),
     "not a command argument"),
    (('host = "127.0.0.1"', 'host = "h"\npassword = "x"'), "a password needs a username"),
    (('host = "127.0.0.1"', 'host = "h"\nusername = "u"\npassword_file = "nope"'),
     "cannot read 'nope'"),
    (('host = "127.0.0.1"', 'host = "h"\nusername = "u"\npassword_env = "NOPE"'),
     "'NOPE' is not set"),
    (("[spool]", '[log]\nlevel = "LOUD"\n[spool]'), "log.level"),
    # A status poll 10 times a second would crowd out the operators' commands.
    (("[spool]", "[publish]\nactuator_poll_s = 0.1\n[spool]"), "publish.actuator_poll_s"),
    # Without its header, spool's key lands in the table above it: named there.
    (("[spool]\n", ""), "broker: unknown key(s) path"),
])
def test_config_errors_name_the_key(tmp_path: Path, patch: tuple[str, str], error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, BASE.replace(*patch, 1))
    assert error in str(exc.value)


def test_duplicate_rigs_and_ports_are_refused(tmp_path: Path) -> None:
    twice = BASE + '[[rigs]]\nid = "rig-a"\nport = "tcp://127.0.0.1:7001"\ncell = "c"\n'
    with pytest.raises(ConfigError, match="listed twice"):
        load(tmp_path, twice)
    same_port = BASE + '[[rigs]]\nid = "rig-b"\nport = "tcp://127.0.0.1:7000"\ncell = "c"\n'
    with pytest.raises(ConfigError, match="used by two rigs"):
        load(tmp_path, same_port)


def test_cli_check_config_and_list_rigs(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    (tmp_path / "pw").write_text("hunter2-secret\n")
    p = tmp_path / "edge.toml"
    p.write_text(BASE.replace('host = "127.0.0.1"',
                              'host = "127.0.0.1"\nusername = "gw"\npassword_file = "pw"'))
    assert cli.main(["check-config", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["ok"] and report["config"]["broker"]["password"] == "***"
    assert "hunter2" not in out
    assert any("without TLS" in w for w in report["warnings"])
    assert cli.main(["list-rigs", "--config", str(p)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["ID", "PORT", "TRANSPORT", "CELL", "RUN"]
    assert table[1].split() == ["rig-a", "tcp://127.0.0.1:7000", "tcp", "cell-1", "run-1"]
    assert cli.main(["list-rigs", "--config", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "rig-a"
    bad = tmp_path / "bad.toml"
    bad.write_text("site = 1")
    assert cli.main(["check-config", "--config", str(bad)]) == 2
    assert "site: expected a string" in capsys.readouterr().err


def test_logs_are_json_and_mask_secrets() -> None:
    buf = io.StringIO()
    logs.setup("INFO", "json", secrets=["pa55word"], stream=buf)
    try:
        logging.getLogger("fieldrig.edge.test").warning(
            "connecting with pa55word", extra={"rig": "rig-a", "url": "mqtt://u:pa55word@h"})
    finally:
        logs.setup("WARNING", "text", stream=sys.stderr)
    rec = json.loads(buf.getvalue().strip())
    assert rec["level"] == "warning" and rec["rig"] == "rig-a"
    assert "pa55word" not in buf.getvalue() and rec["msg"] == "connecting with ***"


def _make_certs(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=fieldrig-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")


@pytest.mark.integration  # its own broker (TLS listener, password file), not the fixture
def test_tls_and_password_to_the_broker_secret_never_logged(tmp_path: Path) -> None:
    import shutil

    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs openssl and mosquitto_passwd")
    certs = tmp_path / "certs"
    certs.mkdir()
    _make_certs(certs)
    pwfile = tmp_path / "passwd"
    secret = "Gw-S3cret-!42"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pwfile), "gw-1", secret], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "watcher", "w-pass"], check=True)
    from fieldrig_hil.services import free_port

    tls_port = free_port()
    broker = Mosquitto(tmp_path / "mq", allow_anonymous=False, extra_config=[
        f"password_file {pwfile}", f"listener {tls_port} 127.0.0.1",
        f"cafile {certs / 'ca.pem'}", f"certfile {certs / 'server.pem'}",
        f"keyfile {certs / 'server.key'}"]).start()
    (tmp_path / "gw-pass").write_text(secret + "\n")
    cfgp = tmp_path / "edge.toml"

    async def main() -> tuple[str, int]:
        rig = await RigEmulator("rig-a", period_s=0.002, samples=300).start()
        cfgp.write_text(f"""
site = "lab-1"
gateway = "gw-1"
[broker]
host = "127.0.0.1"
port = {tls_port}
username = "gw-1"
password_file = "gw-pass"
[broker.tls]
ca_file = "{certs / 'ca.pem'}"
[spool]
path = "spool.sqlite"
[publish]
batch_wait_ms = 20
[log]
level = "DEBUG"
[[rigs]]
id = "rig-a"
port = "tcp://127.0.0.1:{rig.port}"
cell = "cell-1"
""")
        rec = Recorder(broker.host, broker.port, topic="fieldrig/v1/+/+/telemetry",
                       client_id="watcher")
        rec_c: Any = None
        proc = subprocess.Popen([sys.executable, "-m", "fieldrig_edge", "run", "--config",
                                 str(cfgp)], stderr=subprocess.PIPE, text=True)
        try:
            import paho.mqtt.client as mqtt

            orig = mqtt.Client.connect

            def connect(self: Any, *a: Any, **kw: Any) -> Any:
                self.username_pw_set("watcher", "w-pass")
                return orig(self, *a, **kw)

            mqtt.Client.connect = connect  # type: ignore[method-assign]
            try:
                rec_c = rec.start()
            finally:
                mqtt.Client.connect = orig  # type: ignore[method-assign]
            await wait_until(lambda: len(rec.samples()) == 300, 30, "samples over TLS")
        finally:
            proc.terminate()
            _, err = await asyncio.to_thread(proc.communicate, None, 30)
            if rec_c is not None:
                rec.stop()
            await rig.stop()
        return err, proc.returncode

    try:
        err, rc = asyncio.run(main())
    finally:
        broker.stop()
    assert rc == 0, err[-2000:]
    assert secret not in err and "S3cret" not in err
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert any(x["msg"] == "broker connected" and x.get("tls") is True for x in lines)
    assert any(x["msg"] == "gateway stopped" for x in lines)
    _ = time
