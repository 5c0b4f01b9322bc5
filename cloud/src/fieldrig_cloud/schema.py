"""InfluxDB schema (contract: docs/influxdb.md) and MQTT payload -> line protocol.

Every point's key is measurement + tags + time, and every time comes from the payload
(the rig's clock mapped to UTC at the edge), never from the ingester's clock, so a
redelivered message overwrites itself: writes are idempotent. The few records that have
no time of their own (a status without ``time_ns``, a dead letter) use the receipt time
and are documented as at-least-once.

The topic is authoritative for site, rig and gateway: the broker's ACL lets a gateway
publish only its own rigs' topics, so a payload naming another rig than its topic is
rejected (it would otherwise write into that rig's series past the ACL).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from fieldrig_cloud import lineproto
from fieldrig_cloud.lineproto import FieldValue

SCHEMA_VERSION = 1
DATABASE = "fieldrig"
TOPIC_ROOT = "fieldrig/v1"

# Measurements.
CELL_SAMPLE = "cell_sample"
ACTUATOR_STATE = "actuator_state"
IMPEDANCE = "impedance"
EVENT = "event"
EIS_SPECTRUM = "eis_spectrum"
EIS_FIT = "eis_fit"
RIG_STATUS = "rig_status"
GATEWAY_HEALTH = "gateway_health"
PIPELINE_HEALTH = "pipeline_health"
DEAD_LETTER = "dead_letter"
CCD_RESULT = "ccd_result"
RUN_SUMMARY = "run_summary"

TAGS = ("site", "rig", "cell", "run")
SAMPLE_FLOAT_FIELDS = ("cell_voltage_v", "cell_current_ma", "cell_temp_c", "stack_pressure_mpa")
SAMPLE_INT_FIELDS = ("seq", "rig_state")  # required; the float fields may be null
# Optional per-sample fields: where a recipe is (cell_sample), what the rig is told to
# do (actuator_state) and the dendrite watch's single-frequency impedance (impedance).
SAMPLE_OPTIONAL_INT_FIELDS = ("step", "cycle")
# The firmware's own clock at the sample (SAMPLE uptime, ns; docs/link.md): time_ns is
# its UTC mapping, which the edge keeps strictly increasing and may clamp (a rig clock
# running ahead of the gateway's, e.g. an accelerated bench), so durations and charge
# are measured on this one (fieldrig_cloud.analytics). Optional: older edges omit it.
SAMPLE_UPTIME_FIELD = "uptime_ns"
ACTUATOR_FIELDS = ("current_setpoint_ma", "temp_setpoint_c", "pressure_setpoint_mpa",
                   "heater_duty", "pulse_on_us", "pulse_off_us")
# What a gateway reads from a rig's ``status`` reply and publishes on .../actuators
# (docs/mqtt.md, "Actuator state"): the set-points and the duty as floats (like the
# sample-borne ones above), the galvanostat's range and the press position as ints.
ACTUATOR_STATE_FLOAT_FIELDS = ("current_setpoint_ma", "temp_setpoint_c",
                               "pressure_setpoint_mpa", "heater_duty")
ACTUATOR_STATE_INT_FIELDS = ("current_range", "press_position_steps")
IMPEDANCE_FIELDS = ("z_freq_hz", "z_mag_ohm", "z_phase_deg")
# Impedance points from the rig's link (MSG_IMPEDANCE, topic .../impedance).
IMPEDANCE_QUALITIES = frozenset({"good", "fair", "poor", "unknown"})
IMPEDANCE_SOURCES = frozenset({"tracking", "sweep", "unknown"})
EIS_QUALITIES = IMPEDANCE_QUALITIES | {"skipped"}
MAX_IMPEDANCE_POINTS = 20_000
# A sweep chunk's point k of chunk c is stored at the chunk's time + c * this + k ns
# (docs/influxdb.md): distinct keys even for chunks received in one read.
EIS_CHUNK_SPACING_NS = 1000

MAX_SAMPLES_PER_MESSAGE = 20_000
MAX_EIS_POINTS = 2_000
MAX_EVENTS_PER_MESSAGE = 1_000
MAX_STRING_FIELD = 1_024
INT64_MAX = 2**63 - 1

# Event name -> severity when the payload names none. Alarms are what the fleet view
# and the alert rules count.
ALARM_EVENTS = frozenset({
    "short", "hard_short", "soft_short", "dendrite_suspected", "dendrite_alarm",
    "interlock", "overtemp", "overpressure", "safe_state",
})
WARNING_EVENTS = frozenset({"telemetry_dropped", "crack_suspected", "void_suspected",
                            "link_lost", "recipe_aborted"})
# The firmware names its alarms by layer, the diagnosis in the body (docs/link.md,
# docs/firmware.md): ``echem_alarm`` {kind, confidence, evidence} from the dendrite
# detector, ``limit_tripped`` {row, tier, reaction, value, threshold} from the safety
# table, ``mitigation`` {alarm, action, ...} for each response. Shorts are alarms (a
# dendrite through the electrolyte); voids and cracks degrade the cell without
# endangering it: warnings. A kind this table does not know stays an alarm: the
# firmware raised it as one.
ECHEM_ALARM_SEVERITY = {"soft_short": "alarm", "hard_short": "alarm", "void": "warning",
                        "crack": "warning"}
# A safety row's tier decides, and whatever puts the rig in its safe state is an alarm.
LIMIT_TIER_SEVERITY = {"fatal": "alarm", "warning": "warning", "info": "info"}
SAFE_STATE = "safe_state"
# Event tags naming the diagnosis, so panels and rules can filter or group by it:
# ``kind`` (echem_alarm, echem_alarm_cleared; a mitigation's ``alarm``) and ``row``
# (limit_tripped, limit_cleared). Both come from small fixed tables in the firmware.
EVENT_KIND_TAG = "kind"
EVENT_ROW_TAG = "row"


class PayloadError(ValueError):
    """A payload that does not follow the MQTT contract."""


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic of the tree ``fieldrig/v1/{site}/{rig}/{leaf}`` or
    ``fieldrig/v1/{site}/gateway/{gw}/{leaf}``."""

    site: str
    leaf: str
    rig: str | None = None
    gateway: str | None = None


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    if parts[:2] != TOPIC_ROOT.split("/"):
        raise PayloadError(f"topic {topic!r} is outside {TOPIC_ROOT}/")
    rest = parts[2:]
    if len(rest) == 3 and all(rest):
        return Topic(site=rest[0], rig=rest[1], leaf=rest[2])
    if len(rest) == 4 and rest[1] == "gateway" and all(rest):
        return Topic(site=rest[0], gateway=rest[2], leaf=rest[3])
    raise PayloadError(f"topic {topic!r} does not match the topic tree")


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"{name} is not a number line protocol can store")


