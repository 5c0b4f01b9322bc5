"""Rig main loop: the scheduler runs sensing, safety, the actuator loops, telemetry and
the link session as periodic tasks; the board supplies drivers and the transport.

Board contract (``boards.<name>.build(opts)`` returns a dict):

=================  ================================================================
``link``           transport: ``poll_accept()``, ``write(b)``, ``readinto(buf)``
``adc``            cell ADC: ``read_cell()`` -> (voltage_v, current_ma), ``crc_errors``
``rtd``            ``read_temperature_c()``, ``fault()`` (MAX31865 fault bits, 0 = ok)
``heater``         ``set_duty(x)`` (0..1), ``off()``
``loadcell``       ``read_force_n()``, ``saturated``
``press``          ``step(n)``, ``position``, ``end_stop_low``, ``end_stop_high``
``dac``            ``set_fraction(x)`` (-1..1 of the range's full scale, 0 = off)
``range_switch``   ``select(i)`` (range index, -1 = safe/open)
``pulses``         optional: ``stop()`` (PIO pulse gating)
``pulse_gate``     optional: ``start(train)``, ``stop()``, ``busy()``, ``f_sm_hz`` (PIO gate,
                   ``echem.pulses.make_gate``); default: a ``RecordingGate`` (bench reads it)
``echem``          optional: impedance options ``{name: value}`` (``measure.OPTIONS``)
``recipe_path``    optional: recipe + cursor on flash (none: RAM only, no resume)
``wdt``            optional: ``feed()`` (``machine.WDT``)
``on_sample``      optional: ``fn(seq)`` before each telemetry sample (scripted boards)
``config_path``    optional: config file on flash (None: RAM only)
``config_overrides`` optional: board factory defaults ``{section: {key: value}}``
``clock``          optional: the clock (default ``TicksClock``)
=================  ================================================================
"""

import os

from fieldrig import FIRMWARE_VERSION
from fieldrig.clock import TicksClock
from fieldrig.commands import Commands
from fieldrig.config import ConfigStore
from fieldrig.galvanostat import Galvanostat
from fieldrig.pid import HeaterLoop, Pid
from fieldrig.pressure import PressureLoop
from fieldrig.safety import Safety, Signals
from fieldrig.sched import Scheduler
from fieldrig.session import Session

RIG_STATE_RUNNING = 1
RIG_STATE_TRIPPED = 2

# Task periods (us). Fast sensing and safety every 10 ms bound the reaction time of the
# current and voltage interlocks; temperature and pressure change in seconds.
ELECTRICAL_PERIOD_US = 10000
SAFETY_PERIOD_US = 10000
THERMAL_PERIOD_US = 100000
PRESSURE_PERIOD_US = 50000
LINK_PERIOD_US = 5000
WDT_PERIOD_US = 100000
CRC_WINDOW_MS = 1000
# Signals.sensor_bus bits (literals below: no module names, the 128 KiB budget): 1 cell
# ADC, 2 RTD, 4 load cell / press: that sensor's last read failed on the bus (OSError)
# or gave no value; the sensor_bus row trips when any stays set for its debounce.


def parse_args(argv):
    """``--key value`` pairs into a dict of strings (the unix port has no argparse)."""
    opts = {}
    i = 0
    while i < len(argv):
        key = argv[i]
        if not key.startswith("--") or i + 1 >= len(argv):
            raise ValueError("expected --key value, got %r" % key)
        opts[key[2:].replace("-", "_")] = argv[i + 1]
        i += 2
    return opts


def new_boot_id():
    """Random u32 per power-up (docs/link.md: sequence numbers restart with it); the
    rp2 port's urandom draws on the ring-oscillator hardware RNG."""
    return int.from_bytes(os.urandom(4), "little")


