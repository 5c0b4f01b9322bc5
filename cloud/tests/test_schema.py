"""MQTT payload -> line protocol: the contract of docs/influxdb.md, and every way a
payload can be wrong turning into a PayloadError (a dead letter), never a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import telemetry
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldrig_cloud import schema
from fieldrig_cloud.schema import PayloadError, Topic, points_for

T = 1_763_750_000_000_000_000
TOPIC = "fieldrig/v1/lab-1/rig-a/telemetry"


def route(topic: str, payload: Any, received_ns: int = T) -> list[str]:
    return points_for(topic, json.dumps(payload).encode(), received_ns)


def test_telemetry_sample_becomes_one_cell_sample_point() -> None:
    p = telemetry("rig-a", range(3, 4), T, boot=None)
    [line] = route(TOPIC, p)
    assert line == (
        "cell_sample,cell=cell-1,rig=rig-a,run=run-1,site=lab-1 "
        f"seq=3i,rig_state=1i,cell_voltage_v={p['samples'][0]['cell_voltage_v']!r},"
        f"cell_current_ma=0.5,cell_temp_c={p['samples'][0]['cell_temp_c']!r},"
        f"stack_pressure_mpa=5.0 {T + 300_000_000}")  # the sender's number text, as sent


def test_telemetry_floats_keep_the_senders_text_and_strings_are_not_numbers() -> None:
    raw = (b'{"schema":1,"site":"lab-1","rig":"rig-a","cell":"c","run":"r","samples":['
           b'{"seq":1,"time_ns":5,"cell_voltage_v":3.0517578125e-05,"cell_current_ma":-0.50,'
           b'"cell_temp_c":25.0,"stack_pressure_mpa":1e999,"rig_state":1}]}')
    [line] = points_for(TOPIC, raw, T)
    # Float tokens verbatim. One beyond float64 is left for InfluxDB to refuse ("invalid
    # float", 400: the ingester dead-letters the message as influx_rejected).
    assert line.endswith(" seq=1i,rig_state=1i,cell_voltage_v=3.0517578125e-05,"
                         "cell_current_ma=-0.50,cell_temp_c=25.0,stack_pressure_mpa=1e999 5")
    # An integer token takes the checked path (which also catches the overflow).
    with pytest.raises(PayloadError, match="stack_pressure_mpa must be finite"):
        points_for(TOPIC, raw.replace(b'"cell_temp_c":25.0', b'"cell_temp_c":25'), T)
    [line] = points_for(TOPIC, raw.replace(b'"cell_temp_c":25.0', b'"cell_temp_c":25')
                        .replace(b"1e999", b"5.0"), T)
    assert "cell_temp_c=25,stack_pressure_mpa=5 5" in line
    with pytest.raises(PayloadError, match="cell_temp_c must be a number"):
        points_for(TOPIC, raw.replace(b'"cell_temp_c":25.0', b'"cell_temp_c":"25.0"'), T)
    with pytest.raises(PayloadError, match="not a number line protocol can store"):
        points_for(TOPIC, raw.replace(b"1e999", b"Infinity"), T)


def test_boot_becomes_a_tag_and_optional_fields_their_measurements() -> None:
    p = telemetry("rig-a", range(2), T, boot=42, step=3, cycle=1, current_setpoint_ma=0.5,
                  temp_setpoint_c=60, z_freq_hz=1000.0, z_mag_ohm=120.5, z_phase_deg=-12.0)
    lines = route(TOPIC, p)
    assert [ln.split(",", 1)[0] for ln in lines] == [
        "cell_sample", "actuator_state", "impedance"] * 2
    assert all(",boot=42," in ln for ln in lines)
    assert "step=3i,cycle=1i" in lines[0]
    # Set-points are floats whatever JSON number form they came in (no type conflicts):
    # written without the "i" suffix (and, like influxdb-client's Point, without ".0").
    assert "current_setpoint_ma=0.5,temp_setpoint_c=60 " in lines[1]
    assert "z_freq_hz=1000,z_mag_ohm=120.5,z_phase_deg=-12,seq=0i" in lines[2]


def test_null_reading_leaves_the_field_out_but_keeps_the_sample() -> None:
    # The edge sends null for a failed sensor (NaN has no JSON form).
    p = telemetry("rig-a", range(3), T, boot=None)
    p["samples"][1]["cell_temp_c"] = None
    lines = route(TOPIC, p)
    assert len(lines) == 3
    assert "cell_temp_c" not in lines[1] and "seq=1i" in lines[1]
    assert "cell_temp_c" in lines[0] and "cell_temp_c" in lines[2]


def test_points_are_keyed_by_payload_time_so_redelivery_is_identical() -> None:
    p = telemetry("rig-a", range(10), T)
    assert route(TOPIC, p, received_ns=1) == route(TOPIC, p, received_ns=2)


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda p: p.update(schema=2), "unsupported schema"),
    (lambda p: p.pop("cell"), "missing or empty tag 'cell'"),
    (lambda p: p.update(rig="rig-b"), "does not match topic rig"),
    (lambda p: p.update(site="lab-2"), "does not match topic site"),
    (lambda p: p.update(samples={}), "'samples' is not a list"),
    (lambda p: p["samples"][1].update(seq=1.5), "sample 1: seq must be an integer"),
    (lambda p: p["samples"][0].update(seq=True), "seq must be an integer"),
    (lambda p: p["samples"][0].update(time_ns=-5), "bad time_ns"),
    (lambda p: p["samples"][0].update(time_ns=2**64), "bad time_ns"),
    (lambda p: p["samples"][0].update(cell_voltage_v="3.1"), "must be a number"),
    (lambda p: p["samples"][0].pop("seq"), "seq must be an integer"),
    (lambda p: p.update(run="a\\"), "not ending in a backslash"),
    (lambda p: p.update(cell="x\ny"), "printable"),
    (lambda p: p.update(boot=[1]), "'boot' must be"),
])
def test_bad_telemetry_is_a_payload_error(mutate: Any, reason: str) -> None:
    p = telemetry("rig-a", range(3), T)
    mutate(p)
    with pytest.raises(PayloadError, match=reason.replace("(", r"\(").replace("'", "'")):
        route(TOPIC, p)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[1,2]", b"null",
                                 b'{"schema": 1, "samples": [{"cell_voltage_v": NaN}]}'])
def test_undecodable_payloads_are_payload_errors(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        points_for(TOPIC, raw, T)


@pytest.mark.parametrize("topic", ["other/v1/lab-1/rig-a/telemetry", "fieldrig/v1/lab-1/rig-a",
                                   "fieldrig/v1/lab-1/rig-a/unknown",
                                   "fieldrig/v1/lab-1/gateway/gw-1/other"])
def test_unknown_topics_are_payload_errors(topic: str) -> None:
    with pytest.raises(PayloadError):
        route(topic, telemetry("rig-a", range(1), T))


@settings(max_examples=300)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c,
                                                                        max_size=4),
                    max_leaves=20),
       st.sampled_from(["telemetry", "impedance", "events", "eis", "status", "actuators"]))
def test_arbitrary_json_never_crashes(payload: Any, leaf: str) -> None:
    try:
        raw = json.dumps(payload).encode()
    except ValueError:
        return
    for topic in (f"fieldrig/v1/lab-1/rig-a/{leaf}", "fieldrig/v1/lab-1/gateway/gw-1/health"):
        try:
            points_for(topic, raw, T)
        except PayloadError:
            pass


def test_events_list_and_single_event() -> None:
    base = {"schema": 1, "site": "lab-1", "rig": "rig-a", "cell": "c1", "run": "r1", "boot": 7}
    many = dict(base, events=[
        {"event": "soft_short", "time_ns": T, "seq": 4, "z_drop_pct": 35.5},
        {"event": "recipe_step", "time_ns": T + 1, "step": 2, "severity": "info"},
    ])
    lines = route("fieldrig/v1/lab-1/rig-a/events", many)
    assert lines[0].startswith("event,boot=7,cell=c1,event=soft_short,rig=rig-a,run=r1,"
                               "severity=alarm,site=lab-1 ")
    assert 'text="soft_short: seq=4, z_drop_pct=35.5"' in lines[0]
    assert 'detail="{\\"seq\\": 4, \\"z_drop_pct\\": 35.5}"' in lines[0]
    assert lines[0].endswith(f",seq=4i {T}")
    assert "severity=info" in lines[1]
    one = dict(base, event="telemetry_dropped", time_ns=T, first_seq=1, last_seq=3, count=3)
    [line] = route("fieldrig/v1/lab-1/rig-a/events", one)
    assert "event=telemetry_dropped" in line and "severity=warning" in line


def rig_event(name: str, **body: Any) -> dict[str, Any]:
    """A rig EVENT as the gateway publishes it: the body under ``data`` (docs/mqtt.md)."""
    return {"schema": 1, "site": "lab-1", "rig": "rig-a", "cell": "c1", "run": "r1",
            "gateway": "gw-1", "boot": 7, "seq": 12, "time_ns": T, "source": "rig",
            "event": name, "data": body}


EVIDENCE = [{"row": "z_fall_hf", "value": 491.57, "threshold": 8.0, "z": -48.578,
             "signal_value": 4.2752}]


@pytest.mark.parametrize(("event", "severity", "tags"), [
    # The firmware's detector: shorts are alarms, voids and cracks warnings.
    (rig_event("echem_alarm", kind="soft_short", confidence=0.9, t_s=213.26,
               evidence=EVIDENCE), "alarm", {"kind": "soft_short"}),
    (rig_event("echem_alarm", kind="hard_short", confidence=1.0, t_s=9.5, evidence=[]),
     "alarm", {"kind": "hard_short"}),
    (rig_event("echem_alarm", kind="void", confidence=0.6, t_s=9.5, evidence=[]),
     "warning", {"kind": "void"}),
    (rig_event("echem_alarm", kind="crack", confidence=0.6, t_s=9.5, evidence=[]),
     "warning", {"kind": "crack"}),
    (rig_event("echem_alarm", kind="new_kind", confidence=0.6, t_s=9.5, evidence=[]),
     "alarm", {"kind": "new_kind"}),
    (rig_event("echem_alarm_cleared", kind="soft_short", t_s=300.0), "info",
     {"kind": "soft_short"}),
    # The safety table: by tier, and the safe state is always an alarm.
    (rig_event("limit_tripped", row="over_temp", tier="fatal", reaction="safe_state",
               value=121.5, threshold=120.0), "alarm", {"row": "over_temp"}),
    (rig_event("limit_tripped", row="echem_hard_short", tier="fatal",
               reaction="safe_state", value=True), "alarm", {"row": "echem_hard_short"}),
    (rig_event("limit_tripped", row="under_pressure", tier="warning",
               reaction="current_off", value=0.8, threshold=1.0), "warning",
     {"row": "under_pressure"}),
    (rig_event("limit_tripped", row="link_loss", tier="warning", reaction="event",
               value=31000, threshold=30000), "warning", {"row": "link_loss"}),
    (rig_event("limit_cleared", row="under_pressure", tier="warning"), "info",
     {"row": "under_pressure"}),
    # Each response to an alarm is a warning (the alarm counts once, by its own event),
    # except the one that puts the rig in its safe state.
    (rig_event("mitigation", alarm="soft_short", attempt=1, action="rest", applied=True,
               rest_s=60), "warning", {"kind": "soft_short"}),
    (rig_event("mitigation", alarm="soft_short", attempt=4, action="safe_state",
               applied=True), "alarm", {"kind": "soft_short"}),
    (rig_event("recipe_step", phase="end", type="rest"), "info", {}),
])
def test_firmware_alarm_events_get_their_severity_and_diagnosis(
        event: dict[str, Any], severity: str, tags: dict[str, str]) -> None:
    [line] = route("fieldrig/v1/lab-1/rig-a/events", event)
    key = line.split(" ", 1)[0]
    got = dict(kv.split("=", 1) for kv in key.split(",")[1:])
    assert got.pop("severity") == severity
    assert {k: v for k, v in got.items() if k in ("kind", "row")} == tags
    assert got["event"] == event["event"] and got["boot"] == "7"
    # The annotation text says what the firmware said, not how the gateway wrapped it.
    text = line.split(',text="', 1)[1].split('",detail=', 1)[0]
    assert text.startswith(event["event"]) and "source=" not in text and "data=" not in text
    for k, v in event["data"].items():
        if isinstance(v, str):
            assert f"{k}={v}" in text


def test_a_diagnosis_that_is_no_name_stays_in_the_detail_only() -> None:
    [line] = route("fieldrig/v1/lab-1/rig-a/events",
                   rig_event("echem_alarm", kind=["soft_short"], confidence=0.9))
    assert ",kind=" not in line.split(" ", 1)[0] and "severity=alarm" in line
    [line] = route("fieldrig/v1/lab-1/rig-a/events",
                   rig_event("limit_tripped", row="x" * 65, tier="fatal"))
    assert ",row=" not in line.split(" ", 1)[0] and "severity=alarm" in line


def actuator_payload(**over: Any) -> dict[str, Any]:
    """As the gateway publishes a rig's actuator state (docs/mqtt.md, "Actuator state")."""
    return {"schema": 1, "site": "lab-1", "rig": "rig-a", "cell": "c1", "run": "r1",
            "gateway": "gw-1", "boot": 7, "time_ns": T, "uptime_s": 1234,
            "current_setpoint_ma": 0.785, "temp_setpoint_c": None,
            "pressure_setpoint_mpa": 12.0, "heater_duty": 0.0, "current_range": 1,
            "press_position_steps": 1520, "state": "running", **over}