# Telemetry floats go straight from the JSON text into line protocol: a JSON number is
# valid line-protocol float syntax, and converting it to a float and back (``repr``) was
# most of the ingester's CPU time (docs/benchmarks_ingest.md). ``str.encode`` as
# ``parse_float`` hands each float token back as ``bytes``: a type of its own, so a quoted
# string "0.5" is never mistaken for a number, cheaper to make than a ``str`` subclass,
# and what the line is built of anyway. A token beyond float64 (1e999) is not checked
# here: InfluxDB refuses it ("invalid float", 400), and the ingester dead-letters that
# message (``influx_rejected``); underflow reads as 0 on both sides.
_TEXT_DECODER = json.JSONDecoder(parse_float=str.encode, parse_constant=_reject_constant)


def decode_json(raw: bytes, number_text: bool = False) -> Any:
    """JSON without NaN/Infinity (Python's json accepts them; InfluxDB cannot store them).
    With ``number_text``, floats come as ``bytes`` (their JSON text)."""
    try:
        if number_text:
            return _TEXT_DECODER.decode(raw.decode("utf-8"))
        return json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise PayloadError(f"payload is not JSON: {exc}") from exc


def _check_tag(name: str, value: str) -> str:
    # Tags are series keys: short, printable, and writable unambiguously.
    if len(value) > 128 or not value.isprintable() or value.endswith("\\"):
        raise PayloadError(f"tag {name} {value[:40]!r} must be 1..128 printable characters "
                           "not ending in a backslash")
    return value


def _check_time(t: Any, what: str) -> int:
    if not isinstance(t, int) or isinstance(t, bool) or not 0 < t <= INT64_MAX:
        raise PayloadError(f"{what}: bad time_ns")
    return t


def _envelope(payload: Any, topic: Topic | None, require: tuple[str, ...]) -> dict[str, str]:
    """Check schema version and identity; return the tags (site, rig, cell, run, boot)."""
    if not isinstance(payload, dict):
        raise PayloadError("payload is not a JSON object")
    if payload.get("schema") != SCHEMA_VERSION:
        raise PayloadError(f"unsupported schema {payload.get('schema')!r}")
    tags: dict[str, str] = {}
    from_topic = {"site": topic.site if topic else None, "rig": topic.rig if topic else None}
    for tag in TAGS:
        value = payload.get(tag)
        if value is None and (tag not in require or from_topic.get(tag)):
            continue
        if not isinstance(value, str) or not value:
            raise PayloadError(f"missing or empty tag {tag!r}")
        tags[tag] = _check_tag(tag, value)
    # Fill identity from the topic when the payload omits it; refuse a contradiction.
    for tag, topic_value in from_topic.items():
        if not topic_value:
            continue
        if tag in tags and tags[tag] != topic_value:
            raise PayloadError(
                f"payload {tag} {tags[tag]!r} does not match topic {tag} {topic_value!r}")
        tags[tag] = topic_value
    boot = payload.get("boot")
    if boot is not None:
        if isinstance(boot, bool) or not isinstance(boot, int | str) or boot == "":
            raise PayloadError("'boot' must be an integer or a non-empty string")
        tags["boot"] = _check_tag("boot", str(boot))
    return tags


def _int(s: dict[str, Any], name: str, where: str) -> int:
    v = s.get(name)
    if not isinstance(v, int) or isinstance(v, bool):
        raise PayloadError(f"{where}: {name} must be an integer")
    return v


