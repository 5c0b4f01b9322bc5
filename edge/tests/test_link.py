"""The edge's link codec against the shared golden vectors, plus property tests:
any frame round-trips, and corrupted streams never yield a packet that was not sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldrig_edge import link

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "docs/contracts/link_v1_vectors.json").read_text())


@pytest.mark.parametrize("v", VECTORS["frames"], ids=lambda v: v["name"])
def test_golden_frame_encodes_and_decodes(v: dict[str, object]) -> None:
    body = bytes.fromhex(str(v["body_hex"]))
    wire = bytes.fromhex(str(v["wire_hex"]))
    assert link.encode_frame(int(v["msg_type"]), int(v["seq"]), body) == wire  # type: ignore[call-overload]
    (packet,) = list(link.FrameDecoder().feed(wire))
    assert (packet.msg_type, packet.seq, packet.body) == (v["msg_type"], v["seq"], body)


@pytest.mark.parametrize("v", VECTORS["samples"], ids=lambda v: str(v["seq"]))
def test_golden_sample_parses(v: dict[str, float]) -> None:
    (packet,) = list(link.FrameDecoder().feed(bytes.fromhex(str(v["wire_hex"]))))
    s = link.parse_sample(packet)
    assert s.seq == v["seq"] and s.uptime_s == v["uptime_s"] and s.uptime_us == v["uptime_us"]
    assert (s.cell_voltage_v, s.cell_current_ma, s.cell_temp_c, s.stack_pressure_mpa) == (
        v["cell_voltage_v"], v["cell_current_ma"], v["cell_temp_c"], v["stack_pressure_mpa"])
    assert link.encode_sample(s).hex() == v["wire_hex"]


@pytest.mark.parametrize("v", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_frame_is_counted_and_stream_recovers(v: dict[str, str]) -> None:
    good = bytes.fromhex(VECTORS["frames"][0]["wire_hex"])
    dec = link.FrameDecoder()
    packets = list(dec.feed(bytes.fromhex(v["wire_hex"]) + good))
    assert dec.errors == 1 and dec.last_error
    assert [p.msg_type for p in packets] == [link.MSG_HELLO]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, 2**32 - 1), st.binary(max_size=link.MAX_BODY),
       st.integers(1, 64))
def test_any_frame_round_trips_in_any_chunking(msg_type: int, seq: int, body: bytes,
                                              chunk: int) -> None:
    wire = link.encode_frame(msg_type, seq, body)
    assert wire.count(0) == 1 and wire.endswith(b"\x00")
    dec = link.FrameDecoder()
    out = [p for i in range(0, len(wire), chunk) for p in dec.feed(wire[i:i + chunk])]
    assert out == [link.Packet(msg_type, seq, body)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=5),
       st.binary(max_size=100), st.data())
def test_corruption_never_invents_a_packet(bodies: list[bytes], noise: bytes,
                                           data: st.DataObject) -> None:
    sent = [link.encode_frame(link.MSG_EVENT, i, b) for i, b in enumerate(bodies)]
    stream = bytearray(noise + b"".join(sent))
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(stream) - 1))
        stream[i] = data.draw(st.integers(0, 255))
    originals = {link.Packet(link.MSG_EVENT, i, b) for i, b in enumerate(bodies)}
    for p in link.FrameDecoder().feed(bytes(stream)):
        # A CRC-32 collision is ~2**-32 per frame: anything decoded was really sent.
        assert p in originals or link.encode_frame(p.msg_type, p.seq, p.body) in bytes(stream)


def test_oversized_body_is_refused() -> None:
    with pytest.raises(link.LinkError, match="exceeds"):
        link.encode_frame(link.MSG_EVENT, 0, bytes(link.MAX_BODY + 1))


@pytest.mark.parametrize("v", VECTORS["impedance_points"], ids=lambda v: str(v["seq"]))
def test_golden_impedance_point_decodes_to_its_values_and_re_encodes_exactly(
        v: dict[str, float]) -> None:
    wire = bytes.fromhex(str(v["wire_hex"]))
    (packet,) = list(link.FrameDecoder().feed(wire))
    assert link.stream_of(packet.msg_type) == link.STREAM_TELEMETRY
    z = link.parse_impedance(packet)
    # float32-exact values: compared with ==, not approximately
    assert (z.seq, z.uptime_s, z.uptime_us, z.f_hz, z.z_re_ohm, z.z_im_ohm, z.rel_err,
            z.flags) == (v["seq"], v["uptime_s"], v["uptime_us"], v["f_hz"], v["z_re_ohm"],
                         v["z_im_ohm"], v["rel_err"], v["flags"])
    assert link.encode_impedance(z) == wire


def test_golden_impedance_flags_name_quality_and_source() -> None:
    got = [(p.quality, p.source) for p in (
        link.parse_impedance(next(link.FrameDecoder().feed(bytes.fromhex(str(v["wire_hex"])))))
        for v in VECTORS["impedance_points"])]
    assert got == [("good", "tracking"), ("fair", "tracking"), ("poor", "sweep")]
    assert link.ImpedancePoint(0, 0, 0, 1.0, 1.0, 0.0, 0.0, 0x23).quality == "unknown"
    assert link.ImpedancePoint(0, 0, 0, 1.0, 1.0, 0.0, 0.0, 0x20).source == "unknown"


def test_golden_eis_chunks_decode_to_a_sweep() -> None:
    chunks = []
    for v in (f for f in VECTORS["frames"] if f["msg_type"] == link.MSG_EIS):
        (packet,) = list(link.FrameDecoder().feed(bytes.fromhex(v["wire_hex"])))
        assert link.stream_of(packet.msg_type) == link.STREAM_RELIABLE
        chunks.append(link.parse_eis_chunk(packet))
    assert [(c.seq, c.eis_seq, c.chunk, c.chunks, c.sweep_seq) for c in chunks] == [
        (12, 1, 0, 2, 12), (13, 1, 1, 2, 12)]
    points = [p for c in chunks for p in c.points]
    assert points[0] == link.EisPoint(1000.0, 52.5, -15.1, 0.00012, "good")
    assert [p.f_hz for p in points] == [1000.0, 316.23, 10.0, 0.1]
    assert points[-1] == link.EisPoint(0.1, None, None, None, "skipped")


@pytest.mark.parametrize(("body", "why"), [
    (b"not json", "not JSON"),
    (b'{"eis_seq": 1, "chunk": 2, "chunks": 2, "points": [[1.0, 1.0, -1.0, 0.1, 0]]}',
     "chunk 2 of 2"),
    (b'{"eis_seq": 1, "chunk": 0, "chunks": 1, "points": []}', "non-empty"),
    (b'{"eis_seq": 1, "chunk": 0, "chunks": 1, "points": [[1.0, 1.0, -1.0, 0.1]]}',
     "not \\[f_hz"),
    (b'{"eis_seq": 1, "chunk": 0, "chunks": 1, "points": [[-1.0, 1.0, -1.0, 0.1, 0]]}',
     "bad frequency"),
    (b'{"eis_seq": 1, "chunk": 0, "chunks": 1, "points": [[1.0, 1.0, -1.0, 0.1, 7]]}',
     "quality"),
    (b'{"eis_seq": 1, "chunk": 0, "chunks": 1, "points": [[1.0, null, -1.0, 0.1, 0]]}',
     "needs numbers"),
    (b'{"eis_seq": 1, "chunk": 0, "chunks": 1, "points": [[1.0, 2.0, null, null, 3]]}',
     "carries values"),
    (b'{"eis_seq": -1, "chunk": 0, "chunks": 1, "points": [[1.0, 1.0, -1.0, 0.1, 0]]}',
     "u32"),
])
def test_malformed_eis_chunk_is_a_link_error(body: bytes, why: str) -> None:
    with pytest.raises(link.LinkError, match=why):
        link.parse_eis_chunk(link.Packet(link.MSG_EIS, 5, body))


def test_impedance_body_of_wrong_length_is_a_link_error() -> None:
    with pytest.raises(link.LinkError, match="not an impedance point"):
        link.parse_impedance(link.Packet(link.MSG_IMPEDANCE, 1, bytes(24)))
