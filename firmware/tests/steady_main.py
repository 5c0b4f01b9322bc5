# Steady-state run for the heap budget (docs/firmware.md): boot the rig on the
# unix_synthetic board's plant models in virtual time, with an in-memory edge that acks,
# energise every loop and run N scheduler passes. Prints the heap figures and
# "STEADY OK". Kept free of the test doubles so it measures the firmware alone:
#   micropython -X heapsize=128K steady_main.py 100000
import gc
import struct
import sys

from boards.unix_synthetic import CellPlant, PressPlant, Pulses, ThermalPlant
from fieldrig import link
from fieldrig.app import Rig
from fieldrig.clock import VirtualClock


class LoopbackEdge:
    """Transport whose far end decodes frames and acks them right away (no storage)."""

    def __init__(self):
        self.inbox = bytearray(64)
        self.n_in = 0
        self.dec = link.FrameDecoder(self._got)
        self.enc = link.FrameEncoder()
        self.ack = bytearray(5)
        self.last = [-1, -1]
        self.connected = False
        self.frames = 0

    def _got(self, msg_type, seq, body):
        self.frames += 1
        if 0x10 <= msg_type < 0x30:
            self.last[0 if msg_type < 0x20 else 1] = seq

    def poll_accept(self):
        if self.connected:
            return False
        self.connected = True
        return True

    def write(self, data):
        self.dec.feed(data)
        return True

    def readinto(self, buf):
        n = self.n_in
        buf[:n] = self.inbox[:n]
        self.n_in = 0
        return n

    def queue_acks(self):
        n = 0
        for stream, seq in ((link.STREAM_TELEMETRY, self.last[0]),
                            (link.STREAM_RELIABLE, self.last[1])):
            if seq >= 0:
                struct.pack_into("<BI", self.ack, 0, stream, seq)
                f = self.enc.frame(link.MSG_ACK, 0, self.ack)
                self.inbox[n:n + len(f)] = f
                n += len(f)
        self.n_in = n


def boot(cell=None):
    clock = VirtualClock()
    thermal = ThermalPlant(clock)
    press = PressPlant(clock)
    cell = cell or CellPlant()
    edge = LoopbackEdge()
    board = {"link": edge, "adc": cell, "dac": cell, "range_switch": cell, "rtd": thermal,
             "heater": thermal, "press": press, "loadcell": press, "pulses": Pulses()}
    rig = Rig(board, clock, "rig-steady", 100, -1, 1)
    return rig, edge


def run(rig, edge, passes):
    sched = rig.sched
    clock = rig.clock
    for k in range(passes):
        sched.run_due()
        if k % 40 == 0:
            edge.queue_acks()
        sched.wait_next()
    return clock


def main(passes, cell=None, setup=None):
    """setup(rig, edge): instead of a fixed 0.5 mA once the pressure has settled (the
    electrochemistry steady state in test_steady.py runs a recipe there)."""
    gc.collect()
    rig, edge = boot(cell)
    gc.collect()
    boot_alloc = gc.mem_alloc()
    # Warm up: heat, press and current on; pressure settles before the current starts.
    rig.set_temperature(60.0)
    rig.set_pressure(5.0)
    run(rig, edge, 4000)
    if setup is None:
        rig.set_current(0.5)
    else:
        setup(rig, edge)
    run(rig, edge, 4000)
    gc.collect()
    warm = gc.mem_alloc()
    run(rig, edge, passes)
    gc.collect()
    end = gc.mem_alloc()
    s = rig.status()
    print("boot_alloc", boot_alloc, "warm_alloc", warm, "end_alloc", end,
          "free", gc.mem_free(), "uptime_s", rig.clock.s, "frames", edge.frames)
    print("state", s["state"], "temp_c", s["temp_c"], "pressure_mpa", s["pressure_mpa"],
          "current_ma", s["current_ma"], "backlog", s["backlog"], "active", s["active"])
    ok = s["state"] == "running" and end - warm <= 256 and s["backlog"] < 64
    print("STEADY OK" if ok else "STEADY FAIL")
    return ok


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100000)
