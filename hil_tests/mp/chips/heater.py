"""Cartridge heater behind a logic-level MOSFET, switched by a PWM pin (or plain GPIO).

Average electrical power P = duty x V_supply^2 / R_heater (the thermal time constant is
seconds; the PWM period is far shorter, so the average is what heats). The gate is active
high unless ``active_low``. ``energy_j`` integrates power over virtual time.
"""

from chips import ManualClock


class Heater:
    def __init__(self, clock=None, supply_v=24.0, resistance_ohm=28.8, active_low=False):
        self.clock = clock if clock is not None else ManualClock()
        self.supply_v = supply_v
        self.resistance_ohm = resistance_ohm
        self.active_low = active_low
        self.duty = 0.0
        self.pwm_hz = 0
        self._pwm_active = False
        self._gpio_level = 0
        self.energy_j = 0.0
        self._t_ns = self.clock.now_ns

    @property
    def max_power_w(self):
        return self.supply_v * self.supply_v / self.resistance_ohm

    @property
    def power_w(self):
        return self.duty * self.max_power_w

    def _integrate(self):
        now = self.clock.now_ns
        if now > self._t_ns:
            self.energy_j += self.power_w * (now - self._t_ns) / 1e9
        self._t_ns = now

    def energy_since(self, t0_j):
        self._integrate()
        return self.energy_j - t0_j

    def pwm_changed(self, freq_hz, duty_u16, active):
        """machine.BENCH.watch_pwm callback for the heater gate pin."""
        self._integrate()
        self._pwm_active = bool(active)
        self.pwm_hz = freq_hz if active else 0
        if active:
            d = duty_u16 / 65535
            self.duty = 1.0 - d if self.active_low else d
        else:
            self._apply_gpio()

    def pin_changed(self, level):
        """machine.BENCH.watch callback: the gate driven as a plain output."""
        self._gpio_level = level
        if not self._pwm_active:
            self._integrate()
            self._apply_gpio()

    def _apply_gpio(self):
        on = self._gpio_level == 0 if self.active_low else self._gpio_level == 1
        self.duty = 1.0 if on else 0.0