def _float(s: dict[str, Any], name: str, where: str) -> float:
    v = s.get(name)
    if type(v) is bytes:  # a float token's text (decode_json(number_text=True))
        v = float(v)
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise PayloadError(f"{where}: {name} must be a number")
    f = float(v)
    if not math.isfinite(f):
        raise PayloadError(f"{where}: {name} must be finite")
    return f


_CELL_INT = tuple((n, lineproto.escape_key(n)) for n in SAMPLE_INT_FIELDS)
_CELL_FLOAT = tuple((n, lineproto.escape_key(n)) for n in SAMPLE_FLOAT_FIELDS)


@dataclass(slots=True)
class Encoded:
    """One message's points as line protocol (UTF-8 lines), as the ingester writes them."""

    lines: list[bytes]
    measurements: frozenset[str]  # of these lines (each goes to its retention policy)
    samples: int = 0  # telemetry samples: one cell_sample point each (accounting)
    newest_ns: int = 0  # time of the message's last telemetry sample (data lag)
    chain: Chain | None = None  # the stream range it covers (stored watermarks)


def telemetry_points(payload: Any, topic: Topic | None = None,
                     number_text_ok: bool = False) -> list[str]:
    """Validate a telemetry payload (schema 1) and return its line-protocol points.

    Each sample becomes one ``cell_sample`` point; samples that carry set-points or a
    single-frequency impedance also yield ``actuator_state`` / ``impedance`` points
    at the same time and tags. The whole message is rejected on the first bad sample,
    so a message is stored completely or not at all.
    """
    return [ln.decode() for ln in telemetry_encoded(payload, topic, number_text_ok).lines]


_CELL_SAMPLE_SET = frozenset({CELL_SAMPLE})


def telemetry_encoded(payload: Any, topic: Topic | None = None,
                      number_text_ok: bool = False) -> Encoded:
    """``telemetry_points`` as the ingester takes them: lines already encoded, with the
    measurements, sample count and newest time it would otherwise recover by reparsing
    every line."""
    tags = _envelope(payload, topic, TAGS)
    samples = payload.get("samples")
    if not isinstance(samples, list):
        raise PayloadError("'samples' is not a list")
    if len(samples) > MAX_SAMPLES_PER_MESSAGE:
        raise PayloadError(f"{len(samples)} samples exceed {MAX_SAMPLES_PER_MESSAGE}")
    cell_prefix = lineproto.tag_prefix(CELL_SAMPLE, tags)
    # The hot line as one bytes %-format (tag values may hold a literal "%").
    cell_fmt = (cell_prefix.encode().replace(b"%", b"%%")
                + b" seq=%di,rig_state=%di,cell_voltage_v=%s,cell_current_ma=%s,"
                  b"cell_temp_c=%s,stack_pressure_mpa=%s %d")
    cell_up_fmt = (cell_prefix.encode().replace(b"%", b"%%")
                   + b" seq=%di,rig_state=%di,uptime_ns=%di,cell_voltage_v=%s,"
                     b"cell_current_ma=%s,cell_temp_c=%s,stack_pressure_mpa=%s %d")
    act_prefix: str | None = None
    imp_prefix: str | None = None
    ff = lineproto.format_float
    optional = _OPTIONAL_SAMPLE_KEYS
    # Float texts used as they are (payload decoded with number_text); else via repr.
    nt = bytes if number_text_ok else None
    lines: list[bytes] = []
    for i, s in enumerate(samples):
        # Fast path for the common, valid sample (this loop is the ingester's hot spot:
        # exact type tests and no per-field calls); anything unusual goes to
        # _sample_fields, which validates field by field and names the fault.
        try:
            t, seq, state = s["time_ns"], s["seq"], s["rig_state"]
            v, cur, temp, p = (s["cell_voltage_v"], s["cell_current_ma"], s["cell_temp_c"],
                               s["stack_pressure_mpa"])
        except (KeyError, TypeError):
            t = None
        if (type(t) is int and 0 < t <= INT64_MAX and type(seq) is int
                and type(state) is int):
            # Seven keys, all of them read above, or eight with the rig's uptime (what
            # the edge sends): none of the other optional ones (cheaper than the set
            # test, which only samples with other keys need).
            n = len(s)
            if n == 8:
                up = s.get(SAMPLE_UPTIME_FIELD)
                plain = type(up) is int and 0 <= up <= INT64_MAX
            else:
                up = None
                plain = n == 7 or optional.isdisjoint(s)
            if plain and (type(v) is nt and type(cur) is nt and type(temp) is nt
                          and type(p) is nt):
                if up is None:
                    lines.append(cell_fmt % (seq, state, v, cur, temp, p, t))
                else:
                    lines.append(cell_up_fmt % (seq, state, up, v, cur, temp, p, t))
                continue
            if plain and (type(v) is float and type(cur) is float and type(temp) is float
                          and type(p) is float and v - v == 0.0 and cur - cur == 0.0
                          and temp - temp == 0.0 and p - p == 0.0):
                uptime = "" if up is None else f"uptime_ns={up}i,"
                lines.append(f"{cell_prefix} seq={seq}i,rig_state={state}i,{uptime}"
                             f"cell_voltage_v={ff(v)},cell_current_ma={ff(cur)},"
                             f"cell_temp_c={ff(temp)},stack_pressure_mpa={ff(p)} {t}"
                             .encode())
                continue
        t, cell, act, imp = _sample_fields(s, i)
        lines.append(f"{cell_prefix} {cell} {t}".encode())
        if act:
            act_prefix = act_prefix or lineproto.tag_prefix(ACTUATOR_STATE, tags)
            lines.append(f"{act_prefix} {act} {t}".encode())
        if imp:
            imp_prefix = imp_prefix or lineproto.tag_prefix(IMPEDANCE, tags)
            lines.append(f"{imp_prefix} {imp} {t}".encode())
    measurements = _CELL_SAMPLE_SET
    if act_prefix or imp_prefix:
        measurements = frozenset({CELL_SAMPLE, *((ACTUATOR_STATE,) if act_prefix else ()),
                                  *((IMPEDANCE,) if imp_prefix else ())})
    # Samples come in time order: the last one is the newest (validated above).
    return Encoded(lines, measurements, len(samples), samples[-1]["time_ns"] if samples else 0)


