"""Gateway configuration: one TOML file (reference: docs/edge.md).

Every key is checked: an unknown key, a wrong type or an out-of-range value is a
``ConfigError`` naming the key, because a typo in a bench config (a rig on the wrong
port, a cell id mislabelled) silently corrupts a day of data. Secrets (the broker
password) are kept out of ``repr`` and are read from a file or an environment
variable, so the config file itself can be world-readable and logged.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from fieldrig_edge import commands, topics

SpoolPolicy = Literal["drop_oldest", "refuse_new"]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # Skip the broker hostname check (certificate chain is still verified). Only for
    # a broker reached by IP with a certificate issued for its name.
    insecure_hostname: bool = False


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str
    port: int = 1883
    username: str | None = None
    # repr=False: the password never reaches a log line through a config dump.
    password: str | None = field(default=None, repr=False)
    tls: TlsConfig | None = None
    client_id: str | None = None
    keepalive_s: int = 30
    # Session expiry of the delivery witness (see docs/edge.md, "Exactly once").
    witness_session_expiry_s: int = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class RigConfig:
    rig: str
    # "tcp://HOST:PORT", "HOST:PORT" or a serial device ("/dev/ttyACM0", "serial:///dev/ttyACM0").
    port: str
    cell: str = "cell-1"
    run: str = "run-1"
    baud: int = 115200
    # Per-rig tightening of command argument ranges: {"set_current.ma": (-5.0, 5.0)}.
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def transport(self) -> tuple[str, str, int]:
        """("tcp", host, port) or ("serial", device, baud)."""
        return parse_port(self.port, self.baud)


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    path: Path
    max_bytes: int = 512 * 1024 * 1024
    when_full: SpoolPolicy = "drop_oldest"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    site: str
    gateway_id: str
    broker: BrokerConfig
    rigs: list[RigConfig]
    spool: SpoolConfig
    # Telemetry batching: at most batch_max samples per MQTT message; a live batch waits
    # at most batch_wait_s for more samples (replay after an outage never waits).
    batch_max: int = 500
    batch_wait_s: float = 0.2
    health_interval_s: float = 10.0
    # Delete rig data from the spool only once the ingesters say it is in InfluxDB (their
    # retained stored watermark, docs/mqtt.md); republish what is not covered after
    # stored_timeout_s. Off: rows leave on the broker's PUBACK (no ingester in the loop).
    confirm_stored: bool = True
    stored_timeout_s: float = 30.0
    # Ask each rig for its status this often and publish its actuator state (set-points,
    # heater duty, press position: the SAMPLE carries none; docs/mqtt.md). 0: never.
    actuator_poll_s: float = 5.0
    # Group commit of the spool; rigs are acked right after each commit.
    commit_interval_s: float = 0.02
    sync_interval_s: float = 5.0
    hello_timeout_s: float = 3.0
    reconnect_max_s: float = 5.0
    command_timeout_s: float = 5.0
    command_retransmit_s: float = 0.5
    command_max_bytes: int = 2048
    shutdown_flush_s: float = 5.0
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    def __post_init__(self) -> None:
        topics.check_id("site", self.site)
        topics.check_id("gateway", self.gateway_id)
        seen: set[str] = set()
        ports: set[str] = set()
        for r in self.rigs:
            topics.check_id("rig", r.rig)
            topics.check_id("cell", r.cell)
            topics.check_id("run", r.run)
            if r.rig in seen:
                raise ConfigError(f"rigs: rig id {r.rig!r} listed twice")
            if r.port in ports:
                raise ConfigError(f"rigs: port {r.port!r} used by two rigs")
            seen.add(r.rig)
            ports.add(r.port)
            r.transport  # noqa: B018 - validates the port string
            commands.check_limits(r.limits)

    def rig(self, rig_id: str) -> RigConfig | None:
        return next((r for r in self.rigs if r.rig == rig_id), None)

    def redacted(self) -> dict[str, Any]:
        """The configuration as plain data with secrets masked (check-config, logs)."""
        b = self.broker
        return {
            "site": self.site,
            "gateway": self.gateway_id,
            "broker": {
                "host": b.host, "port": b.port, "username": b.username,
                "password": "***" if b.password else None,
                "tls": None if b.tls is None else {
                    "ca_file": b.tls.ca_file, "cert_file": b.tls.cert_file,
                    "key_file": b.tls.key_file,
                    "insecure_hostname": b.tls.insecure_hostname},
                "client_id": self.client_id,
            },
            "spool": {"path": str(self.spool.path), "max_bytes": self.spool.max_bytes,
                      "when_full": self.spool.when_full},
            "rigs": [{"id": r.rig, "port": r.port, "cell": r.cell, "run": r.run,
                      "limits": {k: list(v) for k, v in r.limits.items()}}
                     for r in self.rigs],
        }

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"fieldrig-edge-{self.site}-{self.gateway_id}"


def parse_port(port: str, baud: int = 115200) -> tuple[str, str, int]:
    """Rig port string -> ("tcp", host, port) or ("serial", device, baud)."""
    if port.startswith("serial://"):
        u = urlsplit(port)
        q = parse_qs(u.query)
        dev = u.path
        if not dev:
            raise ConfigError(f"port {port!r}: serial URL without a device path")
        return "serial", dev, int(q.get("baud", [str(baud)])[0])
    if port.startswith("/") or port.upper().startswith("COM"):
        return "serial", port, baud
    rest = port.removeprefix("tcp://")
    host, sep, p = rest.rpartition(":")
    if not sep or not host or not p.isdigit() or not 0 < int(p) < 65536:
        raise ConfigError(f"port {port!r}: expected tcp://HOST:PORT, HOST:PORT or a device path")
    return "tcp", host.strip("[]"), int(p)


# ---------------------------------------------------------------------------- loading


class _Table:
    """A TOML table whose keys are consumed; leftovers are reported as unknown."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where or 'top level'}: expected a table")
        self.data = dict(data)
        self.where = where

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def take(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._key(key)}: required")
            return default
        value = self.data.pop(key)
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigError(f"{self._key(key)}: expected {_kind_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise ConfigError(f"{self._key(key)}: expected {_kind_name(kind)}, "
                              f"got {type(value).__name__}")
        return value

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        v = float(self.take(key, (int, float), default))
        if not (math.isfinite(v) and lo <= v <= hi):
            raise ConfigError(f"{self._key(key)}: {v} not within [{lo}, {hi}]")
        return v

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        v = int(self.take(key, int, default))
        if not lo <= v <= hi:
            raise ConfigError(f"{self._key(key)}: {v} not within [{lo}, {hi}]")
        return v

    def sub(self, key: str) -> _Table | None:
        if key not in self.data:
            return None
        return _Table(self.data.pop(key), self._key(key))

    def done(self) -> None:
        if self.data:
            raise ConfigError(f"{self.where or 'top level'}: unknown key(s) "
                              f"{', '.join(sorted(self.data))}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number",
                        "bool": "a boolean", "dict": "a table", "list": "an array"}
                       .get(k.__name__, k.__name__) for k in kinds)


