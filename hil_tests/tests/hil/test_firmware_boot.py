"""The firmware, as deployed (.mpy, as on the board), boots under the MicroPython unix
port with its full link stack on a real socket inside a 160 KiB heap, greets the edge
with HELLO and streams numbered samples.

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
    """Everything the rig sends until `samples` MSG_SAMPLE packets have arrived."""
    dec = link.FrameDecoder()
    out: list[link.Packet] = []
    deadline = time.monotonic() + timeout_s

    def n_samples() -> int:
        return sum(p.msg_type == link.MSG_SAMPLE for p in out)

    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        while n_samples() < samples and time.monotonic() < deadline:
            data = s.recv(4096)
            if not data:
                break
            out.extend(dec.feed(data))
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
    samples = [link.parse_sample(p) for p in packets if p.msg_type == link.MSG_SAMPLE]
    assert [s.seq for s in samples] == list(range(200))
    uptimes = [s.uptime for s in samples]
    assert uptimes == sorted(uptimes)
