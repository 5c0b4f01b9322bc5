# The main loop wired to boards: the unix_synthetic board's scripted telemetry is exact
# (the end-to-end test depends on it), its plant mode runs the loops, and a sample quota
# ends the run once the edge has gone.
import struct

from doubles import Edge, MemLink

from boards import load
from boards.unix_synthetic import synthetic_sample
from fieldrig import app, link
from fieldrig.clock import VirtualClock


def _board(plant="scripted"):
    board = load("unix_synthetic")({"port": "0", "plant": plant})
    board["link"].close()
    board["link"] = MemLink()
    return board


def test_parse_args():
    assert app.parse_args(["--board", "x", "--period-ms", "5"]) == {"board": "x",
                                                                    "period_ms": "5"}
    for bad in (["--board"], ["board", "x"]):
        try:
            app.parse_args(bad)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % bad)


def test_scripted_board_sends_exact_numbered_samples():
    board = _board()
    mem = board["link"]
    edge = Edge(mem)
    last_t = [(-1, 0)]

    def check(seq, body):
        t_s, t_us, v, i_ma, t_c, p_mpa, state = struct.unpack(link.SAMPLE_FMT, body)
        f32 = struct.unpack("<ffff", struct.pack("<ffff", *synthetic_sample(seq)))
        assert (v, i_ma, t_c, p_mpa) == f32, seq
        assert state == app.RIG_STATE_RUNNING
        assert (t_s, t_us) > last_t[0]  # uptime strictly increases
        last_t[0] = (t_s, t_us)

    edge.on_sample = check
    rig = app.Rig(board, VirtualClock(), "rig-a", 5, 300, boot_id=7)
    mem.connect()
    rig.sched.run_for_ms(3000)
    assert edge.sample_seqs() == list(range(300))
    assert edge.hello()["rig"] == "rig-a"
    assert rig.safety.active_rows() == []


def test_quota_ends_the_run_once_the_edge_has_gone():
    board = _board()
    mem = board["link"]
    Edge(mem)
    rig = app.Rig(board, VirtualClock(), "rig-a", 10, 20, boot_id=7)
    assert not rig.done()
    mem.connect()
    rig.sched.run_for_ms(1000)
    assert rig.session.telemetry.next_seq == 20
    assert not rig.done()  # the edge is still connected
    mem.drop()
    rig.run()  # returns: quota reached, edge gone, nothing left it would ack
    assert rig.done() and not rig.session.connected


def test_model_board_runs_the_loops():
    board = _board("model")
    clock = VirtualClock()
    # The plant models follow the board's clock: hand them the virtual one.
    for key in ("heater", "press"):
        board[key].clock = clock
        board[key]._s = board[key]._us = 0
    board["press"].position = 1200
    mem = board["link"]
    Edge(mem)
    rig = app.Rig(board, clock, "rig-m", 100, -1, boot_id=1)
    mem.connect()
    rig.set_temperature(50.0)
    rig.set_pressure(6.0)
    rig.sched.run_for_ms(20000)
    rig.set_current(2.0)
    rig.sched.run_for_ms(1000)
    st = rig.status()
    assert abs(st["pressure_mpa"] - 6.0) < 0.2 and st["temp_c"] > 30.0
    assert abs(st["current_ma"] - 2.0) < 1e-9 and abs(st["voltage_v"] - 0.04) < 1e-9
    assert st["state"] == "running" and st["active"] == []


def test_boot_ids_differ():
    assert app.new_boot_id() != app.new_boot_id()
