"""The simulated lab behind ``make demo``: bench rigs (the real firmware under
``micropython`` in lockstep with simulated cells), the real edge gateway on their TCP
links, and -- where Mosquitto and InfluxDB are installed -- the real ingester storing into
a private InfluxDB.

Threads and tasks:

- one thread per rig steps its ``BenchRig`` (each talks only to its own micropython
  process, so the firmware processes run in parallel), paced to at most ``speed`` x wall
  time when asked;
- the asyncio loop runs the gateway (``fieldrig_edge.gateway.Gateway``), the ingester
  (``fieldrig_cloud.ingester.Ingester``), one ``LinkTap`` per rig (what the firmware sent,
  for the live view and the accounting), the recipe / command senders and the view.

Commands go to the rigs through the gateway's own command path (``RigSession.command``:
per-boot numbering, retransmission, reply matching), as a request from MQTT would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fieldrig_edge.commands import Command, CommandError
from fieldrig_edge.config import BrokerConfig, GatewayConfig, RigConfig, SpoolConfig
from fieldrig_edge.gateway import Gateway
from fieldrig_edge.session import ReplyTo
from fieldrig_hil.bench import BenchRig
from fieldrig_hil.bench.rig import ScenarioDriver
from fieldrig_hil.demo_programs import Program, recipe_load_parts
from fieldrig_hil.demo_tap import LinkTap, RigObservation
from fieldrig_hil.services import InfluxDB, Mosquitto, free_port

log = logging.getLogger("fieldrig.demo")

SITE = "demo-lab"
GATEWAY_ID = "gw-1"
@dataclass
class CommandRecord:
    t_s: float
    cmd: str
    args: dict[str, Any]
    ok: bool
    result: Any


@dataclass
class LabRig:
    rig_id: str
    program: Program
    seed: int
    target_s: float
    bench: BenchRig
    obs: RigObservation
    tap: LinkTap | None = None
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    phase: str = "booting"
    commands: list[CommandRecord] = field(default_factory=list)
    stored: int | None = None  # cell_sample points in InfluxDB (None: no database)
    wall_s: float = 0.0

    @property
    def t_s(self) -> float:
        return self.bench.t_s

    @property
    def cell(self) -> str:
        return f"cell-{self.rig_id}"


@dataclass
class LabConfig:
    duration_s: float = 900.0
    speed: float | None = None  # max virtual s per wall s (None: as fast as it goes)
    step_ms: int = 500
    period_ms: int = 250
    pipeline: bool = True
    run: str = "run-1"
    seed: int = 1
    # The ingester's pipeline_health cadence (wall s); a short run needs a short one to
    # show on the pipeline dashboard.
    health_interval_s: float = 10.0


class Lab:
    """Builds and runs the lab; ``run()`` returns when every rig reached its target and
    the pipeline has drained."""

    def __init__(self, work: Path, programs: list[Program], cfg: LabConfig,
                 broker: Mosquitto | None, influx: InfluxDB | None,
                 say: Callable[[str], None] = print) -> None:
        self.work = work
        self.cfg = cfg
        self.broker = broker
        self.influx = influx
        self.say = say
        self.rigs: list[LabRig] = []
        self.gateway: Gateway | None = None
        self.ingester: Any = None
        self.stop_requested = threading.Event()
        self.started_mono = 0.0
        self.drain_s = 0.0
        counts: dict[str, int] = {}
        for i, prog in enumerate(programs):
            counts[prog.key] = counts.get(prog.key, 0) + 1
            n = counts[prog.key]
            rig_id = prog.key.replace("_", "-") + (f"-{n}" if n > 1 else "")
            seed = cfg.seed + 17 * i
            bench = BenchRig(work / "rigs" / rig_id, scenario=prog.scenario, seed=seed,
                             step_ms=cfg.step_ms, period_ms=cfg.period_ms, rig_id=rig_id,
                             edge=False, drive=False, scenario_params=prog.scenario_params,
                             wall_timeout_s=120.0)
            obs = RigObservation(rig_id)
            obs.now_s = _now_of(bench)
            obs.boot_t0_s = _boot_t0_of(bench)
            self.rigs.append(LabRig(rig_id, prog, seed, cfg.duration_s, bench, obs))

    # -- rigs ---------------------------------------------------------------------------
    def start_rigs(self) -> None:
        for r in self.rigs:
            r.bench.start()
            r.phase = "booted"

    def stop_rigs(self) -> None:
        for r in self.rigs:
            with contextlib.suppress(Exception):
                r.bench.stop()

    def _step_loop(self, r: LabRig) -> None:
        """One rig's thread: step until the target virtual time (paced if asked)."""
        t0_wall = time.monotonic()
        v0 = r.bench.t_s
        try:
            while r.bench.t_s < r.target_s and not self.stop_requested.is_set():
                r.bench.step()
                if self.cfg.speed:
                    ahead = (r.bench.t_s - v0) / self.cfg.speed - (time.monotonic() - t0_wall)
                    if ahead > 0:
                        time.sleep(min(ahead, 1.0))
        except BaseException as exc:
            r.error = exc
            r.phase = "failed"
        finally:
            r.wall_s = time.monotonic() - t0_wall
            r.done.set()

    # -- commands through the gateway ----------------------------------------------------
    async def command(self, r: LabRig, cmd: str, args: dict[str, Any] | None = None,
                      attempts: int = 3) -> dict[str, Any]:
        """One command through the gateway's session for the rig; the rig's reply body."""
        assert self.gateway is not None
        session = self.gateway.sessions[r.rig_id]
        # Correlation data as an MQTT requester sends it: the response is published to
        # the reply topic once (nobody subscribes to it here), like any command response.
        reply_to = ReplyTo(f"fieldrig/v1/{SITE}/{r.rig_id}/reply/demo", os.urandom(8), cmd)
        last: Exception | None = None
        for _ in range(attempts):
            try:
                body = await session.command(Command(cmd, dict(args or {})), reply_to)
            except CommandError as exc:
                last = exc
                if exc.code in ("timeout", "rig_offline", "rig_state", "busy"):
                    await asyncio.sleep(0.5)
                    continue
                break
            r.commands.append(CommandRecord(r.t_s, cmd, dict(args or {}),
                                            bool(body.get("ok")), body.get("result",
                                                                           body.get("error"))))
            return body
        r.commands.append(CommandRecord(r.t_s, cmd, dict(args or {}), False, str(last)))
        raise RuntimeError(f"{r.rig_id}: {cmd} failed: {last}")

    async def _online(self, r: LabRig, timeout_s: float = 60.0) -> None:
        assert self.gateway is not None
        session = self.gateway.sessions[r.rig_id]
        deadline = time.monotonic() + timeout_s
        while session.link is None or session.link.rig_state is None:
            if r.done.is_set() or time.monotonic() > deadline:
                raise RuntimeError(f"{r.rig_id}: the gateway got no telemetry from the rig")
            await asyncio.sleep(0.05)

    async def _program(self, r: LabRig) -> None:
        """Load and start the rig's recipe, or play its scenario profile as commands."""
        try:
            r.phase = "connecting"
            await self._online(r)
            prog = r.program
            if prog.recipe is not None:
                r.phase = "loading recipe"
                for part in recipe_load_parts(prog.recipe(r.target_s)):
                    body = await self.command(r, "recipe_load", part)
                    if not body.get("ok"):
                        raise RuntimeError(f"{r.rig_id}: recipe refused: {body}")
                if prog.track_period_s:
                    await self.command(r, "track_impedance",
                                       {"period_s": float(prog.track_period_s)})
                body = await self.command(r, "recipe_start")
                if not body.get("ok"):
                    raise RuntimeError(f"{r.rig_id}: recipe_start refused: {body}")
                r.phase = "running"
                return
            assert r.bench.scenario is not None
            driver = ScenarioDriver(r.bench.scenario)
            r.phase = "running"
            while not r.done.is_set():
                for cmd, args in driver.due(r.t_s):
                    with contextlib.suppress(RuntimeError):
                        await self.command(r, cmd, args, attempts=1)
                await asyncio.sleep(0.05)
        except Exception as exc:
            r.phase = f"failed: {exc}"
            log.error("program of %s failed: %s", r.rig_id, exc)

    # -- InfluxDB -----------------------------------------------------------------------
    async def stored_counts(self, client: httpx.AsyncClient) -> dict[str, int]:
        assert self.influx is not None
        q = (f'SELECT COUNT("seq") FROM "cell_sample" WHERE site = \'{SITE}\' '
             f'AND run = \'{self.cfg.run}\' GROUP BY "rig"')
        r = await client.post(f"{self.influx.url}/query",
                              params={"db": "fieldrig", "q": q}, timeout=10)
        r.raise_for_status()
        out: dict[str, int] = {}
        for s in r.json()["results"][0].get("series", []):
            out[s["tags"]["rig"]] = int(s["values"][0][1])
        return out

    async def _poll_stored(self) -> None:
        async with httpx.AsyncClient() as client:
            while True:
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    counts = await self.stored_counts(client)
                    for r in self.rigs:
                        r.stored = counts.get(r.rig_id, 0)
                await asyncio.sleep(1.0)

    def spooled(self, r: LabRig) -> int:
        """Samples the gateway accepted (spooled) from this rig."""
        if self.gateway is None:
            return 0
        return int(self.gateway.sessions[r.rig_id].health.samples)

    # -- the run ------------------------------------------------------------------------
    async def run(self, view: Callable[[], None] | None = None,
                  view_every_s: float = 0.5) -> None:
        from fieldrig_cloud.influx import InfluxHttp
        from fieldrig_cloud.ingester import IngestConfig, Ingester
        from fieldrig_cloud.schema import DATABASE

        for r in self.rigs:
            r.tap = await LinkTap(r.obs, r.bench.port).start()
        stop_ingest = asyncio.Event()
        stop_gateway = asyncio.Event()
        ingest_task: asyncio.Task[None] | None = None
        db = None
        if self.broker is not None and self.influx is not None:
            db = InfluxHttp(self.influx.url, DATABASE)
            await db.create_database()
            ready = asyncio.Event()
            self.ingester = Ingester(
                self.broker.host, self.broker.port, db, client_id="fieldrig-demo-ingester",
                config=IngestConfig(health_interval_s=self.cfg.health_interval_s))
            ingest_task = asyncio.create_task(self.ingester.run(stop_ingest, ready))
            await asyncio.wait_for(ready.wait(), 30)
        if self.broker is not None:
            broker_cfg = BrokerConfig(self.broker.host, self.broker.port)
        else:
            # No broker: the gateway spools everything and keeps trying a port nobody
            # listens on (what a bench does while its broker is unreachable).
            broker_cfg = BrokerConfig("127.0.0.1", free_port())
        gw_cfg = GatewayConfig(
            site=SITE, gateway_id=GATEWAY_ID, broker=broker_cfg,
            rigs=[RigConfig(r.rig_id, f"tcp://127.0.0.1:{r.tap.port}", cell=r.cell,
                            run=self.cfg.run) for r in self.rigs if r.tap is not None],
            spool=SpoolConfig(self.work / "edge-spool.sqlite"))
        if self.influx is None and hasattr(gw_cfg, "confirm_stored"):
            gw_cfg = _replace(gw_cfg, confirm_stored=False)
        self.gateway = Gateway(gw_cfg)
        gw_task = asyncio.create_task(self.gateway.run(stop_gateway))
        poll_task = (asyncio.create_task(self._poll_stored())
                     if self.influx is not None else None)
        self.started_mono = time.monotonic()
        for r in self.rigs:
            r.thread = threading.Thread(target=self._step_loop, args=(r,),
                                        name=f"rig-{r.rig_id}", daemon=True)
            r.thread.start()
        programs = [asyncio.create_task(self._program(r)) for r in self.rigs]
        try:
            while not all(r.done.is_set() for r in self.rigs):
                for t in (gw_task, ingest_task):
                    if t is not None and t.done():
                        t.result()  # a crashed gateway / ingester ends the demo with it
                if view is not None:
                    view()
                await asyncio.sleep(view_every_s)
            for r in self.rigs:
                if r.phase == "running":
                    r.phase = "done"
            await self._drain(view, view_every_s)
        finally:
            self.stop_requested.set()
            for t in programs:
                t.cancel()
            await asyncio.gather(*programs, return_exceptions=True)
            stop_gateway.set()
            await asyncio.gather(gw_task, return_exceptions=True)
            stop_ingest.set()
            if ingest_task is not None:
                await asyncio.gather(ingest_task, return_exceptions=True)
            if poll_task is not None:
                poll_task.cancel()
                await asyncio.gather(poll_task, return_exceptions=True)
            for r in self.rigs:
                if r.tap is not None:
                    await r.tap.close()
            if db is not None:
                await db.aclose()
            for r in self.rigs:
                if r.thread is not None:
                    r.thread.join(10)

    async def _drain(self, view: Callable[[], None] | None, every_s: float,
                     timeout_s: float = 60.0) -> None:
        """The rigs are paused; wait until the gateway has everything the firmware sent
        (and, with a database, until InfluxDB holds it)."""
        t0 = time.monotonic()
        for r in self.rigs:
            r.phase = "draining" if r.error is None else r.phase
        while time.monotonic() - t0 < timeout_s:
            sent = {r.rig_id: len(r.obs.samples) for r in self.rigs}
            ok = all(self.spooled(r) >= sent[r.rig_id] for r in self.rigs)
            if self.influx is not None:
                ok = ok and all((r.stored or 0) >= sent[r.rig_id] for r in self.rigs)
            if view is not None:
                view()
            if ok:
                break
            await asyncio.sleep(every_s)
        self.drain_s = time.monotonic() - t0
        for r in self.rigs:
            if r.error is None:
                r.phase = "done"


def _now_of(bench: BenchRig) -> Callable[[], float]:
    return lambda: bench.t_s


def _boot_t0_of(bench: BenchRig) -> Callable[[], float]:
    return lambda: bench.boots[-1].t0_s if bench.boots else 0.0


def _replace(cfg: GatewayConfig, **kw: Any) -> GatewayConfig:
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def fmt_duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    m, sec = divmod(round(s), 60)
    return f"{m}:{sec:02d}" if m < 60 else f"{m // 60}h{m % 60:02d}"
