# The electrochemistry message types against the golden vectors (produced by the edge's
# reference codec, tests/make_echem_vectors.py): MSG_IMPEDANCE bodies pack to the golden
# bytes, the rig's telemetry ring frames an impedance point byte for byte as the golden
# frame, and MSG_EIS chunks decode to their JSON.
import json
import struct
from binascii import unhexlify

from fieldrig import link

VECTORS = "../../docs/contracts/link_v1_vectors.json"


def _vectors():
    with open(VECTORS) as f:
        return json.load(f)


def test_impedance_points_pack_and_frame_like_the_golden_vectors():
    vec = _vectors()
    points = vec["impedance_points"]
    assert len(points) >= 3
    enc = link.FrameEncoder()
    for p in points:
        body = struct.pack(link.IMPEDANCE_FMT, p["uptime_s"], p["uptime_us"], p["f_hz"],
                           p["z_re_ohm"], p["z_im_ohm"], p["rel_err"], p["flags"])
        wire = bytes(enc.frame(link.MSG_IMPEDANCE, p["seq"], body))
        assert wire == unhexlify(p["wire_hex"]), p["seq"]
        got = []
        dec = link.FrameDecoder(lambda t, s, b: got.append((t, s, bytes(b))))
        dec.feed(wire)
        assert got[0][0] == link.MSG_IMPEDANCE and got[0][1] == p["seq"]
        t_s, t_us, f, zr, zi, rel, flags = struct.unpack(link.IMPEDANCE_FMT, got[0][2])
        assert (t_s, t_us, f, zr, zi, rel, flags) == (
            p["uptime_s"], p["uptime_us"], p["f_hz"], p["z_re_ohm"], p["z_im_ohm"],
            p["rel_err"], p["flags"])


def _rig_frames_an_impedance_point_as_the_golden_frame():
    # Through the session's telemetry ring and the typed pump, as the rig sends it.
    from doubles import Bench

    from fieldrig.echem_host import impedance_host

    p = _vectors()["impedance_points"][0]
    assert p["seq"] == 0
    golden = next(v for v in _vectors()["frames"] if v["name"] == "impedance point seq 0")
    b = Bench(max_samples=0)  # no samples: the point takes telemetry seq 0
    b.run_ms(600)
    tel = impedance_host(b.rig).telemetry
    tel.add_impedance(p["uptime_s"], p["uptime_us"], p["f_hz"], p["z_re_ohm"],
                      p["z_im_ohm"], p["rel_err"], p["flags"])
    b.run_ms(10)
    got = [x for x in b.edge.read() if 0x10 <= x[0] < 0x20]
    assert got == [(link.MSG_IMPEDANCE, 0, unhexlify(golden["body_hex"]))], got


def test_eis_chunks_decode_to_their_spectrum():
    frames = [v for v in _vectors()["frames"] if v["msg_type"] == link.MSG_EIS]
    assert len(frames) >= 2
    points = []
    for v in frames:
        got = []
        dec = link.FrameDecoder(lambda t, s, b: got.append((t, s, bytes(b))))
        dec.feed(unhexlify(v["wire_hex"]))
        assert dec.errors == 0 and got[0][0] == link.MSG_EIS and got[0][1] == v["seq"]
        chunk = json.loads(got[0][2])
        assert chunk["eis_seq"] == 1 and chunk["chunks"] == len(frames)
        points += chunk["points"]
    assert [q[0] for q in points] == [1000.0, 316.23, 10.0, 0.1]
    assert points[-1][1:] == [None, None, None, 3]  # a skipped point


def test_the_rig_frames_an_impedance_point_as_the_golden_frame():
    # With the impedance modules the rig needs more than the 256 KiB test heap on this
    # port (see test_echem_commands.py).
    from doubles import run_isolated

    run_isolated("test_link_echem.py", "_rig_frames_an_impedance_point_as_the_golden_frame")


def test_an_alarm_keeps_its_uptime_to_the_ms():
    # Evidence floats go to 5 significant digits (frame size); the alarm's uptime must
    # not: a day in, that would be 10 s steps.
    from fieldrig.measure import alarm_event

    ev = alarm_event({"event": "echem_alarm", "kind": "soft_short", "confidence": 0.912345,
                      "t_s": 86412.3456, "evidence": [{"row": "z_drop", "signal": "ln_z",
                                                       "stat": "cusum", "value": 1.234567}]})
    assert ev["t_s"] == 86412.346, ev
    assert abs(ev["confidence"] - 0.91234) < 2e-5, ev
    ((k, row), (k2, v)) = sorted(ev["evidence"][0].items())
    assert (k, row, k2) == ("row", "z_drop", "value") and v == 1.2346, ev
