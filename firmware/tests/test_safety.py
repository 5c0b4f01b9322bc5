# The diagnosis table: every row trips on its condition after its debounce delay, with
# the reaction its tier calls for and an EVENT; fatal trips latch until an authorised
# reset; thresholds cannot be loosened past the absolute limits.
from doubles import Bench

from fieldrig import safety


def _energised():
    b = Bench()
    b.run_ms(1000)
    b.energise()
    return b


def _tripped_event(b, row_id):
    evs = [e for e in b.edge.events("limit_tripped") if e["row"] == row_id]
    assert len(evs) == 1, evs
    return evs[0]


def _fatal(b, row_id):
    stops = b.pulses.stops
    b.check_debounce(row_id)
    sf = b.rig.safety
    # Same evaluation call: the outputs are already safe when the trip is visible.
    assert sf.tripped
    assert b.cell.fraction == 0.0 and b.cell.range_index == -1 and b.thermal.duty == 0.0
    assert b.pulses.stops > stops
    assert b.safe_state_holds()
    ev = _tripped_event(b, row_id)
    assert ev["tier"] == "fatal" and ev["reaction"] == "safe_state"
    # Telemetry reports the tripped state (rig_state 2) from now on.
    assert b.rig.rig_state() == 2
    return ev


def _current_off_warning(b, row_id):
    b.check_debounce(row_id)
    sf = b.rig.safety
    assert not sf.tripped  # not latched
    assert b.rig.galvanostat.range_index == -1 and b.cell.range_index == -1
    # The rest keeps running.
    assert b.thermal.duty > 0 and b.rig.pressure_loop.setpoint_mpa is not None
    ev = _tripped_event(b, row_id)
    assert ev["tier"] == "warning" and ev["reaction"] == "current_off"
    # While it is active, new current is refused without side effect.
    r = b.command(2000, "set_current", {"current_ma": 0.5})
    assert not r["ok"] and r["error"] == "inhibited" and b.rig.galvanostat.range_index == -1
    return ev


def _cleared(b, row_id):
    for _ in range(200):
        b.run_ms(50)
        if [e for e in b.edge.events("limit_cleared") if e["row"] == row_id]:
            return
    raise AssertionError("%s never cleared" % row_id)


def test_table_has_every_required_row_once():
    ids = [r[safety.ID] for r in safety.ROWS]
    for need in ("over_temp", "heater_runaway", "over_pressure", "under_pressure",
                 "over_current", "over_voltage", "under_voltage", "rtd_open", "rtd_short",
                 "loadcell_sat", "adc_crc", "link_loss", "watchdog"):
        assert ids.count(need) == 1, need
    for r in safety.ROWS:
        assert r[safety.TIER] in (safety.FATAL, safety.WARNING, safety.INFO)
        assert r[safety.REACTION] in (safety.SAFE_STATE, safety.CURRENT_OFF, safety.EVENT_ONLY)
        assert (r[safety.TIER] == safety.FATAL) == (r[safety.REACTION] == safety.SAFE_STATE)
        if r[safety.CMP] != safety.FLAG:
            safety.check_threshold(r[safety.ID], r[safety.THRESHOLD])  # defaults are legal


def test_over_temp_trips_to_safe_state():
    b = _energised()
    b.thermal.temp_c = 130.0
    ev = _fatal(b, "over_temp")
    assert ev["value"] > 120.0 and ev["threshold"] == 120.0


def test_heater_runaway_trips_when_temperature_rises_with_heater_off():
    b = _energised()
    assert b.command(10, "set_temperature", {"temp_c": None})["ok"]
    b.run_ms(3000)  # the heater ramps down to off
    assert b.thermal.duty == 0.0
    b.thermal.stuck_on = True  # shorted MOSFET: heats with the duty at zero
    _fatal(b, "heater_runaway")


def test_over_pressure_trips_and_holds_the_press():
    b = _energised()
    b.press.position += 2000  # +40 MPa: a jammed screw or a swelling cell
    _fatal(b, "over_pressure")


def test_under_pressure_warning_turns_current_off_then_clears():
    b = _energised()
    b.press.high_stop = b.press.position  # press cannot close further
    b.press.creep_steps += 400  # the stack collapses (voids): 8 MPa less
    _current_off_warning(b, "under_pressure")
    b.press.high_stop = 30000
    _cleared(b, "under_pressure")
    assert b.command(2001, "set_current", {"current_ma": 0.5})["ok"]