def test_actuator_state_becomes_an_actuator_state_point() -> None:
    [line] = route("fieldrig/v1/lab-1/rig-a/actuators", actuator_payload())
    # The fields the set-point panels read (fieldrig_cloud.dashboards), tagged like the
    # rig's samples; a null set-point (heater off) is left out.
    assert line == ("actuator_state,boot=7,cell=c1,rig=rig-a,run=r1,site=lab-1 "
                    "current_setpoint_ma=0.785,pressure_setpoint_mpa=12,heater_duty=0,"
                    f'current_range=1i,press_position_steps=1520i,state="running" {T}')
    [line] = route("fieldrig/v1/lab-1/rig-a/actuators",
                   actuator_payload(temp_setpoint_c=30, current_setpoint_ma=-1))
    # Numbers are floats whatever their JSON form (no "i": no field-type conflicts).
    assert "current_setpoint_ma=-1,temp_setpoint_c=30," in line


@pytest.mark.parametrize(("over", "why"), [
    ({"time_ns": None}, "bad time_ns"),
    ({"current_setpoint_ma": "0.5"}, "current_setpoint_ma must be a number"),
    ({"current_range": 1.5}, "current_range must be an integer"),
    ({"state": 3}, "'state' must be"),
    ({"rig": "rig-b"}, "does not match topic"),
    ({"current_setpoint_ma": None, "pressure_setpoint_mpa": None, "heater_duty": None,
      "current_range": None, "press_position_steps": None, "state": None},
     "no actuator values"),
])
def test_bad_actuator_state_is_refused(over: dict[str, Any], why: str) -> None:
    with pytest.raises(PayloadError, match=why):
        route("fieldrig/v1/lab-1/rig-a/actuators", actuator_payload(**over))


