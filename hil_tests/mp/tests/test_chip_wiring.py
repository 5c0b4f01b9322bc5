"""Wiring: the models on the Pico 2 W pin map, apply_inputs / read_outputs."""

from array import array

import wiring
from benchutil import BENCH, fresh, spi_bus, xfer
from machine import PWM, Pin


def test_pin_map_comes_from_the_board_file_or_the_fallback_copy():
    fresh()
    w = wiring.Wiring()
    assert w.pin_source in ("boards.pico2w.PINS", "wiring.FALLBACK_PINS")
    if w.pin_source == "boards.pico2w.PINS":
        from boards import pico2w

        for name, gpio in pico2w.PINS.items():
            assert w.pins[name] == gpio, name
        # The fallback copy must still equal the board file it stands in for.
        assert wiring.FALLBACK_PINS == pico2w.PINS
    names = [d.name for d in BENCH.spi_devices(w.pins["spi1_sck"])]
    assert sorted(names) == ["DAC8551", "MAX31865"]


def test_apply_inputs_reach_the_chips_with_the_board_scaling():
    fresh()
    w = wiring.Wiring(use_board=False)
    w.apply_inputs(cell_v=3.0, cell_i_a=0.002, ref_v=-1.0, temp_c=100.0, force_n=500.0)
    assert w.adc.inputs_v[0] == 3.0 / 5.0  # 5:1 attenuator
    assert abs(w.adc.inputs_v[1] - 0.02) < 1e-12  # 2 mA across 10 ohm
    assert w.adc.inputs_v[2] == -0.2
    assert abs(w.rtd.rtd_ohm - 138.5055) < 1e-3  # IEC 60751 PT100 at 100 C
    assert abs(w.loadcell.bridge_v_per_v - 0.001) < 1e-12  # half of 2 mV/V
    w.apply_inputs(rtd_open=True)
    assert w.rtd.rtd_ohm is None


def test_adc_block_is_converted_per_channel():
    fresh()
    w = wiring.Wiring(use_board=False)
    w.load_adc_block(array("f", [1.0, 2.0]), array("f", [0.001, -0.001]))
    assert w.adc.block_remaining() == 2
    BENCH.advance_us(500)  # two conversions at 4 kSPS (power-on OSR)
    assert w.adc.block_remaining() == 0
    assert abs(w.adc.inputs_v[0] - 0.4) < 1e-6 and abs(w.adc.inputs_v[1] + 0.01) < 1e-6


def test_outputs_dac_current_gate_heater_and_press():
    fresh()
    w = wiring.Wiring(use_board=False)
    p = w.pins
    spi = spi_bus(p["spi1_sck"], p["spi1_tx"], p["spi1_rx"], bus=1, baud=4_000_000)
    cs = Pin(p["dac_cs"], Pin.OUT, value=1)
    xfer(spi, cs, bytes((0x00, 0xC0, 0x00)))  # 3/4 scale: +half of the full scale
    w.apply_inputs(range_index=1)  # 1 mA range
    gate = Pin(p["pulse_gate"], Pin.OUT, value=1)
    heater = PWM(Pin(p["heater_pwm"]), freq=100, duty_u16=16384)
    en = Pin(p["press_en"], Pin.OUT, value=0)
    d = Pin(p["press_dir"], Pin.OUT, value=1)
    step = Pin(p["press_step"], Pin.OUT, value=0)
    for _ in range(80):  # 10 full steps at 8 microsteps
        step.value(1)
        step.value(0)
    BENCH.advance_ms(10)
    gate.value(0)
    BENCH.advance_ms(10)
    out = w.read_outputs()
    assert out["dac_code"] == 0xC000 and abs(out["cmd_current_a"] - 0.0005) < 1e-12
    assert abs(out["gate_duty"] - 0.5) < 1e-9 and out["gate_level"] == 0
    assert abs(out["heater_w"] - 16384 / 65535 * 20.0) < 1e-9
    assert abs(out["heater_j"] - out["heater_w"] * 0.02) < 1e-9
    assert out["press_steps"] == 80 and abs(out["press_travel_mm"] - (5.0 + 0.1)) < 1e-9
    assert out["endstop_min"] == 0 and out["endstop_max"] == 0  # NC switches closed
    assert out["bus_errors"] == {}
    heater.deinit()
    en.value(1)
    d.value(0)


def test_end_stop_opens_when_the_press_reaches_it():
    fresh()
    w = wiring.Wiring(use_board=False, plant={"press_start_mm": 0.02})
    p = w.pins
    Pin(p["endstop_min"], Pin.IN, Pin.PULL_UP)
    Pin(p["press_en"], Pin.OUT, value=0)
    Pin(p["press_dir"], Pin.OUT, value=0)  # retract
    step = Pin(p["press_step"], Pin.OUT, value=0)
    assert BENCH.level(p["endstop_min"]) == 0
    for _ in range(8):  # one full step = 0.01 mm
        step.value(1)
        step.value(0)
    assert BENCH.level(p["endstop_min"]) == 0
    for _ in range(8):
        step.value(1)
        step.value(0)
    assert BENCH.level(p["endstop_min"]) == 1  # NC switch opened: pull-up reads 1