class Rig:
    def __init__(self, board, clock, rig_id="rig-1", period_ms=100, max_samples=-1,
                 boot_id=None):
        self.board = board
        self.clock = clock
        self.max_samples = max_samples
        self.samples = 0  # SAMPLE messages queued (the --samples quota)
        self.store = ConfigStore(board.get("config_path"), board.get("config_overrides"))
        cfg, problem = self.store.load()
        self.cfg = cfg
        self.signals = Signals()
        self.commands = Commands(self)
        lk = cfg["link"]
        self.session = Session(board["link"], clock, rig_id,
                               new_boot_id() if boot_id is None else boot_id,
                               on_command=self.commands.handle, backlog=lk["backlog"],
                               queue=lk["queue"], window=lk["window"],
                               ack_timeout_ms=lk["ack_timeout_ms"])
        self.safety = Safety(self, self.session.send_event, cfg["limits"])
        h = cfg["heater"]
        cal = cfg["calibration"]
        self.heater_loop = HeaterLoop(
            board["rtd"], board["heater"],
            Pid(h["kp"], h["ki"], h["kd"], 0.0, 1.0, h["rate_per_s"], h["d_filter_s"]),
            THERMAL_PERIOD_US / 1000000, cal["rtd_offset_c"])
        p = cfg["pressure"]
        self.pressure_loop = PressureLoop(
            board["loadcell"], board["press"], PRESSURE_PERIOD_US / 1000000, p["area_mm2"],
            p["deadband_mpa"], p["gain_steps_per_mpa"], p["max_steps_per_s"],
            p["min_position"], p["max_position"], cal["force_offset_n"])
        self.galvanostat = Galvanostat(board["dac"], board["range_switch"],
                                       cfg["galvanostat"]["ranges_ma"])
        self.adc = board["adc"]
        self.pulses = board.get("pulses")
        # Electrochemistry (recipes, impedance: measure.Echem) is loaded on first use;
        # the plain rig keeps its 128 KiB budget (docs/firmware.md, "Resource budget").
        self.echem = None
        self.wdt = board.get("wdt")
        self.on_sample = board.get("on_sample")
        self._crc_last = self.adc.crc_errors
        self._crc_s = clock.s
        self._crc_us = clock.us

        s = self.sched = Scheduler(clock)
        # Order = priority within a pass: fresh electrical values, then safety on them.
        s.every(ELECTRICAL_PERIOD_US, self._electrical_task, "electrical")
        s.every(SAFETY_PERIOD_US, self._safety_task, "safety")
        s.every(THERMAL_PERIOD_US, self._thermal_task, "thermal")
        s.every(PRESSURE_PERIOD_US, self._pressure_task, "pressure")
        # Recipe ticks on the 10 ms grid software pulse phases need.
        s.every(10000, self._echem_task, "echem")
        self.telemetry_task = s.every(period_ms * 1000, self._telemetry_task, "telemetry")
        s.every(LINK_PERIOD_US, self._link_task, "link")
        if self.wdt is not None:
            s.every(WDT_PERIOD_US, self.wdt.feed, "wdt")

        self.session.send_event({"event": "boot", "fw": FIRMWARE_VERSION,
                                 "boot": self.session.boot_id})
        if problem is not None:
            self.session.send_event({"event": "config_defaults", "reason": problem[0],
                                     "detail": problem[1]})
        path = board.get("recipe_path")
        if path is not None:
            try:
                os.stat(path)
            except OSError:
                return
            # A recipe was stored before this boot: resume or abort it (its on_reset).
            from fieldrig.program import boot

            boot(self)

    # ---- tasks ------------------------------------------------------------------

    def _measure_electrical(self):
        sig = self.signals
        try:
            v, i_ma = self.adc.read_cell()
            sig.sensor_bus &= ~1
        except OSError:  # SPI error, DRDY timeout: no value (NaN), counted as a bus fault
            v = i_ma = float("nan")
            sig.sensor_bus |= 1
        cal = self.cfg["calibration"]
        sig.cell_voltage_v = v * cal["voltage_gain"] + cal["voltage_offset_v"]
        i_ma = i_ma * cal["current_gain"] + cal["current_offset_ma"]
        sig.cell_current_ma = i_ma
        sig.cell_current_abs_ma = i_ma if i_ma >= 0 else -i_ma

    def _electrical_task(self):
        self._measure_electrical()
        clock = self.clock
        # CRC error rate over a 1 s window (the ADC counts CRC failures it rejected).
        if clock.s - self._crc_s > 1 or (clock.s - self._crc_s == 1
                                         and clock.us >= self._crc_us):
            n = self.adc.crc_errors
            self.signals.adc_crc_errors_per_s = float(n - self._crc_last)
            self._crc_last = n
            self._crc_s = clock.s
            self._crc_us = clock.us

    def _safety_task(self):
        sig = self.signals
        sig.loop_gap_ms = self.sched.read_max_gap_ms()
        sig.link_silence_ms = self.session.silence_ms()
        ring = self.session.telemetry
        sig.backlog_fill_pct = ring.pending() * 100.0 / ring.capacity
        self.safety.evaluate(sig, self.clock.s, self.clock.us)

    def _thermal_task(self):
        hl = self.heater_loop
        hl.step()
        sig = self.signals
        sig.cell_temp_c = hl.temp_c
        sig.rise_heater_off_c = hl.rise_heater_off_c
        sig.rtd_open = hl.fault_open
        sig.rtd_short = hl.fault_short
        # Neither a reading nor fault bits: bus error or no conversion yet.
        bad = not (hl.valid or hl.fault_open or hl.fault_short)
        sig.sensor_bus = (sig.sensor_bus & ~2) | (2 if bad else 0)

    def _pressure_task(self):
        pl = self.pressure_loop
        pl.step()
        sig = self.signals
        sig.stack_pressure_mpa = pl.pressure_mpa
        sig.loadcell_saturated = pl.saturated
        sig.pressure_holding = pl.setpoint_mpa is not None
        sig.sensor_bus = (sig.sensor_bus & ~4) | (4 if pl.blocked == "sensor_bus" else 0)

    def _echem_task(self):
        if self.echem is not None:
            self.echem.tick()

    def _telemetry_task(self):
        ring = self.session.telemetry
        seq = ring.next_seq
        if 0 <= self.max_samples <= self.samples:
            return
        if self.on_sample is not None:
            self.on_sample(seq)
        # A coherent snapshot: every value read now, not at its control task's phase.
        self._measure_electrical()
        self.heater_loop.measure()
        self.pressure_loop.measure()
        sig = self.signals
        self.session.add_sample(self.clock.s, self.clock.us, sig.cell_voltage_v,
                                sig.cell_current_ma, self.heater_loop.temp_c,
                                self.pressure_loop.pressure_mpa, self.rig_state())
        # Counted here: impedance points share the telemetry seqs (measure.py).
        self.samples += 1

    def _link_task(self):
        self.session.poll()
        self.session.service()

    # ---- reactor (called by Safety) ----------------------------------------------

    def safe_state(self):
        """Current off, heater off, press held, pulses stopped: all in this call."""
        self.current_off()
        self.heater_loop.safe()
        self.pressure_loop.safe()

    def current_off(self):
        self.galvanostat.off()
        if self.pulses is not None:
            self.pulses.stop()
        if self.echem is not None:
            self.echem.current_off()  # the pulse gate

    # ---- operations (called by Commands after validation) ------------------------

    def rig_state(self):
        return RIG_STATE_TRIPPED if self.safety.tripped else RIG_STATE_RUNNING

    def state_name(self):
        return "tripped" if self.safety.tripped else "running"

    def set_temperature(self, temp_c):
        self.heater_loop.set_setpoint(temp_c)

    def set_pressure(self, pressure_mpa):
        self.pressure_loop.set_setpoint(pressure_mpa)

    def set_current(self, current_ma):
        self.galvanostat.set_current_ma(current_ma)

    def stop(self):
        if self.echem is not None:
            self.echem.abort("stop")
        self.current_off()

    def reset_safety(self):
        return self.safety.reset(self.signals)

    def set_limit(self, row_id, value):
        cfg = dict(self.cfg)
        cfg["limits"] = dict(self.cfg["limits"])
        cfg["limits"][row_id] = value
        self.cfg = self.store.save(cfg)  # validated and on flash before it takes effect
        self.safety.set_threshold(row_id, value)

    def status(self):
        sig = self.signals
        ses = self.session
        return {
            "state": self.state_name(),
            "uptime_s": self.clock.s,
            "active": self.safety.active_rows(),
            "temp_c": round(sig.cell_temp_c, 3),
            "temp_set_c": self.heater_loop.setpoint_c,
            "heater_duty": round(self.heater_loop.duty, 3),
            "pressure_mpa": round(sig.stack_pressure_mpa, 3),
            "pressure_set_mpa": self.pressure_loop.setpoint_mpa,
            "press_position": self.board["press"].position,
            "current_ma": round(sig.cell_current_ma, 6),
            "current_set_ma": self.galvanostat.setpoint_ma,
            "range": self.galvanostat.range_index,
            "voltage_v": round(sig.cell_voltage_v, 6),
            "backlog": ses.telemetry.pending(),
            "telemetry_dropped": ses.telemetry.dropped,
            "events_dropped": ses.reliable.dropped,
            "link_errors": ses.decoder.errors,
            "retransmitted": ses.telemetry.retransmitted + ses.reliable.retransmitted,
            "overruns": sum(t.overruns for t in self.sched.tasks),
        }

    # ---- running ------------------------------------------------------------------

    def done(self):
        """With a sample quota: all samples taken, an edge has been connected and has
        gone, and nothing it would still ack is left."""
        if self.max_samples < 0 or self.samples < self.max_samples:
            return False
        ses = self.session
        if not ses.ever_connected or ses.connected:
            return False
        return ses.telemetry.pending() == 0 or ses.telemetry.acking is False

    def run(self):
        self.sched.run_until(self.done)


def main(argv):
    from boards import load

    opts = parse_args(argv)
    board = load(opts.get("board", "unix_synthetic"))(opts)
    clock = board.get("clock") or TicksClock()
    rig = Rig(board, clock, opts.get("rig", "rig-1"), int(opts.get("period_ms", "100")),
              int(opts.get("samples", "-1")))
    print("fieldrig firmware", FIRMWARE_VERSION, "listening")
    rig.run()
    print("fieldrig firmware sent", rig.samples, "samples")