def test_under_pressure_is_not_evaluated_without_a_pressure_setpoint():
    b = Bench()
    b.press.position = 0  # open press, 0 MPa, nothing held
    b.run_ms(10000)
    assert "under_pressure" not in b.rig.safety.active_rows()


def test_over_current_trips():
    b = _energised()
    b.cell.force_current_ma = 60.0
    _fatal(b, "over_current")


def test_negative_over_current_trips_too():
    b = _energised()
    b.cell.force_current_ma = -75.0
    _fatal(b, "over_current")


def test_over_voltage_trips():
    b = _energised()
    b.cell.force_voltage_v = 4.8
    _fatal(b, "over_voltage")


def test_under_voltage_warning_turns_current_off_then_clears():
    b = _energised()
    b.cell.force_voltage_v = -1.5
    _current_off_warning(b, "under_voltage")
    b.cell.force_voltage_v = None
    _cleared(b, "under_voltage")


def test_rtd_open_turns_heater_off_at_once_then_trips():
    b = _energised()
    b.thermal.fault_code = 0x80  # MAX31865: RTD above high threshold (open element)
    i = b.run_until_condition("rtd_open")
    # The heater loop turned the heater off in the step that saw the fault, before
    # the table's debounce.
    assert b.thermal.duty == 0.0 and not b.rig.safety.tripped
    b.run_ms(270)
    assert not b.rig.safety.active[i]
    b.run_ms(60)
    assert b.rig.safety.tripped and b.safe_state_holds()
    assert _tripped_event(b, "rtd_open")["value"] is True


def test_rtd_short_trips():
    b = _energised()
    b.thermal.fault_code = 0x40  # below low threshold: shorted element
    _fatal(b, "rtd_short")
    assert not b.rig.heater_loop.fault_open


def test_loadcell_saturation_trips_and_stops_the_press():
    b = _energised()
    b.press.force_saturated = True
    _fatal(b, "loadcell_sat")


def test_adc_crc_errors_warning():
    b = _energised()

    class Noisy:
        def __init__(self, cell):
            self.cell = cell

        def tick(self):
            self.cell.crc_errors += 3  # 30 per second

    noisy = Noisy(b.cell)
    b.rig.sched.every(100000, noisy.tick, "noise")
    _current_off_warning(b, "adc_crc")


def test_link_loss_warning_is_event_only_and_clears_on_traffic():
    b = _energised()
    i = b.row_index("link_loss")
    b.run_ms(25000)
    assert not b.rig.safety.active[i]
    b.run_ms(6000)  # 31 s without a frame from the edge
    assert b.rig.safety.active[i] and not b.rig.safety.tripped
    ev = _tripped_event(b, "link_loss")
    assert ev["tier"] == "warning" and ev["reaction"] == "event"
    assert b.rig.galvanostat.range_index != -1 and b.thermal.duty > 0  # the cell test goes on
    b.edge.sync(7)
    _cleared(b, "link_loss")


def test_watchdog_trips_on_a_main_loop_stall():
    b = _energised()
    b.clock.advance(300 * 1000)  # a 300 ms stall: within the 500 ms limit
    b.run_ms(50)
    assert not b.rig.safety.tripped
    b.clock.advance(800 * 1000)  # the loop did not run for 800 ms
    b.run_ms(20)
    assert b.rig.safety.tripped
    ev = _tripped_event(b, "watchdog")
    assert ev["value"] >= 800
    assert b.safe_state_holds()


def test_backlog_high_is_info_only():
    b = Bench(period_ms=10)
    b.edge.record_seqs = False  # thousands of retransmitted samples: count only
    b.run_ms(100)
    b.edge.ack(0x10, 0xFFFFFFFF)  # the edge answers HELLO, then stalls (spool full)
    b.run_ms(300)
    i = b.row_index("backlog_high")
    b.run_ms(6000)
    assert not b.rig.safety.active[i]
    b.run_ms(2000)  # > 768 of 1024 unacked
    assert b.rig.safety.active[i] and not b.rig.safety.tripped
    assert _tripped_event(b, "backlog_high")["tier"] == "info"


