"""CPython side of the rig link (contract: docs/link.md; firmware: firmware/fieldrig/link.py).

Framing uses the ``cobs`` library and ``binascii.crc32``; both sides are checked
against the same golden vectors (docs/contracts/link_v1_vectors.json).
"""

from __future__ import annotations

import json
import struct
from binascii import crc32
from collections.abc import Iterator
from dataclasses import dataclass

from cobs import cobs

PROTOCOL_VERSION = 1

MSG_HELLO = 0x01
MSG_SYNC = 0x02
MSG_SYNC_REPLY = 0x03
MSG_SAMPLE = 0x10
MSG_EVENT = 0x20
MSG_REPLY = 0x21
MSG_ACK = 0x30
MSG_COMMAND = 0x40

# Stream ids (ACK body) and the 'nothing acknowledged yet' value.
STREAM_TELEMETRY = 0x10
STREAM_RELIABLE = 0x20
ACK_NONE = 0xFFFFFFFF

HEADER = struct.Struct("<BBI")
CRC = struct.Struct("<I")
MAX_BODY = 480
MAX_PACKET = HEADER.size + MAX_BODY + CRC.size
MAX_ENCODED = MAX_PACKET + MAX_PACKET // 254 + 2

SAMPLE = struct.Struct("<IIffffB")
ACK = struct.Struct("<BI")
SYNC_REPLY = struct.Struct("<II")

# Message types that belong to each acknowledged stream (docs/link.md, "Streams").
TELEMETRY_TYPES = range(0x10, 0x20)
RELIABLE_TYPES = range(0x20, 0x30)


class LinkError(ValueError):
    """A frame that is not valid (bad COBS, CRC, version or length)."""


@dataclass(frozen=True, slots=True)
class Packet:
    msg_type: int
    seq: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Sample:
    """One MSG_SAMPLE: rig uptime and the cell readings."""

    seq: int
    uptime_s: int
    uptime_us: int
    cell_voltage_v: float
    cell_current_ma: float
    cell_temp_c: float
    stack_pressure_mpa: float
    rig_state: int

    @property
    def uptime(self) -> float:
        """Rig uptime in seconds."""
        return self.uptime_s + self.uptime_us * 1e-6


def encode_frame(msg_type: int, seq: int, body: bytes = b"") -> bytes:
    """Wire frame: COBS(header + body + CRC32) + 0x00."""
    if len(body) > MAX_BODY:
        raise LinkError(f"body of {len(body)} bytes exceeds {MAX_BODY}")
    if not 0 <= seq <= 0xFFFFFFFF:
        raise LinkError(f"sequence number {seq} out of u32 range")
    packet = HEADER.pack(PROTOCOL_VERSION, msg_type, seq) + body
    packet += CRC.pack(crc32(packet))
    return bytes(cobs.encode(packet)) + b"\x00"


def decode_packet(encoded: bytes) -> Packet:
    """Decode one COBS-encoded frame without its delimiter."""
    if len(encoded) > MAX_ENCODED:
        raise LinkError("frame too long")
    try:
        packet = cobs.decode(encoded)
    except cobs.DecodeError as exc:
        raise LinkError(f"bad COBS: {exc}") from exc
    if len(packet) < HEADER.size + CRC.size:
        raise LinkError("packet shorter than header and CRC")
    if len(packet) > MAX_PACKET:
        raise LinkError("frame too long")
    (crc,) = CRC.unpack_from(packet, len(packet) - CRC.size)
    if crc32(packet[: -CRC.size]) != crc:
        raise LinkError("CRC mismatch")
    version, msg_type, seq = HEADER.unpack_from(packet)
    if version != PROTOCOL_VERSION:
        raise LinkError(f"unsupported protocol version {version}")
    return Packet(msg_type, seq, bytes(packet[HEADER.size : -CRC.size]))


