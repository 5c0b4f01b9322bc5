"""Telemetry payload (MQTT contract, schema 1) -> line protocol: valid batches become
one idempotent point per sample; anything malformed is refused with a reason."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fieldrig_cloud import schema

GOOD: dict[str, Any] = {
    "schema": 1, "site": "lab-1", "rig": "rig a", "cell": "c,1", "run": "r=1", "gateway": "gw",
    "samples": [{"seq": 7, "time_ns": 1_763_750_000_123_456_789, "cell_voltage_v": 0.03125,
                 "cell_current_ma": -0.5, "cell_temp_c": 25.0, "stack_pressure_mpa": 5,
                 "rig_state": 1}],
}


def test_sample_becomes_escaped_point_with_integer_seq() -> None:
    (line,) = schema.telemetry_points(GOOD)
    assert line.startswith(r"cell_sample,cell=c\,1,rig=rig\ a,run=r\=1,site=lab-1 ")
    assert "seq=7i" in line and "rig_state=1i" in line
    # A whole-number float is written without "i", so InfluxDB keeps the field a float.
    assert "stack_pressure_mpa=5 " in line and "cell_current_ma=-0.5" in line
    assert line.endswith(" 1763750000123456789")


def test_same_sample_twice_gives_identical_point() -> None:
    # Idempotence rests on this: redelivery produces the same series key and time.
    assert schema.telemetry_points(GOOD) == schema.telemetry_points(copy.deepcopy(GOOD))


@pytest.mark.parametrize(("mutate", "why"), [
    (lambda p: p.update(schema=2), "unsupported schema"),
    (lambda p: p.pop("rig"), "tag 'rig'"),
    (lambda p: p.update(samples="x"), "not a list"),
    (lambda p: p["samples"][0].update(seq=1.5), "seq must be an integer"),
    (lambda p: p["samples"][0].update(seq=True), "seq must be an integer"),
    (lambda p: p["samples"][0].update(time_ns=-1), "bad time_ns"),
    (lambda p: p["samples"][0].update(cell_temp_c="hot"), "cell_temp_c must be a number"),
])
def test_malformed_payload_is_refused_with_reason(mutate: Any, why: str) -> None:
    bad = copy.deepcopy(GOOD)
    mutate(bad)
    with pytest.raises(schema.PayloadError, match=why):
        schema.telemetry_points(bad)


def test_non_object_payload_is_refused() -> None:
    with pytest.raises(schema.PayloadError):
        schema.telemetry_points([1, 2])