def test_samples_keep_the_rigs_uptime_on_both_paths() -> None:
    # The edge sends each sample's uptime (docs/mqtt.md): stored as an integer field,
    # on the float-text fast path and the checked path alike.
    p = telemetry("rig-a", range(2), T, uptime_ns=5_250_000_000)
    p["samples"][1]["uptime_ns"] = 5_500_000_000
    fast = route(TOPIC, p)
    assert ",uptime_ns=5250000000i," in fast[0] and ",uptime_ns=5500000000i," in fast[1]
    p["samples"][1]["step"] = 2  # an optional field: the checked path
    checked = route(TOPIC, p)
    assert ",uptime_ns=5500000000i," in checked[1] and "step=2i" in checked[1]
    assert checked[0] == fast[0]
    for bad in (-1, 1.5, "5"):
        p["samples"][0]["uptime_ns"] = bad
        with pytest.raises(PayloadError, match="uptime_ns"):
            route(TOPIC, p)


def test_eis_spectrum_points_have_distinct_keys_and_derived_polar_form() -> None:
    p = {"schema": 1, "site": "lab-1", "rig": "rig-a", "cell": "c1", "run": "r1",
         "time_ns": T, "freq_hz": [1e6, 1e3, 1.0], "z_real_ohm": [10.0, 60.0, 200.0],
         "z_imag_ohm": [-1.0, -30.0, -150.0], "temp_c": 25}
    lines = route("fieldrig/v1/lab-1/rig-a/eis", p)
    assert [int(ln.rsplit(" ", 1)[1]) for ln in lines] == [T, T + 1, T + 2]
    assert f"idx=2i,spectrum_ns={T}i,freq_hz=1,z_real_ohm=200,z_imag_ohm=-150," in lines[2]
    assert "z_mag_ohm=250," in lines[2] and "temp_c=25" in lines[2]
    p["z_imag_ohm"] = [-1.0]
    with pytest.raises(PayloadError, match="differ in length"):
        route("fieldrig/v1/lab-1/rig-a/eis", p)


