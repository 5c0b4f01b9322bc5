"""ADS131M04 coalescing (the lockstep bench's speed-up) is exact: a coalescing model and a
plain one, fed the same block and read at the same irregular instants, give the same
frames and the same counters (rail clips aside, see the model's docstring)."""

from array import array

from benchutil import BENCH, fresh, spi_bus
from chips.ads131m04 import ADS131M04
from machine import Pin


def _pair():
    fresh()
    chips = []
    for cs, drdy, coalesce in ((5, 6, False), (13, 14, True)):
        adc = ADS131M04(clock=BENCH)
        BENCH.add_spi(adc, cs=cs, sck=2, mosi=3, miso=4)
        BENCH.add_clocked(adc)
        adc.attach_drdy(BENCH.driver_for(drdy))
        adc.coalesce = coalesce
        chips.append((adc, Pin(cs, Pin.OUT, value=1)))
    return chips, spi_bus(2, 3, 4)


def _read(spi, cs):
    rx = bytearray(18)  # 24-bit words: 6 x 3 bytes
    cs.value(0)
    spi.write_readinto(bytes(18), rx)
    cs.value(1)
    return bytes(rx)


def test_coalesced_conversions_read_like_converted_ones():
    chips, spi = _pair()
    n = 300
    blk = tuple(array("f", [(k * 7 % 50) / 1000.0 * (ch + 1) for k in range(n)])
                for ch in range(4))
    for adc, _ in chips:
        adc.load_block_v(blk)
    gaps_us = [50, 900, 3000, 10000, 250, 250, 7000, 125, 20000, 333]
    for k in range(40):
        BENCH.advance_us(gaps_us[k % len(gaps_us)])
        frames = [_read(spi, cs) for _, cs in chips]
        assert frames[0] == frames[1], k
    plain, coal = chips[0][0], chips[1][0]
    for name in ("samples_converted", "samples_read", "samples_lost", "block_underruns"):
        assert getattr(plain, name) == getattr(coal, name), name
    assert plain.block_remaining() == coal.block_remaining()
    assert plain.inputs_v == coal.inputs_v
    assert coal.samples_lost > 100  # the test did exercise long unread stretches


def test_coalescing_stays_off_while_an_irq_watches_drdy():
    chips, _ = _pair()
    coal = chips[1][0]
    seen = []
    pin = Pin(14, Pin.IN)
    pin.irq(lambda p: seen.append(BENCH.now_ns), Pin.IRQ_FALLING)
    coal.drdy_observed = lambda: BENCH.pin_state(14).irq_handler is not None
    BENCH.advance_ms(20)
    assert len(seen) >= 70  # every conversion's DRDY edge reached the handler (4 kSPS)
