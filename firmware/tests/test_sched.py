# Clock and scheduler: virtual time, deterministic task order, no catch-up bursts,
# main-loop stall detection.
from fieldrig.clock import TicksClock, VirtualClock, diff_ms, is_due
from fieldrig.sched import Scheduler


def test_virtual_clock_normalises_and_never_goes_back():
    c = VirtualClock()
    c.advance(999999)
    c.advance(2)
    assert (c.s, c.us) == (1, 1)
    c.advance(3600 * 1000000)
    assert (c.s, c.us) == (3601, 1)
    try:
        c.advance(-1)
    except ValueError:
        pass
    else:
        raise AssertionError("went backwards")
    c.sleep_until(3601, 0)  # in the past: no change
    assert (c.s, c.us) == (3601, 1)
    c.sleep_until(3700, 5)
    assert (c.s, c.us) == (3700, 5)


def test_diff_and_due_helpers():
    assert diff_ms(2, 500000, 1, 0) == 1500
    assert diff_ms(1, 0, 2, 500000) == -1500
    assert diff_ms(10 ** 9, 0, 0, 0) == 1000000000  # capped: stays a small int
    assert is_due(5, 0, 5, 0) and is_due(5, 1, 5, 0) and not is_due(4, 999999, 5, 0)


def test_tasks_run_at_their_periods_in_priority_order():
    c = VirtualClock()
    s = Scheduler(c)
    log = []
    s.every(10000, lambda: log.append(("fast", c.s, c.us)), "fast")
    s.every(25000, lambda: log.append(("slow", c.s, c.us)), "slow")
    s.run_for_ms(50)
    assert log == [("fast", 0, 0), ("slow", 0, 0), ("fast", 0, 10000), ("fast", 0, 20000),
                   ("slow", 0, 25000), ("fast", 0, 30000), ("fast", 0, 40000),
                   ("fast", 0, 50000), ("slow", 0, 50000)]


def test_same_inputs_same_schedule():
    def trace():
        c = VirtualClock()
        s = Scheduler(c)
        out = []
        s.every(7000, lambda: out.append(c.us), "a")
        s.every(3000, lambda: out.append(-c.us), "b", phase_us=1000)
        s.run_for_ms(100)
        return out

    assert trace() == trace()


def test_late_task_skips_ahead_instead_of_bursting():
    c = VirtualClock()
    s = Scheduler(c)
    runs = []
    t = s.every(10000, lambda: runs.append(c.us), "t")
    s.run_due()
    c.advance(55000)  # the loop was stuck for 5.5 periods
    s.run_due()
    s.run_due()
    assert runs == [0, 55000] and t.overruns == 1
    assert (t.due_s, t.due_us) == (0, 65000)


def test_stall_shows_in_the_max_gap():
    c = VirtualClock()
    s = Scheduler(c)
    s.every(5000, lambda: None, "t")
    s.run_for_ms(100)
    assert s.read_max_gap_ms() <= 5
    c.advance(700000)
    s.run_due()
    assert s.read_max_gap_ms() >= 700
    assert s.read_max_gap_ms() == 0  # read resets


def test_run_for_needs_a_virtual_clock_and_real_clock_works():
    c = TicksClock()
    s = Scheduler(c)
    n = []
    s.every(1000, lambda: n.append(1), "t")
    try:
        s.run_for_ms(10)
    except ValueError:
        pass
    else:
        raise AssertionError("run_for_ms ran on the real clock")
    s.run_until(lambda: len(n) >= 5)  # real time: five 1 ms periods
    assert len(n) >= 5 and c.s * 1000000 + c.us >= 3000
