"""Write docs/contracts/link_v1_vectors.json: golden frames for the link protocol.

Produced once by the CPython reference codec (the ``cobs`` library + binascii.crc32)
and committed; firmware (MicroPython) and edge (CPython) tests both check against the
committed file. Re-run only when the protocol version changes.
"""

from __future__ import annotations

import json
from pathlib import Path

from fieldrig_edge import link

OUT = Path(__file__).resolve().parents[1] / "docs" / "contracts" / "link_v1_vectors.json"


def main() -> None:
    frames = []

    def add(name: str, msg_type: int, seq: int, body: bytes) -> str:
        wire = link.encode_frame(msg_type, seq, body)
        frames.append({"name": name, "msg_type": msg_type, "seq": seq,
                       "body_hex": body.hex(), "wire_hex": wire.hex()})
        return wire.hex()

    add("hello", link.MSG_HELLO, 0, b'{"fw":"0.1.0","protocol":1,"rig":"rig-1"}')
    add("empty ack", link.MSG_ACK, 7, b"")
    add("zeros in body and header", link.MSG_EVENT, 0, bytes(20))
    add("seq u32 max", link.MSG_REPLY, 0xFFFFFFFF, b"\x00\xff" * 8)
    add("254 non-zero bytes (COBS block boundary)", link.MSG_EVENT, 1, bytes(range(1, 255)))
    add("max body", link.MSG_EVENT, 2, bytes((i * 7 + 1) % 256 for i in range(link.MAX_BODY)))
    samples = []
    for seq, values in [
        (0, (0, 0, 0.03125, 0.5, 25.0, 5.0, 1)),
        (123456, (3600, 999999, -0.0625, -1.25, 80.5, 12.0, 3)),
        (4294967295, (4000000000, 1, 4.25, 1000.0, -20.0, 0.0, 255)),
    ]:
        s = link.Sample(seq, *values)
        wire = link.encode_sample(s)
        samples.append({"seq": seq, "uptime_s": values[0], "uptime_us": values[1],
                        "cell_voltage_v": values[2], "cell_current_ma": values[3],
                        "cell_temp_c": values[4], "stack_pressure_mpa": values[5],
                        "rig_state": values[6], "wire_hex": wire.hex()})
    good = bytes.fromhex(frames[0]["wire_hex"])
    bad_crc = bytearray(link.encode_frame(link.MSG_HELLO, 0, b"x"))
    bad_crc[-2] ^= 0x40  # a CRC bit; the byte stays non-zero, so framing is intact
    assert bad_crc[-2] != 0
    bad_version = link.HEADER.pack(2, link.MSG_HELLO, 0) + b"x"
    bad_version += link.CRC.pack(__import__("binascii").crc32(bad_version))
    from cobs import cobs
    invalid = [
        {"name": "flipped bit (CRC mismatch)", "wire_hex": bytes(bad_crc).hex()},
        {"name": "unknown protocol version",
         "wire_hex": (cobs.encode(bad_version) + b"\x00").hex()},
        {"name": "truncated frame", "wire_hex": (good[:8] + b"\x00").hex()},
        {"name": "COBS code past end", "wire_hex": "ff0102030400"},
        {"name": "too short for header", "wire_hex": "0401020300"},
    ]
    OUT.write_text(json.dumps({
        "protocol_version": link.PROTOCOL_VERSION,
        "note": "golden vectors; see docs/link.md. wire_hex includes the 0x00 delimiter.",
        "frames": frames, "samples": samples, "invalid": invalid}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
