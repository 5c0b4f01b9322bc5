"""The hardware watchdog (``machine.WDT``) behind one small interface.

The wrapper constructs the WDT itself, from the class it is given (``machine.WDT`` on the
board, a stand-in under test), after validating the timeout: once started the RP2350
watchdog cannot be stopped or reconfigured, so a bad value must be refused before it is
armed. There is no disabled mode: every ``feed()`` reaches the WDT object.

Timeout range: MicroPython's rp2 port accepts 1..8388 ms (the RP2040 limit, 0x7fffff us;
the RP2350 counter is larger, but firmware that must also run on the RP2040 keeps to it).
"""

import time

TIMEOUT_MIN_MS = 1
TIMEOUT_MAX_MS = 8388


class Watchdog:
    def __init__(self, wdt_class, timeout_ms):
        timeout_ms = int(timeout_ms)
        if not TIMEOUT_MIN_MS <= timeout_ms <= TIMEOUT_MAX_MS:
            raise ValueError("watchdog timeout must be 1..8388 ms")
        self.timeout_ms = timeout_ms
        self.feeds = 0
        self._wdt = wdt_class(timeout=timeout_ms)
        self._last_feed_ms = time.ticks_ms()

    def feed(self):
        """Restart the watchdog countdown. Allocation-free (called every loop)."""
        self._wdt.feed()
        # Wraps below 2^30 so it stays a small int (no allocation) on 32-bit ports.
        self.feeds = (self.feeds + 1) & 0x3FFFFFFF
        self._last_feed_ms = time.ticks_ms()

    def ms_since_feed(self):
        """Milliseconds since the last feed (or since arming): a loop-health figure."""
        return time.ticks_diff(time.ticks_ms(), self._last_feed_ms)
