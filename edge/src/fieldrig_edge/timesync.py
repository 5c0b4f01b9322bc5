"""Rig uptime -> UTC (docs/edge.md, "Time"; link: SYNC / SYNC_REPLY in docs/link.md).

Each SYNC exchange gives (t_send, rig uptime, t_recv) on the gateway's UTC clock. The
rig read its clock somewhere between send and receive, so the offset
``theta = UTC - uptime`` lies within ``midpoint - uptime ± rtt/2``. Like an NTP clock
filter, the estimate trusts the exchanges with the smallest round trip, and fits the
rig crystal's drift (tens of ppm) by least squares over a sliding window.

Stored timestamps must be monotonic per rig and stay keys in InfluxDB (a repeated
time would overwrite a sample), so the mapping that is *applied* never jumps: a new
estimate is approached by slewing at most ``MAX_SLEW`` (500 ppm, like ntpd), and a
final guard keeps every timestamp strictly after the previous one. Only an error
larger than ``STEP_NS`` (the gateway's own clock was stepped) is stepped, forwards.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

WINDOW = 32               # exchanges kept for the fit
MAX_DRIFT = 1e-3          # fit clamp: a crystal is within ±100 ppm; more is a bad fit
MAX_SLEW = 5e-4           # at most 0.5 ms per second of uptime of correction
STEP_NS = 2_000_000_000   # errors beyond 2 s are stepped instead of slewed
MIN_FIT_SPAN_NS = 10_000_000_000  # fit drift only over >= 10 s of uptime


@dataclass(frozen=True, slots=True)
class Line:
    """theta(u) = theta0 + drift * (u - u0), plus a bounded correction being slewed in."""

    u0: int
    theta0: int
    drift: float = 0.0
    corr_ns: int = 0       # total correction to slew in, from u0 on
    corr_rate: float = 0.0  # |slope| of the correction, <= MAX_SLEW

    def theta(self, u: int) -> int:
        base = self.theta0 + round(self.drift * (u - self.u0))
        if u <= self.u0 or not self.corr_ns:
            return base
        done = min(abs(self.corr_ns), round(self.corr_rate * (u - self.u0)))
        return base + (done if self.corr_ns > 0 else -done)

    def to_dict(self) -> dict[str, Any]:
        return {"u0": self.u0, "theta0": self.theta0, "drift": self.drift,
                "corr_ns": self.corr_ns, "corr_rate": self.corr_rate}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Line:
        return cls(int(d["u0"]), int(d["theta0"]), float(d["drift"]), int(d["corr_ns"]),
                   float(d["corr_rate"]))


@dataclass(frozen=True, slots=True)
class Exchange:
    t_send: int
    uptime: int
    t_recv: int

    @property
    def rtt(self) -> int:
        return self.t_recv - self.t_send

    @property
    def theta(self) -> float:
        return (self.t_send + self.t_recv) / 2 - self.uptime


class ClockMap:
    """Per (rig, boot) mapping from uptime (ns) to UTC (ns)."""

    def __init__(self, applied: Line | None = None, last_time_ns: int = 0) -> None:
        self.exchanges: deque[Exchange] = deque(maxlen=WINDOW)
        self.applied = applied
        self.target: Line | None = None
        self.last_time_ns = last_time_ns
        # "sync": from SYNC exchanges; "receive": fallback from sample arrival (legacy
        # rigs without SYNC); "restored": persisted mapping of this boot, until a sync.
        self.source = "restored" if applied is not None else "none"
        self.best_rtt_ns = -1
        self.steps = 0
        self.clamped = 0

    @property
    def ready(self) -> bool:
        return self.applied is not None

    def add_exchange(self, t_send: int, uptime: int, t_recv: int) -> None:
        if t_recv < t_send:
            return  # the gateway's clock stepped back mid-exchange: useless
        ex = Exchange(t_send, uptime, t_recv)
        if self.applied is not None and abs(ex.theta - self.applied.theta(uptime)) > STEP_NS:
            # The gateway's clock was stepped (or the rig's uptime is not what we think):
            # the older exchanges describe another timeline.
            self.exchanges.clear()
        self.exchanges.append(ex)
        self.target = self._estimate()
        self.best_rtt_ns = min(e.rtt for e in self.exchanges)
        self._steer(uptime)
        self.source = "sync"

    def fallback_from_receive(self, uptime: int, t_recv: int) -> None:
        """No SYNC answer: take the first sample's arrival as the mapping (error unknown,
        at least the transit delay)."""
        if self.applied is None:
            self.applied = Line(uptime, t_recv - uptime)
            self.source = "receive"

    def _estimate(self) -> Line:
        ex = list(self.exchanges)
        best_rtt = min(e.rtt for e in ex)
        # Exchanges whose round trip is close to the best carry little queueing noise;
        # of those, the newest anchors the offset (it has the least drift to bridge).
        good = [e for e in ex if e.rtt <= 2 * best_rtt + 200_000]
        best = good[-1]
        drift = 0.0
        span = max(e.uptime for e in good) - min(e.uptime for e in good)
        if len(good) >= 3 and span >= MIN_FIT_SPAN_NS:
            mu = sum(e.uptime for e in good) / len(good)
            mt = sum(e.theta for e in good) / len(good)
            sxx = sum((e.uptime - mu) ** 2 for e in good)
            sxy = sum((e.uptime - mu) * (e.theta - mt) for e in good)
            drift = max(-MAX_DRIFT, min(MAX_DRIFT, sxy / sxx))
            return Line(round(mu), round(mt), drift)
        return Line(best.uptime, round(best.theta), drift)

    def _steer(self, u_now: int) -> None:
        target = self.target
        assert target is not None
        cur = self.applied
        if cur is None or self.source in ("receive", "none"):
            # First real sync, or replacing the receive-time guess: a guess may be off
            # by its transit delay, so take the measured mapping directly.
            self.applied = Line(u_now, target.theta(u_now), target.drift)
            return
        err = target.theta(u_now) - cur.theta(u_now)
        if abs(err) > STEP_NS:
            self.steps += 1
            self.applied = Line(u_now, target.theta(u_now), target.drift)
            return
        # Continuous at u_now; follow the target's drift and slew the error away.
        self.applied = Line(u_now, cur.theta(u_now), target.drift, err, MAX_SLEW)

    def to_utc(self, uptime: int) -> int:
        """Map one sample's uptime; strictly increasing across calls (per boot)."""
        assert self.applied is not None
        t = uptime + self.applied.theta(uptime)
        if t <= self.last_time_ns:
            # Only reachable through a step, a restored mapping or samples closer than the
            # mapping's jitter; counted so that health shows it.
            self.clamped += 1
            t = self.last_time_ns + 1
        self.last_time_ns = t
        return t

    def peek_utc(self, uptime: int) -> int:
        """The applied mapping at ``uptime``, without the per-boot ordering of samples
        (for measurements keyed otherwise, e.g. impedance points: docs/edge.md)."""
        assert self.applied is not None
        return uptime + self.applied.theta(uptime)

    def error_bound_ns(self, uptime: int) -> int:
        """Stated error of the applied mapping at ``uptime`` (docs/edge.md, "Time"):
        half the best round trip in the window plus the correction still being slewed
        in; -1 when unknown (no SYNC answered)."""
        if self.applied is None or self.target is None or self.best_rtt_ns < 0:
            return -1
        pending = abs(self.target.theta(uptime) - self.applied.theta(uptime))
        return self.best_rtt_ns // 2 + pending

    def state(self) -> dict[str, Any]:
        return {"applied": None if self.applied is None else self.applied.to_dict(),
                "last_time_ns": self.last_time_ns, "source": self.source}

    @classmethod
    def restore(cls, state: dict[str, Any] | None) -> ClockMap:
        if not state or state.get("applied") is None:
            return cls(last_time_ns=int(state.get("last_time_ns", 0)) if state else 0)
        m = cls(Line.from_dict(state["applied"]), int(state["last_time_ns"]))
        if state.get("source") == "receive":
            m.source = "receive"
        return m
