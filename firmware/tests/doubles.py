# Test doubles for the firmware core: an in-memory link with an edge on the other
# end, and plant models (from the unix_synthetic board) with fault injection.
# No chip drivers: the core only sees these duck-typed interfaces.
import json
import os
import struct
import sys

from boards.unix_synthetic import CellPlant, PressPlant, Pulses, ThermalPlant
from fieldrig import link
from fieldrig.app import Rig
from fieldrig.clock import VirtualClock


class MemLink:
    """Transport double: what the rig writes lands in ``out``; ``feed`` queues bytes
    for the rig to read. ``connect()`` makes the next ``poll_accept`` succeed."""

    def __init__(self):
        self.out = bytearray()
        self.inbox = bytearray()
        self._in_pos = 0
        self.connected = False
        self._accept = False
        self.writes_ok = True
        self.sink = None  # fn(bytes): deliver writes at once instead of buffering

    def connect(self):
        self._accept = True

    def drop(self):
        """The edge goes away: the rig's next read sees the connection closed."""
        self.connected = False
        self.inbox = bytearray()
        self._in_pos = 0

    def poll_accept(self):
        if self.connected or not self._accept:
            return False
        self._accept = False
        self.connected = True
        return True

    def write(self, data):
        if not self.connected or not self.writes_ok:
            return False
        if self.sink is not None:
            self.sink(data)
        else:
            self.out.extend(data)
        return True

    def readinto(self, buf):
        if not self.connected:
            return -1
        start = self._in_pos
        n = min(len(buf), len(self.inbox) - start)
        buf[:n] = memoryview(self.inbox)[start:start + n]
        self._in_pos = start + n
        if self._in_pos == len(self.inbox):
            self.inbox = bytearray()
            self._in_pos = 0
        return n

    def close(self):
        self.connected = False

    def feed(self, data):
        self.inbox.extend(data)


class Edge:
    """The edge side of a MemLink: decodes the rig's frames, sends ACK/COMMAND/SYNC."""

    def __init__(self, mem):
        self.mem = mem
        self.packets = []  # (msg_type, seq, body bytes), in arrival order
        self.enc = link.FrameEncoder()
        self.dec = link.FrameDecoder(self._got)
        mem.sink = self.dec.feed
        self.keep = True  # False: only count (long runs), keep the latest seq per stream
        self.keep_samples = False  # True: keep SAMPLE packets too (not only their seqs)
        self.seqs = []  # telemetry seqs in arrival order (ints are cheap; packets are not)
        # fn(seq, body): check samples as they come, store nothing
        self.on_sample: object = None
        self.record_seqs = True
        self.count = 0
        self.last_tel = -1
        self.last_rel = -1

    def _got(self, msg_type, seq, body):
        self.count += 1
        if 0x10 <= msg_type < 0x20:
            self.last_tel = seq
            if self.keep and self.record_seqs:
                self.seqs.append(seq)
        elif 0x20 <= msg_type < 0x30:
            self.last_rel = seq
        if msg_type == link.MSG_SAMPLE and callable(self.on_sample):
            self.on_sample(seq, body)
        if self.keep and (self.keep_samples or msg_type != link.MSG_SAMPLE):
            self.packets.append((msg_type, seq, bytes(body)))

    def read(self):
        out = self.mem.out
        if out:
            self.mem.out = bytearray()
            self.dec.feed(out)
        return self.packets

    def clear(self):
        self.read()
        self.packets = []
        self.seqs = []

    def of_type(self, msg_type):
        return [p for p in self.read() if p[0] == msg_type]

    def sample_seqs(self):
        self.read()
        return self.seqs

    def _unique(self, msg_type):
        # Like the real edge: a retransmitted reliable message (same seq) counts once.
        seen = set()
        out = []
        for p in self.of_type(msg_type):
            if p[1] not in seen:
                seen.add(p[1])
                out.append(json.loads(p[2]))
        return out

    def events(self, name=None):
        return [e for e in self._unique(link.MSG_EVENT) if name is None or e.get("event") == name]

    def replies(self):
        return self._unique(link.MSG_REPLY)

    def hello(self) -> dict:
        h = self.of_type(link.MSG_HELLO)
        assert h, "no HELLO received"
        return json.loads(h[-1][2])

    def ack(self, stream_id, seq):
        self.mem.feed(self.enc.frame(link.MSG_ACK, 0, struct.pack("<BI", stream_id, seq)))

    def ack_all(self):
        """Ack the newest seq received on each stream (a go-back-N edge that has
        everything: the rig sends in order)."""
        if self.last_tel >= 0:
            self.ack(link.STREAM_TELEMETRY, self.last_tel)
        if self.last_rel >= 0:
            self.ack(link.STREAM_RELIABLE, self.last_rel)

    def command(self, seq, cmd, args=None):
        body = {"cmd": cmd} if args is None else {"cmd": cmd, "args": args}
        self.mem.feed(self.enc.frame(link.MSG_COMMAND, seq, json.dumps(body).encode()))

    def raw_command(self, seq, body):
        self.mem.feed(self.enc.frame(link.MSG_COMMAND, seq, body))

    def sync(self, token):
        self.mem.feed(self.enc.frame(link.MSG_SYNC, token, b""))


