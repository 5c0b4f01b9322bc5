# TMC2209 press stepper: enable polarity, step rate limit, position tracking, end stops
# (refuse to step into a triggered stop, allow backing off, homing), and UART datagrams
# with the datasheet CRC8, echo handling and IFCNT-checked writes.
import time

from fakebus import BusLog, FakePin, FakeUART, runs_with_heap_locked

from fieldrig.drivers import tmc2209 as t
from fieldrig.drivers.tmc2209 import TMC2209


def datasheet_crc(datagram):
    # Transcription of the datasheet's swuart_calcCRC, kept separate from the driver's.
    crc = 0
    for current in datagram:
        for _ in range(8):
            if (crc >> 7) ^ (current & 0x01):
                crc = ((crc << 1) ^ 0x07) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
            current >>= 1
    return crc


class Tmc2209Model:
    """Registers behind the single-wire UART: counts good writes in IFCNT, answers read
    requests, ignores datagrams with a bad CRC or another slave address (as the part)."""

    def __init__(self, addr=0):
        self.addr = addr
        self.regs = {t.REG_GCONF: 0x41, t.REG_IFCNT: 0, t.REG_CHOPCONF: t.CHOPCONF_DEFAULT}
        self.drop_writes = False
        self.corrupt_reply = False

    def receive(self, data):
        if data[0] != 0x05 or data[1] != self.addr or datasheet_crc(data[:-1]) != data[-1]:
            return b""
        if len(data) == 8 and data[2] & 0x80:
            if not self.drop_writes:
                reg = data[2] & 0x7F
                self.regs[reg] = int.from_bytes(data[3:7], "big")
                self.regs[t.REG_IFCNT] = (self.regs[t.REG_IFCNT] + 1) & 0xFF
            return b""
        if len(data) == 4:
            reg = data[2]
            reply = bytearray(b"\x05\xff" + bytes([reg]) + self.regs.get(reg, 0).to_bytes(4, "big"))
            reply.append(datasheet_crc(reply))
            if self.corrupt_reply:
                reply[5] ^= 0x10
            return bytes(reply)
        return b""


def _press(endstop_min=0, endstop_max=0, uart=True, max_rate_hz=2000):
    log = BusLog()
    step = FakePin(16, log=log, name="step")
    dirp = FakePin(17, log=log, name="dir")
    en = FakePin(18, log=log, name="en")
    emin = FakePin(19, log=log, name="end_min", value=endstop_min)
    emax = FakePin(20, log=log, name="end_max", value=endstop_max)
    model = Tmc2209Model()
    u = FakeUART(1, log, device=model, echo=True, name="tmc") if uart else None
    drv = TMC2209(step, dirp, en, emin, emax, u, max_rate_hz=max_rate_hz)
    return drv, model, log, (step, dirp, en, emin, emax)


def test_starts_disabled_and_enable_is_active_low():
    drv, _, _, (step, _, en, _, _) = _press()
    assert en.value() == 1 and step.value() == 0
    assert not drv.enabled
    drv.enable()
    assert en.value() == 0
    drv.disable()
    assert en.value() == 1


def test_disabled_driver_refuses_to_step():
    drv, _, _, (step, _, _, _, _) = _press()
    assert drv.move(5) == 0
    assert drv.stopped_by == "disabled"
    assert step.changes == 0
    assert drv.position_steps == 0


def test_move_tracks_position_and_direction():
    drv, _, log, (step, dirp, _, _, _) = _press()
    drv.enable()
    assert drv.move(10) == 10
    assert dirp.value() == 1
    assert drv.move(-4) == -4
    assert dirp.value() == 0
    assert drv.position_steps == 6
    assert step.changes == 2 * 14  # one rising and one falling edge per step
    # DIR changed before the first step of the reversed move, never between its steps.
    pins = [e[1] for e in log.of("pin") if e[1] in ("step", "dir")]
    assert pins[:1] == ["dir"] and pins[21] == "dir" and pins.count("dir") == 2


def test_step_rate_never_exceeds_max():
    drv, _, _, (step, _, _, _, _) = _press(max_rate_hz=1000)
    stamps = []

    def on_step(level):
        if level:
            stamps.append(time.ticks_us())

    step.on_change = on_step
    drv.enable()
    drv.move(20, rate_hz=50000)  # asks for far more than the limit
    assert len(stamps) == 20
    for i in range(1, 20):
        assert time.ticks_diff(stamps[i], stamps[i - 1]) >= 1000, i


def test_requested_slower_rate_is_kept():
    drv, _, _, _ = _press(max_rate_hz=5000)
    drv.enable()
    t0 = time.ticks_us()
    drv.move(10, rate_hz=500)
    assert time.ticks_diff(time.ticks_us(), t0) >= 9 * 2000


def test_a_step_after_a_long_idle_does_not_wait_for_the_tick_wrap():
    # ticks_us wraps every 2^30 us: a last step "2^29 + 100 us ago" reads as 2^29 - 100 us
    # ahead. The step must go now, not busy-wait ~9 min into the watchdog.
    drv, _, _, _ = _press()
    drv.enable()
    drv._last_step_us = time.ticks_add(time.ticks_us(), (1 << 29) - 100)
    t0 = time.ticks_ms()
    assert drv.step_once(1, 1000)
    assert time.ticks_diff(time.ticks_ms(), t0) < 1000
    assert drv.position_steps == 1


