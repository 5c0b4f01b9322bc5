"""Galvanostat set-point: picks the current range and drives the DAC.

The analog stage converts the DAC voltage to a bipolar current whose full scale is
set by a range switch (sense resistor). A 16-bit DAC over 100 mA full scale has
3 uA steps: useless for a 5 uA stripping test, so the smallest range that holds the
set-point is chosen (10 uA / 1 mA / 100 mA by default: 0.3 nA, 30 nA, 3 uA steps).

Switching ranges with current flowing would glitch the cell (the full-scale changes
under a constant DAC code), so every range change goes DAC to zero -> switch -> new
code. "Off" is DAC at zero (mid-scale of the bipolar stage) and the range switch in
its safe position (output disconnected).

Drivers: ``dac.set_fraction(x)``, x in -1..1 of full scale (0 = mid-scale = 0 A);
``range_switch.select(i)`` with i an index into the ranges, or ``RANGE_OFF``.
"""

RANGE_OFF = -1
DEFAULT_RANGES_MA = (0.01, 1.0, 100.0)


class Galvanostat:
    def __init__(self, dac, range_switch, ranges_ma=DEFAULT_RANGES_MA, max_current_ma=100.0):
        # Ranges must ascend: the first one that holds the set-point is the finest.
        for i in range(1, len(ranges_ma)):
            if ranges_ma[i] <= ranges_ma[i - 1]:
                raise ValueError("ranges must ascend")
        self.dac = dac
        self.range_switch = range_switch
        self.ranges_ma = ranges_ma
        self.max_current_ma = max_current_ma
        self.setpoint_ma = 0.0
        self.range_index = RANGE_OFF
        self.off()

    def range_for(self, current_ma):
        """Index of the finest range whose full scale holds |current_ma|, or -1."""
        a = current_ma if current_ma >= 0 else -current_ma
        for i in range(len(self.ranges_ma)):
            if a <= self.ranges_ma[i]:
                return i
        return -1

    def set_current_ma(self, current_ma):
        """Apply a set-point (0 turns the output off). Raises ValueError when out of range."""
        if current_ma == 0:
            self.off()
            return
        limit = self.max_current_ma
        if not (-limit <= current_ma <= limit):
            raise ValueError("current beyond the galvanostat limit")
        idx = self.range_for(current_ma)
        if idx < 0:
            raise ValueError("current beyond the largest range")
        if idx != self.range_index:
            self.dac.set_fraction(0.0)
            self.range_switch.select(idx)
            self.range_index = idx
        self.dac.set_fraction(current_ma / self.ranges_ma[idx])
        self.setpoint_ma = current_ma

    def off(self):
        """Current off: DAC to zero first, then the range switch to its safe position."""
        self.dac.set_fraction(0.0)
        self.range_switch.select(RANGE_OFF)
        self.range_index = RANGE_OFF
        self.setpoint_ma = 0.0