_OPTIONAL_SAMPLE_KEYS = frozenset((*SAMPLE_OPTIONAL_INT_FIELDS, SAMPLE_UPTIME_FIELD,
                                   *ACTUATOR_FIELDS, *IMPEDANCE_FIELDS))


def _sample_fields(s: Any, i: int) -> tuple[int, str, str, str]:
    """Validate one sample field by field: (time, cell_sample fields, actuator_state
    fields or "", impedance fields or ""); PayloadError names the first fault."""
    where = f"sample {i}"
    if not isinstance(s, dict):
        raise PayloadError(f"{where} is not an object")
    t = _check_time(s.get("time_ns"), where)
    ff = lineproto.format_float
    parts = [f"{key}={_int(s, name, where)}i" for name, key in _CELL_INT]
    parts += [f"{name}={_int(s, name, where)}i" for name in SAMPLE_OPTIONAL_INT_FIELDS
              if name in s]
    if s.get(SAMPLE_UPTIME_FIELD) is not None:
        up = _int(s, SAMPLE_UPTIME_FIELD, where)
        if not 0 <= up <= INT64_MAX:
            raise PayloadError(f"{where}: {SAMPLE_UPTIME_FIELD} must be 0..2**63-1")
        parts.append(f"{SAMPLE_UPTIME_FIELD}={up}i")
    # null: the edge's "no reading" (a failed sensor reads NaN, which JSON cannot carry).
    # The field is left out of the point; the sample (and its seq) is still stored.
    parts += [f"{key}={ff(_float(s, name, where))}" for name, key in _CELL_FLOAT
              if s.get(name) is not None]
    act = ",".join(f"{n}={ff(_float(s, n, where))}" for n in ACTUATOR_FIELDS
                   if s.get(n) is not None)
    imp = ""
    if s.get("z_mag_ohm") is not None:
        imp = ",".join(f"{n}={ff(_float(s, n, where))}" for n in IMPEDANCE_FIELDS
                       if s.get(n) is not None)
        imp += f",seq={s['seq']}i"
    return t, ",".join(parts), act, imp


def _opt_float(s: dict[str, Any], name: str, where: str) -> float | None:
    return None if s.get(name) is None else _float(s, name, where)


def _z_fields(re_: float | None, im: float | None) -> dict[str, FieldValue]:
    """|Z| and phase where both parts are known (a failed estimate travels as null)."""
    if re_ is None or im is None:
        return {}
    return {"z_mag_ohm": math.hypot(re_, im), "z_phase_deg": math.degrees(math.atan2(im, re_))}


def impedance_points(payload: Any, topic: Topic | None = None) -> list[str]:
    """Impedance points of one rig boot (MSG_IMPEDANCE, docs/mqtt.md "Impedance").

    One ``impedance`` point each, tagged with its ``source`` (tracking / sweep), keyed
    by the time the edge gave it, and carrying its telemetry ``seq``: impedance points
    share the samples' sequence space, so accounting counts both measurements."""
    tags = _envelope(payload, topic, TAGS)
    points = payload.get("points")
    if not isinstance(points, list) or not points:
        raise PayloadError("'points' must be a non-empty list")
    if len(points) > MAX_IMPEDANCE_POINTS:
        raise PayloadError(f"{len(points)} impedance points exceed {MAX_IMPEDANCE_POINTS}")
    prefixes: dict[str, str] = {}
    lines = []
    for i, z in enumerate(points):
        where = f"impedance point {i}"
        if not isinstance(z, dict):
            raise PayloadError(f"{where} is not an object")
        t = _check_time(z.get("time_ns"), where)
        seq = _int(z, "seq", where)
        quality, source = z.get("quality", "unknown"), z.get("source", "unknown")
        if not isinstance(quality, str) or quality not in IMPEDANCE_QUALITIES:
            raise PayloadError(f"{where}: quality {quality!r} is not one of "
                               f"{sorted(IMPEDANCE_QUALITIES)}")
        if not isinstance(source, str) or source not in IMPEDANCE_SOURCES:
            raise PayloadError(f"{where}: source {source!r} is not one of "
                               f"{sorted(IMPEDANCE_SOURCES)}")
        f = _opt_float(z, "f_hz", where)
        if f is not None and f <= 0:
            raise PayloadError(f"{where}: f_hz must be positive")
        re_, im = _opt_float(z, "z_re_ohm", where), _opt_float(z, "z_im_ohm", where)
        rel = _opt_float(z, "rel_err", where)
        fields: dict[str, FieldValue] = {"seq": seq}
        if f is not None:
            fields["z_freq_hz"] = f
        if re_ is not None:
            fields["z_re_ohm"] = re_
        if im is not None:
            fields["z_im_ohm"] = im
        fields.update(_z_fields(re_, im))
        if rel is not None:
            fields["rel_err"] = rel
        fields["quality"] = quality
        prefix = prefixes.get(source)
        if prefix is None:
            prefix = prefixes[source] = lineproto.tag_prefix(IMPEDANCE,
                                                             dict(tags, source=source))
        lines.append(lineproto.line(prefix, fields, t))
    return lines