def test_status_and_gateway_health() -> None:
    [st_line] = route("fieldrig/v1/lab-1/rig-a/status",
                      {"schema": 1, "state": "running", "recipe": "ccd", "step": 3}, T)
    assert st_line == (f'rig_status,rig=rig-a,site=lab-1 state="running",online=true,'
                       f'recipe="ccd",step=3 {T}')
    lines = route("fieldrig/v1/lab-1/gateway/gw-1/health",
                  {"schema": 1, "time_ns": T, "spool_depth": 12, "uptime_s": 3.5,
                   "rigs": {"rig-a": {"connected": True, "link_errors": 2}}})
    assert lines == [f"gateway_health,gateway=gw-1,site=lab-1 spool_depth=12,uptime_s=3.5 {T}",
                     f"gateway_health,gateway=gw-1,rig=rig-a,site=lab-1 connected=true,"
                     f"link_errors=2 {T}"]
    [off] = route("fieldrig/v1/lab-1/gateway/gw-1/status", {"schema": 1, "state": "offline"}, 5)
    assert off == 'gateway_health,gateway=gw-1,site=lab-1 state="offline",online=false 5'
    with pytest.raises(PayloadError, match="does not match topic"):
        route("fieldrig/v1/lab-1/gateway/gw-1/health", {"schema": 1, "gateway": "gw-2", "x": 1})


