"""The one clock all firmware timing goes through.

Uptime is kept as (seconds, microseconds) so that both stay MicroPython small ints
for decades of uptime: no bigint allocation on the sampling path.
"""

import time


class TicksClock:
    """Monotonic uptime built from ``time.ticks_us`` (call ``update`` at least every few
    minutes; ticks wrap after 2**30 us on 32-bit ports)."""

    def __init__(self):
        self._last = time.ticks_us()
        self.s = 0
        self.us = 0

    def update(self):
        t = time.ticks_us()
        us = self.us + time.ticks_diff(t, self._last)
        self._last = t
        while us >= 1000000:
            us -= 1000000
            self.s += 1
        self.us = us

    def ms_until(self, s, us):
        """Milliseconds from now until uptime (s, us); <= 0 when it has passed."""
        self.update()
        return (s - self.s) * 1000 + (us - self.us) // 1000

    def sleep_ms(self, ms):
        if ms > 0:
            time.sleep_ms(ms)
