"""The SQLite spool: durability across reopen, dedup watermarks, size bound policies,
witness keys, dead letters. No broker needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fieldrig_edge.spool import (
    KIND_EVENT,
    KIND_IMPEDANCE,
    KIND_TELEMETRY,
    CommitBatch,
    Row,
    Spool,
    delivery_key,
    parse_delivery_key,
)


def tele(rig: str, boot: int, seq: int, pad: int = 0) -> Row:
    return Row(KIND_TELEMETRY, rig, json.dumps({"seq": seq, "x": "y" * pad}), boot, 0x10, seq,
               "c", "r")


def batch(rows: list[Row]) -> CommitBatch:
    b = CommitBatch(rows=rows)
    for r in rows:
        if r.seq is not None and r.boot is not None and r.stream is not None:
            k = (r.rig, r.boot, r.stream)
            b.watermarks[k] = max(b.watermarks.get(k, -1), r.seq)
    return b


def test_rows_and_watermarks_survive_reopen(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", 10**9)
    res = s.commit(batch([tele("a", 7, i) for i in range(5)]))
    assert res.watermarks == {("a", 7, 0x10): 4}
    s.close()
    s = Spool(tmp_path / "s.db", 10**9)
    assert [r.seq for r in s.fetch(100)] == [0, 1, 2, 3, 4]
    assert s.load_boot("a", 7) == ({0x10: 4}, None)
    assert s.load_boot("a", 8) == ({}, None)
    assert s.stats.rows == 5 and s.stats.bytes > 0
    # A watermark never moves back (a stale writer cannot undo progress).
    s.commit(CommitBatch(watermarks={("a", 7, 0x10): 2}))
    assert s.load_boot("a", 7)[0] == {0x10: 4}


def test_commit_is_durable_against_kill_9(tmp_path: Path) -> None:
    """A child process commits and is SIGKILLed right after: the rows are there."""
    code = f"""
