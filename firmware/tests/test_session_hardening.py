# Reliable delivery under lost and damaged control frames (docs/link.md, "Reliable
# delivery" and the firmware notes): nothing is freed without an ACK, nothing is dropped
# without a report, the reliable stream keeps no hole, command numbers live per boot.
import json
import struct

from doubles import Bench

from fieldrig import link

TEL = link.STREAM_TELEMETRY
REL = link.STREAM_RELIABLE


def _hellos(b):
    return [json.loads(p[2]) for p in b.edge.of_type(link.MSG_HELLO)]


def _rel_seqs(b):
    return sorted({p[1] for p in b.edge.read() if 0x20 <= p[0] < 0x30})


def _assert_reliable_covered(b, upto):
    """Every reliable seq < upto arrived, or a reliable_dropped tombstone names it."""
    got = set(_rel_seqs(b))
    for e in b.edge.events("reliable_dropped"):
        got |= set(range(e["first_seq"], e["last_seq"] + 1))
    missing = [s for s in range(upto) if s not in got]
    assert missing == [], missing


def test_lost_hello_is_repeated_and_loses_nothing():
    b = Bench(connect=False)
    b.run_ms(1000)  # 10 samples before the edge
    b.mem.connect()
    b.run_ms(10)
    assert len(_hellos(b)) == 1
    b.edge.clear()  # the HELLO is lost on the line: the edge says nothing
    b.run_ms(480)
    assert _hellos(b) == []
    b.run_ms(40)  # ack_timeout after the HELLO: again
    h = _hellos(b)
    assert len(h) == 1 and h[0]["oldest_seq"] == 0 and h[0]["boot"] == b.rig.session.boot_id
    ring = b.rig.session.telemetry
    assert ring.base == 0 and ring.pending() == ring.next_seq  # all kept
    b.edge.clear()
    b.edge.ack(TEL, link.ACK_NONE)  # the edge answers the repeated HELLO
    b.edge.ack(REL, link.ACK_NONE)
    b.run_ms(20)
    seqs = b.edge.sample_seqs()
    assert seqs[:ring.next_seq] == list(range(ring.next_seq)), seqs
    b.run_ms(2000)
    assert _hellos(b) == []  # heard: no more repeats
    assert b.edge.events("telemetry_dropped") == []


def test_lost_acks_after_hello_keep_data_and_the_late_ack_resends_the_rest():
    b = Bench()
    b.run_ms(2000)  # the edge's ACKs never arrive: messages go out once, are kept
    ring = b.rig.session.telemetry
    rel = b.rig.session.reliable
    n = ring.next_seq
    assert ring.pending() == n and ring.base == 0 and ring.retransmitted == 0
    assert rel.pending() == rel.next_seq == 2 and len(rel.items) == 2  # boot, config
    b.edge.clear()
    b.edge.ack(TEL, 4)  # the edge had spooled 0..4 before the line got noisy
    b.edge.ack(REL, link.ACK_NONE)
    b.run_ms(5)
    seqs = b.edge.sample_seqs()
    assert seqs[:n - 5] == list(range(5, n)), seqs
    assert [e["event"] for e in b.edge.events()] == ["boot", "config_defaults"]
    assert ring.base == 5 and b.edge.events("telemetry_dropped") == []