def test_dead_letter_point_names_rig_and_reason() -> None:
    line = schema.dead_letter_point(TOPIC, b'{"bad": "x"}', "invalid", "unsupported schema", T)
    assert line.startswith("dead_letter,code=invalid,rig=rig-a,site=lab-1 ")
    assert 'reason="unsupported schema"' in line and "payload_bytes=12i" in line
    assert 'payload_excerpt="{\\"bad\\": \\"x\\"}"' in line
    assert schema.parse_topic("fieldrig/v1/s/gateway/g/health") == Topic(
        site="s", gateway="g", leaf="health")


IMP_TOPIC = "fieldrig/v1/lab-1/rig-a/impedance"


def impedance_payload(**point: Any) -> dict[str, Any]:
    """As the edge publishes MSG_IMPEDANCE points (docs/mqtt.md, "Impedance")."""
    p = {"seq": 4096, "time_ns": T, "f_hz": 1031.25, "z_re_ohm": 52.3125, "z_im_ohm": -15.0625,
         "rel_err": 0.015625, "quality": "fair", "source": "tracking", **point}
    return {"schema": 1, "site": "lab-1", "rig": "rig-a", "cell": "c1", "run": "r1",
            "gateway": "gw-1", "boot": 7, "points": [p]}


def test_impedance_point_becomes_an_impedance_point_with_its_seq() -> None:
    [line] = route(IMP_TOPIC, impedance_payload())
    assert line.startswith("impedance,boot=7,cell=c1,rig=rig-a,run=r1,site=lab-1,"
                           "source=tracking seq=4096i,z_freq_hz=1031.25,z_re_ohm=52.3125,"
                           "z_im_ohm=-15.0625,z_mag_ohm=")
    assert line.endswith(f',rel_err=0.015625,quality="fair" {T}')
    fields = dict(kv.split("=") for kv in line.split(" ")[1].split(","))
    assert float(fields["z_mag_ohm"]) == pytest.approx(54.4379, rel=1e-5)
    assert float(fields["z_phase_deg"]) == pytest.approx(-16.0634, rel=1e-4)


