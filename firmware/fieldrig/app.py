"""Rig main loop: sample the sensors on a fixed period and send numbered telemetry.

The walking skeleton of the firmware: it owns the telemetry sequence numbers and the
sampling schedule; the board supplies sensors and the link transport.
"""

import json

from fieldrig import FIRMWARE_VERSION, link
from fieldrig.clock import TicksClock

RIG_STATE_RUNNING = 1


def parse_args(argv):
    """``--key value`` pairs into a dict of strings (the unix port has no argparse)."""
    opts = {}
    i = 0
    while i < len(argv):
        key = argv[i]
        if not key.startswith("--") or i + 1 >= len(argv):
            raise ValueError("expected --key value, got %r" % key)
        opts[key[2:].replace("-", "_")] = argv[i + 1]
        i += 2
    return opts


class TelemetryLoop:
    def __init__(self, sensors, link_io, clock, rig_id, period_ms):
        self.sensors = sensors
        self.link = link_io
        self.clock = clock
        self.rig_id = rig_id
        self.period_ms = period_ms
        self.encoder = link.FrameEncoder()
        self.decoder = link.FrameDecoder(self._on_packet)
        self._rx = bytearray(256)
        self.next_seq = 0
        self.packets_in = 0

    def _on_packet(self, msg_type, seq, body):
        # Commands and acks are handled by later layers; count them for now.
        self.packets_in += 1

    def hello(self):
        body = json.dumps({"rig": self.rig_id, "fw": FIRMWARE_VERSION,
                           "protocol": link.PROTOCOL_VERSION}).encode()
        return self.link.write(self.encoder.frame(link.MSG_HELLO, 0, body))

    def sample_once(self):
        self.clock.update()
        seq = self.next_seq
        v, i_ma, t_c, p_mpa = self.sensors.read(seq)
        frame = self.encoder.sample(seq, self.clock.s, self.clock.us, v, i_ma, t_c, p_mpa,
                                    RIG_STATE_RUNNING)
        if self.link.write(frame):
            self.next_seq = seq + 1
            return True
        return False

    def poll_rx(self):
        n = self.link.readinto(self._rx)
        if n > 0:
            self.decoder.feed(self._rx, n)
        return n

    def run(self, max_samples):
        """Sample every period until max_samples are sent (forever when < 0)."""
        self.clock.update()
        due_s, due_us = self.clock.s, self.clock.us
        while max_samples < 0 or self.next_seq < max_samples:
            self.clock.sleep_ms(self.clock.ms_until(due_s, due_us))
            if not self.sample_once():
                return False
            due_us += self.period_ms * 1000
            while due_us >= 1000000:
                due_us -= 1000000
                due_s += 1
            self.poll_rx()
        return True


def main(argv):
    from boards import load

    opts = parse_args(argv)
    board = load(opts.get("board", "unix_synthetic"))(opts)
    loop = TelemetryLoop(board["sensors"], board["link"], TicksClock(),
                         opts.get("rig", "rig-1"), int(opts.get("period_ms", "100")))
    max_samples = int(opts.get("samples", "-1"))
    print("fieldrig firmware", FIRMWARE_VERSION, "listening")
    board["link"].accept()
    loop.hello()
    loop.run(max_samples)
    # Keep the connection open until the edge closes it, so nothing sent is cut off.
    while loop.poll_rx() >= 0:
        loop.clock.sleep_ms(10)
    print("fieldrig firmware sent", loop.next_seq, "samples")
