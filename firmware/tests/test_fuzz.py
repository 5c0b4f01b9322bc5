# Frame-level fuzzing of the running rig: noise, cut and mutated frames on the link
# never crash it, never pass a bad CRC, never change its state; valid frames in between
# are still understood (resynchronisation).
import random
import struct

from doubles import Bench

from fieldrig import link


def _state(rig):
    g = rig.galvanostat
    return (rig.heater_loop.setpoint_c, rig.pressure_loop.setpoint_mpa, g.setpoint_ma,
            rig.safety.tripped, tuple(rig.safety.thresholds), rig.session.commands_executed)


def test_noise_and_mutated_frames_change_nothing():
    random.seed(777)
    b = Bench()
    b.run_ms(100)
    enc = link.FrameEncoder()
    # Valid frames whose effect is nil (read-only or refused) serve as mutation seeds.
    seeds = [bytes(enc.frame(link.MSG_COMMAND, 900, b'{"cmd": "status"}')),
             bytes(enc.frame(link.MSG_COMMAND, 901, b'{"cmd": "set_current", '
                                                    b'"args": {"current_ma": 999}}')),
             bytes(enc.frame(link.MSG_ACK, 0, struct.pack("<BI", 0x10, 0xFFFFFFFF))),
             bytes(enc.frame(link.MSG_SYNC, 5, b"")),
             bytes(enc.frame(0x7F, 1, b"unknown type"))]
    before = _state(b.rig)
    errors0 = b.rig.session.decoder.errors
    for k in range(2000):
        src = bytearray(seeds[random.getrandbits(8) % len(seeds)])
        for _ in range(1 + random.getrandbits(3)):
            src[random.getrandbits(16) % len(src)] = random.getrandbits(8)
        noise = bytes(random.getrandbits(8) for _ in range(random.getrandbits(6)))
        b.mem.feed(noise + bytes(src))
        if k % 10 == 0:
            b.run_ms(5)
    b.mem.feed(b"\x00")
    b.run_ms(50)
    assert _state(b.rig) == before, (_state(b.rig), before)
    assert b.rig.session.decoder.errors > errors0 + 1000, b.rig.session.decoder.errors
    assert b.rig.session.connected
    # The link still works after all that: a clean command gets its reply.
    assert b.command(5000, "set_current", {"current_ma": 0.2})["ok"]
    assert b.rig.galvanostat.setpoint_ma == 0.2


def test_oversized_and_truncated_frames_are_dropped():
    b = Bench()
    b.run_ms(600)  # past the wait for the edge's first ACK: replies go out at once
    enc = link.FrameEncoder()
    good = bytes(enc.frame(link.MSG_COMMAND, 1, b'{"cmd": "stop"}'))
    b.mem.feed(b"\x05" * (link.MAX_ENCODED + 100) + b"\x00")  # too long
    b.mem.feed(good[: len(good) // 2] + b"\x00")  # cut short
    b.mem.feed(good)
    b.run_ms(20)
    assert b.rig.session.decoder.errors == 2
    assert [r["cmd_seq"] for r in b.edge.replies()] == [1]
