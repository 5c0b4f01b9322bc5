"""The firmware, as deployed (.mpy, as on the board), boots under the MicroPython unix
port with its full link stack on a real socket inside a 160 KiB heap, greets the edge
with HELLO and streams numbered samples to a reader that acknowledges them as the edge
does (cumulative ACK per stream; the rig frees nothing it has not been acked).

Heap: on this 64-bit port objects are about twice their size on the RP2350, and the
loops alone run in 128 KiB (firmware/tests/test_steady.py); the socket transport and
argument parsing of the unix board need the extra (budget in docs/firmware.md)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

from fieldrig_edge import link
from fieldrig_hil.services import FirmwareRig


def read_packets(port: int, samples: int, timeout_s: float = 20.0) -> list[link.Packet]:
    """Everything the rig sends until `samples` distinct MSG_SAMPLE seqs have arrived,
    acknowledged like the edge does: HELLO is answered with an ACK per stream ("nothing
    yet"), then each stream is acked cumulatively up to the last seq received in order
    (go-back-N receiver: a retransmission is a duplicate, a message after a gap waits)."""
    dec = link.FrameDecoder()
    out: list[link.Packet] = []
    deadline = time.monotonic() + timeout_s
    expected = {link.STREAM_TELEMETRY: 0, link.STREAM_RELIABLE: 0}

    def ack(s: socket.socket, stream: int) -> None:
        seq = expected[stream] - 1
        s.sendall(link.encode_ack(stream, link.ACK_NONE if seq < 0 else seq))

    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        while expected[link.STREAM_TELEMETRY] < samples and time.monotonic() < deadline:
            data = s.recv(4096)
            if not data:
                break
            acks = set()
            for p in dec.feed(data):
                stream = link.stream_of(p.msg_type)
                if p.msg_type == link.MSG_HELLO:
                    acks |= set(expected)
                elif stream is not None and p.seq == expected[stream]:
                    expected[stream] += 1
                    acks.add(stream)
                    out.append(p)
                    continue
                elif stream is not None:
                    continue  # a duplicate (or ahead of a gap): not kept twice
                out.append(p)
            for stream in sorted(acks):
                ack(s, stream)
    assert dec.errors == 0
    return out


def test_deployed_firmware_boots_in_budget_heap_and_streams_numbered_samples(
    start_rig: Callable[..., FirmwareRig],
) -> None:
    rig = start_rig(rig_id="rig-heap", samples=200, period_ms=1, heap="160K")
    packets = read_packets(rig.port, 200)
    assert packets[0].msg_type == link.MSG_HELLO
    hello = json.loads(packets[0].body)
    assert hello["rig"] == "rig-heap" and hello["protocol"] == link.PROTOCOL_VERSION
    assert isinstance(hello["boot"], int)
    assert (hello["oldest_seq"], hello["rel_oldest"], hello["cmd_next"]) == (0, 0, 0)
    assert hello["rel_next"] >= 1  # the boot event at least
    assert [json.loads(p.body)["event"] for p in packets
            if p.msg_type == link.MSG_EVENT][:1] == ["boot"]
    samples = [link.parse_sample(p) for p in packets if p.msg_type == link.MSG_SAMPLE]
    assert [s.seq for s in samples] == list(range(200))
    uptimes = [s.uptime for s in samples]
    assert uptimes == sorted(uptimes)
