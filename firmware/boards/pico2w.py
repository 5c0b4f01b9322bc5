"""Raspberry Pi Pico 2 W (RP2350) on the reference rig: pin map, buses, drivers, link.

The one place that knows GPIO numbers. ``build(opts)`` makes the ``machine`` bus objects,
puts every output in its safe state and hands back drivers by name; the rest of the
firmware receives drivers, never pins. Another board is another module beside this one.

Bus choices (the wiring table in docs/drivers.md is this map, checked by a test):

- SPI0 (mode 1, 8 MHz) carries only the ADS131M04, so a DRDY-paced block read never
  waits for another device's transfer.
- SPI1 (mode 1, 4 MHz) shares the DAC8551 (mode 1, <= 30 MHz) and the MAX31865 (modes
  1/3, <= 5 MHz): both are slow-rate parts; 4 MHz keeps inside the MAX31865 limit.
- I2C0 (400 kHz) for the NAU7802; UART1 (115200 8N1) to the TMC2209's PDN_UART through
  1 kOhm (single wire, so every byte sent is echoed back).
- GP23, GP24, GP25 and GP29 belong to the CYW43 radio on the Pico 2 W and are not used.
- The ADS131M04 CLKIN comes from an 8.192 MHz oscillator on the rig board (the RP2350
  cannot divide its 150 MHz clock to 8.192 MHz without jitter).

``build()`` imports ``machine`` when it runs (not at import), so this module imports under
the unix port; there the HIL bench passes its own ``machine`` (emulated buses) as
``machine=``, and tests pass the fakes from ``tests/fakebus.py``.
"""

from fieldrig.drivers.ads131m04 import ADS131M04
from fieldrig.drivers.dac8551 import DAC8551
from fieldrig.drivers.heater import Heater
from fieldrig.drivers.max31865 import MAX31865
from fieldrig.drivers.nau7802 import NAU7802
from fieldrig.drivers.tmc2209 import TMC2209
from fieldrig.drivers.watchdog import Watchdog

# GPIO numbers by signal name. Every bus pin sits on a GPIO whose function-select table
# entry (RP2350 datasheet, "GPIO functions") offers that bus signal.
PINS = {
    "i2c0_sda": 0,  # NAU7802 SDA
    "i2c0_scl": 1,  # NAU7802 SCL
    "spi0_sck": 2,  # ADS131M04 SCLK
    "spi0_tx": 3,  # ADS131M04 DIN
    "spi0_rx": 4,  # ADS131M04 DOUT
    "adc_cs": 5,  # ADS131M04 CS (active low)
    "adc_drdy": 6,  # ADS131M04 DRDY (active low, input)
    "adc_sync_reset": 7,  # ADS131M04 SYNC/RESET (active low)
    "uart1_tx": 8,  # TMC2209 PDN_UART through 1 kOhm
    "uart1_rx": 9,  # TMC2209 PDN_UART
    "spi1_sck": 10,  # DAC8551 SCLK, MAX31865 SCLK
    "spi1_tx": 11,  # DAC8551 DIN, MAX31865 SDI
    "spi1_rx": 12,  # MAX31865 SDO (the DAC8551 has no output)
    "dac_cs": 13,  # DAC8551 SYNC (active low)
    "rtd_cs": 14,  # MAX31865 CS (active low)
    "heater_pwm": 15,  # heater MOSFET gate driver (PWM slice 7 B)
    "press_step": 16,  # TMC2209 STEP
    "press_dir": 17,  # TMC2209 DIR
    "press_en": 18,  # TMC2209 ENN (active low)
    "endstop_min": 19,  # press retracted end stop (NC to GND, pull-up)
    "endstop_max": 20,  # press closed end stop (NC to GND, pull-up)
    "pulse_gate": 21,  # V->I stage enable switch, driven by the pulse PIO program
    # V->I stage range switch: one analog switch per range (its sense resistor), high =
    # closed; all low = output disconnected. Break before make (RangeSwitch).
    "range_10ua": 22,
    "range_1ma": 26,
    "range_100ma": 27,
}

# Range switch pins by range index: fieldrig.galvanostat.DEFAULT_RANGES_MA order.
RANGE_PINS = ("range_10ua", "range_1ma", "range_100ma")

# Pins of the CYW43 radio module on the Pico 2 W: never usable by the rig.
RADIO_PINS = (23, 24, 25, 29)

SPI0_BAUD = 8_000_000
SPI1_BAUD = 4_000_000
I2C0_FREQ = 400_000
UART1_BAUD = 115_200
HEATER_PWM_HZ = 100  # cartridge heater time constant is seconds; slow edges, cool MOSFET

