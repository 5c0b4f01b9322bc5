"""The bench's own edge: a link client on the rig's TCP socket, driven in lockstep.

It does what the gateway does for the link (docs/link.md): answers HELLO with one ACK per
stream, acks telemetry and reliable messages cumulatively and only contiguously, drops
duplicates by (boot, stream, seq), numbers COMMANDs per connection and matches REPLYs.
It does no MQTT: the tests read what it received. ``pump()`` is called by the bench at
every step end, while the firmware is paused, so what it sees is a function of virtual
time alone (the firmware wrote its frames before it paused; ACKs and commands are in the
socket before it resumes).

``LinkFaults`` corrupts the byte stream in both directions (bit flips, dropped bytes,
a cut connection), deterministically for its seed.
"""

from __future__ import annotations

import errno
import json
import select
import socket
from dataclasses import dataclass, field

import numpy as np

from fieldrig_edge import link


@dataclass
class LinkFaults:
    """Byte-level corruption of the link, per byte and direction, seeded."""

    flip_rate: float = 0.0  # probability that a byte has one bit flipped
    drop_rate: float = 0.0  # probability that a byte is lost
    seed: int = 0
    flipped: int = 0
    dropped: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("flip_rate", "drop_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        self.rng = np.random.default_rng(self.seed)

    def mangle(self, data: bytes) -> bytes:
        if not data or (self.flip_rate == 0.0 and self.drop_rate == 0.0):
            return data
        buf = np.frombuffer(data, dtype=np.uint8).copy()
        flip = self.rng.random(buf.size) < self.flip_rate
        bits = self.rng.integers(0, 8, buf.size)
        buf[flip] ^= (1 << bits[flip]).astype(np.uint8)
        keep = self.rng.random(buf.size) >= self.drop_rate
        self.flipped += int(flip.sum())
        self.dropped += int((~keep).sum())
        return bytes(buf[keep])


@dataclass(frozen=True, slots=True)
class Received:
    """One message the edge stored: which boot, which stream seq, what."""

    boot: int
    seq: int
    msg_type: int
    body: dict[str, object]


class BenchEdge:
    def __init__(self, faults: LinkFaults | None = None) -> None:
        self.faults = faults
        self.sock: socket.socket | None = None
        self.decoder = link.FrameDecoder()
        self.boot: int | None = None
        self.hellos: list[dict[str, object]] = []
        self.samples: list[tuple[int, link.Sample]] = []  # (boot, sample)
        # Other periodic telemetry types (0x11..0x1F), kept raw for the tests and reports.
        self.telemetry_other: list[tuple[int, link.Packet]] = []
        self.events: list[Received] = []
        self.replies: dict[tuple[int, int], dict[str, object]] = {}  # (connection, cmd_seq)
        self.sync_replies: list[tuple[int, int]] = []
        self.connections = 0
        self.duplicates = 0
        self.gaps = 0
        self.bad_messages = 0
        # Per boot and stream: highest contiguous seq stored (-1: none yet).
        self._stored: dict[tuple[int, int], int] = {}
        self._out = bytearray()
        self._cmd_seq = 0
        self._ack_due: set[int] = set()
        self.tx_total = 0  # bytes written on the current connection (after corruption)
        self.rx_total = 0  # bytes read on it (before corruption)

    # -- connection -------------------------------------------------------------------
    def connect(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self.close()
        s = socket.create_connection((host, port), timeout=timeout_s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        self.sock = s
        self.decoder = link.FrameDecoder()
        self.connections += 1
        self._cmd_seq = 0
        self._out.clear()
        self.tx_total = 0
        self.rx_total = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    @property
    def connected(self) -> bool:
        return self.sock is not None

    # -- the lockstep pump ------------------------------------------------------------------
    def pump(self, expect_rx: int | None = None, timeout_s: float = 10.0) -> int:
        """Read what the rig sent, store and ack it, send what is queued. With
        ``expect_rx`` (the rig's count of bytes written on this connection) it reads
        exactly up to that count, waiting for the kernel if needed: what the edge sees is
        then a function of virtual time. Returns the number of packets decoded."""
        if self.sock is None:
            return 0
        chunks = []
        while True:
            if expect_rx is not None:
                want = (expect_rx - self.rx_total) & 0xFFFFFFFF
                if want == 0:
                    break
                ready, _, _ = select.select([self.sock], [], [], timeout_s)
                if not ready:
                    raise TimeoutError(f"rig announced {want} more link bytes; none came")
            try:
                data = self.sock.recv(65536 if expect_rx is None else want)
            except BlockingIOError:
                if expect_rx is not None:
                    continue
                break
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                    self.close()
                    break
                raise
            if not data:
                self.close()
                break
            self.rx_total += len(data)
            chunks.append(data)
        data = b"".join(chunks)
        if self.faults is not None:
            data = self.faults.mangle(data)
        n = 0
        for p in self.decoder.feed(data):
            n += 1
            self._handle(p)
        for stream in sorted(self._ack_due):
            self._queue_ack(stream)
        self._ack_due.clear()
        self._flush()
        return n

    def _flush(self) -> None:
        if self.sock is None or not self._out:
            return
        data = bytes(self._out)
        self._out.clear()
        if self.faults is not None:
            data = self.faults.mangle(data)
        try:
            # Loopback with a small amount of data: the kernel buffer takes it at once.
            self.sock.setblocking(True)
            self.sock.sendall(data)
            self.tx_total += len(data)
        except OSError:
            self.close()
        finally:
            if self.sock is not None:
                self.sock.setblocking(False)

    # -- messages ---------------------------------------------------------------------
    def _handle(self, p: link.Packet) -> None:
        t = p.msg_type
        try:
            if t == link.MSG_HELLO:
                hello = link.parse_json_body(p)
                boot = hello.get("boot")
                if not isinstance(boot, int):
                    raise link.LinkError("HELLO without a boot id")
                self.boot = boot
                self.hellos.append(hello)
                # One ACK per stream: where this edge stands for this boot.
                self._ack_due.update((link.STREAM_TELEMETRY, link.STREAM_RELIABLE))
            elif t in link.TELEMETRY_TYPES:
                # Every periodic type shares the telemetry seq space (0x10 samples, later
                # types such as impedance records): all count for contiguity.
                self._store(link.STREAM_TELEMETRY, p, None)
            elif t in link.RELIABLE_TYPES:
                self._store(link.STREAM_RELIABLE, p, link.parse_json_body(p))
            elif t == link.MSG_SYNC_REPLY:
                self.sync_replies.append(link.parse_sync_reply(p))
        except link.LinkError:
            self.bad_messages += 1

    def _store(self, stream: int, p: link.Packet, body: dict[str, object] | None) -> None:
        if self.boot is None:
            self.bad_messages += 1  # data before any HELLO on this connection
            return
        key = (self.boot, stream)
        last = self._stored.get(key, -1)
        self._ack_due.add(stream)
        if p.seq <= last:
            self.duplicates += 1
            return
        if p.seq != last + 1:
            # Go-back-N: only contiguous data is stored; the rig resends from last + 1.
            self.gaps += 1
            return
        self._stored[key] = p.seq
        if body is None:
            if p.msg_type == link.MSG_SAMPLE:
                self.samples.append((self.boot, link.parse_sample(p)))
            else:
                self.telemetry_other.append((self.boot, p))
            return
        self.events.append(Received(self.boot, p.seq, p.msg_type, body))
        if p.msg_type == link.MSG_REPLY:
            cmd_seq = body.get("cmd_seq")
            if isinstance(cmd_seq, int):
                self.replies[(self.connections, cmd_seq)] = body

    def _queue_ack(self, stream: int) -> None:
        if self.boot is None:
            return
        last = self._stored.get((self.boot, stream), -1)
        self._out += link.encode_ack(stream, link.ACK_NONE if last < 0 else last)

    # -- commands ---------------------------------------------------------------------
    def send_command(self, cmd: str, args: dict[str, object] | None = None) -> tuple[int, int]:
        """Queue a COMMAND (sent at the next pump, while the firmware is paused); returns
        its (connection, seq) key."""
        seq = self._cmd_seq
        self._cmd_seq += 1
        self._out += link.encode_json(link.MSG_COMMAND, seq, {"cmd": cmd, "args": args or {}})
        return self.connections, seq

    def send_raw(self, data: bytes) -> None:
        """Bytes for the rig as they are (malformed-frame tests)."""
        self._out += data

    def send_sync(self, token: int) -> None:
        self._out += link.encode_sync(token)

    # -- views --------------------------------------------------------------------------
    def event_bodies(self, name: str | None = None) -> list[dict[str, object]]:
        return [e.body for e in self.events if e.msg_type == link.MSG_EVENT
                and (name is None or e.body.get("event") == name)]

    def dump(self) -> str:
        return json.dumps({"hellos": self.hellos, "events": [e.body for e in self.events]},
                          indent=1, default=str)
