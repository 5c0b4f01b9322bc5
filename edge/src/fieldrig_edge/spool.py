"""Store-and-forward spool: every outbound message is committed here before a rig is
acknowledged, and leaves only once the broker has it (docs/edge.md, "Spool").

SQLite in WAL mode with ``synchronous=FULL``: a commit returns only after the WAL is
fsynced. ``NORMAL`` would survive ``kill -9`` of the gateway (the WAL sits in the page
cache) but not a power cut of the bench PC, and the gateway tells the rig to free a
sample the moment the commit returns; so a commit must be durable, and group commit
(one transaction every ``commit_interval``) keeps the fsync rate low.

Dedup state lives in the same transactions as the rows: ``streams`` holds, per
(rig, boot, stream), the last sequence number spooled; the gateway accepts only the
next one (go-back-N), so a retransmission or a replay after a restart is recognised
by a comparison, and a crash can never separate a row from its watermark.

All methods run on one thread (``AsyncSpool`` owns a single-worker executor), so the
event loop never blocks on disk and SQLite sees a single writer.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

KIND_TELEMETRY = "t"   # one sample; batched into telemetry messages when published
KIND_IMPEDANCE = "z"   # one impedance point (telemetry stream); batched like samples
KIND_EVENT = "e"       # a rig EVENT (reliable stream)
KIND_EIS = "x"         # an EIS spectrum or sweep chunk (reliable stream)
KIND_RESPONSE = "r"    # a command response (from a rig REPLY or a gateway refusal)
KIND_GATEWAY = "g"     # an event the gateway itself reports (gaps, spool drops, boots)
KIND_ACTUATOR = "a"    # a rig's actuator state, from the gateway's status poll

# Rows the ingesters confirm (stored watermark, docs/mqtt.md): the rig's data, per stream.
STORED_KINDS = {0x10: (KIND_TELEMETRY, KIND_IMPEDANCE), 0x20: (KIND_EVENT, KIND_EIS)}

ROW_OVERHEAD = 64      # bytes counted per row on top of its body (keys, index entries)
BOOTS_KEPT = 16        # dedup state kept per rig: the newest boots
DEAD_KEPT = 10_000     # refused messages kept for inspection (newest)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: witness keys may name an id
    kind TEXT NOT NULL,
    rig TEXT NOT NULL,
    boot INTEGER,
    stream INTEGER,
    seq INTEGER,
    cell TEXT,
    run TEXT,
    topic TEXT,
    props TEXT,
    body TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    published_ns INTEGER  -- broker has it; kept until the stored watermark covers it
);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox (rig, boot, stream, seq);
CREATE TABLE IF NOT EXISTS streams (
    rig TEXT NOT NULL, boot INTEGER NOT NULL, stream INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (rig, boot, stream)
);
CREATE TABLE IF NOT EXISTS dead (
    -- messages the broker refused for good (e.g. ACL): kept for an operator, reported
    id INTEGER PRIMARY KEY, kind TEXT, rig TEXT, boot INTEGER, stream INTEGER, seq INTEGER,
    topic TEXT, props TEXT, body TEXT, created_ns INTEGER, reason TEXT, dead_ns INTEGER
);
CREATE TABLE IF NOT EXISTS boots (
    rig TEXT NOT NULL, boot INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL,
    clock TEXT,
    PRIMARY KEY (rig, boot)
);
"""


@dataclass(frozen=True, slots=True)
class Row:
    kind: str
    rig: str
    body: str
    boot: int | None = None
    stream: int | None = None
    seq: int | None = None
    cell: str | None = None
    run: str | None = None
    topic: str | None = None
    props: str | None = None
    id: int = 0
    created_ns: int = 0
    # Set by fetch for rows the ingesters confirm: the seq of the row of the same
    # (rig, boot, stream) just before this one still in the spool (-1: none). A message
    # states "every row of (prev, last] is in me": gaps need no report to be skipped.
    prev: int | None = None
    published_ns: int | None = None

    @property
    def size(self) -> int:
        return len(self.body) + len(self.topic or "") + len(self.props or "") + ROW_OVERHEAD