# Analog front end of the reference rig; each can be overridden by a build option.
DEFAULTS = {
    "cell_v_divider": "5.0",  # 5:1 attenuator: +-6 V cell range into +-1.2 V
    # Current channel: +-1.2 V / cell_i_gain across shunt_ohm = +-120 mA in every range,
    # above the 100 mA range and the over_current limit (default 50, hard 100 mA), so the
    # over_current row can trip whichever range is selected (docs/drivers.md, "Analog
    # front end"). 14.3 nA per code.
    "shunt_ohm": "10.0",
    "cell_i_gain": "1",
    "ref_v_divider": "5.0",
    "adc_osr": "4096",  # 1 kSPS with the 8.192 MHz CLKIN
    "dac_vref_v": "2.5",
    "dac_safe_code": "32768",  # mid-scale = zero current on the bipolar V->I stage
    "rtd_r_ref_ohm": "430.0",
    "rtd_r0_ohm": "100.0",  # PT100
    "rtd_wires": "3",
    "rtd_filter_hz": "50",
    # Power-up wait for the MAX31865's first conversion (0 = none: the driver then reads
    # "no value" until it is there, and the heater loop waits: fieldrig.pid).
    "rtd_settle_ms": "70",
    "loadcell_zero_code": "0",
    "loadcell_n_per_code": "nan",  # NaN until calibrated: no force is better than a wrong one
    "cell_area_mm2": "78.54",  # 10 mm diameter pellet
    "press_max_rate_hz": "2000",
    "heater_max_duty": "1.0",
    "watchdog_ms": "5000",
}


class UsbCdcLink:
    """Link transport on the USB CDC serial port (the port the REPL uses).

    Same interface as the unix board's TcpLink: ``accept()``, ``poll_accept()``,
    ``write(data)`` -> bool, ``readinto(buf)`` -> bytes read (0 when none waiting),
    ``close()``. USB CDC shows MicroPython no connect event, so the link counts as
    connected from the first ``poll_accept()`` on (the session's hello and sequence
    numbers let the edge resynchronise whenever it opens the port). Reads go a byte at
    a time while the port has data, because a stdio ``readinto`` of a whole buffer blocks
    until the buffer is full; ``ipoll`` is used because ``poll`` allocates a list."""

    def __init__(self, rx, tx, poller, kbd_intr):
        self._rx = rx
        self._tx = tx
        self._poll = poller
        self._kbd_intr = kbd_intr
        self._one = bytearray(1)
        self.connected = False

    def accept(self):
        # Frames are binary: a 0x03 byte must reach the decoder, not raise KeyboardInterrupt.
        self._kbd_intr(-1)
        self.connected = True

    def poll_accept(self):
        """True once, when the link is first taken into use."""
        if self.connected:
            return False
        self.accept()
        return True

    def _ready(self):
        for _ in self._poll.ipoll(0):
            return True
        return False

    def write(self, data):
        self._tx.write(data)
        return True

    def readinto(self, buf):
        n = 0
        one = self._one
        while n < len(buf) and self._ready():
            if not self._rx.readinto(one):
                break
            buf[n] = one[0]
            n += 1
        return n

    def close(self):
        self._kbd_intr(3)  # give Ctrl-C back to the REPL
        self.connected = False


def _usb_link():
    import select
    import sys

    import micropython

    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    return UsbCdcLink(sys.stdin.buffer, sys.stdout.buffer, poller, micropython.kbd_intr)


class RangeSwitch:
    """The V->I stage's range switch: one GPIO per range (``RANGE_PINS``), high = that
    range's switch closed. ``select(i)`` opens every switch before closing the new one
    (break before make: two sense resistors never in parallel); -1 leaves all open
    (output disconnected, the safe state)."""

    def __init__(self, pins):
        self._pins = pins
        self.index = -1
        for p in pins:
            p.value(0)

    def select(self, index):
        for p in self._pins:
            p.value(0)
        self.index = -1
        if 0 <= index < len(self._pins):
            self._pins[index].value(1)
            self.index = index
        elif index != -1:
            raise ValueError("no range %d" % index)


def init_parts(drivers, rtd_settle_ms):
    """Once at power-up, after the safe-state build: each part's datasheet
    initialisation (raises OSError for a part that does not answer), the stepper stage
    enabled, then the wait for the MAX31865's first conversion (its result registers read
    0 = -242 degC until then; the driver reports that as no value either way)."""
    import time

    drivers["adc"].init()
    drivers["rtd"].init()
    drivers["loadcell"].init()
    press = drivers["press"]
    press.init()
    press.enable()
    if rtd_settle_ms > 0:
        time.sleep_ms(rtd_settle_ms)


