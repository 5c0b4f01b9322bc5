"""Cell heater: a PID on the RTD temperature driving the heater PWM duty.

``Pid`` is the bare controller:

- derivative on the measurement, not the error, so a set-point step gives no
  derivative kick (and a first-order filter keeps RTD noise out of the output);
- anti-windup by back-calculation: the integrator is pulled back by the difference
  between the output actually applied (after clamping and rate limiting) and the
  unclamped output, so it never accumulates error the heater cannot act on; it is
  also clamped to the output range as a hard bound;
- output rate limit (duty per second), so a set-point change does not slam the
  heater from 0 to 100 % (thermal stress on the cell stack and the cartridge).

``HeaterLoop`` wires it to the drivers: RTD (``read_temperature_c()``, ``fault()``)
and heater (``set_duty(x)`` with x in 0..1, ``off()``). An RTD fault turns the heater
off in the same step, before the safety table's debounce even starts: a controller
without its sensor must not heat.
"""

# MAX31865 fault-status bits (datasheet table 8): D6 = RTD below the low threshold,
# i.e. a shorted element. Every other fault bit means the element or its force/sense
# wiring is open (or the reference is out of range), reported as "open".
RTD_FAULT_SHORT = 0x40


def _clamp(x, lo, hi):
    return lo if x < lo else (hi if x > hi else x)


class Pid:
    def __init__(self, kp, ki, kd, out_min=0.0, out_max=1.0, rate_per_s=1.0,
                 d_filter_s=0.0, tracking=None):
        self.kp = kp
        self.ki = ki
        self.kd = kd
        self.out_min = out_min
        self.out_max = out_max
        self.rate_per_s = rate_per_s
        self.d_filter_s = d_filter_s
        # Back-calculation gain (1/s); sqrt(ki/kd)-ish rules are overkill here:
        # ki/kp (= 1/Ti) tracks the integrator back within one integral time.
        self.tracking = tracking if tracking is not None else (ki / kp if kp else 1.0)
        self.reset()

    def reset(self, output=0.0):
        """Forget history; the next update starts from ``output`` (bumpless restart)."""
        self.integral = _clamp(output, self.out_min, self.out_max)
        self.output = _clamp(output, self.out_min, self.out_max)
        self._last_meas = None
        self._d = 0.0

    def update(self, setpoint, measured, dt_s):
        err = setpoint - measured
        if self._last_meas is None or dt_s <= 0:
            d_raw = 0.0
        else:
            d_raw = -(measured - self._last_meas) / dt_s
        self._last_meas = measured
        if self.d_filter_s > 0 and dt_s > 0:
            a = dt_s / (self.d_filter_s + dt_s)
            self._d += a * (d_raw - self._d)
        else:
            self._d = d_raw
        unclamped = self.kp * err + self.integral + self.kd * self._d
        out = _clamp(unclamped, self.out_min, self.out_max)
        step = self.rate_per_s * dt_s
        if out > self.output + step:
            out = self.output + step
        elif out < self.output - step:
            out = self.output - step
        # Back-calculation: integrate the error, minus what the actuator could not do.
        self.integral += (self.ki * err + self.tracking * (out - unclamped)) * dt_s
        self.integral = _clamp(self.integral, self.out_min, self.out_max)
        self.output = out
        return out


class HeaterLoop:
    """Temperature control with fault handling. ``step()`` runs every ``dt_s``."""

    def __init__(self, rtd, heater, pid, dt_s, rtd_offset_c=0.0):
        self.rtd = rtd
        self.heater = heater
        self.pid = pid
        self.dt_s = dt_s
        self.rtd_offset_c = rtd_offset_c
        self.setpoint_c = None  # None: heater off (not controlling)
        self.temp_c = 0.0  # last valid reading (kept through a fault, flagged below)
        # False with neither fault flag: the last read gave no value, a bus error
        # (OSError) or no conversion yet (NaN, no fault bit). Not a temperature: heater
        # off, no runaway watch; the rig's sensor_bus row trips if it lasts.
        self.valid = False
        self.fault_open = False
        self.fault_short = False
        self.duty = 0.0
        # Heater-runaway watch: lowest temperature since the duty went to zero, and the
        # rise above it (0 while heating). A rise with the heater off means the switch
        # is stuck on or the cell itself is heating.
        self._off_min_c = None
        self.rise_heater_off_c = 0.0
        self.heater.off()

    def set_setpoint(self, temp_c):
        if temp_c is not None and self.setpoint_c is None:
            self.pid.reset(0.0)
        self.setpoint_c = temp_c

    def measure(self):
        """Read the RTD into temp_c / fault flags. Returns True when the reading is valid."""
        self.valid = False
        try:
            code = self.rtd.fault()
            t = 0.0 if code else self.rtd.read_temperature_c()
        except OSError:  # SPI error: no value; fault flags stay as last read
            return False
        self.fault_short = bool(code & RTD_FAULT_SHORT)
        self.fault_open = code != 0 and not self.fault_short
        # NaN without a fault bit in the status read just before: no conversion yet
        # (power-up), or a fault flag raised in between (its bits show next time).
        if code or t != t:
            return False
        self.temp_c = t + self.rtd_offset_c
        self.valid = True
        return True

    def step(self):
        # No valid reading (fault, bus error, not ready): heater off, nothing to watch.
        if not self.measure():
            self._off()
            self.pid.reset(0.0)
            self.rise_heater_off_c = 0.0
            return
        if self.setpoint_c is None:
            self._off()
        else:
            self.duty = self.pid.update(self.setpoint_c, self.temp_c, self.dt_s)
            if self.duty > 0.0:
                self.heater.set_duty(self.duty)
            else:
                self.heater.off()
        self._watch_runaway()

    def _off(self):
        self.duty = 0.0
        self.heater.off()

    def _watch_runaway(self):
        if self.duty > 0.0:
            self._off_min_c = None
            self.rise_heater_off_c = 0.0
            return
        t = self.temp_c
        if self._off_min_c is None or t < self._off_min_c:
            self._off_min_c = t
        self.rise_heater_off_c = t - self._off_min_c

    def safe(self):
        """Safe state: set-point dropped, heater off now."""
        self.setpoint_c = None
        self._off()
        self.pid.reset(0.0)
