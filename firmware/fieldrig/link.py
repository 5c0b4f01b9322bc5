"""Link framing between a rig and its edge gateway (contract: docs/link.md).

A frame on the byte stream is a COBS-encoded packet followed by one 0x00 delimiter,
so a receiver can always resynchronise at the next zero byte after line noise.
The decoded packet is:

    offset 0   u8   protocol version (PROTOCOL_VERSION)
    offset 1   u8   message type (MSG_*)
    offset 2   u32  sequence number, little-endian (per stream, see below)
    offset 6   ...  body (type-specific, at most MAX_BODY bytes)
    last 4     u32  CRC-32 (IEEE, as binascii.crc32) of everything before it, LE

Sequence numbers belong to a stream: telemetry messages (MSG_SAMPLE and later
periodic types) share the telemetry stream; events and command replies share the
reliable stream (acknowledged, retransmitted); commands from the edge have their own.

Allocation: encoding writes into caller-provided bytearrays; the decoder owns one
preallocated buffer, so a running link allocates nothing per byte.
"""

import struct
from binascii import crc32

PROTOCOL_VERSION = 1

# Message types (one byte). Ranges: 0x0x session, 0x1x telemetry stream,
# 0x2x reliable stream (rig -> edge), 0x3x acknowledgements, 0x4x commands (edge -> rig).
MSG_HELLO = 0x01
MSG_SYNC = 0x02
MSG_SYNC_REPLY = 0x03
MSG_SAMPLE = 0x10
MSG_IMPEDANCE = 0x11  # one impedance point (telemetry stream), IMPEDANCE_FMT
MSG_EVENT = 0x20
MSG_REPLY = 0x21
MSG_EIS = 0x22  # one chunk of an EIS spectrum (reliable stream), JSON
MSG_ACK = 0x30
MSG_COMMAND = 0x40

# Stream ids (ACK body) and the 'nothing acknowledged yet' value.
STREAM_TELEMETRY = 0x10
STREAM_RELIABLE = 0x20
ACK_NONE = 0xFFFFFFFF

HEADER_FMT = "<BBI"
HEADER_LEN = 6
CRC_LEN = 4
MAX_BODY = 480
MAX_PACKET = HEADER_LEN + MAX_BODY + CRC_LEN
# COBS adds at most one byte per 254, plus the leading code byte.
MAX_ENCODED = MAX_PACKET + MAX_PACKET // 254 + 2

# MSG_SAMPLE body: uptime seconds, microseconds within the second (two u32 keep
# MicroPython small ints: no bigint allocation), cell voltage (V), cell current (mA),
# cell temperature (degC), stack pressure (MPa), rig state code.
SAMPLE_FMT = "<IIffffB"
SAMPLE_LEN = struct.calcsize(SAMPLE_FMT)

# MSG_IMPEDANCE body: uptime seconds, microseconds (end of the ADC block), f_hz (the exact
# coherent frequency), z_re_ohm, z_im_ohm, rel_err (1-sigma relative uncertainty of Z,
# also the phase uncertainty in rad), flags: bits 0-1 quality (0 good, 1 fair, 2 poor),
# bits 4-7 source (0 operando tracking, 1 EIS sweep point); measure.py builds them. Same
# length as a SAMPLE body: both share the telemetry ring slots (measure.TypedTelemetry).
IMPEDANCE_FMT = "<IIffffB"


class LinkError(ValueError):
    """A packet that is not a valid frame (bad CRC, version, length or COBS)."""


def cobs_encode_into(src, n, dst):
    """COBS-encode src[:n] into dst (no trailing delimiter); return encoded length."""
    code_at = 0
    out = 1
    code = 1
    for i in range(n):
        b = src[i]
        if b == 0:
            dst[code_at] = code
            code_at = out
            out += 1
            code = 1
        else:
            dst[out] = b
            out += 1
            code += 1
            if code == 0xFF:
                dst[code_at] = code
                code_at = out
                out += 1
                code = 1
    dst[code_at] = code
    return out


def cobs_decode_into(src, n, dst):
    """Decode COBS src[:n] (no delimiter) into dst; return decoded length or raise."""
    i = 0
    out = 0
    while i < n:
        code = src[i]
        if code == 0:
            raise LinkError("zero byte inside COBS frame")
        i += 1
        end = i + code - 1
        if end > n:
            raise LinkError("COBS block runs past end of frame")
        if out + (end - i) > len(dst):
            raise LinkError("frame too long")
        while i < end:
            dst[out] = src[i]
            out += 1
            i += 1
        if code < 0xFF and i < n:
            if out >= len(dst):
                raise LinkError("frame too long")
            dst[out] = 0
            out += 1
    return out


