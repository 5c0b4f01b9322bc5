# Pico 2 W board layer: build() on a fake machine module -> the named drivers, every bus
# pin on a GPIO whose RP2350 function table offers that signal, no GPIO used twice, none
# of the radio's, outputs in their safe state, bus settings within each part's limits,
# each driver on its own chip select, and the wiring table in docs/drivers.md == PINS.
from fakebus import FakeMachine, NullSpiDevice

from boards import pico2w
from fieldrig.drivers.ads131m04 import ADS131M04
from fieldrig.drivers.dac8551 import DAC8551
from fieldrig.drivers.heater import Heater
from fieldrig.drivers.max31865 import MAX31865
from fieldrig.drivers.nau7802 import NAU7802
from fieldrig.drivers.tmc2209 import TMC2209
from fieldrig.drivers.watchdog import Watchdog

DOC = "../../docs/drivers.md"


class FakeLink:
    pass


def _build(opts=None):
    m = FakeMachine()
    # No parts on the fake buses: build without init_parts.
    return pico2w.build(opts or {}, machine=m, link=FakeLink(), init=False), m


# RP2350 GPIO function select (datasheet "Function select" table), for GP0..GP29:
# SPI: instance (n // 8) % 2, signal RX, CSn, SCK, TX by n % 4.
# UART: instance ((n + 4) // 8) % 2, signal TX, RX, CTS, RTS by n % 4.
# I2C: instance (n // 2) % 2, SDA on even, SCL on odd.
def spi_function(n):
    return (n // 8) % 2, ("rx", "csn", "sck", "tx")[n % 4]


def uart_function(n):
    return ((n + 4) // 8) % 2, ("tx", "rx", "cts", "rts")[n % 4]


def i2c_function(n):
    return (n // 2) % 2, ("sda", "scl")[n % 2]


def test_function_tables_match_known_pins():
    # Spot checks against the Pico pinout: GP18/19/16 SPI0 SCK/TX/RX, GP14 SPI1 SCK,
    # GP0/1 UART0 TX/RX, GP4 UART1 TX, GP2/3 I2C1 SDA/SCL, GP20/21 I2C0 SDA/SCL.
    assert [spi_function(n) for n in (18, 19, 16, 14)] == [
        (0, "sck"), (0, "tx"), (0, "rx"), (1, "sck")]
    assert [uart_function(n) for n in (0, 1, 4, 12)] == [(0, "tx"), (0, "rx"), (1, "tx"),
                                                         (0, "tx")]
    assert [i2c_function(n) for n in (2, 3, 20, 21)] == [(1, "sda"), (1, "scl"), (0, "sda"),
                                                        (0, "scl")]


def test_bus_pins_have_the_right_functions():
    p = pico2w.PINS
    for bus in (0, 1):
        for sig in ("sck", "tx", "rx"):
            assert spi_function(p["spi%d_%s" % (bus, sig)]) == (bus, sig), (bus, sig)
    assert i2c_function(p["i2c0_sda"]) == (0, "sda")
    assert i2c_function(p["i2c0_scl"]) == (0, "scl")
    assert uart_function(p["uart1_tx"]) == (1, "tx")
    assert uart_function(p["uart1_rx"]) == (1, "rx")


def test_no_pin_twice_and_no_radio_pin():
    gps = list(pico2w.PINS.values())
    assert len(set(gps)) == len(gps)
    for n in gps:
        assert 0 <= n <= 29 and n not in pico2w.RADIO_PINS, n
    _, m = _build()  # FakeMachine refuses to construct one GPIO twice
    assert sorted(m.pins) == sorted(gps)


def test_build_returns_the_named_drivers():
    drivers, m = _build()
    assert sorted(drivers) == sorted(
        ["adc", "dac", "rtd", "loadcell", "press", "heater", "wdt", "link", "range_switch",
         "pulses", "pulse_gate", "config_path"])
    assert isinstance(drivers["adc"], ADS131M04)
    assert isinstance(drivers["dac"], DAC8551)
    assert isinstance(drivers["rtd"], MAX31865)
    assert isinstance(drivers["loadcell"], NAU7802)
    assert isinstance(drivers["press"], TMC2209)
    assert isinstance(drivers["heater"], Heater)
    assert isinstance(drivers["wdt"], Watchdog)  # the name the rig feeds (fieldrig.app)
    assert drivers["pulses"] is drivers["pulse_gate"]
    assert drivers["config_path"] == "rig.json"
    assert isinstance(drivers["link"], FakeLink)
    assert len(m.wdts) == 1 and m.wdts[0].timeout == 5000


def test_outputs_start_safe():
    _, m = _build()
    p = pico2w.PINS
    level = {name: m.pins[p[name]].value() for name in p}
    assert level["pulse_gate"] == 0  # V->I stage disconnected
    assert level["adc_cs"] == level["dac_cs"] == level["rtd_cs"] == 1
    assert level["adc_sync_reset"] == 1
    assert level["press_en"] == 1  # ENN high: power stage off
    assert level["press_step"] == 0
    assert m.pwms[0].duty_u16() == 0 and m.pwms[0].freq() == pico2w.HEATER_PWM_HZ
    assert m.pins[p["endstop_min"]].pull == m.Pin.PULL_UP
    assert m.pins[p["endstop_max"]].pull == m.Pin.PULL_UP
    assert m.pins[p["adc_drdy"]].mode == m.Pin.IN
    assert [level[name] for name in pico2w.RANGE_PINS] == [0, 0, 0]  # output disconnected


def test_range_switch_breaks_before_make():
    drivers, m = _build()
    pins = [m.pins[pico2w.PINS[name]] for name in pico2w.RANGE_PINS]
    rs = drivers["range_switch"]
    rs.select(1)
    assert [p.value() for p in pins] == [0, 1, 0] and rs.index == 1
    m.log.clear()
    rs.select(2)
    assert [p.value() for p in pins] == [0, 0, 1] and rs.index == 2
    # Open the old switch, then close the new one.
    assert m.log.of("pin") == [("pin", pins[1].name, 0), ("pin", pins[2].name, 1)]
    rs.select(-1)
    assert [p.value() for p in pins] == [0, 0, 0] and rs.index == -1
    try:
        rs.select(3)
    except ValueError:
        pass
    else:
        raise AssertionError("range 3 accepted")
    assert [p.value() for p in pins] == [0, 0, 0]


def test_current_front_end_covers_every_range_and_the_over_current_limit():
    from fieldrig.galvanostat import DEFAULT_RANGES_MA
    from fieldrig.safety import HARD, row_by_id

    drivers, _ = _build()
    adc = drivers["adc"]
    fs_ma = adc.cell_i_a_per_code() * 0x800000 * 1000.0  # +-1.2 V / gain / shunt
    assert fs_ma >= max(DEFAULT_RANGES_MA)
    # The over_current row can trip in every range: its hard limit (the loosest setting
    # possible) is inside what the ADC measures.
    row = row_by_id("over_current")
    assert row is not None and fs_ma > row[HARD], fs_ma
    assert len(pico2w.RANGE_PINS) == len(DEFAULT_RANGES_MA)


def test_init_parts_initialises_every_part_then_waits_for_the_rtd():
    calls = []

    class Part:
        def __init__(self, name):
            self.name = name

        def init(self):
            calls.append(self.name)

        def enable(self):
            calls.append("enable")

    drivers = {n: Part(n) for n in ("adc", "rtd", "loadcell", "press")}
    pico2w.init_parts(drivers, 0)
    assert calls == ["adc", "rtd", "loadcell", "press", "enable"]


def test_bus_settings_within_part_limits():
    _, m = _build()
    spi0, spi1 = sorted(m.spis, key=lambda s: s.id)
    # ADS131M04: mode 1, <= 25 MHz.
    assert (spi0.settings["polarity"], spi0.settings["phase"]) == (0, 1)
    assert spi0.settings["baudrate"] <= 25_000_000
    # DAC8551 (mode 1, <= 30 MHz) and MAX31865 (mode 1 or 3, <= 5 MHz) share SPI1.
    assert spi1.settings["phase"] == 1 and spi1.settings["polarity"] == 0
    assert spi1.settings["baudrate"] <= 5_000_000
    assert m.i2cs[0].settings["freq"] <= 400_000
    assert m.uarts[0].id == 1 and m.uarts[0].settings["baudrate"] == 115_200
    for spi in (spi0, spi1):
        sig = {"sck": spi.settings["sck"].id, "tx": spi.settings["mosi"].id,
               "rx": spi.settings["miso"].id}
        for name, gp in sig.items():
            assert spi_function(gp) == (spi.id, name)


def test_each_driver_talks_on_its_own_chip_select():
    drivers, m = _build()
    p = pico2w.PINS
    spi0, spi1 = sorted(m.spis, key=lambda s: s.id)
    dac = spi1.attach(m.pins[p["dac_cs"]], NullSpiDevice(), "dac")
    rtd = spi1.attach(m.pins[p["rtd_cs"]], NullSpiDevice(), "rtd")
    adc = spi0.attach(m.pins[p["adc_cs"]], NullSpiDevice(), "adc")
    drivers["dac"].set_code(0x8000)
    assert (dac.count, rtd.count, adc.count) == (1, 0, 0)
    drivers["rtd"].read_code()
    assert (dac.count, rtd.count, adc.count) == (1, 1, 0)
    drivers["dac"].safe()  # the board's safe code: mid-scale, zero current
    assert drivers["dac"].code == 0x8000 and drivers["dac"].power_mode == 0
    drivers["heater"].set_duty(0.5)
    assert m.pwms[0].duty_u16() == 32768
    drivers["press"].enable()
    assert m.pins[p["press_en"]].value() == 0


def test_options_override_defaults():
    drivers, m = _build({"shunt_ohm": "4.7", "rtd_r_ref_ohm": "4300", "rtd_r0_ohm": "1000",
                         "watchdog_ms": "2000", "heater_max_duty": "0.5"})
    assert drivers["adc"].shunt_ohm == 4.7
    assert drivers["rtd"].r_ref_ohm == 4300.0 and drivers["rtd"].r0_ohm == 1000.0
    assert m.wdts[0].timeout == 2000
    assert drivers["heater"].set_duty(1.0) == 32768


def test_uncalibrated_load_cell_reports_no_force():
    drivers, _ = _build()
    f = drivers["loadcell"].force_n_for_code(12345)
    assert f != f  # NaN until a calibration is supplied


def _doc_wiring():
    # Rows of the wiring table: | GPn | signal | ... |
    pins = {}
    with open(DOC) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 2 and cells[0].startswith("GP") and cells[0][2:].isdigit():
                pins[cells[1].strip("`")] = int(cells[0][2:])
    return pins


def test_wiring_table_in_docs_matches_pin_map():
    assert _doc_wiring() == pico2w.PINS


class FakeStream:
    def __init__(self, data=b""):
        self.data = bytearray(data)
        self.written = bytearray()

    def readinto(self, buf):
        if not self.data:
            return 0
        buf[0] = self.data[0]
        self.data = self.data[1:]
        return 1

    def write(self, data):
        self.written.extend(data)
        return len(data)


class FakePoller:
    def __init__(self, stream):
        self.stream = stream

    def ipoll(self, timeout):
        return iter([self.stream] if self.stream.data else [])


def test_usb_link_reads_what_is_waiting_and_passes_ctrl_c():
    rx = FakeStream(b"\x03\x01\x00\x05")
    tx = FakeStream()
    intr = []
    link = pico2w.UsbCdcLink(rx, tx, FakePoller(rx), intr.append)
    assert link.poll_accept()
    assert not link.poll_accept()  # taken once
    assert intr == [-1]  # Ctrl-C (0x03) is data on the link, not an interrupt
    buf = bytearray(3)
    assert link.readinto(buf) == 3 and buf == b"\x03\x01\x00"
    assert link.readinto(buf) == 1 and buf[0] == 5
    assert link.readinto(buf) == 0
    assert link.write(b"\x00\x11") and tx.written == b"\x00\x11"
    link.close()
    assert intr == [-1, 3]