def _resolve(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def _password(t: _Table, base: Path, env: dict[str, str]) -> str | None:
    inline = t.take("password", str, None)
    pfile = t.take("password_file", str, None)
    penv = t.take("password_env", str, None)
    given = [x for x in (inline, pfile, penv) if x is not None]
    if len(given) > 1:
        raise ConfigError("broker: give only one of password, password_file, password_env")
    if pfile is not None:
        try:
            return Path(_resolve(pfile, base)).read_text().strip("\r\n")
        except OSError as exc:
            # The path is not secret; the content is never shown.
            raise ConfigError(f"broker.password_file: cannot read {pfile!r}: "
                              f"{exc.strerror}") from None
    if penv is not None:
        if penv not in env:
            raise ConfigError(f"broker.password_env: environment variable {penv!r} is not set")
        return env[penv]
    return str(inline) if inline is not None else None


def load(path: str | Path, env: dict[str, str] | None = None) -> GatewayConfig:
    """Read and validate a gateway TOML file. Relative paths are relative to the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return from_dict(raw, base=path.resolve().parent, env=env)


def from_dict(raw: dict[str, Any], base: Path, env: dict[str, str] | None = None) -> GatewayConfig:
    env = dict(os.environ) if env is None else env
    top = _Table(raw, "")
    site = top.take("site", str)
    gateway_id = top.take("gateway", str)

    bt = top.sub("broker")
    if bt is None:
        raise ConfigError("broker: required table")
    tls: TlsConfig | None = None
    tt = bt.sub("tls")
    if tt is not None:
        ca = tt.take("ca_file", str, None)
        cert = tt.take("cert_file", str, None)
        key = tt.take("key_file", str, None)
        if (cert is None) != (key is None):
            raise ConfigError("broker.tls: cert_file and key_file go together")
        tls = TlsConfig(
            ca_file=_resolve(ca, base) if ca else None,
            cert_file=_resolve(cert, base) if cert else None,
            key_file=_resolve(key, base) if key else None,
            insecure_hostname=tt.take("insecure_hostname", bool, False))
        tt.done()
    broker = BrokerConfig(
        host=bt.take("host", str),
        port=bt.integer("port", 8883 if tls else 1883, 1, 65535),
        username=bt.take("username", str, None),
        password=_password(bt, base, env),
        tls=tls,
        client_id=bt.take("client_id", str, None),
        keepalive_s=bt.integer("keepalive_s", 30, 5, 3600),
        witness_session_expiry_s=bt.integer("witness_session_expiry_s", 7 * 24 * 3600,
                                            60, 2**32 - 1),
    )
    if broker.password is not None and broker.username is None:
        raise ConfigError("broker: a password needs a username")
    bt.done()

    st = top.sub("spool")
    if st is None:
        raise ConfigError("spool: required table (spool.path: where unsent messages are kept)")
    when_full = st.take("when_full", str, "drop_oldest")
    if when_full not in ("drop_oldest", "refuse_new"):
        raise ConfigError("spool.when_full: expected 'drop_oldest' or 'refuse_new'")
    spool = SpoolConfig(
        path=Path(_resolve(st.take("path", str), base)),
        max_bytes=int(st.number("max_mb", 512, 0.01, 1_000_000) * 1024 * 1024),
        when_full=when_full)
    st.done()

    opts: dict[str, Any] = {}
    pt = top.sub("publish")
    if pt is not None:
        opts["batch_max"] = pt.integer("batch_max", 500, 1, 5000)
        opts["batch_wait_s"] = pt.number("batch_wait_ms", 200, 0, 10_000) / 1000
        opts["health_interval_s"] = pt.number("health_interval_s", 10, 0.1, 3600)
        opts["confirm_stored"] = pt.take("confirm_stored", bool, True)
        opts["stored_timeout_s"] = pt.number("stored_timeout_s", 30, 0.5, 86_400)
        poll = pt.number("actuator_poll_s", 5, 0, 3600)
        if 0 < poll < 0.5:
            raise ConfigError("publish.actuator_poll_s: 0 (off) or at least 0.5")
        opts["actuator_poll_s"] = poll
        pt.done()
    lt = top.sub("link")
    if lt is not None:
        opts["commit_interval_s"] = lt.number("commit_interval_ms", 20, 1, 400) / 1000
        opts["sync_interval_s"] = lt.number("sync_interval_s", 5, 0.1, 600)
        opts["hello_timeout_s"] = lt.number("hello_timeout_s", 3, 0.1, 60)
        opts["reconnect_max_s"] = lt.number("reconnect_max_s", 5, 0.05, 300)
        lt.done()
    ct = top.sub("commands")
    if ct is not None:
        opts["command_timeout_s"] = ct.number("timeout_s", 5, 0.1, 300)
        opts["command_retransmit_s"] = ct.number("retransmit_ms", 500, 10, 60_000) / 1000
        opts["command_max_bytes"] = ct.integer("max_payload_bytes", 2048, 64, 65536)
        ct.done()
    gt = top.sub("shutdown")
    if gt is not None:
        opts["shutdown_flush_s"] = gt.number("flush_s", 5, 0, 600)
        gt.done()
    logt = top.sub("log")
    if logt is not None:
        level = logt.take("level", str, "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("log.level: expected DEBUG, INFO, WARNING or ERROR")
        fmt = logt.take("format", str, "json")
        if fmt not in ("json", "text"):
            raise ConfigError("log.format: expected 'json' or 'text'")
        opts["log_level"], opts["log_format"] = level, fmt
        logt.done()

    rigs_raw = top.take("rigs", list, [])
    rigs: list[RigConfig] = []
    for i, rr in enumerate(rigs_raw):
        rt = _Table(rr, f"rigs[{i}]")
        limits: dict[str, tuple[float, float]] = {}
        lim = rt.sub("limits")
        if lim is not None:
            for k in list(lim.data):
                v = lim.take(k, list)
                if (len(v) != 2 or not all(isinstance(x, (int, float)) and
                                           not isinstance(x, bool) for x in v)):
                    raise ConfigError(f"rigs[{i}].limits.{k}: expected [min, max]")
                limits[k] = (float(v[0]), float(v[1]))
        try:
            rigs.append(RigConfig(
                rig=rt.take("id", str), port=rt.take("port", str),
                cell=rt.take("cell", str), run=rt.take("run", str, "run-1"),
                baud=rt.integer("baud", 115200, 50, 10_000_000), limits=limits))
        except ValueError as exc:
            raise ConfigError(f"rigs[{i}]: {exc}") from None
        rt.done()
    top.done()
    try:
        return GatewayConfig(site=site, gateway_id=gateway_id, broker=broker, rigs=rigs,
                             spool=spool, **opts)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
