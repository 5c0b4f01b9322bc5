"""Link session (docs/link.md, "Reliable delivery"): HELLO per connection, two
acknowledged go-back-N streams, commands with duplicate detection, time sync.

Streams (rig -> edge):

- telemetry (0x10): a fixed ring of ``backlog`` SAMPLE bodies (preallocated: no
  allocation per sample). Overflow drops the oldest, never silently: the dropped seq
  range is reported as EVENT ``telemetry_dropped``.
- reliable (0x20): EVENT and REPLY bodies, at most ``queue`` of them.

Each stream keeps ``base`` (oldest unacknowledged), ``tx`` (next to transmit) and
``next_seq``. A cumulative ACK frees up to its seq. Once the peer has acked on this
connection, at most ``window`` messages beyond the ack are in flight, and when no ACK
advances the stream for ``ack_timeout_ms`` the sender goes back to ``base`` (go-back-N).
On a new connection the rig sends HELLO and waits up to ``ack_timeout_ms`` for the
edge's ACKs (docs/link.md: the edge answers HELLO with them) to learn where to resume;
a peer that sends none is served every message once, without window or retransmit
timer (see "Firmware implementation notes" in docs/link.md).

Transport (board): ``poll_accept()`` (non-blocking; True when a new connection was
just established), ``write(data)`` (False when the connection failed),
``readinto(buf)`` (bytes read, 0 when none waiting, -1 when the connection closed).
"""

import json
import struct

from fieldrig import FIRMWARE_VERSION, link
from fieldrig.clock import diff_ms

ACK_LEN = 5  # <BI
MAX_READS_PER_POLL = 4  # bounds the time one poll spends on a flooding peer
REPLY_CACHE = 8  # docs/link.md: the rig keeps the last 8 replies
DROP_REPORT_MS = 1000  # telemetry_dropped events at most this often while dropping


class TxStream:
    """Go-back-N sender bookkeeping for one stream (storage is the subclass's)."""

    def __init__(self, stream_id, window):
        self.stream_id = stream_id
        self.window = window
        self.base = 0
        self.next_seq = 0
        self.tx = 0
        # None: not known on this connection yet; True: the peer acks; False: it does not.
        self.acking = None
        self.hold = False  # after connect: wait for the first ACK before (re)sending
        self.progress_s = 0
        self.progress_us = 0
        self.retransmitted = 0
        self.timeouts = 0
        self.bad_acks = 0

    def pending(self):
        return self.next_seq - self.base

    def send_limit(self):
        if self.acking:
            lim = self.base + self.window
            return lim if lim < self.next_seq else self.next_seq
        return self.next_seq

    def on_ack(self, ack, now_s, now_us):
        """Apply a cumulative ACK. Returns True when it freed something."""
        first = self.acking is not True
        self.acking = True
        self.hold = False
        if ack == link.ACK_NONE:
            new_base = self.base
        elif ack >= self.next_seq:
            self.bad_acks += 1  # acks what was never sent: ignore the value
            return False
        else:
            new_base = ack + 1 if ack + 1 > self.base else self.base
        freed = new_base > self.base
        if freed:
            self._free(new_base)
            self.base = new_base
        if freed or first:
            self.progress_s = now_s
            self.progress_us = now_us
        if self.tx < self.base or first:
            self.tx = self.base
        return freed

    def _free(self, new_base):
        pass