def test_impedance_point_with_a_failed_estimate_keeps_its_seq() -> None:
    [line] = route(IMP_TOPIC, impedance_payload(z_re_ohm=None, z_im_ohm=None, rel_err=None,
                                                quality="poor", source="sweep"))
    assert ",source=sweep seq=4096i,z_freq_hz=1031.25,quality=\"poor\" " in line


@pytest.mark.parametrize(("point", "why"), [
    ({"quality": "excellent"}, "quality"),
    ({"source": "guess"}, "source"),
    ({"f_hz": -1.0}, "f_hz must be positive"),
    ({"seq": "1"}, "seq must be an integer"),
    ({"time_ns": 0}, "bad time_ns"),
    ({"z_re_ohm": "52"}, "z_re_ohm must be a number"),
])
def test_bad_impedance_point_is_refused(point: dict[str, Any], why: str) -> None:
    with pytest.raises(PayloadError, match=why):
        route(IMP_TOPIC, impedance_payload(**point))


def eis_chunk(chunk: int = 1, **over: Any) -> dict[str, Any]:
    """As the edge publishes an MSG_EIS chunk (docs/mqtt.md, "EIS sweeps")."""
    return {"schema": 1, "site": "lab-1", "rig": "rig-a", "cell": "c1", "run": "r1",
            "gateway": "gw-1", "boot": 7, "seq": 13, "time_ns": T, "source": "rig",
            "sweep_seq": 12, "eis_seq": 1, "chunk": chunk, "chunks": 2,
            "points": [{"f_hz": 10.0, "z_re_ohm": 149.7, "z_im_ohm": -6.2, "rel_err": 0.0004,
                        "quality": "good"},
                       {"f_hz": 0.1, "z_re_ohm": None, "z_im_ohm": None, "rel_err": None,
                        "quality": "skipped"}], **over}


