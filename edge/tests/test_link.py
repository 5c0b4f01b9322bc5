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