def test_end_stop_stops_motion():
    drv, _, _, (step, _, _, _, emax) = _press()
    drv.enable()
    n = [0]

    def on_step(level):
        if level:
            n[0] += 1
            if n[0] == 7:
                emax.value(1)  # the switch opens on the 7th step

    step.on_change = on_step
    assert drv.move(100) == 7
    assert drv.stopped_by == "endstop_max"
    assert drv.position_steps == 7
    # Never into the stop again...
    assert drv.move(3) == 0
    assert drv.position_steps == 7
    # ...but backing off is allowed.
    assert drv.move(-3) == -3
    assert drv.position_steps == 4


def test_triggered_min_stop_blocks_retract_only():
    drv, _, _, _ = _press(endstop_min=1)
    drv.enable()
    assert drv.move(-5) == 0
    assert drv.stopped_by == "endstop_min"
    assert drv.move(2) == 2


def test_endstop_polarity_is_configurable():
    log = BusLog()
    pins = [FakePin(i, log=log) for i in range(5)]
    pins[4].level = 0  # active-low switch pressed
    drv = TMC2209(pins[0], pins[1], pins[2], pins[3], pins[4], endstop_active=0)
    drv.enable()
    pins[3].level = 1  # active-low min switch not pressed
    assert drv.move(1) == 0
    assert drv.move(-1) == -1


def test_home_sets_zero_at_min_stop():
    drv, _, _, (step, _, _, emin, _) = _press()
    drv.enable()
    drv.position_steps = 500
    n = [0]

    def on_step(level):
        if level:
            n[0] += 1
            if n[0] == 12:
                emin.value(1)

    step.on_change = on_step
    assert drv.home(100)
    assert drv.position_steps == 0
    assert n[0] == 12


def test_home_gives_up_after_max_steps():
    drv, _, _, _ = _press()
    drv.enable()
    assert not drv.home(5)
    assert drv.position_steps == -5


def test_step_allocates_nothing():
    drv, _, log, _ = _press(max_rate_hz=50000)
    log.enabled = False
    drv.enable()

    def one():
        drv.step_once(1)

    assert runs_with_heap_locked(one)
    assert drv.position_steps == 1


def test_crc8_known_datagrams():
    assert t.crc8(b"\x05\x00\x00", 3) == 0x48  # read request for GCONF, slave 0
    # Write datagrams as published for other TMC2209 drivers' tests.
    assert t.crc8(b"\x05\x00\x83\x00\x00\x00\x02", 7) == 0xD1
    assert t.crc8(b"\x05\x00\x80\x00\x00\x00\xe4", 7) == 0xBC
    assert t.crc8(b"\x05\x00\x90\x00\x00\x03\xe1", 7) == 0x21
    assert t.crc8(b"\x05\x00\xf0\x08\x18\x00\x00", 7) == 0x8F
    for data in (b"\x05\x03\x6c", b"\x05\xff\x02\x00\x00\x00\x07", bytes(range(7))):
        assert t.crc8(data, len(data)) == datasheet_crc(data)


def test_write_datagram_bytes():
    drv, model, log, _ = _press()
    drv.write_register(t.REG_IHOLD_IRUN, t.ihold_irun(irun=16, ihold=8, ihold_delay=6))
    sent = log.of("uart_tx")[-1][2]
    assert sent == b"\x05\x00\x90\x00\x06\x10\x08" + bytes([datasheet_crc(sent[:7])])
    assert model.regs[t.REG_IHOLD_IRUN] == 0x061008


def test_read_request_and_reply():
    drv, model, log, _ = _press()
    model.regs[t.REG_CHOPCONF] = 0x14000053
    assert drv.read_register(t.REG_CHOPCONF) == 0x14000053
    assert log.of("uart_tx")[-1][2] == b"\x05\x00\x6c" + bytes([datasheet_crc(b"\x05\x00\x6c")])


def test_reply_with_bad_crc_rejected():
    drv, model, _, _ = _press()
    model.corrupt_reply = True
    try:
        drv.read_register(t.REG_GCONF)
    except t.TMCUartError as e:
        assert "CRC" in str(e)
        return
    raise AssertionError("corrupted reply accepted")


def test_no_reply_raises():
    drv, model, _, _ = _press()
    model.addr = 2  # the part answers a different slave address
    try:
        drv.read_register(t.REG_GCONF)
    except t.TMCUartError:
        return
    raise AssertionError("silence accepted as a reply")


def test_init_writes_gconf_current_microsteps_checked_by_ifcnt():
    drv, model, _, _ = _press()
    drv.init(irun=20, ihold=5, microsteps=16)
    assert model.regs[t.REG_GCONF] == 0x1C0  # pdn_disable, mstep_reg_select, multistep_filt
    assert model.regs[t.REG_IHOLD_IRUN] == 0x061405
    assert model.regs[t.REG_CHOPCONF] == 0x14000053  # MRES 0100b = 16 microsteps
    assert model.regs[t.REG_IFCNT] == 3


def test_lost_write_detected_by_ifcnt():
    drv, model, _, _ = _press()
    model.drop_writes = True
    try:
        drv.set_current(10, 5)
    except t.TMCUartError as e:
        assert "IFCNT" in str(e)
        return
    raise AssertionError("lost write not detected")


def test_current_fields_validated():
    for bad in ((32, 0, 0), (0, -1, 0), (0, 0, 16)):
        try:
            t.ihold_irun(*bad)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % (bad,))


def test_pressure_loop_interface():
    drv, _, _, (_, _, _, emin, emax) = _press()
    drv.enable()
    assert drv.step(5) == 5 and drv.position == 5
    assert drv.step(-2) == -2 and drv.position == 3
    assert not drv.end_stop_low and not drv.end_stop_high
    emax.level = 1
    assert drv.end_stop_high
    emin.level = 1
    assert drv.end_stop_low
