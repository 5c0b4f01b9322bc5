"""Link session (docs/link.md, "Reliable delivery"): HELLO per connection, two
acknowledged go-back-N streams, commands with duplicate detection, time sync.

Streams (rig -> edge):

- telemetry (0x10): a fixed ring of ``backlog`` SAMPLE bodies (preallocated: no
  allocation per sample). Overflow drops the oldest, never silently: the dropped seq
  range is reported as EVENT ``telemetry_dropped``.
- reliable (0x20): EVENT and REPLY bodies, at most ``queue`` of them. Overflow
  replaces the oldest with one ``reliable_dropped`` EVENT (a tombstone) that takes the
  seq of the last message it replaces, so the stream the edge sees has no hole.

Each stream keeps ``base`` (oldest unacknowledged), ``tx`` (next to transmit) and
``next_seq``. Only a cumulative ACK frees anything; only overflow drops anything, and
every drop is reported. Once the peer has acked on this connection, at most ``window``
messages beyond the ack are in flight, and when no ACK advances the stream for
``ack_timeout_ms`` the sender goes back to ``base`` (go-back-N). On a new connection
the rig sends HELLO (repeated every ``ack_timeout_ms`` until the edge is heard) and
waits up to ``ack_timeout_ms`` for the edge's ACKs to learn where to resume; without
them it sends each message once and keeps it, and the first ACK goes back to the
first message after it (see "Firmware implementation notes" in docs/link.md).
Command numbers, their reply cache and duplicate detection live per boot.

Transport (board): ``poll_accept()`` (non-blocking; True when a new connection was
just established), ``write(data)`` (False when the connection failed),
``readinto(buf)`` (bytes read, 0 when none waiting, -1 when the connection closed).
"""

import json
import struct

from micropython import const

from fieldrig import FIRMWARE_VERSION, link
from fieldrig.clock import diff_ms

# const: inlined, no global (each name would be a qstr in the 128 KiB heap).
_ACK_LEN = const(5)  # <BI
_MAX_READS_PER_POLL = const(4)  # bounds the time one poll spends on a flooding peer
_REPLY_CACHE = const(8)  # docs/link.md: the rig keeps the last 8 replies
_DROP_REPORT_MS = const(1000)  # telemetry_dropped events at most this often while dropping
_HELLO_REPEATS = const(4)  # HELLO again every ack_timeout_ms while the edge is silent


class TxStream:
    """Go-back-N sender bookkeeping for one stream. As is, it is the reliable stream:
    EVENT/REPLY messages ``[seq, msg_type, body bytes]`` in ``items``, oldest first (a
    tombstone has a 4th element, its event dict: ``Session._enqueue``). TelemetryRing
    keeps its bodies in the ring instead. (One class less: the 128 KiB heap budget.)"""

    def __init__(self, stream_id, window, capacity):
        self.stream_id = stream_id
        self.window = window
        self.capacity = capacity  # reliable: >= 8 (config), room for a tombstone
        self.items = []
        self.dropped = 0  # messages lost to overflow, since boot
        self.base = 0
        self.next_seq = 0
        self.tx = 0
        # None: no ACK on this connection (yet); True: the peer acked on the current (or
        # last) connection; False: the last connection ended without any ACK and no
        # edge ever freed anything of this boot (a peer that does not ack).
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
        items = self.items
        while items and items[0][0] < new_base:
            items.pop(0)

    def get(self, seq):
        """The first message with seq >= ``seq`` (a tombstone stands for the seqs it
        replaced); None when there is none."""
        for it in self.items:
            if it[0] >= seq:
                return it
        return None


