"""Stepper on the screw press: TMC2209 driver (STEP/DIR/EN) with end stops and UART.

Datasheet: Trinamic/ADI TMC2209, "STEP/DIR Interface", "UART Single Wire
Interface" (datagram structure, CRC calculation), "Register Map" (GCONF, IFCNT,
IHOLD_IRUN, CHOPCONF):

- EN (ENN pin) is active low: high disables the power stage. STEP advances one microstep
  on its rising edge (high and low time >= 100 ns); DIR is sampled at the STEP edge and
  needs 20 ns of set-up, which the interpreter's call gap exceeds many times over.
- UART (single wire on PDN_UART; the MCU's TX joins it through 1 kOhm, so the MCU reads
  its own bytes back as an echo), 8N1, auto-baud 9600..500k. Write datagram (8 bytes):
  sync 0x05 (1010 sync nibble plus reserved bits, sent LSB first), slave address 0..3
  (MS1/MS2 pins), register address | 0x80, 32-bit data MSB first, CRC8. Read request
  (4 bytes): 0x05, slave address, register address, CRC8; the reply (8 bytes): 0x05,
  master address 0xFF, register address, 32-bit data, CRC8.
- CRC8: polynomial x^8 + x^2 + x + 1 (0x07), initial value 0, each byte fed LSB first
  (the datasheet's swuart_calcCRC routine).
- IFCNT (0x02) counts successful writes (mod 256): the only proof that a write, which
  gets no reply, arrived.

End stops are normally-closed switches to ground with the input pulled up, so a switch
pressed *or* a broken wire reads 1 = triggered: the press fails safe. Motion toward a
triggered end stop is refused; motion away from it is allowed (that is how it backs off).
Direction +1 closes the press (raises stack force) toward the "max" end stop.
"""

import time

from micropython import const

SYNC = const(0x05)
MASTER_ADDR = const(0xFF)
WRITE_BIT = const(0x80)

REG_GCONF = const(0x00)
REG_GSTAT = const(0x01)
REG_IFCNT = const(0x02)
REG_SLAVECONF = const(0x03)
REG_IOIN = const(0x06)
REG_IHOLD_IRUN = const(0x10)
REG_TPOWERDOWN = const(0x11)
REG_TSTEP = const(0x12)
REG_CHOPCONF = const(0x6C)
REG_DRV_STATUS = const(0x6F)

GCONF_I_SCALE_ANALOG = const(1 << 0)
GCONF_INTERNAL_RSENSE = const(1 << 1)
GCONF_EN_SPREADCYCLE = const(1 << 2)
GCONF_SHAFT = const(1 << 3)
GCONF_PDN_DISABLE = const(1 << 6)
GCONF_MSTEP_REG_SELECT = const(1 << 7)
GCONF_MULTISTEP_FILT = const(1 << 8)

# CHOPCONF reset default (TOFF 3, HSTRT 5, HEND 0, TBL 0, MRES 256, intpol 1).
CHOPCONF_DEFAULT = const(0x10000053)
CHOPCONF_MRES_SHIFT = const(24)
CHOPCONF_MRES_MASK = const(0x0F000000)

MICROSTEP_MRES = {256: 0, 128: 1, 64: 2, 32: 3, 16: 4, 8: 5, 4: 6, 2: 7, 1: 8}


def crc8(data, n):
    """TMC UART CRC8 of data[0:n] (datasheet swuart_calcCRC: poly 0x07, LSB first)."""
    crc = 0
    for i in range(n):
        byte = data[i]
        for _ in range(8):
            if ((crc >> 7) ^ (byte & 0x01)) & 1:
                crc = ((crc << 1) ^ 0x07) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
            byte >>= 1
    return crc


def ihold_irun(irun, ihold, ihold_delay):
    """IHOLD_IRUN value: IHOLD bits 4:0, IRUN 12:8, IHOLDDELAY 19:16 (currents 0..31 are
    (n + 1) / 32 of the full-scale current set by the sense resistors)."""
    if not (0 <= irun <= 31 and 0 <= ihold <= 31 and 0 <= ihold_delay <= 15):
        raise ValueError("IRUN/IHOLD 0..31, IHOLDDELAY 0..15")
    return ihold | (irun << 8) | (ihold_delay << 16)


class TMCUartError(OSError):
    pass


