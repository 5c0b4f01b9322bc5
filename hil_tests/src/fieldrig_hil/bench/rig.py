"""``BenchRig``: the real firmware under the real MicroPython interpreter, in lockstep with
the simulated cell.

The bench owns virtual time. The firmware process (``micropython -m main --board bench``,
compiled .mpy, bench stand-ins first on MICROPYPATH) runs one step of virtual time on its
own -- scheduler passes jump from deadline to deadline, drivers talk to the chip models --
then stops at the step end and reports its outputs. The bench then

1. steps the plant (cell, heater, press) over the next step with those outputs held,
2. pumps the link: reads what the firmware sent on its TCP link (the bench's own edge,
   or a real gateway through ``LinkProxy``), acks it, sends queued commands,
3. applies the fault schedule and sends the next step's inputs (one block of ADC
   conversions, RTD temperature, force, faults).

Nothing here reads the wall clock for behaviour: a run is a function of the seed (and of
link timing only when a real gateway is connected, which runs on wall time).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fieldrig_edge import link
from fieldrig_hil.cell.scenarios import Scenario, build_scenario
from fieldrig_hil.services import free_port, micropython_binary

from . import protocol as P
from .edge import BenchEdge, LinkFaults
from .mpbuild import REPO_ROOT, micropypath
from .plant import BenchPlant, PlantConfig

NS = 1_000_000_000


class BenchError(RuntimeError):
    """The firmware process failed (crash, protocol error) or a wait timed out."""


@dataclass(frozen=True, slots=True)
class Boot:
    """One firmware process lifetime: from its BOOT to its end."""

    index: int
    t0_s: float  # plant time at which this boot's uptime 0 lies
    pid: int


@dataclass(slots=True)
class RigEvent:
    """An EVENT or REPLY as the edge stored it, with the plant time it arrived at."""

    t_s: float
    boot_index: int
    body: dict[str, object]


@dataclass(slots=True)
class StepRecord:
    t_s: float
    outputs: P.Outputs


@dataclass
class FaultPlan:
    """Chip-level faults for the next steps (one-shot ones are consumed when sent)."""

    crc_corrupt: int = 0  # ADS131M04 frames with a wrong output CRC (one-shot)
    i2c_nak: int = 0  # NAU7802 NAKs: n (one-shot), -1 until cleared, -2 clear
    endstops: int = 0  # forced triggered end stops (P.ENDSTOP_MIN | P.ENDSTOP_MAX)


@dataclass
class ScenarioDriver:
    """Plays a scenario's drive through the firmware's own commands: the current profile
    as ``set_current`` (mA/cm2 x area), set-points as ``set_temperature`` /
    ``set_pressure``, each sent when its value changes (checked every ``every_s``)."""

    scenario: Scenario
    every_s: float = 1.0
    sent: list[tuple[float, str, dict[str, object]]] = field(default_factory=list)
    _next_s: float = 0.0
    _last: dict[str, float] = field(default_factory=dict)

    def due(self, t_s: float) -> list[tuple[str, dict[str, object]]]:
        if t_s < self._next_s:
            return []
        self._next_s = t_s + self.every_s
        sc = self.scenario
        t = np.array([t_s])
        want: dict[str, tuple[str, str, float]] = {}
        j = float(sc.current(t)[0])
        want["current"] = ("set_current", "current_ma", round(j * sc.geometry.area_cm2, 9))
        temp = (float(sc.temperature_setpoint(t)[0]) if sc.temperature_setpoint is not None
                else sc.temperature_c)
        if sc.temperature_setpoint is not None or temp != sc.heater.ambient_c:
            want["temp"] = ("set_temperature", "temp_c", temp)
        press = (float(sc.pressure_setpoint(t)[0]) if sc.pressure_setpoint is not None
                 else sc.pressure_mpa)
        want["press"] = ("set_pressure", "pressure_mpa", press)
        out: list[tuple[str, dict[str, object]]] = []
        for key, (cmd, arg, value) in want.items():
            if self._last.get(key) != value:
                self._last[key] = value
                args: dict[str, object] = {arg: value}
                out.append((cmd, args))
                self.sent.append((t_s, cmd, args))
        return out


class BenchRig:
    """One simulated rig: firmware process + plant + (optionally) the bench's edge.

    ``scenario``: a registered scenario name, a ``Scenario``, or None (a healthy
    Li|LPSCl|Li cell at 25 °C, 5 MPa, nothing driven). ``drive``: play the scenario's
    current/temperature/pressure program through the firmware's commands.
    """

    def __init__(self, workdir: Path, scenario: str | Scenario | None = None, seed: int = 0,
                 *, step_ms: int = 100, period_ms: int = 100, rig_id: str = "bench-1",
                 edge: bool = True, drive: bool = False, plant: PlantConfig | None = None,
                 link_faults: LinkFaults | None = None, heap: str = "2M",
                 firmware_opts: dict[str, str] | None = None, auto_restart: bool = True,
                 precompiled: bool = True, scenario_params: dict[str, object] | None = None,
                 wall_timeout_s: float = 60.0) -> None:
        if step_ms <= 0:
            raise ValueError("step_ms must be > 0")
        self.workdir = Path(workdir)
        self.seed = seed
        if isinstance(scenario, str):
            scenario = build_scenario(scenario, **(scenario_params or {}))
        self.scenario = scenario
        if plant is None:
            plant = (PlantConfig.from_scenario(scenario) if scenario is not None
                     else PlantConfig())
        self.plant_cfg = plant
        self.step_ns = step_ms * 1_000_000
        self.period_ms = period_ms
        self.rig_id = rig_id
        self.use_edge = edge
        self.driver = ScenarioDriver(scenario) if drive and scenario is not None else None
        self.heap = heap
        self.firmware_opts = dict(firmware_opts or {})
        self.auto_restart = auto_restart
        self.precompiled = precompiled
        self.wall_timeout_s = wall_timeout_s
        self.edge = BenchEdge(link_faults)
        self.faults = FaultPlan()
        self.plant: BenchPlant | None = None
        self.front: dict[str, object] = {}
        self.boots: list[Boot] = []
        self.resets: list[dict[str, object]] = []
        self.steps: list[StepRecord] = []
        self.outputs: P.Outputs | None = None
        # The small-signal network the present boot holds (re-sent to every new boot).
        self.network: P.Network | None = None
        self._network_key: tuple[object, ...] | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._sockdir = Path(tempfile.mkdtemp(prefix="frb-"))  # sun_path is <= 108 bytes
        self._srv: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._boot_t0_s = 0.0
        self._events_seen = 0
        self.events: list[RigEvent] = []
        self.log_path = self.workdir / f"{rig_id}.log"
        self.on_step: list[Callable[[BenchRig], None]] = []
        self.wall_s = 0.0  # wall time spent inside steps (for speed figures)
        # Where it went: waiting for the firmware (its compute + IPC), the plant, the link.
        self.wall_firmware_s = 0.0
        self.wall_plant_s = 0.0
        self.wall_link_s = 0.0
        self.pace: float | None = None  # max virtual/wall ratio (a real gateway needs it)
        self._flags = 0
        self._boot_ids: dict[int, int] = {}  # link boot id -> index in boots
        self._hellos_seen = 0
        self._edge_conns0 = 0  # edge connections made before this boot

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> BenchRig:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._mp_path = micropypath(self.precompiled)
        self.port = self.port or free_port()
        self._boot_process()
        return self

    def _argv(self, sock_path: str) -> list[str]:
        args = {"board": "bench", "bench": sock_path, "port": str(self.port),
                "rig": self.rig_id, "period_ms": str(self.period_ms), **self.firmware_opts}
        if self.plant is not None:
            # A new boot finds the screw where the last one left it.
            args["press_start_mm"] = repr(self.plant.travel_mm())
        if self.precompiled:
            argv = [micropython_binary(), "-X", f"heapsize={self.heap}", "-m", "main"]
        else:
            argv = [micropython_binary(), "-X", f"heapsize={self.heap}",
                    str(REPO_ROOT / "firmware" / "main.py")]
        for k, v in args.items():
            argv += [f"--{k}", v]
        return argv

    def _boot_process(self) -> None:
        sock_path = str(self._sockdir / f"lock{len(self.boots)}.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(sock_path)
        srv.listen(1)
        srv.settimeout(self.wall_timeout_s)
        self._srv = srv
        env = dict(os.environ, MICROPYPATH=self._mp_path)
        with self.log_path.open("ab") as log:
            log.write(f"--- boot {len(self.boots)} at t={self.t_s:.3f} s ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self._argv(sock_path), cwd=self.workdir, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        try:
            conn, _ = srv.accept()
        except TimeoutError as exc:
            raise BenchError(f"firmware did not connect to the bench:\n{self.log_tail()}") from exc
        conn.settimeout(self.wall_timeout_s)
        self._conn = conn
        msg_type, payload = self._recv()
        if msg_type != P.MSG_BOOT:
            raise BenchError(f"expected BOOT, got message type {msg_type}")
        front = json.loads(payload)
        if front.get("protocol") != P.PROTOCOL:
            raise BenchError(f"bench protocol {front.get('protocol')} != {P.PROTOCOL}")
        self.front = front
        if self.plant is None:
            self.plant = BenchPlant(self.plant_cfg, front, self.seed)
        self._boot_t0_s = self.plant.t_s
        self._network_key = None
        self.boots.append(Boot(len(self.boots), self._boot_t0_s, self.proc.pid))
        # The edge connects while the firmware waits for its first inputs (the link
        # socket listens already): it is accepted at the first link pass, every run.
        if self.use_edge:
            self._edge_conns0 = self.edge.connections
            self.edge.connect("127.0.0.1", self.port)
        # First inputs: static (the ADC rate is known from the first OUT on).
        self._send_inputs(self.step_ns, None)

    def stop(self) -> None:
        """End the run: ask the firmware to leave its loop, then make sure it is gone."""
        if self.proc is not None and self.proc.poll() is None and self._conn is not None:
            try:
                msg_type, _ = self._recv()
                if msg_type == P.MSG_OUT:
                    self._send_inputs(0, None, flags=P.FLAG_STOP)
            except (BenchError, OSError):
                pass
        self._end_process()
        self.edge.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)

    def _end_process(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._srv is not None:
            self._srv.close()
            self._srv = None
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> BenchRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- exchange -----------------------------------------------------------------------
    def _recv_exact(self, n: int) -> bytes:
        assert self._conn is not None
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self._conn.recv(n - len(buf))
            except TimeoutError as exc:
                raise BenchError(f"firmware silent for {self.wall_timeout_s} s "
                                 f"(wall):\n{self.log_tail()}") from exc
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def _recv(self) -> tuple[int, bytes]:
        t = time.perf_counter()
        try:
            length, msg_type = P.HEADER.unpack(self._recv_exact(P.HEADER.size))
            return msg_type, self._recv_exact(length)
        finally:
            self.wall_firmware_s += time.perf_counter() - t

    def _send_inputs(self, t_end_ns: int, out: P.Outputs | None, flags: int = 0) -> None:
        assert self._conn is not None and self.plant is not None
        plant = self.plant
        n_block = 0
        if out is not None and t_end_ns > out.t_ns and out.adc_rate_hz > 0:
            n_block = min(P.MAX_BLOCK, round((t_end_ns - out.t_ns) * out.adc_rate_hz / NS))
        t_end_s = self._boot_t0_s + t_end_ns / NS
        t = time.perf_counter()
        if out is None:
            view = plant.sensor_view()
        else:
            view = plant.advance(t_end_s, out, n_block)
        self.wall_plant_s += time.perf_counter() - t
        f = self.faults
        flags |= self._flags
        self._flags = 0
        edge_conns = (self.edge.connections - self._edge_conns0 if self.use_edge
                      else P.EDGE_LIVE)
        msg = P.Inputs(t_end_ns, view.cell_v, view.cell_i_a, 0.0, view.temp_c, view.force_n,
                       view.force_slope, view.rtd_mode, f.endstops, flags, f.crc_corrupt,
                       f.i2c_nak, edge_conns, self.edge.tx_total,
                       view.block_v if n_block else None, view.block_i if n_block else None)
        f.crc_corrupt = 0
        if f.i2c_nak > 0 or f.i2c_nak == P.NAK_CLEAR:
            f.i2c_nak = 0
        data = msg.pack()
        if out is not None and out.adc_rate_hz > 0:
            data = self._network_update(plant, 1.0 / out.adc_rate_hz) + data
        t = time.perf_counter()
        self._conn.sendall(data)  # wakes the firmware: counted as its time
        self.wall_firmware_s += time.perf_counter() - t

    def _network_update(self, plant: BenchPlant, period_s: float) -> bytes:
        """A NETWORK message when the cell's network (or the ADC rate) changed."""
        key = (plant.cell.foster, plant.current_override_a, period_s)
        if self._network_key is not None and all(
                a is b or a == b for a, b in zip(key, self._network_key, strict=True)):
            return b""
        self._network_key = key
        self.network = plant.small_signal_network(period_s)
        return self.network.pack()

    def step(self) -> None:
        """One lockstep step: the firmware runs to its step end; plant, link, faults."""
        t_wall = time.perf_counter()
        try:
            msg_type, payload = self._recv()
        except EOFError:
            self._process_ended()
            self.wall_s += time.perf_counter() - t_wall
            return
        if msg_type == P.MSG_RESET:
            self.resets.append({**json.loads(payload), "boot_index": len(self.boots) - 1,
                                "t_s": self.t_s})
            self._recv_eof()
            self._process_ended()
            self.wall_s += time.perf_counter() - t_wall
            return
        if msg_type != P.MSG_OUT:
            raise BenchError(f"unexpected message type {msg_type} from the firmware")
        out = P.Outputs.unpack(payload)
        self.outputs = out
        self.steps.append(StepRecord(self._boot_t0_s + out.t_ns / NS, out))
        t_link = time.perf_counter()
        self.edge.pump(out.link_tx if self.use_edge else None)
        self._collect_events()
        for h in self.edge.hellos[self._hellos_seen:]:
            boot_id = h.get("boot")
            if isinstance(boot_id, int):
                self._boot_ids.setdefault(boot_id, len(self.boots) - 1)
        self._hellos_seen = len(self.edge.hellos)
        if self.driver is not None:
            for cmd, args in self.driver.due(self.t_s):
                self.edge.send_command(cmd, args)
            self.edge.pump(out.link_tx if self.use_edge else None)
        self.wall_link_s += time.perf_counter() - t_link
        for hook in self.on_step:
            hook(self)
        t_end = (out.t_ns // self.step_ns + 1) * self.step_ns
        self._send_inputs(t_end, out)
        self.wall_s += time.perf_counter() - t_wall
        if self.pace is not None:
            ahead = self.virtual_s_run() / self.pace - self.wall_s
            if ahead > 0:
                time.sleep(ahead)

    def _recv_eof(self) -> None:
        try:
            while self._recv_exact(1):
                pass
        except (EOFError, BenchError):
            pass

    def _process_ended(self) -> None:
        assert self.proc is not None
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        reset = self.resets and self.resets[-1].get("boot_index") == len(self.boots) - 1
        self._end_process()
        if not reset:
            raise BenchError(f"firmware exited (code {code}) without a reset:\n"
                             f"{self.log_tail()}")
        if not self.auto_restart:
            raise BenchError(f"firmware reset ({self.resets[-1]}) and auto_restart is off")
        self.edge.close()
        self._boot_process()

    def _collect_events(self) -> None:
        for e in self.edge.events[self._events_seen:]:
            self.events.append(RigEvent(self.t_s, len(self.boots) - 1, e.body))
        self._events_seen = len(self.edge.events)

    # -- running --------------------------------------------------------------------------
    @property
    def t_s(self) -> float:
        """Plant (simulation) time, s: the end of the step the firmware is running."""
        return self.plant.t_s if self.plant is not None else 0.0

    @property
    def boot(self) -> Boot:
        return self.boots[-1]

    def virtual_s_run(self) -> float:
        return self.t_s

    def firmware_cpu_s(self) -> float:
        """CPU time (user + system) of the running firmware process, s (Linux)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run_for(self, seconds: float) -> None:
        """Run ``seconds`` of virtual time."""
        end = self.t_s + seconds
        while self.t_s < end - 1e-9:
            self.step()

    def run_until(self, done: Callable[[], bool], timeout_s: float, what: str = "condition"
                  ) -> float:
        """Step until ``done()``; BenchError after ``timeout_s`` of virtual time. Returns
        the virtual time it took."""
        t0 = self.t_s
        while not done():
            if self.t_s - t0 > timeout_s:
                raise BenchError(f"{what} not reached within {timeout_s} s of virtual time")
            self.step()
        return self.t_s - t0

    def command(self, cmd: str, args: dict[str, object] | None = None,
                timeout_s: float = 5.0) -> dict[str, object]:
        """Send a COMMAND through the bench's edge and step until its REPLY."""
        if not self.edge.connected:
            raise BenchError("the bench's edge is not connected")
        # Queued only: the edge writes to the rig while the firmware is paused at a step
        # end (in ``step``), so when a command arrives is a function of virtual time.
        key = self.edge.send_command(cmd, args)
        self.run_until(lambda: key in self.edge.replies, timeout_s, f"reply to {cmd}")
        return self.edge.replies[key]

    def call(self, cmd: str, **args: object) -> dict[str, object]:
        """``command`` that must succeed; returns its result."""
        reply = self.command(cmd, dict(args))
        if reply.get("ok") is not True:
            raise BenchError(f"{cmd} {args} refused: {reply}")
        result = reply.get("result", {})
        assert isinstance(result, dict)
        return result

    # -- fault injection --------------------------------------------------------------------
    def brownout(self, off_s: float = 0.0) -> None:
        """Power loss mid-run: the firmware process is killed (no clean shutdown, like a
        brown-out), the plant runs ``off_s`` with every output dead (heater and stage
        unpowered, screw where it stopped), then the MCU boots again (new boot id). The
        cell keeps its state."""
        assert self.proc is not None and self.plant is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        last = self.outputs or _idle_outputs()
        self._end_process()
        self.edge.close()
        if off_s > 0:
            dead = _idle_outputs(press_pos_256=last.press_pos_256)
            self.plant.advance(self.plant.t_s + off_s, dead, 0)
        self.resets.append({"cause": "brownout", "boot_index": len(self.boots) - 1,
                            "t_s": self.t_s})
        self._boot_process()

    def set_rtd(self, mode: str) -> None:
        """RTD element: "ok", "open", "short", "force_open" (FORCE- lead), "overvoltage"."""
        assert self.plant is not None
        self.plant.rtd_mode = None if mode == "ok" else P.RTD_MODES[mode]

    def saturate_loadcell(self, on: bool = True) -> None:
        assert self.plant is not None
        self.plant.loadcell_saturated = on

    def rail_adc(self, on: bool = True) -> None:
        assert self.plant is not None
        self.plant.adc_railed = on

    def heater_stuck_on(self) -> None:
        """The heater MOSFET fails shorted from now on: full power whatever the duty."""
        assert self.plant is not None
        self.plant.rig.heater.stuck_on_after_s = self.plant.rig.heater.t_s

    def stage_fault(self, current_a: float | None) -> None:
        """The V->I stage fails and drives ``current_a`` into the cell whatever the
        firmware commands (None: repaired)."""
        assert self.plant is not None
        self.plant.current_override_a = current_a

    def corrupt_adc_crc(self, frames: int) -> None:
        self.faults.crc_corrupt = frames

    def nak_loadcell(self, count: int = P.NAK_UNTIL_CLEARED) -> None:
        self.faults.i2c_nak = count

    def clear_nak(self) -> None:
        self.faults.i2c_nak = P.NAK_CLEAR

    def force_endstops(self, endstop_min: bool = False, endstop_max: bool = False) -> None:
        self.faults.endstops = ((P.ENDSTOP_MIN if endstop_min else 0)
                                | (P.ENDSTOP_MAX if endstop_max else 0))

    def request_reset(self) -> None:
        """``machine.reset()`` inside the firmware at the next step end (the board
        reports the reset, the process ends, the bench boots it again)."""
        self._flags |= P.FLAG_RESET

    # -- views ---------------------------------------------------------------------------------
    def samples(self, boot_index: int | None = None) -> list[tuple[float, link.Sample]]:
        """(plant time, sample) of every stored telemetry sample (of one boot)."""
        out = []
        for boot_id, s in self.edge.samples:
            idx = self._boot_ids[boot_id]
            if boot_index is not None and idx != boot_index:
                continue
            out.append((self.boots[idx].t0_s + s.uptime, s))
        return out

    def event_bodies(self, name: str | None = None, boot_index: int | None = None
                     ) -> list[dict[str, object]]:
        return [e.body for e in self.events
                if e.body.get("event") is not None
                and (name is None or e.body.get("event") == name)
                and (boot_index is None or e.boot_index == boot_index)]

    def first_event(self, name: str, **match: object) -> RigEvent | None:
        for e in self.events:
            if e.body.get("event") == name and all(e.body.get(k) == v for k, v in match.items()):
                return e
        return None


def _idle_outputs(press_pos_256: int = 0) -> P.Outputs:
    """Outputs of an unpowered board: no current, no heat, the screw where it is."""
    nan = float("nan")
    return P.Outputs(0, P.DAC_MID, -1, 0, 0, False, 0.0, nan, nan, 0.0, 0.0, press_pos_256,
                     False, 0, 0, 0, 0.0, 0, 0, 0, 0, 0, 0)
