"""Append golden frames for the electrochemistry message types (MSG_IMPEDANCE 0x11,
MSG_EIS 0x22) to docs/contracts/link_v1_vectors.json. CPython only:

    python firmware/tests/make_echem_vectors.py

The frames come from the edge's reference codec (``fieldrig_edge.link``: the ``cobs``
library and binascii.crc32), never from the firmware's encoder, so the firmware's link
tests check its codec against an independent one. Existing entries are never changed;
entries already present (by name) are left alone, so running it twice changes nothing.
"""

import json
import struct
import sys

VECTORS = "docs/contracts/link_v1_vectors.json"
MSG_IMPEDANCE = 0x11
MSG_EIS = 0x22
IMPEDANCE_FMT = "<IIffffB"  # firmware/fieldrig/link.py, docs/link.md

# (seq, uptime_s, uptime_us, f_hz, z_re_ohm, z_im_ohm, rel_err, flags): values exact in
# float32 so a decoder can compare them with ==.
IMPEDANCE_POINTS = (
    (0, 12, 500000, 31.25, 146.25, -18.875, 0.0009765625, 0x00),  # tracking, good
    (4096, 3600, 250, 1031.25, 52.3125, -15.0625, 0.015625, 0x01),  # tracking, fair
    (70000, 86400, 999999, 0.1, 412.5, -160.0, 0.25, 0x12),  # sweep point, poor
)
EIS_CHUNKS = (
    (12, {"eis_seq": 1, "chunk": 0, "chunks": 2,
          "points": [[1000.0, 52.5, -15.1, 0.00012, 0], [316.23, 68.12, -38.7, 0.0002, 0]]}),
    (13, {"eis_seq": 1, "chunk": 1, "chunks": 2,
          "points": [[10.0, 149.7, -6.2, 0.0004, 0], [0.1, None, None, None, 3]]}),
)


def main():
    from fieldrig_edge import link as ref  # pyright: ignore[reportMissingImports]

    with open(VECTORS) as f:
        doc = json.load(f)
    names = {v["name"] for v in doc["frames"]}
    added = 0
    points = doc.setdefault("impedance_points", [])
    have = {p["seq"] for p in points}
    for seq, t_s, t_us, f_hz, zr, zi, rel, flags in IMPEDANCE_POINTS:
        body = struct.pack(IMPEDANCE_FMT, t_s, t_us, f_hz, zr, zi, rel, flags)
        wire = ref.encode_frame(MSG_IMPEDANCE, seq, body)
        name = "impedance point seq %d" % seq
        if name not in names:
            doc["frames"].append({"name": name, "msg_type": MSG_IMPEDANCE, "seq": seq,
                                  "body_hex": body.hex(), "wire_hex": wire.hex()})
            added += 1
        if seq not in have:
            f32 = struct.unpack("<fff f", struct.pack("<ffff", f_hz, zr, zi, rel))
            points.append({"seq": seq, "uptime_s": t_s, "uptime_us": t_us, "f_hz": f32[0],
                           "z_re_ohm": f32[1], "z_im_ohm": f32[2], "rel_err": f32[3],
                           "flags": flags, "wire_hex": wire.hex()})
            added += 1
    for seq, obj in EIS_CHUNKS:
        body = json.dumps(obj).encode()
        name = "eis chunk %d of spectrum %d" % (obj["chunk"], obj["eis_seq"])
        if name not in names:
            doc["frames"].append({"name": name, "msg_type": MSG_EIS, "seq": seq,
                                  "body_hex": body.hex(),
                                  "wire_hex": ref.encode_frame(MSG_EIS, seq, body).hex()})
            added += 1
    with open(VECTORS, "w") as f:
        f.write(json.dumps(doc, indent=1) + "\n")  # pyright: ignore[reportCallIssue]
    print("added %d entries to %s" % (added, VECTORS))


if __name__ == "__main__" and sys.implementation.name == "cpython":
    main()
