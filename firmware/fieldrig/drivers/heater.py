"""Cartridge heater driven through a low-side MOSFET from one PWM output.

Duty 0..1 maps onto ``PWM.duty_u16`` 0..65535 (MicroPython ``machine.PWM``). A duty
limit set at construction caps the heater power whatever the controller asks for, so a
runaway PID (or a NaN from one) cannot drive the cell past its thermal budget.
``off()`` is safe to call at any time, including from an interlock or an exception path.
"""

DUTY_FULL_U16 = 65535


class Heater:
    def __init__(self, pwm, max_duty=1.0):
        if not 0.0 <= max_duty <= 1.0:
            raise ValueError("max_duty must be within 0..1")
        self._pwm = pwm
        self.max_duty = max_duty
        # Largest duty_u16 ever written; kept as an int so set_duty compares ints.
        self._max_u16 = int(max_duty * DUTY_FULL_U16 + 0.5)
        self.duty_u16 = 0
        self.off()

    def set_duty(self, duty):
        """Set the heater duty (0..1), clamped to 0..max_duty. NaN or negative is off.
        Returns the duty_u16 actually written."""
        # 'not duty > 0' is true for NaN as well as for <= 0: both mean off.
        if not duty > 0.0:
            u16 = 0
        else:
            u16 = int(duty * DUTY_FULL_U16 + 0.5) if duty < 1.0 else DUTY_FULL_U16
            if u16 > self._max_u16:
                u16 = self._max_u16
        self._pwm.duty_u16(u16)
        self.duty_u16 = u16
        return u16

    @property
    def duty(self):
        """The duty (0..1) now applied."""
        return self.duty_u16 / DUTY_FULL_U16

    def off(self):
        """Heater off (duty 0). Never raises on a valid PWM object."""
        self._pwm.duty_u16(0)
        self.duty_u16 = 0