import os, signal, json
from fieldrig_edge.spool import Spool, CommitBatch, Row
s = Spool(__import__('pathlib').Path({str(tmp_path / 'k.db')!r}), 10**9)
rows = [Row('t', 'a', json.dumps({{'seq': i}}), 1, 16, i, 'c', 'r') for i in range(1000)]
s.commit(CommitBatch(rows=rows, watermarks={{('a', 1, 16): 999}}))
os.kill(os.getpid(), signal.SIGKILL)
"""
    p = subprocess.run([sys.executable, "-c", code], check=False)
    assert p.returncode == -9
    s = Spool(tmp_path / "k.db", 10**9)
    assert s.count() == 1000 and s.load_boot("a", 1)[0] == {0x10: 999}


def test_wal_and_full_sync(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", 10**9)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_drop_oldest_reports_exact_ranges(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", max_bytes=20_000, when_full="drop_oldest")
    ev = Row(KIND_EVENT, "a", '{"event":"x"}', 1, 0x20, 0)
    s.commit(batch([ev, *[tele("a", 1, i, pad=100) for i in range(100)]]))
    res = s.commit(batch([tele("a", 1, i, pad=100) for i in range(100, 200)]))
    assert s.stats.bytes <= 20_000
    assert res.dropped and res.dropped[0].first_seq == 0
    d = res.dropped[0]
    left = [r.seq for r in s.fetch(1000) if r.kind == KIND_TELEMETRY]
    assert d.count == d.last_seq - d.first_seq + 1 and left[0] == d.last_seq + 1
    assert left == list(range(d.last_seq + 1, 200))
    # Events are never dropped: they explain the gaps.
    assert any(r.kind == KIND_EVENT for r in s.fetch(1000))
    assert s.stats.dropped_samples == d.count + sum(x.count for x in [])


def test_refuse_new_keeps_the_watermark_so_the_rig_resends(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", max_bytes=15_000, when_full="refuse_new")
    s.commit(batch([tele("a", 1, i, pad=100) for i in range(80)]))
    res = s.commit(batch([tele("a", 1, i, pad=100) for i in range(80, 160)]))
    assert res.refused == 80 and res.watermarks == {("a", 1, 0x10): 79}
    assert s.count() == 80 and s.stats.refused_samples == 80
    ev = Row(KIND_EVENT, "a", '{"event":"x"}', 1, 0x20, 0)
    res = s.commit(batch([ev]))  # events still fit (reserve)
    assert res.watermarks == {("a", 1, 0x20): 0}


def test_delivery_keys_delete_exactly_their_rows(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", 10**9)
    s.commit(batch([tele("a", 1, i) for i in range(10)] + [tele("b", 1, i) for i in range(10)]
                   + [Row(KIND_EVENT, "a", "{}", 1, 0x20, 3)]))
    rows = [r for r in s.fetch(100) if r.rig == "a" and r.kind == KIND_TELEMETRY][2:6]
    key = delivery_key(rows)
    assert key == "t|a|1|2|5" and parse_delivery_key(key) == ("t", ("a", 1, 2, 5))
    assert s.delete_confirmed([key, key, "s|a|1|3", "junk", "t|x|y|z|w"]) == 5
    assert s.delete_confirmed([key]) == 0  # idempotent
    left = {(r.rig, r.seq) for r in s.fetch(100)}
    assert ("a", 2) not in left and ("a", 6) in left and ("b", 2) in left
    assert s.stats.rows == s.count() == 16


def test_dead_letters_are_kept(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", 10**9)
    s.commit(batch([tele("a", 1, 0)]))
    rid = s.fetch(1)[0].id
    assert s.dead_letter([rid], "t/x", "not authorized") == 1
    assert s.count() == 0 and s.dead_count() == 1


@pytest.mark.parametrize("policy", ["drop_oldest", "refuse_new"])
def test_size_accounting_matches_the_database(tmp_path: Path, policy: str) -> None:
    s = Spool(tmp_path / "s.db", max_bytes=30_000, when_full=policy)  # type: ignore[arg-type]
    for k in range(10):
        s.commit(batch([tele("a", 1, k * 50 + i, pad=50) for i in range(50)]))
        ids = [r.id for r in s.fetch(20)]
        s.delete_ids(ids[:10])
    s2 = Spool(tmp_path / "s.db", max_bytes=30_000)
    assert (s2.stats.rows, s2.stats.bytes) == (s.stats.rows, s.stats.bytes)


def imp(rig: str, boot: int, seq: int) -> Row:
    return Row(KIND_IMPEDANCE, rig, json.dumps({"seq": seq}), boot, 0x10, seq, "c", "r")


def test_impedance_rows_share_the_seq_space_but_have_their_own_witness_keys(
        tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", 10**9)
    rows = [imp("a", 7, i) if i % 4 == 3 else tele("a", 7, i) for i in range(8)]
    s.commit(batch(rows))
    t_rows = [r for r in s.fetch(100) if r.kind == KIND_TELEMETRY]
    z_rows = [r for r in s.fetch(100) if r.kind == KIND_IMPEDANCE]
    assert delivery_key(z_rows) == "z|a|7|3|7"
    assert parse_delivery_key("z|a|7|3|7") == ("z", ("a", 7, 3, 7))
    # A telemetry message's key covers seq 0..6 but deletes only samples.
    assert s.delete_confirmed([delivery_key(t_rows)]) == 6
    assert [(r.kind, r.seq) for r in s.fetch(100)] == [("z", 3), ("z", 7)]
    assert s.delete_confirmed(["z|a|7|0|7"]) == 2 and s.stats.rows == 0


def test_refuse_new_refuses_impedance_points_with_the_samples(tmp_path: Path) -> None:
    # Both are the telemetry stream: spooling one without its watermark would spool it
    # twice when the rig resends.
    s = Spool(tmp_path / "s.db", 200, when_full="refuse_new")
    res = s.commit(batch([tele("a", 7, 0, pad=300), imp("a", 7, 1)]))
    assert res.refused == 2 and s.count() == 0 and res.watermarks == {}