class TelemetryRing(TxStream):
    """Fixed slots of SAMPLE bodies, in chunks of CHUNK_SLOTS: a 25 kB ring needs no
    25 kB contiguous block in a fragmented heap."""

    CHUNK_SLOTS = 64

    def __init__(self, capacity, window):
        super().__init__(link.STREAM_TELEMETRY, window, capacity)
        n_chunks = (capacity + self.CHUNK_SLOTS - 1) // self.CHUNK_SLOTS
        self.slot_len = link.SAMPLE_LEN
        self.chunks = [bytearray(self.CHUNK_SLOTS * self.slot_len) for _ in range(n_chunks)]

    def chunk(self, seq):
        return self.chunks[(seq % self.capacity) // self.CHUNK_SLOTS]

    def offset(self, seq):
        return ((seq % self.capacity) % self.CHUNK_SLOTS) * self.slot_len


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
        self.reliable = TxStream(link.STREAM_RELIABLE, window, queue)
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
        # Per boot, not per connection (docs/link.md "Commands"): the edge continues
        # from HELLO's cmd_next, so a repeat after a reconnect is still recognised.
        self._replies = []  # [cmd_seq, reliable seq (-1: dropped, queue again), body]
        self._max_cmd_seq = -1
        # HELLOs sent on this connection; 99 once the edge is heard (no more repeats).
        self._hellos = 0
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
        items = q.items
        if len(items) >= q.capacity:
            # The edge has not acked for long: the oldest messages become one tombstone
            # EVENT reliable_dropped at the head (docs/link.md): its seq is the last one
            # it replaces, its body the range and how far the telemetry_dropped reports
            # it swallowed went, so the edge's streams never wait for what is gone.
            # Counted in status "events_dropped". (Inline: a method is one more qstr.)
            head = items[0]
            if len(head) > 3:
                ev = head[3]
                victims = items[1:2]
            else:
                ev = {"event": "reliable_dropped", "first_seq": head[0], "count": 0}
                victims = items[0:2]
            del items[0:2]
            for v in victims:
                q.dropped += 1
                ev["count"] += 1
                ev["last_seq"] = v[0]
                if v[1] == link.MSG_REPLY:
                    for r in self._replies:
                        if r[1] == v[0]:
                            r[1] = -1  # a repeat of its COMMAND queues it again
                elif b"telemetry_dropped" in v[2]:
                    # Its ranges are the oldest unacked telemetry when it was made: the
                    # edge lacks exactly those of them at or below last_seq, so this
                    # bound is the whole report (docs/link.md).
                    ev["telemetry_through"] = json.loads(v[2])["last_seq"]
            items.insert(0, [ev["last_seq"], link.MSG_EVENT, json.dumps(ev).encode(), ev])
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
        for _ in range(_MAX_READS_PER_POLL):
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
            if self._hellos <= _HELLO_REPEATS and diff_ms(
                    now_s, now_us, self._connect_s,
                    self._connect_us) >= self.ack_timeout_ms * self._hellos:
                # HELLO at connect; then, while the edge is not heard (the HELLO may be
                # lost on the line), again every ack_timeout_ms, 4 times; then the edge
                # reopens the link (docs/edge.md, link.hello_timeout_s).
                self._hellos += 1
                ring = self.telemetry
                rel = self.reliable
                hello = {"rig": self.rig_id, "fw": FIRMWARE_VERSION,
                         "protocol": link.PROTOCOL_VERSION, "boot": self.boot_id,
                         "next_seq": ring.next_seq, "oldest_seq": ring.base,
                         "rel_next": rel.next_seq, "rel_oldest": rel.base,
                         "cmd_next": self._max_cmd_seq + 1}
                self._write(self.encoder.frame(link.MSG_HELLO, 0, json.dumps(hello).encode()))
            for st in (self.telemetry, self.reliable):
                if st.hold and diff_ms(now_s, now_us, self._connect_s,
                                       self._connect_us) >= self.ack_timeout_ms:
                    # No ACK yet (lost, or a peer that does not ack): send each message
                    # once and keep it; the first ACK goes back to what the edge lacks.
                    st.hold = False
                elif st.acking and st.tx > st.base and diff_ms(
                        now_s, now_us, st.progress_s, st.progress_us) >= self.ack_timeout_ms:
                    st.timeouts += 1
                    st.retransmitted += st.tx - st.base
                    st.tx = st.base
                    st.progress_s = now_s
                    st.progress_us = now_us
            if self._drop_first >= 0 and diff_ms(now_s, now_us, self._drop_report_s,
                                                 self._drop_report_us) >= _DROP_REPORT_MS:
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
        self._hellos = 0
        for st in (self.telemetry, self.reliable):
            st.tx = st.base
            st.acking = None
            st.hold = True
        self.service()  # sends HELLO first: the streams are held

    def _on_disconnect(self):
        self.connected = False
        for st in (self.telemetry, self.reliable):
            if st.acking is None and st.base == 0:
                # No edge has ever freed anything of this boot and this one did not ack
                # either: a peer that does not ack (app.done() reads it).
                st.acking = False
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
            idle = seq == st.base
            if st.stream_id == link.STREAM_TELEMETRY:
                # SAMPLE is the only telemetry type in v1: slots hold bodies only.
                frame = enc.frame(link.MSG_SAMPLE, seq, st.chunk(seq), st.slot_len,
                                  st.offset(seq))
            else:
                it = st.get(seq)
                if it is None:  # cannot happen with tx < next_seq
                    st.tx = limit
                    break
                if it[0] != seq:
                    # Seqs a tombstone replaced: it goes out at its own seq, their last.
                    # (It counts as one message of the window.)
                    seq = it[0]
                    st.tx = seq
                    if seq >= limit and not idle:
                        break
                frame = enc.frame(it[1], seq, it[2])
            if idle:
                # First message in flight: the ack timer runs from now.
                st.progress_s = self.clock.s
                st.progress_us = self.clock.us
            if not self._write(frame):
                return
            st.tx = seq + 1

    def _on_packet(self, msg_type, seq, body):
        self._hellos = 99  # the edge is heard: it has the HELLO
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
        if len(body) != _ACK_LEN:
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
                # reliable seq, so the edge's duplicate filter sees one message. A REPLY
                # a tombstone replaced is queued again (new seq): the edge still waits.
                self.duplicate_commands += 1
                if r[1] < 0:
                    r[1] = self._enqueue(link.MSG_REPLY, r[2])
                else:
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
        if len(self._replies) > _REPLY_CACHE:
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