class TMC2209:
    def __init__(self, step, dir, en, endstop_min=None, endstop_max=None, uart=None,
                 slave_addr=0, max_rate_hz=2000, endstop_active=1, dir_invert=False,
                 uart_echo=True):
        if not 0 < max_rate_hz <= 50000:
            raise ValueError("max_rate_hz must be 1..50000")
        if not 0 <= slave_addr <= 3:
            raise ValueError("slave_addr must be 0..3")
        self._step = step
        self._dir = dir
        self._en = en
        self._end_min = endstop_min
        self._end_max = endstop_max
        self._uart = uart
        self.slave_addr = slave_addr
        self.max_rate_hz = max_rate_hz
        self._min_period_us = (1000000 + max_rate_hz - 1) // max_rate_hz
        self._active = 1 if endstop_active else 0
        self._dir_invert = 1 if dir_invert else 0
        self._echo = uart_echo
        self.position_steps = 0
        self.enabled = False
        self.stopped_by = None
        self._direction = 0
        self._last_step_us = time.ticks_us()
        self._tx = bytearray(8)
        self._rx = bytearray(8)
        self._tx4 = bytearray(4)
        self._rx4 = bytearray(4)
        # Safe state before anything else: power stage off, STEP idle low.
        en.value(1)
        step.value(0)

    # -- enable / end stops ------------------------------------------------------------

    def enable(self):
        self._en.value(0)  # ENN active low
        self.enabled = True

    def disable(self):
        self._en.value(1)
        self.enabled = False

    def endstop_min_hit(self):
        return self._end_min is not None and self._end_min.value() == self._active

    def endstop_max_hit(self):
        return self._end_max is not None and self._end_max.value() == self._active

    def blocked(self, direction):
        """True when a step in ``direction`` (+1/-1) would run into a triggered stop."""
        return self.endstop_max_hit() if direction > 0 else self.endstop_min_hit()

    # -- stepping ------------------------------------------------------------------------

    def _set_direction(self, direction):
        if direction != self._direction:
            level = 1 if direction > 0 else 0
            self._dir.value(level ^ self._dir_invert)
            self._direction = direction

    def step_once(self, direction, period_us=0):
        """One step in ``direction`` (+1/-1), no sooner than ``period_us`` (at least the
        max-rate period) after the previous one. Returns False, without stepping, when
        the driver is disabled or the end stop in that direction is triggered.
        Allocation-free."""
        if not self.enabled:
            self.stopped_by = "disabled"
            return False
        if self.blocked(direction):
            self.stopped_by = "endstop_max" if direction > 0 else "endstop_min"
            return False
        self._set_direction(direction)
        if period_us < self._min_period_us:
            period_us = self._min_period_us
        # Wait only while the previous step is less than a period ago. ticks wrap every
        # 2^30 us (17.9 min): after a press idle for more than half of that, "due" would
        # read as up to 9 min ahead and the busy wait would run into the watchdog (seen
        # on the bench: a pressure step after a long hold reset the rig).
        if 0 <= time.ticks_diff(time.ticks_us(), self._last_step_us) < period_us:
            due = time.ticks_add(self._last_step_us, period_us)
            while time.ticks_diff(due, time.ticks_us()) > 0:
                pass  # a busy wait holds the step rate to the microsecond
        self._step.value(1)
        # Stamped after the rising edge: the next edge is then at least period_us after
        # this one, whatever time the pin call took (the error errs toward slower).
        self._last_step_us = time.ticks_us()
        self._step.value(0)  # > 100 ns high: one interpreted call is ~1 us
        self.position_steps += direction
        return True

    def move(self, steps, rate_hz=0):
        """Move ``steps`` (signed) at rate_hz (clamped to max_rate_hz; 0 = max). Stops at
        a triggered end stop; returns the signed number of steps made. Blocks for
        steps / rate: callers keep moves short enough for their loop period and the
        watchdog (the pressure loop steps a few at a time)."""
        if rate_hz <= 0 or rate_hz > self.max_rate_hz:
            rate_hz = self.max_rate_hz
        period_us = int(1000000 // rate_hz)
        direction = 1 if steps > 0 else -1
        self.stopped_by = None
        done = 0
        for _ in range(steps if steps > 0 else -steps):
            if not self.step_once(direction, period_us):
                break
            done += direction
        return done

    def step(self, steps):
        """``move(steps)`` at the maximum rate (the pressure loop's interface)."""
        return self.move(steps)

    @property
    def position(self):
        """Press position in steps from the home (min end stop) position."""
        return self.position_steps

    @property
    def end_stop_low(self):
        """The retracted (min) end stop is triggered."""
        return self.endstop_min_hit()

    @property
    def end_stop_high(self):
        """The closed (max) end stop is triggered."""
        return self.endstop_max_hit()

    def home(self, max_steps, rate_hz=0):
        """Retract until the min end stop triggers, then call that position 0. Returns
        True when homed; False when max_steps ran out first (position left unchanged)."""
        if self.endstop_min_hit():
            self.position_steps = 0
            return True
        self.move(-max_steps, rate_hz)
        if self.endstop_min_hit():
            self.position_steps = 0
            return True
        return False

    # -- UART registers --------------------------------------------------------------------

    def _uart_exchange(self, tx, reply, reply_len):
        uart = self._uart
        if uart is None:
            raise TMCUartError("no UART wired to the TMC2209")
        uart.write(tx)
        if self._echo:
            # Single-wire bus: our own bytes come back first; they must match, or another
            # talker (or a broken line) garbled the datagram.
            echo = self._rx4 if len(tx) == 4 else self._rx
            got = uart.readinto(echo, len(tx))
            if got != len(tx) or echo != tx:
                raise TMCUartError("TMC2209 UART echo mismatch")
        if reply_len:
            got = uart.readinto(reply, reply_len)
            if got != reply_len:
                raise TMCUartError("TMC2209 no reply")

    def write_register(self, reg, value):
        tx = self._tx
        tx[0] = SYNC
        tx[1] = self.slave_addr
        tx[2] = reg | WRITE_BIT
        tx[3] = (value >> 24) & 0xFF
        tx[4] = (value >> 16) & 0xFF
        tx[5] = (value >> 8) & 0xFF
        tx[6] = value & 0xFF
        tx[7] = crc8(tx, 7)
        self._uart_exchange(tx, None, 0)

    def read_register(self, reg):
        tx = self._tx4
        tx[0] = SYNC
        tx[1] = self.slave_addr
        tx[2] = reg & 0x7F
        tx[3] = crc8(tx, 3)
        rx = self._rx
        self._uart_exchange(tx, rx, 8)
        if rx[0] != SYNC or rx[1] != MASTER_ADDR or rx[2] != reg & 0x7F:
            raise TMCUartError("TMC2209 reply header wrong")
        if crc8(rx, 7) != rx[7]:
            raise TMCUartError("TMC2209 reply CRC wrong")
        return (rx[3] << 24) | (rx[4] << 16) | (rx[5] << 8) | rx[6]

    def write_register_checked(self, reg, value):
        """Write, then prove it arrived: IFCNT must have advanced by exactly one."""
        before = self.read_register(REG_IFCNT)
        self.write_register(reg, value)
        after = self.read_register(REG_IFCNT)
        if (after - before) & 0xFF != 1:
            raise TMCUartError("TMC2209 write not counted (IFCNT %d -> %d)" % (before, after))

    def set_current(self, irun, ihold, ihold_delay=6):
        self.write_register_checked(REG_IHOLD_IRUN, ihold_irun(irun, ihold, ihold_delay))

    def set_microsteps(self, microsteps, chopconf=CHOPCONF_DEFAULT):
        if microsteps not in MICROSTEP_MRES:
            raise ValueError("microsteps must be a power of two 1..256")
        value = (chopconf & ~CHOPCONF_MRES_MASK) | (MICROSTEP_MRES[microsteps] << 24)
        self.write_register_checked(REG_CHOPCONF, value)
        return value

    def init(self, irun=16, ihold=8, microsteps=16):
        """UART set-up: PDN_UART as UART (pdn_disable), microsteps from CHOPCONF
        (mstep_reg_select), current from IRUN/IHOLD with the internal reference
        (I_scale_analog 0: a misadjusted VREF pot cannot overdrive the press motor)."""
        self.write_register_checked(
            REG_GCONF, GCONF_PDN_DISABLE | GCONF_MSTEP_REG_SELECT | GCONF_MULTISTEP_FILT)
        self.set_current(irun, ihold)
        self.set_microsteps(microsteps)