def test_corrupt_and_lost_acks_free_nothing_and_go_back_n_resends():
    b = Bench()
    b.run_ms(100)
    b.edge.ack(TEL, link.ACK_NONE)
    b.edge.ack(REL, link.ACK_NONE)
    b.run_ms(1000)
    ring = b.rig.session.telemetry
    # A corrupt ACK (one bit flipped in its seq, CRC now wrong) frees nothing.
    bad = bytearray(b.edge.enc.frame(link.MSG_ACK, 0, struct.pack("<BI", TEL, 7)))
    bad[3] ^= 0x04
    errors = b.rig.session.decoder.errors
    b.mem.feed(bytes(bad))
    b.run_ms(5)
    assert b.rig.session.decoder.errors == errors + 1 and ring.base == 0
    # No ACK gets through (lost): after ack_timeout everything is sent again.
    b.edge.clear()
    b.run_ms(600)
    seqs = b.edge.sample_seqs()
    assert 0 in seqs and seqs[seqs.index(0):seqs.index(0) + 8] == list(range(8))
    assert ring.base == 0 and ring.timeouts >= 1
    b.edge.ack(TEL, 7)  # a good one frees exactly 0..7
    b.run_ms(5)
    assert ring.base == 8


def test_overflow_while_the_edge_stalls_is_reported_with_exact_ranges():
    b = Bench(connect=False, overrides={"link": {"backlog": 16}})
    b.run_ms(2950)  # samples 0..29 into 16 slots: 0..13 dropped before any edge
    b.mem.connect()
    b.run_ms(10)
    b.edge.ack(TEL, link.ACK_NONE)
    b.edge.ack(REL, link.ACK_NONE)
    b.run_ms(5)
    ring = b.rig.session.telemetry
    assert b.edge.hello()["oldest_seq"] == 14
    assert b.edge.events("telemetry_dropped") == [
        {"event": "telemetry_dropped", "first_seq": 0, "last_seq": 13, "count": 14}]
    b.edge.ack(TEL, 19)  # the edge spooled 14..19, then stalls (spool full)
    b.edge.ack(REL, b.edge.last_rel)
    b.run_ms(5)
    assert ring.base == 20
    b.run_ms(2200)  # 22 more samples: 20..35 fill the ring, 20..41 is the oldest run
    drops = b.edge.events("telemetry_dropped")[1:]
    dropped = []
    for d in drops:
        assert d["count"] == d["last_seq"] - d["first_seq"] + 1
        dropped.extend(range(d["first_seq"], d["last_seq"] + 1))
    # Contiguous from the oldest unacked, each seq once, no acked seq among them.
    assert dropped == list(range(20, 20 + len(dropped))), dropped
    assert ring.base == 20 + len(dropped) + (ring.dropped - 14 - len(dropped))
    assert ring.pending() == 16 and ring.dropped >= 14 + len(dropped) > 14 + 10


def test_reliable_overflow_becomes_a_tombstone_and_hello_names_the_range():
    b = Bench(connect=False, overrides={"link": {"queue": 8}})
    b.run_ms(50)
    ses = b.rig.session
    for k in range(12):
        ses.send_event({"event": "filler", "k": k})
    rel = ses.reliable
    # boot, config_defaults, 12 fillers = seqs 0..13 in 8 slots: 0..6 became one
    # tombstone (seq 6), 7..13 are kept.
    assert rel.next_seq == 14 and len(rel.items) == 8 and rel.dropped == 7
    b.mem.connect()
    b.run_ms(10)
    h = b.edge.hello()
    assert (h["rel_oldest"], h["rel_next"], h["cmd_next"]) == (0, 14, 0)
    b.edge.ack(TEL, link.ACK_NONE)
    b.edge.ack(REL, link.ACK_NONE)
    b.run_ms(20)
    tomb = b.edge.events("reliable_dropped")
    assert tomb == [{"event": "reliable_dropped", "first_seq": 0, "last_seq": 6,
                     "count": 7}], tomb
    # The tombstone travels at seq 6: the edge's in-order receiver sees no hole.
    assert _rel_seqs(b) == list(range(6, 14))
    assert [e["k"] for e in b.edge.events("filler")] == list(range(5, 12))
    _assert_reliable_covered(b, rel.next_seq)


