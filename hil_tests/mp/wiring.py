"""The reference rig's board, emulated: chip models wired to the pins of the Pico 2 W.

``Wiring()`` builds every chip model and registers it with ``machine.BENCH`` *before* the
firmware's ``boards.pico2w.build()`` runs, so the firmware finds the chips on the pins its
board file names. The lockstep loop of the bench then calls, once per step:

    wiring.apply_inputs(cell_v=..., cell_i_a=..., temp_c=..., force_n=...)  # analog world in
    wiring.load_adc_block(cell_v_arr, cell_i_a_arr, ref_v_arr)            # or a block
    machine.BENCH.advance_ns(step_ns)                                      # firmware runs
    out = wiring.read_outputs()                                            # actuators out

Pin numbers come from ``boards.pico2w.PINS`` and the analog front end from
``boards.pico2w.DEFAULTS`` (shunt, dividers, R_REF, cell area) when the firmware is on the
module path; otherwise from ``FALLBACK_PINS`` / ``FALLBACK_ANALOG`` below (a copy of the
board file as of this writing; ``pin_source`` says which was used). Everything the board
file does not describe -- the physics behind the chips -- is in ``PLANT`` (load cell,
press screw, heater, V->I stage ranges).
"""

import machine
from chips.ads131m04 import ADS131M04
from chips.dac8551 import DAC8551
from chips.heater import Heater
from chips.max31865 import MAX31865
from chips.nau7802 import NAU7802
from chips.tmc2209 import TMC2209
from electrical import SmallSignalCell

FALLBACK_PINS = {
    "i2c0_sda": 0, "i2c0_scl": 1, "spi0_sck": 2, "spi0_tx": 3, "spi0_rx": 4, "adc_cs": 5,
    "adc_drdy": 6, "adc_sync_reset": 7, "uart1_tx": 8, "uart1_rx": 9, "spi1_sck": 10,
    "spi1_tx": 11, "spi1_rx": 12, "dac_cs": 13, "rtd_cs": 14, "heater_pwm": 15,
    "press_step": 16, "press_dir": 17, "press_en": 18, "endstop_min": 19, "endstop_max": 20,
    "pulse_gate": 21, "range_10ua": 22, "range_1ma": 26, "range_100ma": 27,
}
FALLBACK_ANALOG = {
    "cell_v_divider": "5.0", "shunt_ohm": "10.0", "ref_v_divider": "5.0",
    "dac_vref_v": "2.5", "rtd_r_ref_ohm": "430.0", "rtd_r0_ohm": "100.0",
    "cell_area_mm2": "78.54",
}
# The plant behind the chips (not in the board file).
PLANT = {
    "adc_clkin_hz": 8_192_000,
    "ranges_ma": (0.01, 1.0, 100.0),  # V->I stage full scales (fieldrig.galvanostat)
    "loadcell_capacity_n": 1000.0,
    "loadcell_mv_per_v": 2.0,  # bridge output at capacity
    "nau_avdd_v": 3.3,
    "press_full_steps_per_rev": 200,
    "press_lead_mm": 2.0,  # screw travel per revolution
    "endstop_min_mm": 0.0,  # retracted stop
    "endstop_max_mm": 25.0,  # closed stop
    "press_start_mm": 5.0,  # where the screw is when the bench starts
    "press_uart_ms1": 0,  # MS1/MS2 straps: node address 0, 8 microsteps by pins
    "press_uart_ms2": 0,
    "heater_supply_v": 24.0,
    "heater_ohm": 28.8,
}
# PT100/PT1000 Callendar-Van Dusen coefficients (IEC 60751)
_A = 3.9083e-3
_B = -5.775e-7
_C = -4.183e-12


def rtd_ohm_at(temp_c, r0_ohm):
    """Resistance of a platinum RTD at temp_c (IEC 60751)."""
    t = temp_c
    r = 1.0 + _A * t + _B * t * t
    if t < 0:
        r += _C * (t - 100.0) * t * t * t
    return r0_ohm * r


def _board():
    try:
        from boards import pico2w
    except ImportError:
        return None
    return pico2w


