"""The firmware's own board build and drivers against the wired chip models.

MicroPython only: the drivers import ``micropython`` and call ``time`` directly, so this
module puts hil_tests/mp/vtime (virtual ``time``) first on the path. A failure here is an
integration finding between the drivers and the models -- read both datasheets."""

import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _here + "/../vtime")

MICROPYTHON_ONLY = True

import machine  # noqa: E402
import wiring  # noqa: E402
from benchutil import BENCH, fresh  # noqa: E402


class _NoLink:
    def write(self, data):
        return True

    def readinto(self, buf):
        return 0


def build():
    fresh()
    import time

    assert time.__file__.endswith("vtime/time.py"), time.__file__
    w = wiring.Wiring()
    from boards import pico2w

    # init=False: these tests run each part's init() themselves and check its exchanges.
    drivers = pico2w.build({}, machine=machine, link=_NoLink(), init=False)
    return w, drivers


def test_adc_driver_init_and_cell_reading():
    w, d = build()
    adc = d["adc"]
    adc.init()
    assert w.adc.reg(2) == adc.mode_value() and w.adc.data_rate_hz == 1000
    w.apply_inputs(cell_v=3.2, cell_i_a=0.0015)
    v, i_ma = adc.read_cell()
    assert abs(v - 3.2) < 1e-5 and abs(i_ma - 1.5) < 1e-4
    assert adc.crc_errors == 0 and BENCH.error_count() == 0


def test_adc_driver_counts_injected_crc_errors():
    w, d = build()
    adc = d["adc"]
    adc.init()
    w.adc.corrupt_crc(3)
    good = sum(1 for _ in range(10) if adc.read_frame())
    assert good == 7 and adc.crc_errors == 3


def test_dac_rtd_loadcell_press_heater_drivers():
    w, d = build()
    d["dac"].set_fraction(0.25)
    w.apply_inputs(range_index=2)
    assert abs(w.read_outputs()["cmd_current_a"] - 0.025) < 1e-6
    rtd = d["rtd"]
    rtd.init()
    w.apply_inputs(temp_c=60.0)
    BENCH.advance_ms(45)
    assert abs(rtd.read_temperature_c() - 60.0) < 0.1
    lc = d["loadcell"]
    lc.init()
    press = d["press"]
    press.init()
    assert w.press.microsteps == 16 and w.press.ifcnt == 3
    press.enable()
    press.move(160)
    assert w.press.steps == 160 and abs(w.press_travel_mm() - (5.0 + 0.1)) < 1e-9
    d["heater"].set_duty(0.5)
    assert abs(w.heater.power_w - 10.0) < 1e-3
    assert BENCH.error_count() == 0, BENCH.errors


def test_a_block_read_sleeps_through_the_data_period_and_loses_no_frame():
    # Back-to-back frames: the driver sleeps until just before each DRDY instead of
    # polling the whole period (a virtual clock then jumps: the bench's tracking blocks
    # cost a few model calls per frame, not a poll per microsecond). Same frames read.
    import time
    from array import array

    w, d = build()
    adc = d["adc"]
    adc.init()
    w.apply_inputs(cell_v=1.5, cell_i_a=0.001)
    n = 200
    cv = array("i", [0] * n)
    ci = array("i", [0] * n)
    adc.read_frame()  # whatever was waiting: the next frames are DRDY-paced
    lost0 = w.adc.samples_lost
    drdy = adc._drdy
    polls = [0]
    level = drdy.value

    def counted(x=None):
        polls[0] += 1
        return level(x)

    drdy.value = counted
    t0 = time.ticks_us()
    assert adc.read_block_codes_into(cv, ci, n) == n
    elapsed_us = time.ticks_diff(time.ticks_us(), t0)
    # 1 kSPS: n frames take n data periods, every conversion read, none dropped.
    assert 0.98 * n * 1000 <= elapsed_us <= 1.02 * n * 1000 + 1000, elapsed_us
    assert w.adc.samples_lost == lost0
    assert min(cv) == max(cv) and cv[0] != 0
    # Virtual time moved in sleeps: the polls of the guard before each DRDY (~35 at
    # 1 kSPS), where a pure poll at 1 us per clock read takes ~500 per 1 ms period.
    assert polls[0] <= 50 * n, polls[0]