def test_fatal_latch_needs_the_token_and_an_absent_condition():
    b = _energised()
    b.thermal.temp_c = 130.0
    b.check_debounce("over_temp")
    # Latched: energising commands are refused and change nothing.
    for seq, cmd, args in ((11, "set_current", {"current_ma": 0.5}),
                           (12, "set_temperature", {"temp_c": 40.0}),
                           (13, "set_pressure", {"pressure_mpa": 5.0})):
        r = b.command(seq, cmd, args)
        assert not r["ok"] and r["error"] == "tripped", r
    assert b.safe_state_holds()
    r = b.command(14, "reset_safety", {"token": "1234"})
    assert not r["ok"] and r["error"] == "bad_token" and b.rig.safety.tripped
    r = b.command(15, "reset_safety", {"token": "0000"})  # still 130 C: refused
    assert not r["ok"] and r["error"] == "condition_present" and b.rig.safety.tripped
    b.thermal.temp_c = 30.0
    b.run_ms(200)
    assert b.rig.safety.tripped  # a cleared condition does not unlatch by itself
    r = b.command(16, "reset_safety", {"token": "0000"})
    assert r["ok"] and r["result"]["was_tripped"] and not b.rig.safety.tripped
    assert b.edge.events("safety_reset")[0]["rows"] == ["over_temp"]
    assert b.command(17, "set_current", {"current_ma": 0.5})["ok"]
    assert b.rig.rig_state() == 1


def test_reset_token_comes_from_config():
    b = Bench(overrides={"limits": {}}, boot_id=1)
    b.rig.cfg["reset_token"] = "s3cret-pin"
    b.run_ms(1000)
    b.clock.advance(900 * 1000)
    b.run_ms(20)
    assert b.rig.safety.tripped
    assert b.command(1, "reset_safety", {"token": "0000"})["error"] == "bad_token"
    assert b.command(2, "reset_safety", {"token": "s3cret-pin"})["ok"]


def test_limits_cannot_be_loosened_past_absolute_limits():
    b = Bench()
    b.run_ms(600)
    for seq, row, value in ((1, "over_temp", 150.5), (2, "over_temp", 250.0),
                            (3, "over_pressure", 101.0), (4, "over_current", 100.01),
                            (5, "under_voltage", -5.5), (6, "watchdog", 5000),
                            (7, "under_pressure", 0.0)):
        before = b.rig.safety.threshold(row)
        r = b.command(seq, "set_limit", {"row": row, "threshold": value})
        assert not r["ok"] and r["error"] == "beyond_absolute_limit", r
        assert b.rig.safety.threshold(row) == before
        assert b.rig.cfg["limits"][row] == before
    r = b.command(8, "set_limit", {"row": "rtd_open", "threshold": 1})
    assert r["error"] == "not_adjustable"
    r = b.command(9, "set_limit", {"row": "no_such_row", "threshold": 1})
    assert r["error"] == "unknown_row"
    # At the absolute limit, and tightening, are fine and take effect.
    assert b.command(10, "set_limit", {"row": "over_temp", "threshold": 150})["ok"]
    assert b.rig.safety.threshold("over_temp") == 150.0
    assert b.command(11, "set_limit", {"row": "over_temp", "threshold": 60.0})["ok"]
    assert b.rig.safety.threshold("over_temp") == 60.0 and b.rig.cfg["limits"]["over_temp"] == 60.0


def test_tightened_limit_trips_at_the_new_threshold():
    b = _energised()
    assert b.command(10, "set_limit", {"row": "over_current", "threshold": 0.4})["ok"]
    _fatal(b, "over_current")  # 0.5 mA flowing > 0.4 mA


def test_setpoints_keep_a_margin_from_trip_limits():
    b = Bench()
    b.run_ms(600)
    r = b.command(1, "set_temperature", {"temp_c": 118.0})  # limit 120 - 5 C margin
    assert not r["ok"] and r["error"] == "out_of_range"
    r = b.command(2, "set_pressure", {"pressure_mpa": 29.0})  # 90 % of 30 MPa
    assert not r["ok"] and r["error"] == "out_of_range"
    r = b.command(3, "set_current", {"current_ma": 50.5})
    assert not r["ok"] and r["error"] == "out_of_range"
    assert b.rig.heater_loop.setpoint_c is None and b.rig.pressure_loop.setpoint_mpa is None
    assert b.rig.galvanostat.range_index == -1