def pack_packet(buf, msg_type, seq, body, body_len, offset=0):
    """Write header + body[offset:offset + body_len] + CRC into buf; return packet length."""
    if body_len > MAX_BODY:
        raise LinkError("body too long")
    struct.pack_into(HEADER_FMT, buf, 0, PROTOCOL_VERSION, msg_type, seq)
    for i in range(body_len):
        buf[HEADER_LEN + i] = body[offset + i]
    end = HEADER_LEN + body_len
    struct.pack_into("<I", buf, end, crc32(memoryview(buf)[:end]) & 0xFFFFFFFF)
    return end + CRC_LEN


def check_packet(buf, n):
    """Validate a decoded packet; return (msg_type, seq, body_len). Raises LinkError."""
    if n < HEADER_LEN + CRC_LEN:
        raise LinkError("packet shorter than header and CRC")
    mv = memoryview(buf)
    (crc,) = struct.unpack_from("<I", buf, n - CRC_LEN)
    if crc32(mv[: n - CRC_LEN]) & 0xFFFFFFFF != crc:
        raise LinkError("CRC mismatch")
    version, msg_type, seq = struct.unpack_from(HEADER_FMT, buf, 0)
    if version != PROTOCOL_VERSION:
        raise LinkError("unsupported protocol version")
    return msg_type, seq, n - HEADER_LEN - CRC_LEN


class FrameEncoder:
    """Builds wire frames in two preallocated buffers (not re-entrant)."""

    def __init__(self):
        self._packet = bytearray(MAX_PACKET)
        self._wire = bytearray(MAX_ENCODED + 1)
        self._wire_mv = memoryview(self._wire)
        self._sample = bytearray(SAMPLE_LEN)

    def frame(self, msg_type, seq, body, body_len=-1, offset=0):
        """Return a memoryview of the complete wire frame (valid until the next call).

        The body is ``body[offset:offset + body_len]`` (an offset into a ring buffer
        saves slicing, i.e. an allocation, per retransmitted sample)."""
        if body_len < 0:
            body_len = len(body) - offset
        n = pack_packet(self._packet, msg_type, seq, body, body_len, offset)
        m = cobs_encode_into(self._packet, n, self._wire)
        self._wire[m] = 0
        return self._wire_mv[: m + 1]

    def sample(self, seq, t_s, t_us, cell_voltage_v, cell_current_ma, cell_temp_c,
               stack_pressure_mpa, rig_state):
        """Frame one telemetry sample (MSG_SAMPLE)."""
        struct.pack_into(SAMPLE_FMT, self._sample, 0, t_s, t_us, cell_voltage_v,
                         cell_current_ma, cell_temp_c, stack_pressure_mpa, rig_state)
        return self.frame(MSG_SAMPLE, seq, self._sample, SAMPLE_LEN)


class FrameDecoder:
    """Incremental decoder: feed bytes, get callbacks per valid packet.

    Bytes accumulate until a 0x00 delimiter; an over-long or corrupt frame is counted
    in ``errors`` and skipped, and decoding resumes at the next delimiter.
    """

    def __init__(self, on_packet):
        self._on_packet = on_packet
        self._raw = bytearray(MAX_ENCODED)
        self._n = 0
        self._overflow = False
        self.packet = bytearray(MAX_PACKET)
        self.errors = 0
        self.frames = 0

    def feed(self, data, n=-1):
        if n < 0:
            n = len(data)
        raw = self._raw
        cap = len(raw)
        for i in range(n):
            b = data[i]
            if b != 0:
                if self._n < cap:
                    raw[self._n] = b
                    self._n += 1
                else:
                    self._overflow = True
                continue
            if self._n == 0 and not self._overflow:
                continue  # idle delimiters are allowed between frames
            if self._overflow:
                self.errors += 1
            else:
                self._complete()
            self._n = 0
            self._overflow = False

    def _complete(self):
        try:
            m = cobs_decode_into(self._raw, self._n, self.packet)
            msg_type, seq, body_len = check_packet(self.packet, m)
        except LinkError:
            self.errors += 1
            return
        self.frames += 1
        self._on_packet(msg_type, seq, memoryview(self.packet)[HEADER_LEN:HEADER_LEN + body_len])