def encode_sample(s: Sample) -> bytes:
    body = SAMPLE.pack(s.uptime_s, s.uptime_us, s.cell_voltage_v, s.cell_current_ma,
                       s.cell_temp_c, s.stack_pressure_mpa, s.rig_state)
    return encode_frame(MSG_SAMPLE, s.seq, body)


def stream_of(msg_type: int) -> int | None:
    """The acknowledged stream a rig -> edge message type belongs to, or None."""
    if msg_type in TELEMETRY_TYPES:
        return STREAM_TELEMETRY
    if msg_type in RELIABLE_TYPES:
        return STREAM_RELIABLE
    return None


def encode_ack(stream: int, seq: int) -> bytes:
    """ACK frame: every message of ``stream`` with seq <= ``seq`` is stored (ACK_NONE: none)."""
    return encode_frame(MSG_ACK, 0, ACK.pack(stream, seq))


def parse_ack(p: Packet) -> tuple[int, int]:
    if p.msg_type != MSG_ACK or len(p.body) != ACK.size:
        raise LinkError(f"not an ack: type 0x{p.msg_type:02x}, {len(p.body)} bytes")
    stream, seq = ACK.unpack(p.body)
    return int(stream), int(seq)


def encode_sync(token: int) -> bytes:
    return encode_frame(MSG_SYNC, token)


def encode_sync_reply(token: int, uptime_s: int, uptime_us: int) -> bytes:
    return encode_frame(MSG_SYNC_REPLY, token, SYNC_REPLY.pack(uptime_s, uptime_us))


def parse_sync_reply(p: Packet) -> tuple[int, int]:
    """(token, rig uptime in ns) from a SYNC_REPLY."""
    if p.msg_type != MSG_SYNC_REPLY or len(p.body) != SYNC_REPLY.size:
        raise LinkError(f"not a sync reply: type 0x{p.msg_type:02x}, {len(p.body)} bytes")
    s, us = SYNC_REPLY.unpack(p.body)
    return p.seq, int(s) * 1_000_000_000 + int(us) * 1000


def parse_json_body(p: Packet) -> dict[str, object]:
    """The JSON object body of HELLO, EVENT, REPLY and COMMAND messages."""
    try:
        obj = json.loads(p.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LinkError(f"type 0x{p.msg_type:02x}: body is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise LinkError(f"type 0x{p.msg_type:02x}: body is not a JSON object")
    return obj


def encode_json(msg_type: int, seq: int, obj: object) -> bytes:
    """Frame a compact JSON body (raises LinkError if it exceeds MAX_BODY)."""
    return encode_frame(msg_type, seq, json.dumps(obj, separators=(",", ":")).encode())


def parse_sample(p: Packet) -> Sample:
    if p.msg_type != MSG_SAMPLE or len(p.body) != SAMPLE.size:
        raise LinkError(f"not a sample: type 0x{p.msg_type:02x}, {len(p.body)} bytes")
    return Sample(p.seq, *SAMPLE.unpack(p.body))


class FrameDecoder:
    """Incremental decoder for a byte stream; corrupt frames are counted and skipped."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.errors = 0
        self.frames = 0
        self.last_error = ""

    def feed(self, data: bytes) -> Iterator[Packet]:
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:])
                return
            self._append(data[start:end])
            start = end + 1
            if not self._buf and not self._overflow:
                continue
            encoded, overflow = bytes(self._buf), self._overflow
            self._buf.clear()
            self._overflow = False
            if overflow:
                self._error("frame too long")
                continue
            try:
                packet = decode_packet(encoded)
            except LinkError as exc:
                self._error(str(exc))
                continue
            self.frames += 1
            yield packet

    def _append(self, chunk: bytes) -> None:
        if self._overflow:
            return
        if len(self._buf) + len(chunk) > MAX_ENCODED:
            self._overflow = True
            self._buf.clear()
        else:
            self._buf += chunk

    def _error(self, why: str) -> None:
        self.errors += 1
        self.last_error = why
