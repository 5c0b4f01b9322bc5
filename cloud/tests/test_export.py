"""Run export tables: set-points, polled at their own instants, ride on the sample rows."""

from __future__ import annotations

from typing import Any

from fieldrig_cloud.export import carry_setpoints


def _row(t: int, **cols: Any) -> dict[str, Any]:
    return {"time_ns": t, **cols}


def test_polled_setpoints_are_carried_onto_the_samples_not_rows_of_their_own() -> None:
    # Samples every 100 ms; the gateway's status poll every 5 s lands between them.
    rows = {t: _row(t, seq=k, current_ma=0.5) for k, t in enumerate(range(0, 12_000, 100))}
    states = {50: _row(50, current_setpoint_ma=0.5, temp_setpoint_c=30.0),
              5_050: _row(5_050, current_setpoint_ma=-0.5, temp_setpoint_c=30.0),
              10_000: _row(10_000, current_setpoint_ma=0.0)}
    carry_setpoints(rows, states)
    assert len(rows) == 120  # no row for a poll
    assert "current_setpoint_ma" not in rows[0]  # before the first poll: not known
    assert rows[100]["current_setpoint_ma"] == 0.5 and rows[5_000]["temp_setpoint_c"] == 30.0
    assert rows[5_100]["current_setpoint_ma"] == -0.5
    # A poll at a sample's own time is that sample's; one without a field clears it.
    assert rows[10_000]["current_setpoint_ma"] == 0.0
    assert "temp_setpoint_c" not in rows[11_900]


def test_a_rows_own_setpoints_win() -> None:
    rows = {0: _row(0, current_setpoint_ma=1.0), 100: _row(100)}
    carry_setpoints(rows, {0: _row(0, current_setpoint_ma=2.0)})
    assert rows[0]["current_setpoint_ma"] == 1.0 and rows[100]["current_setpoint_ma"] == 2.0