def actuator_points(payload: Any, topic: Topic) -> list[str]:
    """One rig's actuator state (docs/mqtt.md, "Actuator state"): one ``actuator_state``
    point at the payload's time (the rig's uptime at its ``status`` reply, mapped to UTC
    by the gateway), tagged like the rig's samples. A null set-point means the output is
    off (heater off, pressure not controlled): the field is left out."""
    tags = _envelope(payload, topic, TAGS)
    t = _check_time(payload.get("time_ns"), "actuator state")
    where = "actuator state"
    fields: dict[str, FieldValue] = {}
    for name in ACTUATOR_STATE_FLOAT_FIELDS:
        if payload.get(name) is not None:
            fields[name] = _float(payload, name, where)
    for name in ACTUATOR_STATE_INT_FIELDS:
        if payload.get(name) is not None:
            fields[name] = _int(payload, name, where)
    state = payload.get("state")
    if state is not None:
        if not isinstance(state, str) or not state:
            raise PayloadError(f"{where}: 'state' must be a non-empty string")
        fields["state"] = state[:MAX_STRING_FIELD]
    if not fields:
        raise PayloadError(f"{where} carries no actuator values")
    return [lineproto.point(ACTUATOR_STATE, tags, fields, t)]


def event_severity(name: str, given: Any, body: dict[str, Any] | None = None) -> str:
    """Severity of an event: the payload's own, else from the firmware's event body
    (``echem_alarm`` by its kind, ``limit_tripped`` by its tier and reaction, a
    ``mitigation`` by its action), else from the name."""
    if isinstance(given, str) and given in ("info", "warning", "alarm"):
        return given
    b = body or {}
    if name == "echem_alarm":
        kind = b.get("kind")
        return ECHEM_ALARM_SEVERITY.get(kind, "alarm") if isinstance(kind, str) else "alarm"
    if name == "limit_tripped":
        if b.get("reaction") == SAFE_STATE:
            return "alarm"
        tier = b.get("tier")
        severity = LIMIT_TIER_SEVERITY.get(tier) if isinstance(tier, str) else None
        # A row of a tier this table does not know still tripped: never below a warning.
        return severity or "warning"
    if name == "mitigation":
        # Each response to an alarm; the alarm itself is counted once, by its own event.
        return "alarm" if b.get("action") == SAFE_STATE else "warning"
    if name in ALARM_EVENTS:
        return "alarm"
    if name in WARNING_EVENTS:
        return "warning"
    return "info"


def _event_body(ev: dict[str, Any], extras: dict[str, Any]) -> dict[str, Any]:
    """The firmware's event body: the gateway passes a rig EVENT's JSON (without its
    name) as ``data`` (docs/mqtt.md, "Events"); other publishers put it in the event."""
    data = ev.get("data")
    return data if isinstance(data, dict) else extras


def _diagnosis_tags(name: str, body: dict[str, Any]) -> dict[str, str]:
    """``kind`` / ``row`` tags of the firmware's alarm events (see EVENT_KIND_TAG)."""
    if name in ("echem_alarm", "echem_alarm_cleared"):
        key, value = EVENT_KIND_TAG, body.get("kind")
    elif name == "mitigation":
        key, value = EVENT_KIND_TAG, body.get("alarm")
    elif name in ("limit_tripped", "limit_cleared"):
        key, value = EVENT_ROW_TAG, body.get("row")
    else:
        return {}
    # A name from the firmware's tables; anything else stays in the detail only.
    if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable() \
            and not value.endswith("\\"):
        return {key: value}
    return {}


def _event_text(name: str, extras: dict[str, Any]) -> str:
    details = ", ".join(f"{k}={v}" for k, v in sorted(extras.items()))
    return f"{name}: {details}" if details else name


