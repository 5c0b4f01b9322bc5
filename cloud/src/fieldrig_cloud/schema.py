"""InfluxDB schema (contract: docs/influxdb.md) and MQTT payload -> line protocol.

Points are keyed by measurement + tags (site, rig, cell, run) + the sample's UTC time
from the edge, so a redelivered message overwrites itself: writes are idempotent.
Line protocol is produced by influxdb-client's ``Point`` (escaping, number types).
"""

from __future__ import annotations

from typing import Any

from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

SCHEMA_VERSION = 1
DATABASE = "fieldrig"
CELL_SAMPLE = "cell_sample"
TAGS = ("site", "rig", "cell", "run")
SAMPLE_FLOAT_FIELDS = ("cell_voltage_v", "cell_current_ma", "cell_temp_c", "stack_pressure_mpa")
SAMPLE_INT_FIELDS = ("seq", "rig_state")


class PayloadError(ValueError):
    """A telemetry payload that does not follow the MQTT contract."""


def telemetry_points(payload: Any) -> list[str]:
    """Validate a telemetry payload (schema 1) and return its line-protocol points."""
    if not isinstance(payload, dict):
        raise PayloadError("payload is not a JSON object")
    if payload.get("schema") != SCHEMA_VERSION:
        raise PayloadError(f"unsupported schema {payload.get('schema')!r}")
    tags = {}
    for tag in TAGS:
        value = payload.get(tag)
        if not isinstance(value, str) or not value:
            raise PayloadError(f"missing or empty tag {tag!r}")
        tags[tag] = value
    samples = payload.get("samples")
    if not isinstance(samples, list):
        raise PayloadError("'samples' is not a list")
    lines = []
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise PayloadError(f"sample {i} is not an object")
        t = s.get("time_ns")
        if not isinstance(t, int) or isinstance(t, bool) or t <= 0:
            raise PayloadError(f"sample {i}: bad time_ns")
        p = Point(CELL_SAMPLE)
        for k, v in tags.items():
            p = p.tag(k, v)
        for name in SAMPLE_INT_FIELDS:
            iv = s.get(name)
            if not isinstance(iv, int) or isinstance(iv, bool):
                raise PayloadError(f"sample {i}: {name} must be an integer")
            p = p.field(name, iv)
        for name in SAMPLE_FLOAT_FIELDS:
            fv = s.get(name)
            if not isinstance(fv, (int, float)) or isinstance(fv, bool):
                raise PayloadError(f"sample {i}: {name} must be a number")
            p = p.field(name, float(fv))
        lines.append(p.time(t, WritePrecision.NS).to_line_protocol())
    return lines