class TelemetryRing(TxStream):
    """Fixed slots of SAMPLE bodies, in chunks of CHUNK_SLOTS: a 25 kB ring needs no
    25 kB contiguous block in a fragmented heap."""

    CHUNK_SLOTS = 64

    def __init__(self, capacity, window):
        super().__init__(link.STREAM_TELEMETRY, window)
        n_chunks = (capacity + self.CHUNK_SLOTS - 1) // self.CHUNK_SLOTS
        self.capacity = capacity
        self.slot_len = link.SAMPLE_LEN
        self.chunks = [bytearray(self.CHUNK_SLOTS * self.slot_len) for _ in range(n_chunks)]
        self.dropped = 0  # total since boot

    def chunk(self, seq):
        return self.chunks[(seq % self.capacity) // self.CHUNK_SLOTS]

    def offset(self, seq):
        return ((seq % self.capacity) % self.CHUNK_SLOTS) * self.slot_len


class ReliableQueue(TxStream):
    def __init__(self, capacity, window):
        super().__init__(link.STREAM_RELIABLE, window)
        self.capacity = capacity
        self.items = []  # [seq, msg_type, body bytes], oldest first
        self.dropped = 0

    def _free(self, new_base):
        items = self.items
        while items and items[0][0] < new_base:
            items.pop(0)

    def get(self, seq):
        for it in self.items:
            if it[0] == seq:
                return it
        return None


class Session:
    def __init__(self, transport, clock, rig_id, boot_id, on_command=None, backlog=1024,
                 queue=32, window=64, ack_timeout_ms=500):
        self.transport = transport
        self.clock = clock
        self.rig_id = rig_id
        self.boot_id = boot_id
        self.on_command = on_command  # fn(body) -> (ok, result) or (False, (code, detail))
        self.ack_timeout_ms = ack_timeout_ms
        self.telemetry = TelemetryRing(backlog, window)
        self.reliable = ReliableQueue(queue, window)
        self.encoder = link.FrameEncoder()
        self.decoder = link.FrameDecoder(self._on_packet)
        self._rx = bytearray(256)
        self.connected = False
        self.ever_connected = False
        self.connections = 0
        self._connect_s = 0
        self._connect_us = 0
        self._rx_s = clock.s
        self._rx_us = clock.us
        self._replies = []  # [cmd_seq, reliable seq, body], newest last
        self._max_cmd_seq = -1
        self.commands_executed = 0
        self.duplicate_commands = 0
        self.unexpected = 0
        # Pending telemetry_dropped report: contiguous seq range [first, last].
        self._drop_first = -1
        self._drop_last = -1
        self._drop_report_s = 0
        self._drop_report_us = 0

    # ---- producing -------------------------------------------------------------

    def add_sample(self, t_s, t_us, cell_voltage_v, cell_current_ma, cell_temp_c,
                   stack_pressure_mpa, rig_state):
        """Store one SAMPLE in the backlog (and send it when the link allows).
        Returns its telemetry seq."""
        ring = self.telemetry
        if ring.next_seq - ring.base >= ring.capacity:
            self._drop_oldest_sample()
        seq = ring.next_seq
        struct.pack_into(link.SAMPLE_FMT, ring.chunk(seq), ring.offset(seq), t_s, t_us,
                         cell_voltage_v, cell_current_ma, cell_temp_c, stack_pressure_mpa,
                         rig_state)
        ring.next_seq = seq + 1
        self._pump(ring)
        return seq

    def _drop_oldest_sample(self):
        ring = self.telemetry
        seq = ring.base
        ring.base = seq + 1
        if ring.tx < ring.base:
            ring.tx = ring.base
        ring.dropped += 1
        if self._drop_first >= 0 and seq != self._drop_last + 1:
            self._flush_drops()
        if self._drop_first < 0:
            self._drop_first = seq
        self._drop_last = seq

    def _flush_drops(self):
        if self._drop_first < 0:
            return
        first, last = self._drop_first, self._drop_last
        self._drop_first = self._drop_last = -1
        self._drop_report_s = self.clock.s
        self._drop_report_us = self.clock.us
        self.send_event({"event": "telemetry_dropped", "first_seq": first, "last_seq": last,
                         "count": last - first + 1})

    def send_event(self, event):
        """Queue an EVENT (a dict with "event") on the reliable stream."""
        body = json.dumps(event).encode()
        if len(body) > link.MAX_BODY:
            body = json.dumps({"event": event.get("event", "?"), "truncated": True}).encode()
        return self._enqueue(link.MSG_EVENT, body)

    def _enqueue(self, msg_type, body):
        q = self.reliable
        if len(q.items) >= q.capacity:
            # Drop the oldest: a full queue means the edge has been gone for long.
            # Counted (status "events_dropped"), never silent.
            old = q.items.pop(0)
            q.base = old[0] + 1
            if q.tx < q.base:
                q.tx = q.base
            q.dropped += 1
        seq = q.next_seq
        q.items.append([seq, msg_type, body])
        q.next_seq = seq + 1
        self._pump(q)
        return seq

    # ---- link events --------------------------------------------------------------

    def poll(self):
        """Accept a connection, read and dispatch what has arrived (non-blocking)."""
        t = self.transport
        if not self.connected:
            if not t.poll_accept():
                return
            self._on_connect()
        for _ in range(MAX_READS_PER_POLL):
            n = t.readinto(self._rx)
            if n < 0:
                self._on_disconnect()
                return
            if n == 0:
                return
            self.decoder.feed(self._rx, n)

    def service(self):
        """Timers: end the post-connect wait, go back N on ack timeout, report drops;
        then send whatever the streams allow."""
        now_s = self.clock.s
        now_us = self.clock.us
        if self.connected:
            for st in (self.telemetry, self.reliable):
                if st.hold and diff_ms(now_s, now_us, self._connect_s,
                                       self._connect_us) >= self.ack_timeout_ms:
                    st.hold = False
                    st.acking = False  # no ACK after HELLO: a peer that does not ack
                elif st.acking and st.tx > st.base and diff_ms(
                        now_s, now_us, st.progress_s, st.progress_us) >= self.ack_timeout_ms:
                    st.timeouts += 1
                    st.retransmitted += st.tx - st.base
                    st.tx = st.base
                    st.progress_s = now_s
                    st.progress_us = now_us
            if self._drop_first >= 0 and diff_ms(now_s, now_us, self._drop_report_s,
                                                 self._drop_report_us) >= DROP_REPORT_MS:
                self._flush_drops()
        self._pump(self.reliable)
        self._pump(self.telemetry)

    def silence_ms(self):
        """Milliseconds since the last valid frame from the edge (or since boot)."""
        return diff_ms(self.clock.s, self.clock.us, self._rx_s, self._rx_us)

    def _on_connect(self):
        self.connected = True
        self.ever_connected = True
        self.connections += 1
        self._connect_s = self.clock.s
        self._connect_us = self.clock.us
        self._rx_s = self.clock.s
        self._rx_us = self.clock.us
        self._replies = []  # command numbers restart per connection
        self._max_cmd_seq = -1
        for st in (self.telemetry, self.reliable):
            st.tx = st.base
            st.acking = None
            st.hold = True
        ring = self.telemetry
        hello = {"rig": self.rig_id, "fw": FIRMWARE_VERSION,
                 "protocol": link.PROTOCOL_VERSION, "boot": self.boot_id,
                 "next_seq": ring.next_seq, "oldest_seq": ring.base}
        self._write(self.encoder.frame(link.MSG_HELLO, 0, json.dumps(hello).encode()))

    def _on_disconnect(self):
        self.connected = False
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    def _write(self, frame):
        if not self.connected:
            return False
        if self.transport.write(frame):
            return True
        self._on_disconnect()
        return False

    def _pump(self, st):
        if not self.connected or st.hold:
            return
        limit = st.send_limit()
        enc = self.encoder
        while st.tx < limit:
            seq = st.tx
            if st.stream_id == link.STREAM_TELEMETRY:
                # SAMPLE is the only telemetry type in v1: slots hold bodies only.
                frame = enc.frame(link.MSG_SAMPLE, seq, st.chunk(seq), st.slot_len,
                                  st.offset(seq))
            else:
                it = st.get(seq)
                if it is None:  # freed meanwhile (cannot happen with base <= tx)
                    st.tx = seq + 1
                    continue
                frame = enc.frame(it[1], seq, it[2])
            if st.tx == st.base:
                # First message in flight: the ack timer runs from now.
                st.progress_s = self.clock.s
                st.progress_us = self.clock.us
            if not self._write(frame):
                return
            st.tx = seq + 1
        if st.acking is False and st.base < st.tx:
            # A peer that does not ack will never free anything: what it was sent is
            # all it gets, so free it now instead of reporting false overflow later.
            st._free(st.tx)
            st.base = st.tx

    def _on_packet(self, msg_type, seq, body):
        self._rx_s = self.clock.s
        self._rx_us = self.clock.us
        if msg_type == link.MSG_ACK:
            self._on_ack(body)
        elif msg_type == link.MSG_COMMAND:
            self._on_command(seq, body)
        elif msg_type == link.MSG_SYNC:
            self._write(self.encoder.frame(link.MSG_SYNC_REPLY, seq,
                                           struct.pack("<II", self.clock.s, self.clock.us)))
        else:
            self.unexpected += 1

    def _on_ack(self, body):
        if len(body) != ACK_LEN:
            self.unexpected += 1
            return
        stream_id, ack = struct.unpack("<BI", body)
        if stream_id == link.STREAM_TELEMETRY:
            st = self.telemetry
        elif stream_id == link.STREAM_RELIABLE:
            st = self.reliable
        else:
            self.unexpected += 1
            return
        st.on_ack(ack, self.clock.s, self.clock.us)
        self._pump(st)

    def _on_command(self, cmd_seq, body):
        for r in self._replies:
            if r[0] == cmd_seq:
                # The edge did not get our REPLY: send the stored one again, same
                # reliable seq, so the edge's duplicate filter sees one message.
                self.duplicate_commands += 1
                self._write(self.encoder.frame(link.MSG_REPLY, r[1], r[2]))
                return
        if cmd_seq <= self._max_cmd_seq:
            # Older than every remembered reply: executing it now would replay a stale
            # set-point. Refuse without side effect.
            body_out = self._reply_body(cmd_seq, False,
                                        ("stale_command", "command number already used"))
            self._enqueue(link.MSG_REPLY, body_out)
            return
        self._max_cmd_seq = cmd_seq
        if self.on_command is None:
            ok, result = False, ("no_handler", "commands are not accepted")
        else:
            ok, result = self.on_command(body)
        self.commands_executed += 1
        body_out = self._reply_body(cmd_seq, ok, result)
        rel_seq = self._enqueue(link.MSG_REPLY, body_out)
        self._replies.append([cmd_seq, rel_seq, body_out])
        if len(self._replies) > REPLY_CACHE:
            self._replies.pop(0)

    def _reply_body(self, cmd_seq, ok, result):
        if ok:
            body = json.dumps({"cmd_seq": cmd_seq, "ok": True, "result": result}).encode()
            if len(body) <= link.MAX_BODY:
                return body
            ok, result = False, ("reply_too_large", "result exceeds the link body size")
        code, detail = result
        body = json.dumps({"cmd_seq": cmd_seq, "ok": False, "error": code,
                           "detail": detail}).encode()
        if len(body) > link.MAX_BODY:
            body = json.dumps({"cmd_seq": cmd_seq, "ok": False, "error": code}).encode()
        return body
