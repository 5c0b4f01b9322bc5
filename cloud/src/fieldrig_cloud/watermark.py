"""Stored watermarks: what the ingesters have in InfluxDB, per rig boot and stream, told
back to the gateways (docs/mqtt.md, "Stored watermarks").

A gateway keeps each row of rig data in its spool until a watermark covers it, and
publishes again what stays uncovered; a message the broker accepted but discarded (a
Mosquitto 2.0 restart forgets the ingesters' shared subscriptions: PUBACK 0x10, or 0x00
when the gateway's own delivery witness was the only subscriber) is therefore sent again
instead of lost.

Each gateway message states the range it covers: ``prev_seq`` (the seq of the row of
its ``(rig, boot, stream)`` just before it in the gateway's spool) to its last seq; every
row the gateway holds in ``(prev_seq, last]`` is in the message, so sequence gaps (never
spooled) need no report. Once InfluxDB accepted a message, its range is a *segment*; the
watermark is the end of the chain of segments from the start (-1), the highest
contiguous stored seq.

Several ingesters share one subscription, so each sees only some segments. They share
the watermark instead: every ingester subscribes (not shared) to the retained
watermark topic and merges what the others publish, so its own segments beyond theirs
join the chain. The value only ever grows (max everywhere); a segment that never joins
(an ingester died between its write and its watermark) is healed by the gateway's
republish after its timeout. State is memory only: a restarted ingester starts from
the retained watermarks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from fieldrig_cloud.schema import TOPIC_ROOT, Chain

STREAM_NAMES = {0x10: "telemetry", 0x20: "reliable"}
MAX_PENDING = 10_000  # segments held per stream waiting for an earlier one (then dropped:
                      # the gateway republishes what stays uncovered)

BootKey = tuple[str, str, str]  # site, rig, boot


def topic(site: str, rig: str, boot: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{rig}/stored/{boot}"


def parse_topic(topic_str: str) -> BootKey | None:
    parts = topic_str.split("/")
    if len(parts) == 6 and "/".join(parts[:2]) == TOPIC_ROOT and parts[4] == "stored" \
            and all(parts[2:]):
        return parts[2], parts[3], parts[5]
    return None


@dataclass(slots=True)
class _Stream:
    through: int = -1
    pending: dict[int, int] = field(default_factory=dict)  # prev -> last

    def advance(self) -> bool:
        """Join pending segments to the chain; True if ``through`` moved."""
        start = self.through
        while True:
            joined = [p for p in self.pending if p <= self.through]
            if not joined:
                break
            for p in joined:
                self.through = max(self.through, self.pending.pop(p))
        return self.through > start


class StoredWatermarks:
    def __init__(self) -> None:
        self._boots: dict[BootKey, dict[int, _Stream]] = {}
        self.dirty: set[BootKey] = set()

    def through(self, key: BootKey, stream: int) -> int:
        st = self._boots.get(key, {}).get(stream)
        return -1 if st is None else st.through

    def stored(self, chain: Chain) -> None:
        """InfluxDB accepted a message covering ``(chain.prev, chain.last]``."""
        key = (chain.site, chain.rig, chain.boot)
        st = self._boots.setdefault(key, {}).setdefault(chain.stream, _Stream())
        if chain.last <= st.through:
            return  # a redelivery of what is already covered
        st.pending[chain.prev] = max(chain.last, st.pending.get(chain.prev, -1))
        if st.advance():
            self.dirty.add(key)
        elif len(st.pending) > MAX_PENDING:
            del st.pending[min(st.pending)]

    def seen(self, key: BootKey, raw: bytes) -> None:
        """A watermark on the topic (another ingester's, a retained one, or ours)."""
        try:
            body = json.loads(raw)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        streams = self._boots.setdefault(key, {})
        for stream, name in STREAM_NAMES.items():
            w = body.get(name)
            if type(w) is not int:
                continue
            st = streams.setdefault(stream, _Stream())
            if w > st.through:
                st.through = w
                st.advance()
                # Ours may now reach further than what was published: say so.
                if st.through > w:
                    self.dirty.add(key)

    def payload(self, key: BootKey, ingester: str) -> str:
        site, rig, boot = key
        body: dict[str, object] = {"schema": 1, "site": site, "rig": rig, "boot": boot}
        for stream, name in STREAM_NAMES.items():
            w = self.through(key, stream)
            if w >= 0:
                body[name] = w
        body.update({"ingester": ingester, "time_ns": time.time_ns()})
        return json.dumps(body, separators=(",", ":"))
