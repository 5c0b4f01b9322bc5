# Link framing under MicroPython: the firmware codec must produce and accept exactly
# the golden frames in docs/contracts/link_v1_vectors.json (shared with the edge),
# reject every invalid one without side effects, and resynchronise after noise.
import json
import random
from binascii import unhexlify

from fieldrig import link

VECTORS = "../../docs/contracts/link_v1_vectors.json"


def _vectors():
    with open(VECTORS) as f:
        return json.load(f)


def _collect():
    got = []

    def on_packet(msg_type, seq, body):
        got.append((msg_type, seq, bytes(body)))

    return got, link.FrameDecoder(on_packet)


def test_encoder_matches_golden_frames():
    enc = link.FrameEncoder()
    for v in _vectors()["frames"]:
        body = unhexlify(v["body_hex"])
        wire = bytes(enc.frame(v["msg_type"], v["seq"], body))
        assert wire == unhexlify(v["wire_hex"]), v["name"]


def test_sample_encoder_matches_golden_samples():
    enc = link.FrameEncoder()
    for v in _vectors()["samples"]:
        wire = bytes(enc.sample(v["seq"], v["uptime_s"], v["uptime_us"], v["cell_voltage_v"],
                                v["cell_current_ma"], v["cell_temp_c"],
                                v["stack_pressure_mpa"], v["rig_state"]))
        assert wire == unhexlify(v["wire_hex"]), v["seq"]


def test_decoder_accepts_golden_frames_back_to_back():
    vec = _vectors()
    got, dec = _collect()
    stream = b"".join(unhexlify(v["wire_hex"]) for v in vec["frames"])
    dec.feed(stream)
    assert dec.errors == 0
    assert [(g[0], g[1]) for g in got] == [(v["msg_type"], v["seq"]) for v in vec["frames"]]
    assert [g[2] for g in got] == [unhexlify(v["body_hex"]) for v in vec["frames"]]


def test_decoder_rejects_each_invalid_frame_and_recovers():
    vec = _vectors()
    good = unhexlify(vec["frames"][0]["wire_hex"])
    for bad in vec["invalid"]:
        got, dec = _collect()
        dec.feed(unhexlify(bad["wire_hex"]) + good)
        assert dec.errors == 1, bad["name"]
        assert len(got) == 1 and got[0][0] == link.MSG_HELLO, bad["name"]


def test_byte_at_a_time_feed_equals_bulk_feed():
    vec = _vectors()
    stream = b"".join(unhexlify(v["wire_hex"]) for v in vec["frames"])
    got, dec = _collect()
    for i in range(len(stream)):
        dec.feed(stream[i:i + 1])
    assert len(got) == len(vec["frames"]) and dec.errors == 0


def test_oversized_frame_is_counted_and_skipped():
    vec = _vectors()
    got, dec = _collect()
    dec.feed(b"\x01" * (link.MAX_ENCODED + 50) + b"\x00" + unhexlify(vec["frames"][1]["wire_hex"]))
    assert dec.errors == 1
    assert len(got) == 1


def test_random_noise_never_crashes_and_never_yields_a_packet_with_bad_crc():
    # Fuzz: random bytes and mutated golden frames. Any packet that comes out must
    # re-encode to a frame that is in the input, i.e. the CRC really was valid.
    vec = _vectors()
    frames = [unhexlify(v["wire_hex"]) for v in vec["frames"]]
    random.seed(1234)
    enc = link.FrameEncoder()
    for _ in range(300):
        src = bytearray(frames[random.getrandbits(8) % len(frames)])
        for _ in range(1 + random.getrandbits(3)):
            src[random.getrandbits(16) % len(src)] = random.getrandbits(8)
        noise = bytes(random.getrandbits(8) for _ in range(random.getrandbits(5)))
        got, dec = _collect()
        dec.feed(noise + bytes(src) + b"\x00")
        for msg_type, seq, body in got:
            again = bytes(enc.frame(msg_type, seq, body))
            assert again in bytes(src) + b"\x00" or again in noise + bytes(src) + b"\x00"


def test_body_too_long_is_refused():
    enc = link.FrameEncoder()
    try:
        enc.frame(link.MSG_EVENT, 0, bytes(link.MAX_BODY + 1))
    except link.LinkError:
        return
    raise AssertionError("over-long body was framed")