def test_eis_chunk_points_are_keyed_by_chunk_and_place_and_name_their_sweep() -> None:
    lines = route("fieldrig/v1/lab-1/rig-a/eis", eis_chunk())
    assert [int(ln.rsplit(" ", 1)[1]) for ln in lines] == [T + 1000, T + 1001]
    assert lines[0].startswith(
        "eis_spectrum,boot=7,cell=c1,rig=rig-a,run=r1,site=lab-1 sweep_seq=12i,eis_seq=1i,"
        "chunk=1i,chunks=2i,point=0i,freq_hz=10,z_real_ohm=149.7,z_imag_ohm=-6.2,z_mag_ohm=")
    assert lines[0].endswith(f',rel_err=0.0004,quality="good" {T + 1000}')
    assert lines[1] == ("eis_spectrum,boot=7,cell=c1,rig=rig-a,run=r1,site=lab-1 "
                        "sweep_seq=12i,eis_seq=1i,chunk=1i,chunks=2i,point=1i,freq_hz=0.1,"
                        f'quality="skipped" {T + 1001}')
    # Chunk 0 received in the same read (same time_ns): keys still distinct.
    first = route("fieldrig/v1/lab-1/rig-a/eis", eis_chunk(chunk=0, seq=12))
    assert {ln.rsplit(" ", 1)[1] for ln in first}.isdisjoint(
        {ln.rsplit(" ", 1)[1] for ln in lines})


@pytest.mark.parametrize(("over", "why"), [
    ({"chunk": 2}, "chunk 2 of 2"),
    ({"sweep_seq": None}, "sweep_seq must be an integer"),
    ({"points": []}, "non-empty"),
    ({"points": [{"f_hz": 1.0, "quality": "great"}]}, "quality"),
    ({"points": [{"f_hz": 0.0, "quality": "good"}]}, "f_hz must be positive"),
    ({"points": [{"f_hz": 1.0, "z_re_ohm": 1.0, "z_im_ohm": -1.0, "quality": "skipped"}]},
     "skipped point carries"),
    ({"rig": "rig-b"}, "does not match topic"),
])
def test_bad_eis_chunk_is_refused(over: dict[str, Any], why: str) -> None:
    with pytest.raises(PayloadError, match=why):
        route("fieldrig/v1/lab-1/rig-a/eis", eis_chunk(**over))


def test_encoded_message_names_its_measurements_samples_and_newest_time() -> None:
    """What the ingester takes from encode_message instead of reparsing every line:
    the same points as points_for, the measurements (retention policies), the sample
    count (end-to-end accounting) and the last sample's time (data lag)."""
    p = telemetry("rig-a", range(5, 8), T, current_setpoint_ma=0.5)
    raw = json.dumps(p).encode()
    enc = schema.encode_message(TOPIC, raw, T)
    assert [ln.decode() for ln in enc.lines] == points_for(TOPIC, raw, T)
    assert enc.measurements == {"cell_sample", "actuator_state"}
    assert (enc.samples, enc.newest_ns) == (3, T + 7 * 100_000_000)
    plain = schema.encode_message(TOPIC, json.dumps(telemetry("rig-a", range(2), T)).encode(), T)
    assert plain.measurements == {"cell_sample"} and plain.samples == 2
    ev = schema.encode_message("fieldrig/v1/lab-1/rig-a/events", json.dumps(
        {"schema": 1, "event": "short", "time_ns": T}).encode(), T)
    assert ev.measurements == {"event"} and (ev.samples, ev.newest_ns) == (0, 0)


def test_a_percent_sign_in_a_tag_is_written_literally() -> None:
    # The telemetry line is a bytes %-format with the tags baked in: a "%" in a tag value
    # must not be taken for a conversion.
    p = telemetry("rig-a", range(1), T, cell="50%d", run="a%%b")
    [line] = route(TOPIC, p)
    assert line.startswith("cell_sample,boot=7,cell=50%d,rig=rig-a,run=a%%b,site=lab-1 seq=0i,")


def test_a_number_where_a_tag_belongs_is_refused_on_the_float_text_path() -> None:
    # Float tokens come back as bytes, never as str: a number is no tag value.
    raw = json.dumps(telemetry("rig-a", range(1), T) | {"cell": 1.5}).encode()
    with pytest.raises(PayloadError, match="missing or empty tag 'cell'"):
        points_for(TOPIC, raw, T)
