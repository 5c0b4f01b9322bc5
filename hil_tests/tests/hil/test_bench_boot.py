"""The real firmware boots on the bench: real drivers on emulated buses, lockstep with the
simulated cell, its own link. Everything asserted here is the firmware's own output (link
messages, the actuators as the chip models see them)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from fieldrig_edge import link
from fieldrig_hil.bench import BenchRig

pytestmark = pytest.mark.fast


def test_boots_with_real_drivers_and_greets_the_edge(bench_rig: Callable[..., BenchRig]) -> None:
    rig = bench_rig(seed=1)
    rig.run_for(2.0)
    hello = rig.edge.hellos[0]
    assert hello["rig"] == "bench-1" and hello["protocol"] == link.PROTOCOL_VERSION
    boot = rig.event_bodies("boot")
    assert len(boot) == 1 and boot[0]["boot"] == hello["boot"]
    out = rig.outputs
    assert out is not None
    # Drivers initialised the parts: ADS131M04 at OSR 4096 (1 kSPS), press stage enabled.
    assert out.adc_rate_hz == 1000.0 and out.press_enabled
    # Safe outputs after boot: DAC at mid-scale, stage disconnected, heater off.
    assert out.dac_code == 0x8000 and out.range_index == -1 and out.heater_duty == 0.0
    assert out.bus_errors == 0 and out.wdt_feeds >= 19  # fed every 100 ms from the loop
    assert out.rtd_conversions > 0 and out.loadcell_conversions > 0 and out.adc_read > 0
    # Telemetry: numbered from 0, one per 100 ms, rig running (no trip at boot).
    seqs = [s.seq for _, s in rig.samples()]
    assert seqs == list(range(len(seqs))) and len(seqs) >= 17
    assert all(s.rig_state == 1 for _, s in rig.samples())
    status = rig.call("status")
    assert status["state"] == "running" and status["active"] == []


def test_telemetry_matches_the_simulated_cell_within_sensor_accuracy(
    bench_rig: Callable[..., BenchRig],
) -> None:
    rig = bench_rig(seed=2)
    rig.call("set_current", current_ma=0.5)
    rig.run_for(5.0)
    assert rig.plant is not None
    checked = 0
    for t, s in rig.samples():
        truth = rig.plant.truth_at(t)
        if truth is None or t < 1.0:
            continue
        checked += 1
        # ADS131M04 through the 5:1 divider: ~0.7 uV/LSB, bench noise 10 uV rms.
        assert s.cell_voltage_v == pytest.approx(truth.voltage_v, abs=1e-4)
        assert s.cell_current_ma == pytest.approx(0.5, abs=2e-3)  # shunt, 0.2 uA noise
        # MAX31865 15-bit on PT100 / 430 ohm: ~0.034 degC per code.
        assert s.cell_temp_c == pytest.approx(truth.temperature_c, abs=0.1)
        # NAU7802 on a 1 kN cell: 0.2 mN per code; the screw moved only if commanded.
        assert s.stack_pressure_mpa == pytest.approx(truth.pressure_mpa, abs=0.02)
    assert checked >= 30
    # The cell really carries the commanded current: V = I * R_cell (tens of ohm).
    v = [s.cell_voltage_v for t, s in rig.samples() if t > 2.0]
    assert 0.5e-3 * 10 < sum(v) / len(v) < 0.5e-3 * 1000


def test_same_seed_same_run(bench_rig: Callable[..., BenchRig]) -> None:
    def run(seed: int) -> list[tuple[int, float, float, float, float]]:
        rig = bench_rig(seed=seed)
        rig.call("set_current", current_ma=0.3)
        rig.call("set_temperature", temp_c=35.0)
        rig.run_for(3.0)
        return [(s.seq, s.cell_voltage_v, s.cell_current_ma, s.cell_temp_c,
                 s.stack_pressure_mpa) for _, s in rig.samples()]

    a, b, c = run(5), run(5), run(6)
    assert a == b
    assert a != c  # a different seed changes the noise
    assert all(math.isfinite(x) for row in a for x in row[1:])


def test_no_trip_when_the_firmware_starts_before_the_first_rtd_conversion(
    bench_rig: Callable[..., BenchRig],
) -> None:
    rig = bench_rig(seed=3, firmware_opts={"rtd_settle_ms": "0"})
    rig.run_for(4.0)
    assert rig.event_bodies("limit_tripped") == []