def build(opts, machine=None, link=None, init=True):
    """Construct buses and drivers. opts: build options as strings (see DEFAULTS);
    machine: the ``machine`` module (imported here when None); link: a link transport
    (USB CDC when None); init: initialise the parts (``init_parts``; tests on fake buses
    pass False). Returns the board dict of ``fieldrig.app`` (drivers by name, range
    switch, pulse gate, ``wdt``, config path), every output in its safe state; the
    watchdog is armed last and must be fed from then on (the rig's ``wdt`` task)."""
    if machine is None:
        import machine

    def opt(name):
        return opts.get(name, DEFAULTS[name])

    pin = machine.Pin
    out = pin.OUT
    # Safe levels first, before any bus object exists: pulse gate off (stage disconnected),
    # chip selects idle, ADC out of reset, stepper power stage disabled.
    # The pulse gate pin keeps its level (in the GPIO registers) until the pulse PIO
    # program claims PINS["pulse_gate"]; no driver object is needed to hold it.
    pin(PINS["pulse_gate"], out, value=0)
    adc_cs = pin(PINS["adc_cs"], out, value=1)
    dac_cs = pin(PINS["dac_cs"], out, value=1)
    rtd_cs = pin(PINS["rtd_cs"], out, value=1)
    adc_sync_reset = pin(PINS["adc_sync_reset"], out, value=1)
    press_en = pin(PINS["press_en"], out, value=1)
    press_step = pin(PINS["press_step"], out, value=0)
    press_dir = pin(PINS["press_dir"], out, value=0)
    adc_drdy = pin(PINS["adc_drdy"], pin.IN)
    endstop_min = pin(PINS["endstop_min"], pin.IN, pin.PULL_UP)
    endstop_max = pin(PINS["endstop_max"], pin.IN, pin.PULL_UP)
    heater_pin = pin(PINS["heater_pwm"], out, value=0)
    ranges = RangeSwitch([pin(PINS[name], out, value=0) for name in RANGE_PINS])

    spi0 = machine.SPI(0, baudrate=SPI0_BAUD, polarity=0, phase=1, bits=8,
                       sck=pin(PINS["spi0_sck"]), mosi=pin(PINS["spi0_tx"]),
                       miso=pin(PINS["spi0_rx"]))
    spi1 = machine.SPI(1, baudrate=SPI1_BAUD, polarity=0, phase=1, bits=8,
                       sck=pin(PINS["spi1_sck"]), mosi=pin(PINS["spi1_tx"]),
                       miso=pin(PINS["spi1_rx"]))
    i2c0 = machine.I2C(0, scl=pin(PINS["i2c0_scl"]), sda=pin(PINS["i2c0_sda"]),
                       freq=I2C0_FREQ)
    uart1 = machine.UART(1, baudrate=UART1_BAUD, bits=8, parity=None, stop=1,
                         tx=pin(PINS["uart1_tx"]), rx=pin(PINS["uart1_rx"]), timeout=20)
    heater_pwm = machine.PWM(heater_pin, freq=HEATER_PWM_HZ, duty_u16=0)

    i_gain = int(opt("cell_i_gain"))
    drivers = {
        "adc": ADS131M04(spi0, adc_cs, adc_drdy, adc_sync_reset, osr=int(opt("adc_osr")),
                         gains=(1, i_gain, 1, 1), cell_v_divider=float(opt("cell_v_divider")),
                         shunt_ohm=float(opt("shunt_ohm")),
                         ref_v_divider=float(opt("ref_v_divider"))),
        "dac": DAC8551(spi1, dac_cs, float(opt("dac_vref_v")), int(opt("dac_safe_code"))),
        "rtd": MAX31865(spi1, rtd_cs, float(opt("rtd_r_ref_ohm")), float(opt("rtd_r0_ohm")),
                        int(opt("rtd_wires")), int(opt("rtd_filter_hz"))),
        "loadcell": NAU7802(i2c0, zero_offset_code=float(opt("loadcell_zero_code")),
                            n_per_code=float(opt("loadcell_n_per_code")),
                            area_mm2=float(opt("cell_area_mm2"))),
        "press": TMC2209(press_step, press_dir, press_en, endstop_min, endstop_max, uart1,
                         max_rate_hz=int(opt("press_max_rate_hz"))),
        "heater": Heater(heater_pwm, float(opt("heater_max_duty"))),
        "link": link if link is not None else _usb_link(),
        "range_switch": ranges,
        "config_path": opts.get("config", "rig.json"),
    }
    if init:
        init_parts(drivers, int(opt("rtd_settle_ms")))
    from fieldrig.echem.pulses import make_gate

    # The PIO pulse gate (a RecordingGate where there is no rp2 module). It also stops
    # pulses in the safe state.
    gate = make_gate(PINS["pulse_gate"])
    drivers["pulses"] = gate
    drivers["pulse_gate"] = gate
    # The watchdog last, once everything above was built and initialised: an armed RP2
    # watchdog cannot be stopped, so a failure above must not leave it counting down.
    drivers["wdt"] = Watchdog(machine.WDT, int(opt("watchdog_ms")))
    return drivers
