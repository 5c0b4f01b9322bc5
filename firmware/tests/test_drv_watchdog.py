# Watchdog wrapper: constructs the WDT with the validated timeout, every feed reaches it,
# feeding allocates nothing.
from fakebus import FakeWDT, runs_with_heap_locked

from fieldrig.drivers.watchdog import Watchdog


def test_arms_wdt_with_timeout():
    wd = Watchdog(FakeWDT, 2000)
    wdt = FakeWDT.instances[-1]
    assert wdt.timeout == 2000
    assert wd.timeout_ms == 2000
    assert wdt.feeds == 0


def test_feed_reaches_wdt():
    wd = Watchdog(FakeWDT, 500)
    wdt = FakeWDT.instances[-1]
    for _ in range(5):
        wd.feed()
    assert wdt.feeds == 5
    assert wd.feeds == 5
    assert 0 <= wd.ms_since_feed() < 500


def test_feed_allocates_nothing():
    wd = Watchdog(FakeWDT, 500)
    assert runs_with_heap_locked(wd.feed)
    assert FakeWDT.instances[-1].feeds == 1


def test_out_of_range_timeout_refused_before_arming():
    n = len(FakeWDT.instances)
    for bad in (0, -5, 8389, 100000):
        try:
            Watchdog(FakeWDT, bad)
        except ValueError:
            continue
        raise AssertionError("accepted timeout %r" % bad)
    assert len(FakeWDT.instances) == n


def test_feed_counter_wraps_before_bigint():
    wd = Watchdog(FakeWDT, 500)
    wd.feeds = 0x3FFFFFFF
    wd.feed()
    assert wd.feeds == 0
