"""Stack-pressure loop: load cell -> screw-press stepper, holding a set-point while
lithium creep slowly relaxes the stack.

Li creeps under a few MPa (power-law creep, 37 kJ/mol): at a fixed press position the
stack pressure decays, so holding a pressure means stepping the press in now and then.
The loop is deliberately slow and stepwise:

- a deadband around the set-point, so the press is not dithering on load-cell noise
  (every step is a small mechanical shock to a brittle electrolyte);
- proportional steps, capped at ``max_steps_per_s`` (a fast screw overshoots: the
  load cell and the stack need time to settle);
- software travel limits (``min_position``..``max_position`` in steps) and the
  end-stop switches: no step ever goes past either;
- a saturated load cell means "pressure unknown": no motion at all; so does a bus error
  (an I2C NAK from the load cell, an ``OSError`` from the press): ``blocked`` is then
  "sensor_bus", which the rig's ``sensor_bus`` row watches (a lasting one trips it).

Drivers: load cell ``read_force_n()`` and ``saturated`` (bool); press ``step(n)``
(+n compresses the stack), ``position`` (steps), ``end_stop_low`` / ``end_stop_high``
(bools; high = fully closed), optional ``stop()``.
Pressure = force / cell area: 1 N/mm^2 = 1 MPa.
"""


class PressureLoop:
    def __init__(self, loadcell, press, dt_s, area_mm2, deadband_mpa=0.1,
                 gain_steps_per_mpa=20.0, max_steps_per_s=200, min_position=0,
                 max_position=20000, force_offset_n=0.0):
        self.loadcell = loadcell
        self.press = press
        self.dt_s = dt_s
        self.area_mm2 = area_mm2
        self.deadband_mpa = deadband_mpa
        self.gain_steps_per_mpa = gain_steps_per_mpa
        self.max_steps_per_s = max_steps_per_s
        self.min_position = min_position
        self.max_position = max_position
        self.force_offset_n = force_offset_n
        # None: not controlling (the press holds still); not None gates under_pressure
        self.setpoint_mpa = None
        self.pressure_mpa = 0.0
        self.saturated = False
        # Why the last step was refused (None when moving or idle): for status / tests.
        self.blocked = None
        self._credit = 0.0  # fractional step allowance carried between runs

    def set_setpoint(self, pressure_mpa):
        self.setpoint_mpa = pressure_mpa
        self._credit = 0.0

    def measure(self):
        # Read first: a driver may set ``saturated`` from the conversion it just read
        # (NAU7802) and return NaN for it.
        try:
            force_n = self.loadcell.read_force_n()
        except OSError:  # bus error: pressure unknown, but not a saturation
            self.saturated = False
            return False
        self.saturated = bool(self.loadcell.saturated) or force_n != force_n
        if self.saturated:
            return False
        self.pressure_mpa = (force_n - self.force_offset_n) / self.area_mm2
        return True

    def step(self):
        """Measure, then make at most one bounded move. Returns the steps moved."""
        if not self.measure():
            self.blocked = "saturated" if self.saturated else "sensor_bus"
            return 0
        if self.setpoint_mpa is None:
            self.blocked = None
            return 0
        err = self.setpoint_mpa - self.pressure_mpa
        if -self.deadband_mpa <= err <= self.deadband_mpa:
            self.blocked = None
            self._credit = 0.0
            return 0
        cap = self.max_steps_per_s * self.dt_s
        want = err * self.gain_steps_per_mpa
        if want > cap:
            want = cap
        elif want < -cap:
            want = -cap
        # Carry fractions so slow rates (cap < 1 step per run) still move on average,
        # but always at least one step once outside the deadband.
        self._credit += want
        n = int(self._credit)
        if n == 0:
            n = 1 if want > 0 else -1
        self._credit -= n
        return self._move(n)

    def _move(self, n):
        press = self.press
        pos = press.position
        if n > 0:
            if press.end_stop_high:
                self.blocked = "end_stop_high"
                return 0
            room = self.max_position - pos
            if n > room:
                n = room
        else:
            if press.end_stop_low:
                self.blocked = "end_stop_low"
                return 0
            room = self.min_position - pos  # <= 0
            if n < room:
                n = room
        if n == 0:
            self.blocked = "travel_limit"
            self._credit = 0.0
            return 0
        self.blocked = None
        try:
            press.step(n)
        except OSError:
            self.blocked = "sensor_bus"
            self._credit = 0.0
            return 0
        return n

    def safe(self):
        """Safe state: hold the stack where it is (no further steps)."""
        self.setpoint_mpa = None
        self._credit = 0.0
        stop = getattr(self.press, "stop", None)
        if stop is not None:
            stop()