class FaultyCell(CellPlant):
    """Cell plant whose readings can be forced (a short, a broken sense line...)."""

    def __init__(self):
        super().__init__()
        self.force_voltage_v: float | None = None
        self.force_current_ma: float | None = None

    def read_cell(self):
        v, i_ma = super().read_cell()
        if self.force_voltage_v is not None:
            v = self.force_voltage_v
        if self.force_current_ma is not None:
            i_ma = self.force_current_ma
        return v, i_ma


class FaultyPress(PressPlant):
    def __init__(self, clock, **kw):
        super().__init__(clock, **kw)
        self.force_saturated = False

    def is_saturated(self):
        return self.force_saturated or PressPlant.is_saturated(self)


class Wdt:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class Bench:
    """A rig on doubles, in virtual time, with an edge double on its link."""

    def __init__(self, period_ms=100, max_samples=-1, config_path=None, overrides=None,
                 boot_id=0x1234ABCD, connect=True, cell=None, creep_tau_s=600.0,
                 recipe_path=None, echem=None):
        self.clock = VirtualClock()
        self.mem = MemLink()
        self.edge = Edge(self.mem)
        self.thermal = ThermalPlant(self.clock)
        self.press = FaultyPress(self.clock, creep_tau_s=creep_tau_s)
        self.press.position = 1240  # stack already in contact at 4.8 MPa
        # cell: e.g. an echem.synthetic_cell.RcCell (block ADC for impedance tests)
        self.cell = cell if cell is not None else FaultyCell()
        self.pulses = Pulses()
        self.wdt = Wdt()
        self.board = {
            "link": self.mem, "adc": self.cell, "dac": self.cell, "range_switch": self.cell,
            "rtd": self.thermal, "heater": self.thermal, "press": self.press,
            "loadcell": self.press, "pulses": self.pulses, "wdt": self.wdt,
            "config_path": config_path, "config_overrides": overrides,
            "recipe_path": recipe_path, "echem": echem,
        }
        self.rig = Rig(self.board, self.clock, "rig-t", period_ms, max_samples, boot_id)
        if connect:
            self.mem.connect()

    def run_ms(self, ms):
        self.rig.sched.run_for_ms(ms)
        self.edge.read()

    def command(self, seq, cmd, args=None, run_ms=20):
        """Send a command, run until it is answered, return the REPLY dict."""
        self.edge.command(seq, cmd, args)
        self.run_ms(run_ms)
        for r in reversed(self.edge.replies()):
            if r["cmd_seq"] == seq:
                return r
        raise AssertionError("no reply to command %d" % seq)

    def safe_state_holds(self):
        """Current off (DAC zero, range open), heater off, press still, pulses stopped."""
        steps = self.press.steps_total
        self.run_ms(300)
        return (self.cell.fraction == 0.0 and self.cell.range_index == -1
                and self.thermal.duty == 0.0 and self.press.steps_total == steps
                and self.pulses.stops > 0 and self.rig.galvanostat.range_index == -1
                and self.rig.heater_loop.setpoint_c is None
                and self.rig.pressure_loop.setpoint_mpa is None)

    def energise(self, temp_c=40.0, pressure_mpa=5.0, current_ma=0.5, seq0=0):
        """Put every actuator to work (so a trip has something to switch off). Uses
        command numbers seq0..seq0+2: tests continue from 10."""
        assert self.command(seq0, "set_pressure", {"pressure_mpa": pressure_mpa})["ok"]
        assert self.command(seq0 + 1, "set_temperature", {"temp_c": temp_c})["ok"]
        self.run_ms(2000)
        assert self.command(seq0 + 2, "set_current", {"current_ma": current_ma})["ok"]
        self.run_ms(100)
        assert self.rig.galvanostat.range_index >= 0 and self.thermal.duty > 0
        assert self.rig.pressure_loop.setpoint_mpa is not None and not self.rig.safety.active_rows()

    def impedance_points(self):
        """MSG_IMPEDANCE bodies received: (seq, t_s, t_us, f_hz, z_re, z_im, rel_err,
        flags), each seq once."""
        seen = set()
        out = []
        for p in self.edge.of_type(link.MSG_IMPEDANCE):
            if p[1] not in seen:
                seen.add(p[1])
                out.append((p[1],) + struct.unpack(link.IMPEDANCE_FMT, p[2]))
        return out

    def eis_chunks(self):
        seen = set()
        out = []
        for p in self.edge.of_type(link.MSG_EIS):
            if p[1] not in seen:
                seen.add(p[1])
                out.append(json.loads(p[2]))
        return out

    def row_index(self, row_id):
        rows = self.rig.safety.rows
        for i in range(len(rows)):
            if rows[i][0] == row_id:
                return i
        raise AssertionError("no row " + row_id)

    def run_until_condition(self, row_id, max_ms=120000):
        """Run in 10 ms steps until the row's condition holds (debounce not yet run)."""
        i = self.row_index(row_id)
        for _ in range(max_ms // 10):
            self.run_ms(10)
            if self.rig.safety.condition(i, self.rig.signals):
                return i
        raise AssertionError("condition of %s never came" % row_id)

    def check_debounce(self, row_id):
        """From the onset of the condition: not tripped just before the debounce delay,
        tripped just after. Returns the row index."""
        i = self.run_until_condition(row_id)
        debounce = self.rig.safety.rows[i][7]
        sf = self.rig.safety
        if debounce >= 40:
            self.run_ms(debounce - 30)
            assert not sf.active[i], "%s tripped before its debounce" % row_id
            self.run_ms(60)
        else:
            self.run_ms(debounce + 20)
        assert sf.active[i], "%s did not trip" % row_id
        return i


def run_isolated(test_file, name, heap="512K"):
    """Run ``name`` from ``test_file`` (via mpunit) in a fresh interpreter with a larger
    heap, and fail with its output unless it passes. For scenarios that hold the core,
    the test doubles and the whole electrochemistry at once: about 250 KB on this
    64-bit port (objects are about half that size on the RP2350; docs/firmware.md)."""
    log = "/tmp/fieldrig-iso-%s.log" % "".join("%02x" % b for b in os.urandom(6))
    try:
        rc = os.system("%s -X heapsize=%s mpunit.py run %s %s > %s 2>&1"
                       % (getattr(sys, "executable"), heap, test_file, name, log))
        with open(log) as f:
            text = f.read()
    finally:
        try:
            os.remove(log)
        except OSError:
            pass
    print(text)
    assert rc == 0 and "MPUNIT PASS" in text, text