def test_tombstone_carries_the_telemetry_reports_it_swallowed():
    b = Bench(overrides={"link": {"queue": 8, "backlog": 16}})
    b.run_ms(100)
    b.edge.ack(TEL, link.ACK_NONE)
    b.edge.ack(REL, link.ACK_NONE)
    b.run_ms(2900)  # the edge acks nothing more: telemetry overflows, reported
    ses = b.rig.session
    assert b.edge.events("telemetry_dropped"), "no telemetry report was made"
    last_reported = b.edge.events("telemetry_dropped")[-1]["last_seq"]
    for k in range(10):  # the reports are swallowed by the reliable overflow
        ses.send_event({"event": "filler", "k": k})
    head = ses.reliable.items[0]
    assert len(head) == 4 and head[3]["telemetry_through"] == last_reported
    b.mem.drop()
    b.run_ms(10)
    b.edge.clear()
    b.mem.connect()
    b.run_ms(10)
    b.edge.ack(TEL, link.ACK_NONE)
    b.edge.ack(REL, link.ACK_NONE)
    b.run_ms(20)
    tomb = b.edge.events("reliable_dropped")[0]
    assert tomb["telemetry_through"] == last_reported and tomb["first_seq"] == 0
    _assert_reliable_covered(b, ses.reliable.next_seq)


def test_command_dedup_and_reply_survive_a_reconnect():
    b = Bench()
    b.run_ms(100)
    b.edge.ack(TEL, link.ACK_NONE)
    b.edge.ack(REL, link.ACK_NONE)
    b.run_ms(10)
    r3 = b.command(3, "set_current", {"current_ma": 0.3})
    assert r3["ok"] and b.rig.galvanostat.setpoint_ma == 0.3
    executed = b.rig.session.commands_executed
    b.mem.drop()  # the REPLY was never acked
    b.run_ms(10)
    b.edge.clear()
    b.mem.connect()
    b.run_ms(10)
    assert b.edge.hello()["cmd_next"] == 4
    b.edge.ack(TEL, link.ACK_NONE)
    b.edge.ack(REL, link.ACK_NONE)
    b.run_ms(10)
    # The queued REPLY comes again (go-back-N) and a repeated COMMAND 3 is not run.
    assert [r["cmd_seq"] for r in b.edge.replies()] == [3]
    b.edge.command(3, "set_current", {"current_ma": 0.9})
    b.run_ms(10)
    assert b.rig.galvanostat.setpoint_ma == 0.3
    assert b.rig.session.commands_executed == executed
    assert b.command(4, "status")["ok"]


def test_a_reply_lost_to_overflow_is_queued_again_on_the_repeat():
    b = Bench(overrides={"link": {"queue": 8}})
    b.run_ms(100)
    b.edge.ack(TEL, link.ACK_NONE)
    b.edge.ack(REL, link.ACK_NONE)
    b.run_ms(10)
    b.mem.drop()  # the edge goes before it gets the REPLY
    b.run_ms(10)
    ses = b.rig.session
    ses._on_command(1, b'{"cmd": "set_current", "args": {"current_ma": 0.4}}')
    rep_seq = ses._replies[-1][1]
    for k in range(10):  # the queue overflows: the REPLY becomes part of a tombstone
        ses.send_event({"event": "filler", "k": k})
    assert ses._replies[-1][1] == -1 and rep_seq <= ses.reliable.items[0][0]
    b.edge.clear()
    b.mem.connect()
    b.run_ms(10)
    b.edge.ack(TEL, link.ACK_NONE)
    b.edge.ack(REL, link.ACK_NONE)
    b.run_ms(10)
    assert b.edge.replies() == []  # gone with the tombstone
    b.edge.command(1, "set_current", {"current_ma": 0.8})  # the edge repeats it
    b.run_ms(10)
    reps = b.edge.replies()
    assert [r["cmd_seq"] for r in reps] == [1] and reps[0]["ok"]
    assert b.rig.galvanostat.setpoint_ma == 0.4 and ses.duplicate_commands == 1
    _assert_reliable_covered(b, ses.reliable.next_seq)
