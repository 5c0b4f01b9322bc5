"""CPython side of the rig link (contract: docs/link.md; firmware: firmware/fieldrig/link.py).

Framing uses the ``cobs`` library and ``binascii.crc32``; both sides are checked
against the same golden vectors (docs/contracts/link_v1_vectors.json).
"""

from __future__ import annotations

import json
import math
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
MSG_IMPEDANCE = 0x11   # one impedance point (telemetry stream)
MSG_EVENT = 0x20
MSG_REPLY = 0x21
MSG_EIS = 0x22         # one chunk of an EIS sweep (reliable stream), JSON
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
# uptime_s, uptime_us (end of the ADC block), f_hz, z_re_ohm, z_im_ohm, rel_err, flags
IMPEDANCE = struct.Struct("<IIffffB")
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


# MSG_IMPEDANCE flags: quality in bits 0-1, source in bits 4-7 (firmware/fieldrig/measure.py).
IMPEDANCE_QUALITY = {0: "good", 1: "fair", 2: "poor"}
IMPEDANCE_SOURCE = {0: "tracking", 1: "sweep"}
# MSG_EIS point quality codes: the MSG_IMPEDANCE ones, plus 3 for a point not measured.
EIS_QUALITY = {**IMPEDANCE_QUALITY, 3: "skipped"}


@dataclass(frozen=True, slots=True)
class ImpedancePoint:
    """One MSG_IMPEDANCE: Z at one frequency, from operando tracking or an EIS sweep."""

    seq: int
    uptime_s: int
    uptime_us: int
    f_hz: float
    z_re_ohm: float
    z_im_ohm: float
    rel_err: float
    flags: int

    @property
    def quality(self) -> str:
        # bits 2-3 are reserved: an unknown code is shown, never guessed
        return IMPEDANCE_QUALITY.get(self.flags & 0x03, "unknown")

    @property
    def source(self) -> str:
        return IMPEDANCE_SOURCE.get(self.flags >> 4, "unknown")


@dataclass(frozen=True, slots=True)
class EisPoint:
    """One point of an MSG_EIS chunk; z_* and rel_err are None for a skipped point."""

    f_hz: float
    z_re_ohm: float | None
    z_im_ohm: float | None
    rel_err: float | None
    quality: str


@dataclass(frozen=True, slots=True)
class EisChunk:
    """One MSG_EIS: chunk ``chunk`` of ``chunks`` of the sweep ``eis_seq``."""

    seq: int
    eis_seq: int
    chunk: int
    chunks: int
    points: tuple[EisPoint, ...]

    @property
    def sweep_seq(self) -> int:
        """The reliable seq of the sweep's chunk 0: the firmware queues a sweep's chunks
        back to back, so this names the sweep uniquely per boot (``eis_seq`` is the
        recipe's counter and starts again with every recipe)."""
        return self.seq - self.chunk


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


def parse_impedance(p: Packet) -> ImpedancePoint:
    if p.msg_type != MSG_IMPEDANCE or len(p.body) != IMPEDANCE.size:
        raise LinkError(f"not an impedance point: type 0x{p.msg_type:02x}, {len(p.body)} bytes")
    return ImpedancePoint(p.seq, *IMPEDANCE.unpack(p.body))


def encode_impedance(z: ImpedancePoint) -> bytes:
    body = IMPEDANCE.pack(z.uptime_s, z.uptime_us, z.f_hz, z.z_re_ohm, z.z_im_ohm, z.rel_err,
                          z.flags)
    return encode_frame(MSG_IMPEDANCE, z.seq, body)


def _u32(v: object) -> bool:
    return type(v) is int and 0 <= v <= 0xFFFFFFFF


def _number(v: object) -> bool:
    return type(v) in (int, float)


def _finite(v: object) -> float | None:
    # NaN/inf (a failed estimate) travel as null, as in every edge payload
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def parse_eis_chunk(p: Packet) -> EisChunk:
    """An MSG_EIS body: ``{"eis_seq", "chunk", "chunks", "points": [[f_hz, z_re_ohm,
    z_im_ohm, rel_err, quality], ...]}``; a skipped point has nulls for the three
    measured values. Anything else is a LinkError naming the fault."""
    if p.msg_type != MSG_EIS:
        raise LinkError(f"not an EIS chunk: type 0x{p.msg_type:02x}")
    obj = parse_json_body(p)
    eis_seq, chunk, chunks, raw = (obj.get("eis_seq"), obj.get("chunk"), obj.get("chunks"),
                                   obj.get("points"))
    if not (_u32(eis_seq) and _u32(chunk) and _u32(chunks)):
        raise LinkError("EIS chunk: eis_seq, chunk and chunks must be u32")
    assert isinstance(eis_seq, int) and isinstance(chunk, int) and isinstance(chunks, int)
    if not chunk < chunks:
        raise LinkError(f"EIS chunk: chunk {chunk} of {chunks}")
    if chunk > p.seq:
        raise LinkError(f"EIS chunk: chunk {chunk} cannot have reliable seq {p.seq}")
    if not isinstance(raw, list) or not raw:
        raise LinkError("EIS chunk: 'points' must be a non-empty list")
    points = []
    for k, pt in enumerate(raw):
        if not (isinstance(pt, list) and len(pt) == 5):
            raise LinkError(f"EIS chunk: point {k} is not [f_hz, z_re, z_im, rel_err, quality]")
        f, zr, zi, rel, q = pt
        if not (_number(f) and 0 < f < math.inf) or q not in EIS_QUALITY:
            raise LinkError(f"EIS chunk: point {k} has a bad frequency or quality code")
        values = (zr, zi, rel)
        if EIS_QUALITY[q] == "skipped":
            if any(v is not None for v in values):
                raise LinkError(f"EIS chunk: skipped point {k} carries values")
        elif not all(_number(v) for v in values):
            raise LinkError(f"EIS chunk: measured point {k} needs numbers")
        points.append(EisPoint(float(f), _finite(zr), _finite(zi), _finite(rel),
                               EIS_QUALITY[q]))
    return EisChunk(p.seq, eis_seq, chunk, chunks, tuple(points))


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
