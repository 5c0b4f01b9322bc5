"""Unix-port board: a TCP link and either scripted sensors or simple plant models.

No bench is attached. Two modes (``--plant``):

- ``scripted`` (default): every sensor reading is a deterministic function of the
  telemetry sequence number (``synthetic_sample``: dyadic fractions, exact in
  float32) so an end-to-end test can check every stored value. The actuators act on
  plant models whose state nobody reads.
- ``model``: sensors read small physical models that the actuators drive (a heated
  block, a screw press on a creeping Li stack, a resistive cell), so the heater PID,
  the pressure loop and the galvanostat have something to act on.

The plant classes are also the base of the firmware tests' doubles
(firmware/tests/doubles.py). They integrate lazily: each read advances the model to
the clock's current time, so they need no task of their own and follow a virtual clock.
The HIL bench board replaces all of this with real drivers on emulated buses.
"""

import select
import socket


def synthetic_sample(seq):
    """(cell_voltage_v, cell_current_ma, cell_temp_c, stack_pressure_mpa) for sample seq."""
    current_ma = 0.5 if (seq // 50) % 2 == 0 else -0.5
    voltage_v = current_ma * 0.0625 + (seq % 16) / 1024
    temp_c = 25.0 + (seq % 8) / 8
    pressure_mpa = 5.0 + (seq % 4) / 16
    return voltage_v, current_ma, temp_c, pressure_mpa


AREA_MM2 = 78.54  # cell area both modes report force for (config pressure.area_mm2)


class ScriptedSensors:
    """ADC, RTD and load cell returning ``synthetic_sample(seq)`` for the current seq."""

    def __init__(self, area_mm2=AREA_MM2):
        self.area_mm2 = area_mm2
        self.seq = 0
        self.crc_errors = 0
        self.saturated = False

    def on_sample(self, seq):
        self.seq = seq

    def read_cell(self):
        v, i_ma, _, _ = synthetic_sample(self.seq)
        return v, i_ma

    def read_temperature_c(self):
        return synthetic_sample(self.seq)[2]

    def fault(self):
        return 0

    def read_force_n(self):
        return synthetic_sample(self.seq)[3] * self.area_mm2


class _Lazy:
    """Integrates ``_evolve(dt_s)`` up to the clock's present on every access."""

    max_dt_s = 0.05  # integration step: stable for the time constants below

    def __init__(self, clock):
        self.clock = clock
        self._s = clock.s
        self._us = clock.us

    def _sync(self):
        clock = self.clock
        clock.update()
        dt = (clock.s - self._s) + (clock.us - self._us) / 1000000
        self._s = clock.s
        self._us = clock.us
        while dt > 0:
            h = dt if dt < self.max_dt_s else self.max_dt_s
            self._evolve(h)
            dt -= h

    def _evolve(self, dt_s):
        raise NotImplementedError


class ThermalPlant(_Lazy):
    """Heated block with the cell: C dT/dt = P*duty - G (T - ambient). Heater + RTD."""

    def __init__(self, clock, ambient_c=25.0, heat_capacity_j_per_k=50.0,
                 loss_w_per_k=0.2, heater_w=20.0):
        super().__init__(clock)
        self.ambient_c = ambient_c
        self.c = heat_capacity_j_per_k
        self.g = loss_w_per_k
        self.heater_w = heater_w
        self.temp_c = ambient_c
        self.duty = 0.0
        self.fault_code = 0
        self.stuck_on = False  # a shorted MOSFET: heats whatever the duty says

    def _evolve(self, dt_s):
        duty = 1.0 if self.stuck_on else self.duty
        self.temp_c += (self.heater_w * duty - self.g * (self.temp_c - self.ambient_c)) \
            * dt_s / self.c

    def set_duty(self, duty):
        self._sync()
        self.duty = duty

    def off(self):
        self._sync()
        self.duty = 0.0

    def read_temperature_c(self):
        self._sync()
        return self.temp_c

    def fault(self):
        return self.fault_code


class PressPlant(_Lazy):
    """Screw press on a Li stack. Elastic contact beyond ``contact_position``; Li creep
    relaxes the stack like a Maxwell element (time constant ``creep_tau_s``), so at a
    fixed position the pressure decays. Press (stepper, end stops) + load cell."""

    def __init__(self, clock, area_mm2=AREA_MM2, mpa_per_step=0.02, contact_position=1000,
                 creep_tau_s=600.0, low_stop=0, high_stop=30000, full_scale_n=10000.0):
        super().__init__(clock)
        self.area_mm2 = area_mm2
        self.mpa_per_step = mpa_per_step
        self.contact_position = contact_position
        self.creep_tau_s = creep_tau_s
        self.low_stop = low_stop
        self.high_stop = high_stop
        self.full_scale_n = full_scale_n
        self.position = 0
        self.creep_steps = 0.0  # permanent deformation of the Li (in steps of travel)
        self.steps_total = 0
        self.stopped = 0

    def pressure_mpa(self):
        x = self.position - self.contact_position - self.creep_steps
        return x * self.mpa_per_step if x > 0 else 0.0

    def _evolve(self, dt_s):
        p = self.pressure_mpa()
        if p > 0:
            self.creep_steps += p / self.mpa_per_step * dt_s / self.creep_tau_s

    @property
    def end_stop_low(self):
        return self.position <= self.low_stop

    @property
    def end_stop_high(self):
        return self.position >= self.high_stop

    def step(self, n):
        self._sync()
        self.position += n
        self.steps_total += abs(n)

    def stop(self):
        self.stopped += 1

    def is_saturated(self):
        self._sync()
        return self.pressure_mpa() * self.area_mm2 > self.full_scale_n

    @property
    def saturated(self):
        return self.is_saturated()

    def read_force_n(self):
        self._sync()
        f = self.pressure_mpa() * self.area_mm2
        return f if f < self.full_scale_n else self.full_scale_n


class CellPlant:
    """Galvanostat stage + cell as a resistor behind an open-circuit voltage.
    DAC (``set_fraction``), range switch (``select``), ADC (``read_cell``)."""

    def __init__(self, ranges_ma=(0.01, 1.0, 100.0), ocv_v=0.0, resistance_ohm=20.0):
        self.ranges_ma = ranges_ma
        self.ocv_v = ocv_v
        self.resistance_ohm = resistance_ohm
        self.fraction = 0.0
        self.range_index = -1
        self.crc_errors = 0
        self.log = []  # ("dac", x) / ("range", i): order matters for glitch-free switching

    def set_fraction(self, x):
        self.fraction = x
        if len(self.log) < 64:
            self.log.append(("dac", x))

    def select(self, index):
        self.range_index = index
        if len(self.log) < 64:
            self.log.append(("range", index))

    def current_ma(self):
        if self.range_index < 0:
            return 0.0
        return self.fraction * self.ranges_ma[self.range_index]

    def read_cell(self):
        i_ma = self.current_ma()
        return self.ocv_v + i_ma * self.resistance_ohm / 1000, i_ma


class Pulses:
    def __init__(self):
        self.stops = 0

    def stop(self):
        self.stops += 1


_IPPROTO_TCP = 6
_TCP_NODELAY = 1


class TcpLink:
    """Listens on loopback; one edge connection at a time. Stands in for USB CDC."""

    WRITE_TIMEOUT_MS = 1000  # an edge that reads nothing for this long is dropped

    def __init__(self, host, port):
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(socket.getaddrinfo(host, port)[0][-1])
        self._srv.listen(1)
        self._srv_poll = select.poll()
        self._srv_poll.register(self._srv, select.POLLIN)
        self.conn = None
        self._poll = select.poll()
        self._wpoll = select.poll()

    def accept(self):
        """Block until an edge connects."""
        conn, _ = self._srv.accept()
        # No Nagle: the link writes one small frame at a time, and a lockstep edge waits
        # for each step's bytes; Nagle would hold the second frame until the peer's
        # delayed ACK (~40 ms per step). The unix port's socket module has no IPPROTO_TCP
        # / TCP_NODELAY names; these are Linux's values.
        try:
            conn.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except OSError:
            pass
        # Non-blocking: a blocking MicroPython readinto waits to fill the whole buffer.
        conn.setblocking(False)
        self.conn = conn
        self._poll = select.poll()
        self._poll.register(conn, select.POLLIN)
        self._wpoll = select.poll()
        self._wpoll.register(conn, select.POLLOUT)

    def poll_accept(self):
        """Non-blocking accept: True when a new connection has just been taken."""
        if self.conn is not None:
            return False
        if not self._srv_poll.poll(0):
            return False
        self.accept()
        return True

    def write(self, data):
        conn = self.conn
        if conn is None:
            return False
        try:
            mv = memoryview(data)
            while len(mv):
                n = conn.write(mv)
                if not n:
                    # Send buffer full: wait a bounded time for the edge to read.
                    if not self._wpoll.poll(self.WRITE_TIMEOUT_MS):
                        raise OSError("edge not reading")
                    continue
                mv = mv[n:]
            return True
        except OSError:
            self.close()
            return False

    def readinto(self, buf):
        """Non-blocking read; returns count (0 when nothing is waiting) or -1 on close."""
        conn = self.conn
        if conn is None:
            return -1
        if not self._poll.poll(0):
            return 0
        try:
            n = conn.readinto(buf)
        except OSError:
            n = 0
        if n is None:
            return 0  # woken without data (EAGAIN)
        if not n:
            self.close()  # readable with nothing to read: the edge closed
            return -1
        return n

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def build(opts):
    # Imported here: the integration tests load this module under CPython for
    # synthetic_sample alone, where the firmware package is not on the path.
    from fieldrig.clock import TicksClock

    clock = TicksClock()
    thermal = ThermalPlant(clock)
    press = PressPlant(clock)
    cell = CellPlant()
    board = {
        "clock": clock,
        "link": TcpLink(opts.get("host", "127.0.0.1"), int(opts["port"])),
        "heater": thermal,
        "press": press,
        "dac": cell,
        "range_switch": cell,
        "pulses": Pulses(),
        "config_path": opts.get("config"),
        "recipe_path": opts.get("recipe"),
        "config_overrides": {
            "pressure": {"area_mm2": AREA_MM2},
            # A desktop OS may deschedule the process for a while: a longer main-loop
            # stall limit than on the board (still within the hard bound).
            "limits": {"watchdog": 2000},
        },
    }
    if opts.get("plant", "scripted") == "model":
        board.update({"adc": cell, "rtd": thermal, "loadcell": press})
    else:
        script = ScriptedSensors()
        board.update({"adc": script, "rtd": script, "loadcell": script,
                      "on_sample": script.on_sample})
    return board
