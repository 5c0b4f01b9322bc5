"""The one clock all firmware timing goes through.

Uptime is kept as (seconds, microseconds) so that both stay MicroPython small ints
for decades of uptime: no bigint allocation on the sampling path. Deadlines are the
same pairs, compared field by field, never as one big microsecond count (that would
overflow a 31-bit small int after 18 minutes).

Two clocks share one interface (``s``, ``us``, ``update``, ``sleep_until``,
``ms_until``, ``sleep_ms``):

- ``TicksClock`` follows ``time.ticks_us``: the board and the live bench.
- ``VirtualClock`` only moves when told (``advance``), and ``sleep_until`` jumps
  instead of sleeping: the scheduler then runs the firmware faster than real time,
  deterministically, with no wall-clock sleep anywhere on the path.
"""

import time

US_PER_S = 1000000
# Longest span diff_ms reports; keeps the result a small int on 32-bit ports.
DIFF_MS_CAP = 1000000000


def is_due(now_s, now_us, due_s, due_us):
    """True when uptime (now_s, now_us) has reached (due_s, due_us)."""
    return now_s > due_s or (now_s == due_s and now_us >= due_us)


def diff_ms(s1, us1, s0, us0):
    """Milliseconds from (s0, us0) to (s1, us1), negative when earlier, capped at
    +-DIFF_MS_CAP so the result stays a small int whatever the span."""
    ds = s1 - s0
    if ds > DIFF_MS_CAP // 1000 - 1:
        return DIFF_MS_CAP
    if ds < -(DIFF_MS_CAP // 1000 - 1):
        return -DIFF_MS_CAP
    return ds * 1000 + (us1 - us0) // 1000


class TicksClock:
    """Monotonic uptime built from ``time.ticks_us`` (call ``update`` at least every few
    minutes; ticks wrap after 2**30 us on 32-bit ports)."""

    virtual = False

    def __init__(self):
        self._last = time.ticks_us()
        self.s = 0
        self.us = 0

    def update(self):
        t = time.ticks_us()
        us = self.us + time.ticks_diff(t, self._last)
        self._last = t
        while us >= US_PER_S:
            us -= US_PER_S
            self.s += 1
        self.us = us

    def ms_until(self, s, us):
        """Milliseconds from now until uptime (s, us); <= 0 when it has passed."""
        self.update()
        return diff_ms(s, us, self.s, self.us)

    def sleep_ms(self, ms):
        if ms > 0:
            time.sleep_ms(ms)

    def sleep_until(self, s, us):
        """Block until uptime (s, us) (at ms resolution); return at once if passed."""
        self.sleep_ms(self.ms_until(s, us))
        self.update()


class VirtualClock:
    """Uptime that moves only when told: tests and the faster-than-real-time bench."""

    virtual = True

    def __init__(self, s=0, us=0):
        self.s = s
        self.us = us

    def update(self):
        pass  # virtual time does not pass by itself

    def advance(self, us):
        """Move time forward by ``us`` microseconds (any size, never backwards)."""
        if us < 0:
            raise ValueError("virtual time cannot go backwards")
        total = self.us + us
        if total >= US_PER_S:
            self.s += total // US_PER_S
            total %= US_PER_S
        self.us = total

    def ms_until(self, s, us):
        return diff_ms(s, us, self.s, self.us)

    def sleep_ms(self, ms):
        if ms > 0:
            self.advance(ms * 1000)

    def sleep_until(self, s, us):
        # Jump straight to the deadline: no wall-clock time is spent.
        if not is_due(self.s, self.us, s, us):
            self.s = s
            self.us = us