def event_points(payload: Any, topic: Topic) -> list[str]:
    """Events: a list under ``events`` or one event in the envelope itself.

    One ``event`` point per event, tagged with the event name and its severity (both
    low-cardinality: the fleet view and the alert rules filter on them); the rest of
    the event is kept as a JSON string (``detail``) and a human ``text`` for Grafana
    annotations.
    """
    tags = _envelope(payload, topic, ("site", "rig"))
    raw_events = payload.get("events")
    if raw_events is None:
        raw_events = [payload]
    if not isinstance(raw_events, list) or not raw_events:
        raise PayloadError("'events' must be a non-empty list")
    if len(raw_events) > MAX_EVENTS_PER_MESSAGE:
        raise PayloadError(f"{len(raw_events)} events exceed {MAX_EVENTS_PER_MESSAGE}")
    envelope_keys = {"schema", "site", "rig", "cell", "run", "boot", "gateway", "events",
                     "prev_seq"}
    lines = []
    for i, ev in enumerate(raw_events):
        where = f"event {i}"
        if not isinstance(ev, dict):
            raise PayloadError(f"{where} is not an object")
        name = ev.get("event")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise PayloadError(f"{where}: 'event' must be a name (1..64 chars)")
        t = _check_time(ev.get("time_ns"), where)
        extras = {k: v for k, v in ev.items()
                  if k not in envelope_keys and k not in ("event", "time_ns", "severity")}
        body = _event_body(ev, extras)
        fields: dict[str, FieldValue] = {
            "title": name,
            # What happened, for the annotation: the event's own body, not the envelope.
            "text": _event_text(name, body)[:MAX_STRING_FIELD],
            "detail": json.dumps(extras, sort_keys=True)[:MAX_STRING_FIELD],
        }
        seq = ev.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            fields["seq"] = seq
        ev_tags = dict(tags, event=name, severity=event_severity(name, ev.get("severity"), body),
                       **_diagnosis_tags(name, body))
        lines.append(lineproto.point(EVENT, ev_tags, fields, t))
    return lines


def eis_chunk_points(payload: Any, topic: Topic) -> list[str]:
    """One chunk of a rig's EIS sweep (MSG_EIS, docs/mqtt.md "EIS sweeps").

    The sweep is named by ``(boot, sweep_seq)`` (the reliable seq of its chunk 0); its
    points keep the chunk and their place in it. Point k of chunk c is stored at
    ``time_ns + c * EIS_CHUNK_SPACING_NS + k``: ``time_ns`` is fixed when the gateway
    spools the chunk, so a redelivery rewrites the same keys. A skipped point (nothing
    measured) is stored with its frequency and ``quality="skipped"``.
    """
    tags = _envelope(payload, topic, ("site", "rig"))
    t0 = _check_time(payload.get("time_ns"), "EIS chunk")
    _int(payload, "seq", "EIS chunk")  # the chunk's own reliable seq (edge accounting)
    ids = {n: _int(payload, n, "EIS chunk") for n in ("sweep_seq", "eis_seq", "chunk", "chunks")}
    if not (0 <= ids["chunk"] < ids["chunks"]) or ids["sweep_seq"] < 0:
        raise PayloadError(f"EIS chunk: chunk {ids['chunk']} of {ids['chunks']}, "
                           f"sweep_seq {ids['sweep_seq']}")
    pts = payload.get("points")
    if not isinstance(pts, list) or not pts:
        raise PayloadError("EIS chunk: 'points' must be a non-empty list")
    if len(pts) >= EIS_CHUNK_SPACING_NS:
        raise PayloadError(f"EIS chunk: {len(pts)} points exceed {EIS_CHUNK_SPACING_NS - 1}")
    base = t0 + ids["chunk"] * EIS_CHUNK_SPACING_NS
    if base + len(pts) > INT64_MAX:
        raise PayloadError("EIS chunk: bad time_ns")
    prefix = lineproto.tag_prefix(EIS_SPECTRUM, tags)
    lines = []
    for k, pt in enumerate(pts):
        where = f"EIS point {k}"
        if not isinstance(pt, dict):
            raise PayloadError(f"{where} is not an object")
        f = _float(pt, "f_hz", where)
        if f <= 0:
            raise PayloadError(f"{where}: f_hz must be positive")
        quality = pt.get("quality")
        if not isinstance(quality, str) or quality not in EIS_QUALITIES:
            raise PayloadError(f"{where}: quality {quality!r} is not one of "
                               f"{sorted(EIS_QUALITIES)}")
        re_, im = _opt_float(pt, "z_re_ohm", where), _opt_float(pt, "z_im_ohm", where)
        rel = _opt_float(pt, "rel_err", where)
        if quality == "skipped" and (re_ is not None or im is not None):
            raise PayloadError(f"{where}: a skipped point carries an impedance")
        fields: dict[str, FieldValue] = {**ids, "point": k, "freq_hz": f}
        if re_ is not None and im is not None:
            fields.update({"z_real_ohm": re_, "z_imag_ohm": im, **_z_fields(re_, im)})
        if rel is not None:
            fields["rel_err"] = rel
        fields["quality"] = quality
        lines.append(lineproto.line(prefix, fields, base + k))
    return lines


