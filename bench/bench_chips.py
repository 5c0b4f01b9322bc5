"""How fast do ADC samples move through the chip models? (prints figures; no asserts)

    micropython bench/bench_chips.py        # the number that matters: the bench's runtime
    python3 bench/bench_chips.py            # the same models under CPython

Three figures for one block of 8000 samples at 8 kSPS (OSR 512), all in virtual time:
1. models only: ``load_block_v`` + 8000 conversions (no reads);
2. bus path: DRDY IRQ -> CS low -> ``SPI.write_readinto`` (18-byte frame) -> CS high,
   frame decoded and CRC-checked by a minimal reader, as the firmware's IRQ path would;
3. (MicroPython, firmware present) the firmware's own ADS131M04 driver
   ``read_block_codes_into`` over the same block, with the virtual ``time`` (vtime).
Real time for a block is 1.0 s; a figure well under that is the bench's headroom.
"""

import sys

try:
    import time as _wall  # the host clock, captured before vtime can shadow ``time``

    _MP = sys.implementation.name == "micropython"
except ImportError:  # pragma: no cover
    raise

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
_ROOT = _HERE + "/.."
for _p in (_ROOT + "/hil_tests/mp", _ROOT + "/firmware"):
    if _p not in sys.path:
        sys.path.insert(0, _p)

N = 8000


def _now_s():
    if _MP:
        return _wall.ticks_us() / 1e6
    return _wall.perf_counter()


def _block():
    from array import array

    v = array("f", [0.5 + 0.1 * ((i % 100) / 100) for i in range(N)])
    i = array("f", [0.01 * ((i % 7) - 3) for i in range(N)])
    z = array("f", [0.0] * N)
    return (v, i, z, z)


def models_only():
    from chips.ads131m04 import ADS131M04
    from machine import BENCH

    BENCH.reset()
    adc = ADS131M04(clock=BENCH)
    adc._regs[3] = 0x0F0A  # CLOCK: OSR 512 -> 8 kSPS
    adc._apply_config()
    adc._next_conv_ns = BENCH.now_ns + adc._period_ns
    BENCH.add_clocked(adc)
    blk = _block()
    t0 = _now_s()
    adc.load_block_v(blk)
    BENCH.advance_ns(N * adc._period_ns)
    return _now_s() - t0, adc.samples_converted


def bus_path():
    from chips.ads131m04 import ADS131M04
    from chips.crc import crc16
    from machine import BENCH, SPI, Pin

    BENCH.reset()
    adc = ADS131M04(clock=BENCH)
    BENCH.add_spi(adc, cs=5, sck=2, mosi=3, miso=4)
    BENCH.add_clocked(adc)
    adc.attach_drdy(BENCH.driver_for(6))
    cs = Pin(5, Pin.OUT, value=1)
    spi = SPI(0, 8_000_000, polarity=0, phase=1, sck=Pin(2), mosi=Pin(3), miso=Pin(4))
    tx = bytearray(18)
    rx = bytearray(18)
    wreg = bytearray(18)
    wreg[0:2] = b"\x61\x80"  # WREG CLOCK = 0F0Ah (OSR 512, 8 kSPS)
    wreg[3:5] = b"\x0f\x0a"
    cs.value(0)
    spi.write_readinto(wreg, rx)
    cs.value(1)
    stats = [0, 0, 0]  # frames, crc ok, checksum of ch0 codes

    def on_drdy(pin):
        cs.value(0)
        spi.write_readinto(tx, rx)
        cs.value(1)
        stats[0] += 1
        if crc16(rx, 0, 15) == (rx[15] << 8) | rx[16]:
            stats[1] += 1
        stats[2] += (rx[3] << 16) | (rx[4] << 8) | rx[5]

    Pin(6, Pin.IN).irq(on_drdy, Pin.IRQ_FALLING)
    blk = _block()
    t0 = _now_s()
    adc.load_block_v(blk)
    BENCH.advance_ns(N * 125_000)
    dt = _now_s() - t0
    return dt, stats[0], stats[1], adc.samples_lost


def firmware_driver():
    # Let drivers' ``time`` calls run on the virtual clock.
    sys.path.insert(0, _ROOT + "/hil_tests/mp/vtime")
    if "time" in sys.modules:
        del sys.modules["time"]
    from array import array

    import machine
    from machine import BENCH

    BENCH.reset()
    import wiring

    from boards import pico2w

    w = wiring.Wiring()

    class NoLink:
        def write(self, data):
            return True

        def readinto(self, buf):
            return 0

    drivers = pico2w.build({"adc_osr": "512"}, machine=machine, link=NoLink())
    adc = drivers["adc"]
    adc.init()
    cv = array("i", [0] * N)
    ci = array("i", [0] * N)
    blk = _block()
    t0 = _now_s()
    w.adc.load_block_v(blk)
    good = adc.read_block_codes_into(cv, ci, N)
    dt = _now_s() - t0
    return dt, good, adc.crc_errors, w.adc.samples_lost, BENCH.now_ns


def main():
    impl = sys.implementation.name
    dt, n = models_only()
    print(f"{impl} models only: {n} conversions in {dt:.3f} s ({n / dt:.0f} samples/s)")
    dt, frames, ok, lost = bus_path()
    print(f"{impl} DRDY IRQ + SPI frames: {frames} frames ({ok} CRC ok, {lost} lost) in "
          f"{dt:.3f} s ({frames / dt:.0f} frames/s, {1.0 / dt:.2f}x real time at 8 kSPS)")
    if _MP:
        try:
            dt, good, crc_err, lost, vt = firmware_driver()
        except ImportError as e:
            print("firmware driver figure skipped:", e)
            return
        print(f"{impl} firmware ADS131M04.read_block_codes_into: {good} good frames "
              f"({crc_err} CRC errors, {lost} lost) in {dt:.3f} s wall, {vt / 1e9:.3f} s "
              f"virtual ({1.0 / dt:.2f}x real time)")


main()
