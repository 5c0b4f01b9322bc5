"""Virtual-time ``time`` for bench runs -- opt in by putting hil_tests/mp/vtime on
MICROPYPATH ahead of everything (a ``time.py`` on the path shadows the built-in module).

Unmodified drivers use ``time.ticks_us``/``sleep_us`` directly: busy-waits on DRDY, step
timing, register polling. Here every clock reads ``machine.BENCH`` virtual time, sleeps
advance it (firing the chip events due on the way), and each ``ticks_*()`` call costs
``BENCH.tick_cost_ns`` (1 us: an interpreted call on the RP2350) so a polling loop moves
time forward and ends the way it does on the board. Inside an event handler (a pin IRQ
fired by ``BENCH.advance_ns``) time cannot advance: sleeps there return at once and are
counted in ``BENCH.errors["sleep_in_handler"]``.
"""

from machine import BENCH

_PERIOD = 1 << 30  # MicroPython ticks period
_HALF = _PERIOD // 2


def _tick():
    b = BENCH
    if b._advancing:
        return
    t = b.now_ns + b.tick_cost_ns
    cached = b._next_cache
    if cached is not None and cached > t:
        b.now_ns = t  # nothing can be due: the advance_ns fast path, inlined
    else:
        b.advance_ns(b.tick_cost_ns)


def ticks_us():
    _tick()
    return (BENCH.now_ns // 1000) & (_PERIOD - 1)


def ticks_ms():
    _tick()
    return (BENCH.now_ns // 1_000_000) & (_PERIOD - 1)


def ticks_cpu():
    return ticks_us()


def ticks_diff(end, start):
    return ((end - start + _HALF) & (_PERIOD - 1)) - _HALF


def ticks_add(ticks, delta):
    return (ticks + delta) & (_PERIOD - 1)


def _sleep_ns(ns):
    if ns <= 0:
        return
    if BENCH._advancing:
        BENCH.error("sleep_in_handler")
        return
    BENCH.advance_ns(int(ns))


def sleep_us(us):
    _sleep_ns(us * 1000)


def sleep_ms(ms):
    _sleep_ns(ms * 1_000_000)


def sleep(seconds):
    _sleep_ns(seconds * 1_000_000_000)


def time_ns():
    return BENCH.epoch_s * 1_000_000_000 + BENCH.now_ns


def time():
    return BENCH.epoch_s + BENCH.now_ns // 1_000_000_000


def gmtime(secs=None):
    """(year, month, mday, hour, minute, second, weekday 0=Monday, yearday), UTC."""
    if secs is None:
        secs = time()
    days, rem = divmod(int(secs), 86400)
    hour, rem = divmod(rem, 3600)
    minute, second = divmod(rem, 60)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    # civil-from-days (proleptic Gregorian), H. Hinnant's algorithm
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    mday = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    if month <= 2:
        y += 1
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    cum = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
    yday = cum[month - 1] + mday + (1 if leap and month > 2 else 0)
    return (y, month, mday, hour, minute, second, weekday, yday)


localtime = gmtime


def mktime(t):
    y, m, d, hh, mm, ss = t[0], t[1], t[2], t[3], t[4], t[5]
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + hh * 3600 + mm * 60 + ss
