"""Rig uptime -> UTC: offset and drift from SYNC exchanges, slewing, monotonic output,
stated error bound."""

from __future__ import annotations

import itertools
import random

from fieldrig_edge.timesync import MAX_SLEW, ClockMap, Line

S = 1_000_000_000


def simulate(drift_ppm: float, seconds: int, seed: int = 1) -> tuple[ClockMap, list[tuple[
        int, int, int]]]:
    """A rig whose crystal runs drift_ppm fast, booted 1000 s after the epoch origin; SYNC
    every 5 s with random asymmetric delays of 0.1..3 ms each way."""
    rnd = random.Random(seed)
    boot_utc = 1_700_000_000 * S
    m = ClockMap()
    out = []
    for k in range(seconds * 10):  # samples at 10 Hz
        true = boot_utc + k * S // 10
        uptime = round((true - boot_utc) * (1 + drift_ppm * 1e-6))
        if k % 50 == 0:
            up_d = rnd.randint(100_000, 3_000_000)
            down_d = rnd.randint(100_000, 3_000_000)
            m.add_exchange(true - up_d, uptime, true + down_d)
        out.append((true, uptime, m.to_utc(uptime)))
    return m, out


def test_offset_and_drift_are_tracked_within_the_stated_bound() -> None:
    m, out = simulate(drift_ppm=60.0, seconds=600)
    late = out[len(out) // 2:]
    worst = max(abs(t_map - true) for true, _u, t_map in late)
    # Bound: half the best round trip in the window plus what is still being slewed in.
    assert worst <= m.error_bound_ns(late[-1][1]) + 1_000_000
    assert worst < 2_000_000
    # theta = UTC - uptime falls by ~60 us per second of a rig running 60 ppm fast.
    assert abs(m.applied.drift * 1e6 + 60.0) < 5  # type: ignore[union-attr]


def test_timestamps_are_strictly_increasing_even_when_the_estimate_moves_back() -> None:
    m = ClockMap()
    m.add_exchange(10 * S, 1 * S, 10 * S + 2_000_000)
    ts = [m.to_utc(1 * S + k * 1_000_000) for k in range(100)]
    # A new exchange says the rig clock is 30 ms ahead of what we assumed.
    m.add_exchange(11 * S, int(1.1 * S) + 30_000_000, 11 * S + 100_000)
    ts += [m.to_utc(int(1.1 * S) + k * 1_000_000) for k in range(100)]
    assert all(b > a for a, b in itertools.pairwise(ts))


def test_corrections_are_slewed_not_stepped() -> None:
    m = ClockMap()
    m.add_exchange(100 * S, 10 * S, 100 * S)
    before = m.to_utc(10 * S)
    m.add_exchange(101 * S, 11 * S - 50_000_000, 101 * S)  # 50 ms correction
    after = m.to_utc(11 * S)
    # Within one second of uptime at most MAX_SLEW of it is applied.
    assert abs((after - before) - S) <= MAX_SLEW * S + 1


def test_big_error_is_stepped_and_counted() -> None:
    m = ClockMap()
    m.add_exchange(100 * S, 10 * S, 100 * S)
    m.add_exchange(200 * S, 11 * S, 200 * S)  # the gateway's clock jumped 99 s
    assert m.steps == 1 and m.to_utc(11 * S) == 200 * S


def test_restore_continues_the_timeline() -> None:
    m = ClockMap()
    m.add_exchange(100 * S, 10 * S, 100 * S + 1_000_000)
    t = m.to_utc(12 * S)
    r = ClockMap.restore(m.state())
    assert r.ready and r.to_utc(12 * S) == t + 1  # same mapping, strictly after
    assert Line.from_dict(m.applied.to_dict()) == m.applied  # type: ignore[union-attr]


def test_receive_fallback_without_sync() -> None:
    m = ClockMap()
    m.fallback_from_receive(5 * S, 50 * S)
    assert m.source == "receive" and m.to_utc(6 * S) == 51 * S
    assert m.error_bound_ns(6 * S) == -1