class _LevelTracker:
    """Time-weighted high fraction of a pin driven as plain GPIO (the pulse gate)."""

    def __init__(self, bench, pin):
        self.bench = bench
        self.level = bench.level(pin)
        self._t = bench.now_ns
        self.high_ns = 0
        self.edges = 0
        bench.watch(pin, self._changed)

    def _changed(self, level):
        now = self.bench.now_ns
        if self.level:
            self.high_ns += now - self._t
        self._t = now
        self.level = level
        self.edges += 1

    def take_high_ns(self):
        now = self.bench.now_ns
        if self.level:
            self.high_ns += now - self._t
        self._t = now
        high = self.high_ns
        self.high_ns = 0
        return high


class Wiring:
    def __init__(self, bench=None, pins=None, analog=None, plant=None, use_board=True,
                 coalesce_adc=False):
        bench = bench if bench is not None else machine.BENCH
        self.bench = bench
        board = _board() if use_board else None
        self.pins = dict(FALLBACK_PINS)
        self.pin_source = "wiring.FALLBACK_PINS"
        analog_s = dict(FALLBACK_ANALOG)
        if board is not None:
            self.pins.update(getattr(board, "PINS", {}))
            self.pin_source = "boards.pico2w.PINS"
            for k, v in getattr(board, "DEFAULTS", {}).items():
                if k in analog_s:
                    analog_s[k] = v
        if pins:
            self.pins.update(pins)
            self.pin_source += "+overrides"
        self.analog = {k: float(v) for k, v in analog_s.items()}
        if analog:
            self.analog.update(analog)
        self.plant = dict(PLANT)
        if plant:
            self.plant.update(plant)
        p = self.pins

        # -- chips -------------------------------------------------------------------------
        self.adc = ADS131M04(clock=bench, clkin_hz=self.plant["adc_clkin_hz"])
        bench.add_spi(self.adc, cs=p["adc_cs"], sck=p["spi0_sck"], mosi=p["spi0_tx"],
                      miso=p["spi0_rx"], name="ADS131M04")
        bench.add_clocked(self.adc)
        self.adc.attach_drdy(bench.driver_for(p["adc_drdy"]))
        if coalesce_adc:
            # Skipping unread conversions is exact only while no IRQ handler sees DRDY.
            drdy_state = bench.pin_state(p["adc_drdy"])
            self.adc.coalesce = True
            self.adc.drdy_observed = lambda: drdy_state.irq_handler is not None
        bench.watch(p["adc_sync_reset"], self.adc.sync_reset_changed)
        bench.board_pull(p["adc_sync_reset"], 1)

        self.dac = DAC8551(vref_v=self.analog["dac_vref_v"])
        bench.add_spi(self.dac, cs=p["dac_cs"], sck=p["spi1_sck"], mosi=p["spi1_tx"],
                      miso=None, name="DAC8551")

        self.rtd = MAX31865(clock=bench, rref_ohm=self.analog["rtd_r_ref_ohm"])
        self.rtd.rtd_ohm = self.analog["rtd_r0_ohm"]
        bench.add_spi(self.rtd, cs=p["rtd_cs"], sck=p["spi1_sck"], mosi=p["spi1_tx"],
                      miso=p["spi1_rx"], name="MAX31865")
        bench.add_clocked(self.rtd)

        self.loadcell = NAU7802(clock=bench, avdd_v=self.plant["nau_avdd_v"])
        self.loadcell.bridge_v_per_v = 0.0
        bench.add_i2c(self.loadcell, 0x2A, sda=p["i2c0_sda"], scl=p["i2c0_scl"],
                      name="NAU7802")
        bench.add_clocked(self.loadcell)

        self.press = TMC2209(clock=bench, ms1=self.plant["press_uart_ms1"],
                             ms2=self.plant["press_uart_ms2"])
        bench.add_uart(self.press, tx=p["uart1_tx"], rx=p["uart1_rx"], single_wire=True,
                       name="TMC2209")
        bench.watch(p["press_step"], self.press.step_changed)
        bench.watch(p["press_dir"], self.press.dir_changed)
        bench.watch(p["press_en"], self.press.enn_changed)
        bench.watch_pwm(p["press_step"], self.press.step_pwm)
        bench.board_pull(p["press_en"], 1)  # TMC2209 boards pull ENN up: disabled
        self.press.enn_changed(bench.level(p["press_en"]))
        self.press.on_position = self._press_moved
        pl = self.plant
        self.press.position_256 = int(pl["press_start_mm"] / pl["press_lead_mm"]
                                      * pl["press_full_steps_per_rev"] * 256)

        self.heater = Heater(clock=bench, supply_v=self.plant["heater_supply_v"],
                             resistance_ohm=self.plant["heater_ohm"])
        bench.watch_pwm(p["heater_pwm"], self.heater.pwm_changed)
        bench.watch(p["heater_pwm"], self.heater.pin_changed)
        bench.board_pull(p["heater_pwm"], 0)  # gate pull-down: heater off when floating

        bench.board_pull(p["pulse_gate"], 0)
        self._gate = _LevelTracker(bench, p["pulse_gate"])

        self.range_index = -1  # V->I stage range (no range-switch pins on the board yet)
        # End stops forced triggered from outside (a bench fault: a stop hit or a broken
        # wire), whatever the screw position says.
        self._endstop_forced = {"endstop_min": False, "endstop_max": False}
        self._t_read_ns = bench.now_ns
        self._heater_j0 = 0.0
        self._press_moved(self.press.position_256)

        # The cell's response inside a step to what the stage drives now (electrical.py);
        # inert until the bench sends a network (set_small_signal).
        self.small_signal = SmallSignalCell(
            self._stage_current_now_a, lambda: self.adc._period_ns,
            1.0 / self.analog["cell_v_divider"], self.analog["shunt_ohm"])
        self.dac.on_update = self.stage_current_changed

    # -- the small-signal cell -------------------------------------------------------------
    def _stage_current_now_a(self):
        """Stage current the DAC and range command now (A); None while a PIO program
        gates the stage (the plant models pulse trains itself)."""
        sm = self.bench.pio_pins.get(self.pins["pulse_gate"])
        if sm is not None and sm.active():
            return None
        return self.stage_command_a()

    def stage_command_a(self):
        """Current the DAC and range command (A): VOUT around VREF/2 is +-full scale."""
        vref = self.dac.vref_v
        return (self.dac.vout_v - vref / 2) / (vref / 2) * self.stage_fullscale_a()

    def stage_current_changed(self):
        """DAC update or range switch: the small-signal cell follows from now."""
        ss = self.small_signal
        if ss.enabled:
            self.adc.sync()  # conversions before now saw the previous current
            self.adc.materialize()
            ss.current_changed(self.bench.now_ns)

    def set_small_signal(self, enabled, r0_ohm, r_ohm, tau_s):
        """The cell's linearised network (bench NETWORK message); disabled: no hook."""
        self.adc.sync()
        self.adc.materialize()
        ss = self.small_signal
        ss.set_network(self.bench.now_ns, enabled, r0_ohm, r_ohm, tau_s)
        self.adc.input_hook = ss.adjust if ss.enabled else None

    def small_signal_held(self):
        """Step end: the plant holds the present stage current for the next step."""
        ss = self.small_signal
        if ss.enabled:
            self.adc.sync()
            self.adc.materialize()
            ss.held(self.bench.now_ns)

    # -- analog world in -------------------------------------------------------------------
    def apply_inputs(self, cell_v=None, cell_i_a=None, ref_v=None, temp_c=None, rtd_ohm=None,
                     rtd_open=None, force_n=None, range_index=None):
        """Set the static analog inputs (None leaves a value as it is)."""
        a = self.analog
        if range_index is not None:
            self.range_index = range_index
        if cell_v is not None or cell_i_a is not None or ref_v is not None:
            self.adc.sync()  # conversions before now saw the previous inputs
        vin = self.adc.inputs_v
        if cell_v is not None:
            vin[0] = cell_v / a["cell_v_divider"]
        if cell_i_a is not None:
            vin[1] = cell_i_a * a["shunt_ohm"]
        if ref_v is not None:
            vin[2] = ref_v / a["ref_v_divider"]
        if temp_c is not None:
            self.rtd.rtd_ohm = rtd_ohm_at(temp_c, a["rtd_r0_ohm"])
        if rtd_ohm is not None:
            self.rtd.rtd_ohm = rtd_ohm
        if rtd_open is not None and rtd_open:
            self.rtd.rtd_ohm = None
        if force_n is not None:
            pl = self.plant
            self.loadcell.bridge_v_per_v = (
                force_n / pl["loadcell_capacity_n"] * pl["loadcell_mv_per_v"] / 1000.0)

    def load_adc_block(self, cell_v, cell_i_a, ref_v=None):
        """One ADC conversion per element, starting with the next conversion: arrays of
        cell voltage (V), cell current (A) and reference electrode (V)."""
        from array import array

        a = self.analog
        n = len(cell_v)
        kv = 1.0 / a["cell_v_divider"]
        ki = a["shunt_ohm"]
        kr = 1.0 / a["ref_v_divider"]
        ch0 = array("f", (x * kv for x in cell_v))
        ch1 = array("f", (x * ki for x in cell_i_a))
        ch2 = array("f", (x * kr for x in ref_v)) if ref_v is not None else array("f", [0.0] * n)
        ch3 = array("f", [0.0] * n)
        self.adc.load_block_v((ch0, ch1, ch2, ch3))

    # -- press mechanics -----------------------------------------------------------------
    def press_travel_mm(self):
        pl = self.plant
        return self.press.position_fullsteps / pl["press_full_steps_per_rev"] * pl["press_lead_mm"]

    def _press_moved(self, _position_256):
        pl = self.plant
        travel = (self.press.position_256 / 256 / pl["press_full_steps_per_rev"]
                  * pl["press_lead_mm"])
        p = self.pins
        forced = self._endstop_forced
        hit_min = travel <= pl["endstop_min_mm"] or forced["endstop_min"]
        hit_max = travel >= pl["endstop_max_mm"] or forced["endstop_max"]
        # NC switches to GND with pull-ups: closed (0) normally, open (1) when pressed.
        self.bench.drive(p["endstop_min"], None if hit_min else 0)
        self.bench.drive(p["endstop_max"], None if hit_max else 0)

    def force_endstops(self, endstop_min=False, endstop_max=False):
        """Hold an end stop triggered (switch open) whatever the press position -- a stop
        hit by a jammed screw or a broken wire; False gives it back to the mechanics."""
        self._endstop_forced["endstop_min"] = bool(endstop_min)
        self._endstop_forced["endstop_max"] = bool(endstop_max)
        self._press_moved(self.press.position_256)

    # -- actuators out -------------------------------------------------------------------
    def stage_fullscale_a(self):
        if self.range_index < 0:
            return 0.0
        return self.plant["ranges_ma"][self.range_index] / 1000.0

    def read_outputs(self):
        """Actuator outputs and bookkeeping since the previous call (one lockstep step)."""
        bench = self.bench
        now = bench.now_ns
        t0 = self._t_read_ns
        window = now - t0
        p = self.pins
        gate_pin = p["pulse_gate"]
        high_gpio = self._gate.take_high_ns()
        sm = bench.pio_pins.get(gate_pin)
        gate_pio = None
        if sm is not None and sm.active():
            gate_pio = sm.describe(gate_pin)
            gate_duty = sm.duty(gate_pin, t0, now) if window > 0 else float(gate_pio["level"])
            gate_level = gate_pio["level"]
        else:
            gate_level = bench.level(gate_pin)
            gate_duty = high_gpio / window if window > 0 else float(gate_level)
        dac = self.dac
        cmd_a = self.stage_command_a()
        energy = self.heater.energy_since(0.0)
        heater_j = energy - self._heater_j0
        self._heater_j0 = energy
        self._t_read_ns = now
        adc = self.adc
        return {
            "t_ns": now,
            "window_ns": window,
            "dac_code": dac.code,
            "dac_v": dac.vout_v,
            "dac_pd": dac.pd_name,
            "range_index": self.range_index,
            "stage_fullscale_a": self.stage_fullscale_a(),
            "cmd_current_a": cmd_a,
            "gate_level": gate_level,
            "gate_duty": gate_duty,
            "gate_pio": gate_pio,
            "cell_current_cmd_avg_a": cmd_a * gate_duty,
            "heater_duty": self.heater.duty,
            "heater_w": self.heater.power_w,
            "heater_j": heater_j,
            "press_steps": self.press.steps,
            "press_position_fullsteps": self.press.position_fullsteps,
            "press_travel_mm": self.press_travel_mm(),
            "press_enabled": self.press.enabled,
            "endstop_min": bench.level(p["endstop_min"]),
            "endstop_max": bench.level(p["endstop_max"]),
            "wdt_feeds": bench.wdt_feeds,
            "wdt_expired": bench.wdt_expired,
            "reset_cause": bench.reset_cause,
            "resets": bench.resets,
            "adc_samples_converted": adc.samples_converted,
            "adc_samples_read": adc.samples_read,
            "adc_samples_lost": adc.samples_lost,
            "adc_block_remaining": adc.block_remaining(),
            "adc_rail_clips": list(adc.rail_clips),
            "rtd_conversions": self.rtd.conversions,
            "loadcell_conversions": self.loadcell.conversions,
            "bus_errors": dict(bench.errors),
        }