@dataclass(slots=True)
class CommitBatch:
    rows: list[Row] = field(default_factory=list)
    # (rig, boot, stream) -> last seq accepted (contiguous) by the session
    watermarks: dict[tuple[str, int, int], int] = field(default_factory=dict)
    # (rig, boot) -> clock mapping state (timesync.ClockMap.state())
    clocks: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rows or self.watermarks or self.clocks)


@dataclass(frozen=True, slots=True)
class DropReport:
    """Telemetry removed from the spool to respect its bound (policy drop_oldest)."""

    rig: str
    boot: int
    first_seq: int
    last_seq: int
    count: int


@dataclass(slots=True)
class CommitResult:
    # Durable watermark per (rig, boot, stream) after this commit.
    watermarks: dict[tuple[str, int, int], int]
    dropped: list[DropReport] = field(default_factory=list)
    refused: int = 0  # telemetry rows refused (policy refuse_new); not acked to the rig


@dataclass(slots=True)
class SpoolStats:
    rows: int = 0
    bytes: int = 0
    oldest_created_ns: int = 0
    dropped_samples: int = 0
    refused_samples: int = 0


class SpoolFull(RuntimeError):
    """Not raised for telemetry (policy decides); kept for callers that must know."""


class Spool:
    def __init__(self, path: Path, max_bytes: int,
                 when_full: Literal["drop_oldest", "refuse_new"] = "drop_oldest") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=OFF")
        self.db.executescript(SCHEMA)
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(outbox)")}
        if "published_ns" not in cols:  # a spool from before stored watermarks
            self.db.execute("ALTER TABLE outbox ADD COLUMN published_ns INTEGER")
        r = self.db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(length(body) + COALESCE(length(topic), 0) "
            f"+ COALESCE(length(props), 0) + {ROW_OVERHEAD}), 0) FROM outbox").fetchone()
        self.stats = SpoolStats(rows=int(r[0]), bytes=int(r[1]))

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ dedup state

    def load_boot(self, rig: str, boot: int) -> tuple[dict[int, int], dict[str, Any] | None]:
        """(last spooled seq per stream, clock state) of a (rig, boot); empty if new."""
        marks = {int(s): int(q) for s, q in self.db.execute(
            "SELECT stream, last_seq FROM streams WHERE rig=? AND boot=?", (rig, boot))}
        row = self.db.execute("SELECT clock FROM boots WHERE rig=? AND boot=?",
                              (rig, boot)).fetchone()
        clock = json.loads(row[0]) if row and row[0] else None
        return marks, clock

    def known_boot(self, rig: str, boot: int) -> bool:
        return self.db.execute("SELECT 1 FROM boots WHERE rig=? AND boot=?",
                               (rig, boot)).fetchone() is not None

    # ---------------------------------------------------------------------- writing

    def commit(self, batch: CommitBatch) -> CommitResult:
        now = time.time_ns()
        refused = 0
        rows = batch.rows
        marks = dict(batch.watermarks)
        if self.when_full == "refuse_new":
            tele_bytes = sum(r.size for r in rows if r.stream == 0x10)
            if tele_bytes and self.stats.bytes + tele_bytes > self.max_bytes:
                # Keep the rig's copy: nothing of this batch's telemetry stream (samples
                # and impedance points) is spooled or acked, and the watermark stays
                # where it was (the rig retransmits all of it).
                refused = sum(1 for r in rows if r.stream == 0x10)
                rows = [r for r in rows if r.stream != 0x10]
                for key in [k for k in marks if k[2] == 0x10]:
                    del marks[key]
        added = 0
        dropped: list[DropReport] = []
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                db.executemany(
                    "INSERT INTO outbox (kind, rig, boot, stream, seq, cell, run, topic, props,"
                    " body, created_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [(r.kind, r.rig, r.boot, r.stream, r.seq, r.cell, r.run, r.topic,
                      r.props, r.body, r.created_ns or now) for r in rows])
                added = sum(r.size for r in rows)
            for (rig, boot, stream), seq in marks.items():
                db.execute(
                    "INSERT INTO streams (rig, boot, stream, last_seq) VALUES (?,?,?,?) "
                    "ON CONFLICT (rig, boot, stream) DO UPDATE SET last_seq=excluded.last_seq "
                    "WHERE excluded.last_seq > last_seq", (rig, boot, stream, seq))
            new_boots = set()
            for (rig, boot), clock in batch.clocks.items():
                cur = db.execute(
                    "INSERT INTO boots (rig, boot, first_seen_ns, clock) VALUES (?,?,?,?) "
                    "ON CONFLICT (rig, boot) DO UPDATE SET clock=excluded.clock",
                    (rig, boot, now, json.dumps(clock)))
                if cur.rowcount:
                    new_boots.add(rig)
            for rig in new_boots:
                self._prune_boots(rig)
            if self.when_full == "drop_oldest" and self.stats.bytes + added > self.max_bytes:
                dropped, freed = self._drop_oldest(self.stats.bytes + added - self.max_bytes)
                added -= freed
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.stats.rows += len(rows) - sum(d.count for d in dropped)
        self.stats.bytes += added
        self.stats.dropped_samples += sum(d.count for d in dropped)
        self.stats.refused_samples += refused
        durable: dict[tuple[str, int, int], int] = {}
        for key in batch.watermarks:
            r = db.execute("SELECT last_seq FROM streams WHERE rig=? AND boot=? AND stream=?",
                           key).fetchone()
            if r is not None:
                durable[key] = int(r[0])
        return CommitResult(durable, dropped, refused)

    def _prune_boots(self, rig: str) -> None:
        old = [int(b) for (b,) in self.db.execute(
            "SELECT boot FROM boots WHERE rig=? ORDER BY first_seen_ns DESC LIMIT -1 OFFSET ?",
            (rig, BOOTS_KEPT))]
        for b in old:
            # Only boots with nothing left to send: a boot still in the outbox keeps
            # its dedup state, whatever its age.
            if self.db.execute("SELECT 1 FROM outbox WHERE rig=? AND boot=? LIMIT 1",
                               (rig, b)).fetchone():
                continue
            self.db.execute("DELETE FROM boots WHERE rig=? AND boot=?", (rig, b))
            self.db.execute("DELETE FROM streams WHERE rig=? AND boot=?", (rig, b))

    def _drop_oldest(self, excess: int) -> tuple[list[DropReport], int]:
        """Delete the oldest telemetry rows until ``excess`` bytes are freed (inside the
        caller's transaction). Events, replies and gap reports are never dropped: they
        are small and they are what explains a gap."""
        freed = 0
        victims: list[tuple[int, str, int, int, int]] = []
        cur = self.db.execute(
            "SELECT id, rig, boot, seq, length(body) + COALESCE(length(topic), 0) + "
            f"COALESCE(length(props), 0) + {ROW_OVERHEAD} FROM outbox WHERE kind=? ORDER BY id",
            (KIND_TELEMETRY,))
        for rid, rig, boot, seq, size in cur:
            if freed >= excess:
                break
            victims.append((int(rid), str(rig), int(boot), int(seq), int(size)))
            freed += int(size)
        cur.close()
        if not victims:
            return [], 0
        self.db.executemany("DELETE FROM outbox WHERE id=?", [(v[0],) for v in victims])
        ranges: dict[tuple[str, int], list[int]] = {}
        for _id, rig, boot, seq, _size in victims:
            ranges.setdefault((rig, boot), []).append(seq)
        reports = []
        for (rig, boot), seqs in ranges.items():
            # Rows of one (rig, boot) are spooled in seq order, so the oldest ones form
            # a contiguous run, apart from gaps that were already reported.
            reports.append(DropReport(rig, boot, min(seqs), max(seqs), len(seqs)))
        return reports, freed

    # ---------------------------------------------------------------------- reading

    def fetch(self, limit: int, republish_before_ns: int | None = None) -> list[Row]:
        """The oldest rows to publish: never published, or published before
        ``republish_before_ns`` and still not confirmed stored (None: never again)."""
        cutoff = -1 if republish_before_ns is None else republish_before_ns
        cur = self.db.execute(
            "SELECT id, kind, rig, boot, stream, seq, cell, run, topic, props, body, created_ns,"
            " published_ns, CASE WHEN kind IN ('t', 'z', 'e', 'x') AND seq IS NOT NULL THEN"
            "  COALESCE((SELECT MAX(p.seq) FROM outbox p WHERE p.rig = o.rig AND"
            "   p.boot = o.boot AND p.stream = o.stream AND p.seq < o.seq AND"
            "   p.kind IN ('t', 'z', 'e', 'x')), -1) END"
            " FROM outbox o WHERE published_ns IS NULL OR published_ns < ?"
            " ORDER BY id LIMIT ?", (cutoff, limit))
        return [Row(id=r[0], kind=r[1], rig=r[2], boot=r[3], stream=r[4], seq=r[5],
                    cell=r[6], run=r[7], topic=r[8], props=r[9], body=r[10], created_ns=r[11],
                    published_ns=r[12], prev=r[13])
                for r in cur]

    def mark_published(self, ids: Sequence[int], now_ns: int | None = None) -> None:
        """The broker has these rows; they stay until the stored watermark covers them."""
        now = now_ns or time.time_ns()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("UPDATE outbox SET published_ns=? WHERE id=?",
                                [(now, i) for i in ids])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def mark_republished(self, next_try_ns: Sequence[tuple[int, int]]) -> None:
        """Republished rows: (id, time before which not to republish them again)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("UPDATE outbox SET published_ns=? WHERE id=?",
                                [(t, i) for i, t in next_try_ns])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def delete_stored(self, rig: str, boot: int, through: dict[int, int]) -> int:
        """Delete the rig data of (rig, boot) the ingesters have in InfluxDB:
        ``through`` = stream -> highest contiguous stored seq (stored watermark)."""
        stmts: list[tuple[str, tuple[Any, ...]]] = []
        for stream, seq in through.items():
            kinds = STORED_KINDS.get(stream)
            if kinds is None:
                continue
            stmts.append(("DELETE FROM outbox WHERE rig=? AND boot=? AND stream=? AND seq<=? "
                          f"AND kind IN ('{kinds[0]}', '{kinds[1]}') RETURNING " + _SIZE,
                          (rig, boot, stream, seq)))
        return self._delete(stmts)

    def awaiting_stored(self) -> int:
        return int(self.db.execute(
            "SELECT COUNT(*) FROM outbox WHERE published_ns IS NOT NULL").fetchone()[0])

    def oldest_created_ns(self) -> int:
        r = self.db.execute("SELECT created_ns FROM outbox ORDER BY id LIMIT 1").fetchone()
        return int(r[0]) if r else 0

    # --------------------------------------------------------------------- deleting

    def delete_ids(self, ids: Sequence[int]) -> int:
        return self._delete([("DELETE FROM outbox WHERE id=? RETURNING " + _SIZE, (i,))
                             for i in ids])

    def delete_confirmed(self, keys: Iterable[str], keep_stored_kinds: bool = False) -> int:
        """Delete rows named by witness keys (see ``delivery_key``); unknown keys and
        rows already gone are ignored, so a key may be applied any number of times.
        With ``keep_stored_kinds`` the rig data is only marked published (it waits for
        the stored watermark); the rest is deleted."""
        stmts: list[tuple[str, tuple[Any, ...]]] = []
        keys = list(keys)
        if keep_stored_kinds:
            now = time.time_ns()
            kept: list[str] = []
            for key in keys:
                parsed = parse_delivery_key(key)
                if parsed is None:
                    continue
                kind, a = parsed
                if kind in (KIND_TELEMETRY, KIND_IMPEDANCE):
                    stmts.append(("UPDATE outbox SET published_ns=? WHERE rig=? AND boot=? AND "
                                  f"stream=16 AND kind='{kind}' AND seq BETWEEN ? AND ? AND "
                                  "published_ns IS NULL RETURNING 0", (now, *a)))
                elif kind == "s":
                    stmts.append(("UPDATE outbox SET published_ns=? WHERE rig=? AND boot=? AND "
                                  "stream=32 AND seq=? AND kind IN ('e', 'x') AND "
                                  "published_ns IS NULL RETURNING 0", (now, *a)))
                    kept.append(key)
                else:
                    kept.append(key)
            marked = self._delete(stmts, counts=False)
            keys = kept
            stmts = []
        else:
            marked = 0
        for key in keys:
            parsed = parse_delivery_key(key)
            if parsed is None:
                continue
            kind, a = parsed
            if kind in (KIND_TELEMETRY, KIND_IMPEDANCE):
                stmts.append(("DELETE FROM outbox WHERE rig=? AND boot=? AND stream=16 AND "
                              f"kind='{kind}' AND seq BETWEEN ? AND ? RETURNING " + _SIZE, a))
            elif kind == "s":
                extra = " AND kind NOT IN ('e', 'x')" if keep_stored_kinds else ""
                stmts.append(("DELETE FROM outbox WHERE rig=? AND boot=? AND stream=32 AND "
                              "seq=?" + extra + " RETURNING " + _SIZE, a))
            else:
                stmts.append(("DELETE FROM outbox WHERE id=? RETURNING " + _SIZE, a))
        return marked + self._delete(stmts)

    def _delete(self, stmts: list[tuple[str, tuple[Any, ...]]], counts: bool = True) -> int:
        """Run DELETE ... RETURNING size statements in one transaction; with ``counts``
        off, any statements returning one row per row touched (nothing leaves)."""
        if not stmts:
            return 0
        n = size = 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in stmts:
                for (s,) in self.db.execute(sql, args).fetchall():
                    n += 1
                    size += int(s)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if counts:
            self.stats.rows -= n
            self.stats.bytes -= size
        return n

    def dead_letter(self, ids: Sequence[int], topic: str, reason: str) -> int:
        """Move rows the broker refused for good out of the outbox, keeping them."""
        now = time.time_ns()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for i in ids:
                self.db.execute(
                    "INSERT OR IGNORE INTO dead SELECT id, kind, rig, boot, stream, seq, ?, props,"
                    " body, created_ns, ?, ? FROM outbox WHERE id=?", (topic, reason, now, i))
            self.db.execute(
                "DELETE FROM dead WHERE id NOT IN (SELECT id FROM dead ORDER BY id DESC LIMIT ?)",
                (DEAD_KEPT,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self.delete_ids(ids)

    def dead_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM dead").fetchone()[0])

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


_SIZE = (f"length(body) + COALESCE(length(topic), 0) + COALESCE(length(props), 0) "
         f"+ {ROW_OVERHEAD}")


def delivery_key(rows: Sequence[Row]) -> str:
    """The witness key of one published message: names exactly the rows it carries.

    telemetry ``t|rig|boot|first|last`` (impedance points ``z|...``, the same
    seq space: a message of one kind never deletes rows of the other); a rig
    reliable-stream message
    ``s|rig|boot|seq``; anything else ``g|id``. Content-based, so a message rebuilt
    with different batch boundaries after a restart is still recognised.
    """
    r = rows[0]
    if r.kind in (KIND_TELEMETRY, KIND_IMPEDANCE):
        assert r.boot is not None and rows[-1].seq is not None
        return f"{r.kind}|{r.rig}|{r.boot}|{r.seq}|{rows[-1].seq}"
    if r.stream == 0x20 and r.seq is not None and r.boot is not None:
        return f"s|{r.rig}|{r.boot}|{r.seq}"
    return f"g|{r.id}"


def parse_delivery_key(key: str) -> tuple[str, tuple[Any, ...]] | None:
    parts = key.split("|")
    try:
        if parts[0] in (KIND_TELEMETRY, KIND_IMPEDANCE) and len(parts) == 5:
            return parts[0], (parts[1], int(parts[2]), int(parts[3]), int(parts[4]))
        if parts[0] == "s" and len(parts) == 4:
            return "s", (parts[1], int(parts[2]), int(parts[3]))
        if parts[0] == "g" and len(parts) == 2:
            return "g", (int(parts[1]),)
    except ValueError:
        return None
    return None


class AsyncSpool:
    """The spool on its own thread: every call is serialised through one worker."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @property
    def stats(self) -> SpoolStats:
        return self.spool.stats

    async def close(self) -> None:
        await self.call(self.spool.close)
        self._pool.shutdown(wait=True)