def eis_points(payload: Any, topic: Topic) -> list[str]:
    """One EIS spectrum: parallel arrays ``freq_hz``, ``z_real_ohm``, ``z_imag_ohm``;
    or, with ``points``, one chunk of a rig's sweep (``eis_chunk_points``).

    Point *k* of a spectrum taken at ``time_ns`` is stored at ``time_ns + k`` ns, so the
    points of one spectrum have distinct keys without a per-spectrum tag (a tag per
    spectrum would grow series cardinality without bound); ``spectrum_ns`` (field)
    names the spectrum. ``z_imag_ohm`` is Z″ with its sign (negative when capacitive).
    """
    if isinstance(payload, dict) and "points" in payload:
        return eis_chunk_points(payload, topic)
    tags = _envelope(payload, topic, ("site", "rig"))
    t0 = _check_time(payload.get("time_ns"), "spectrum")
    arrays = []
    for name in ("freq_hz", "z_real_ohm", "z_imag_ohm"):
        arr = payload.get(name)
        if not isinstance(arr, list) or not arr:
            raise PayloadError(f"'{name}' must be a non-empty list")
        arrays.append(arr)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise PayloadError("freq_hz, z_real_ohm and z_imag_ohm differ in length")
    if n > MAX_EIS_POINTS:
        raise PayloadError(f"{n} EIS points exceed {MAX_EIS_POINTS}")
    if t0 + n > INT64_MAX:
        raise PayloadError("spectrum: bad time_ns")
    extra: dict[str, FieldValue] = {}
    for name in ("temp_c", "pressure_mpa"):
        if name in payload:
            extra[name] = _float(payload, name, "spectrum")
    prefix = lineproto.tag_prefix(EIS_SPECTRUM, tags)
    lines = []
    for k in range(n):
        where = f"EIS point {k}"
        row = {"freq_hz": arrays[0][k], "z_real_ohm": arrays[1][k], "z_imag_ohm": arrays[2][k]}
        f = _float(row, "freq_hz", where)
        re_ = _float(row, "z_real_ohm", where)
        im = _float(row, "z_imag_ohm", where)
        if f <= 0:
            raise PayloadError(f"{where}: freq_hz must be positive")
        fields: dict[str, FieldValue] = {
            "idx": k, "spectrum_ns": t0, "freq_hz": f, "z_real_ohm": re_, "z_imag_ohm": im,
            "z_mag_ohm": math.hypot(re_, im), "z_phase_deg": math.degrees(math.atan2(im, re_)),
            **extra,
        }
        lines.append(lineproto.line(prefix, fields, t0 + k))
    return lines


def _generic_fields(obj: dict[str, Any], skip: set[str], prefix: str = "",
                    depth: int = 0) -> dict[str, FieldValue]:
    """Status/health payloads are the edge's to extend: store what they carry.

    Numbers become floats (an int in one message and a float in the next would be a
    field-type conflict), bools stay bools, short strings stay strings; nested objects
    are flattened one level as ``parent_child``; lists are left out."""
    out: dict[str, FieldValue] = {}
    for k, v in obj.items():
        if k in skip or not isinstance(k, str) or not k:
            continue
        name = f"{prefix}{k}"
        if isinstance(v, bool):
            out[name] = v
        elif isinstance(v, int | float):
            f = float(v)
            if math.isfinite(f):
                out[name] = f
        elif isinstance(v, str):
            out[name] = v[:MAX_STRING_FIELD]
        elif isinstance(v, dict) and depth == 0:
            out.update(_generic_fields(v, set(), f"{name}_", depth + 1))
    return out


def _time_or(payload: dict[str, Any], received_ns: int) -> int:
    t = payload.get("time_ns")
    return _check_time(t, "status") if t is not None else received_ns


def rig_status_points(payload: Any, topic: Topic, received_ns: int) -> list[str]:
    tags = _envelope(payload, topic, ("site", "rig"))
    state = payload.get("state")
    if not isinstance(state, str) or not state:
        raise PayloadError("status: 'state' must be a non-empty string")
    fields = _generic_fields(payload, {"schema", "site", "rig", "cell", "run", "boot",
                                       "gateway", "time_ns", "state"})
    fields = {"state": state, "online": state != "offline", **fields}
    # Status is per rig; cell/run would split one rig's status into several series.
    st_tags = {"site": tags["site"], "rig": tags["rig"]}
    return [lineproto.point(RIG_STATUS, st_tags, fields, _time_or(payload, received_ns))]


def gateway_points(payload: Any, topic: Topic, received_ns: int) -> list[str]:
    """Gateway ``status`` (online/offline, retained, last will) and ``health``.

    Stored in ``gateway_health`` tagged site + gateway; a ``rigs`` object of per-rig
    health yields one more point per rig, tagged with the rig as well."""
    if not isinstance(payload, dict):
        raise PayloadError("payload is not a JSON object")
    if payload.get("schema") != SCHEMA_VERSION:
        raise PayloadError(f"unsupported schema {payload.get('schema')!r}")
    assert topic.gateway is not None
    if payload.get("gateway", topic.gateway) != topic.gateway:
        raise PayloadError(f"payload gateway {payload.get('gateway')!r} does not match topic")
    if payload.get("site", topic.site) != topic.site:
        raise PayloadError(f"payload site {payload.get('site')!r} does not match topic")
    t = _time_or(payload, received_ns)
    tags = {"site": topic.site, "gateway": topic.gateway}
    fields = _generic_fields(payload, {"schema", "site", "gateway", "time_ns", "rigs"})
    if topic.leaf == "status":
        state = payload.get("state")
        if not isinstance(state, str) or not state:
            raise PayloadError("gateway status: 'state' must be a non-empty string")
        fields["online"] = state != "offline"
    lines = []
    if fields:
        lines.append(lineproto.point(GATEWAY_HEALTH, tags, fields, t))
    rigs = payload.get("rigs")
    if isinstance(rigs, dict):
        for rig, health in rigs.items():
            if isinstance(rig, str) and rig and isinstance(health, dict):
                rf = _generic_fields(health, set())
                if rf:
                    lines.append(lineproto.point(GATEWAY_HEALTH, dict(tags, rig=rig), rf, t))
    if not lines:
        raise PayloadError("gateway message carries no fields")
    return lines


