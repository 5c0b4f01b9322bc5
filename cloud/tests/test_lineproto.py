"""The hand-written line-protocol encoder against influxdb-client's ``Point`` (the
reference implementation) and against a real InfluxDB (round trip)."""

from __future__ import annotations

import math
import random

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from fieldrig_cloud import lineproto
from fieldrig_hil.services import InfluxDB

# Names as InfluxDB accepts them: non-empty, no trailing backslash (InfluxDB keeps
# backslashes in names literally, so a trailing one would escape the separator).
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                min_size=1, max_size=20).filter(lambda s: not s.endswith("\\"))
str_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@given(measurement=names, tags=st.dictionaries(names, names, max_size=4),
       ints=st.dictionaries(names, st.integers(-(2**63), 2**63 - 1), max_size=3),
       strs=st.dictionaries(names, str_values, max_size=3),
       floats=st.dictionaries(names, st.floats(allow_nan=False, allow_infinity=False),
                              max_size=3),
       t=st.integers(1, 2**62))
def test_same_bytes_as_influxdb_client_point(measurement: str, tags: dict[str, str],
                                             ints: dict[str, int], strs: dict[str, str],
                                             floats: dict[str, float], t: int) -> None:
    fields: dict[str, lineproto.FieldValue] = {**ints, **strs, **floats}
    if not fields:
        fields = {"v": 1}
    p = Point(measurement)
    for k in sorted(tags):
        p = p.tag(k, tags[k])
    for k, v in fields.items():
        p = p.field(k, v)
    expected = p.time(t, WritePrecision.NS).to_line_protocol()
    # Point orders fields by key; ours keeps the caller's order.
    ours = lineproto.point(measurement, tags, dict(sorted(fields.items())), t)
    assert ours == expected


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_exactly(v: float) -> None:
    assert float(lineproto.format_value(v)) == v


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(bad: float) -> None:
    with pytest.raises(lineproto.LineProtocolError):
        lineproto.format_value(bad)


def test_bool_is_not_an_integer() -> None:
    assert lineproto.format_value(True) == "true"
    assert lineproto.format_value(3) == "3i"


def test_point_without_fields_is_refused() -> None:
    with pytest.raises(lineproto.LineProtocolError):
        lineproto.point("m", {"a": "b"}, {}, 1)


def test_empty_tag_values_are_left_out() -> None:
    assert lineproto.tag_prefix("m", {"a": "", "b": "x"}) == "m,b=x"


def test_round_trip_through_influxdb(influxdb: InfluxDB) -> None:
    # Awkward but legal strings: separators, quotes, backslashes, unicode, newlines.
    rng = random.Random(1234)
    alphabet = list(' ,="\\\'abcXYZ019_-.µΩ°€🔋')

    def word(n: int, extra: str = "") -> str:
        return "".join(rng.choice(alphabet + list(extra)) for _ in range(n)).rstrip("\\") or "x"

    rows = []
    for i in range(200):
        tag = word(rng.randint(1, 12))
        text = word(rng.randint(0, 30), "\n\t")
        fv = rng.uniform(-1e9, 1e9) * 10 ** rng.randint(-20, 5)
        rows.append((i, tag, text, fv))
    t0 = 1_700_000_000_000_000_000
    lines = [lineproto.point("rt", {"tag": tag}, {"i": i, "text": text, "f": fv}, t0 + i)
             for i, tag, text, fv in rows]
    httpx.post(f"{influxdb.url}/query", params={"q": "CREATE DATABASE rt"}).raise_for_status()
    r = httpx.post(f"{influxdb.url}/write", params={"db": "rt", "precision": "ns"},
                   content="\n".join(lines).encode())
    assert r.status_code == 204, r.text
    got = influxdb.query('SELECT "i", "tag", "text", "f" FROM "rt"', database="rt")
    values = got[0]["values"]  # type: ignore[index]
    assert len(values) == len(rows)
    for (t, i, tag, text, f), (ei, etag, etext, ef) in zip(values, rows, strict=True):
        assert (t - t0, i, tag, text, f) == (ei, ei, etag, etext, ef)