@dataclass(frozen=True, slots=True)
class Chain:
    """What a gateway message states about its rig stream (docs/mqtt.md, "Stored
    watermarks"): every row of ``(prev, last]`` of ``(rig, boot, stream)`` that the
    gateway holds is in this message."""

    site: str
    rig: str
    boot: str
    stream: int  # 0x10 telemetry (samples, impedance points), 0x20 reliable (events, EIS)
    prev: int
    last: int


STREAM_OF_LEAF = {"telemetry": 0x10, "impedance": 0x10, "events": 0x20, "eis": 0x20}


def chain_of(topic: Topic, payload: Any) -> Chain | None:
    """The stream range a validated gateway message covers, if it names one."""
    if topic.rig is None or topic.leaf not in STREAM_OF_LEAF or "prev_seq" not in payload:
        return None
    prev, boot = payload["prev_seq"], payload.get("boot")
    if topic.leaf in ("telemetry", "impedance"):
        items = payload["samples" if topic.leaf == "telemetry" else "points"]
        first, last = (items[0]["seq"], items[-1]["seq"]) if items else (None, None)
    else:
        first = last = payload.get("seq")
    if not (type(prev) is int and type(first) is int and type(last) is int
            and -1 <= prev < first <= last and boot is not None):
        raise PayloadError(f"prev_seq {prev!r} does not precede the message's seq {first!r}")
    return Chain(topic.site, topic.rig, str(boot), STREAM_OF_LEAF[topic.leaf], prev, last)


def encode_message(topic_str: str, raw: bytes, received_ns: int) -> Encoded:
    """Route one MQTT message to its points, encoded (and the stream range it covers);
    PayloadError when it must be dead-lettered."""
    try:
        topic = parse_topic(topic_str)
        if topic.leaf == "telemetry" and topic.rig is not None:
            # The hot path: float texts straight through (bytes), checked once here.
            payload = decode_json(raw, number_text=True)
            enc = telemetry_encoded(payload, topic, number_text_ok=True)
        else:
            payload = decode_json(raw)
            lines = _points_for(topic, payload, received_ns)
            enc = Encoded([ln.encode() for ln in lines],
                          frozenset(ln.split(",", 1)[0].split(" ", 1)[0] for ln in lines))
        enc.chain = chain_of(topic, payload)
        return enc
    except lineproto.LineProtocolError as exc:
        raise PayloadError(str(exc)) from exc


def message_points(topic_str: str, raw: bytes, received_ns: int) -> tuple[list[str],
                                                                          Chain | None]:
    """Route one MQTT message to its points (and the stream range it covers);
    PayloadError when it must be dead-lettered."""
    enc = encode_message(topic_str, raw, received_ns)
    return [ln.decode() for ln in enc.lines], enc.chain


def points_for(topic_str: str, raw: bytes, received_ns: int) -> list[str]:
    """Route one MQTT message to its points; PayloadError when it must be dead-lettered."""
    return message_points(topic_str, raw, received_ns)[0]


def _points_for(topic: Topic, payload: Any, received_ns: int) -> list[str]:
    if topic.gateway is not None:
        if topic.leaf in ("status", "health"):
            return gateway_points(payload, topic, received_ns)
    elif topic.leaf == "telemetry":
        return telemetry_points(payload, topic)  # (number texts: see message_points)
    elif topic.leaf == "impedance":
        return impedance_points(payload, topic)
    elif topic.leaf == "events":
        return event_points(payload, topic)
    elif topic.leaf == "eis":
        return eis_points(payload, topic)
    elif topic.leaf == "status":
        return rig_status_points(payload, topic, received_ns)
    elif topic.leaf == "actuators":
        return actuator_points(payload, topic)
    raise PayloadError(f"no ingest rule for topic leaf {topic.leaf!r}")


def payload_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def dead_letter_point(topic: str, raw: bytes, code: str, reason: str, received_ns: int) -> str:
    """A ``dead_letter`` record: why, where, and enough of the payload to debug it.

    Tags site/rig come from the topic when it parses ("unknown" otherwise) so the
    pipeline dashboard can show which rig sends bad data; ``digest`` (sha256 prefix)
    identifies a redelivered copy of the same message."""
    try:
        t = parse_topic(topic)
        site, rig = t.site, t.rig or f"gateway/{t.gateway}"
    except PayloadError:
        site, rig = "unknown", "unknown"
    excerpt = raw[:512].decode("utf-8", errors="replace")
    fields: dict[str, FieldValue] = {
        "reason": reason[:MAX_STRING_FIELD], "topic": topic[:MAX_STRING_FIELD],
        "payload_excerpt": excerpt, "payload_bytes": len(raw), "digest": payload_digest(raw),
    }
    return lineproto.point(DEAD_LETTER, {"site": site, "rig": rig, "code": code}, fields,
                           received_ns)
