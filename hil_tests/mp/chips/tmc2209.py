"""Trinamic TMC2209 model: stepper driver with STEP/DIR/ENN pins and single-wire UART.

Datasheet TMC2209 Rev. 1.x: §4.1 UART datagrams, §4.2 CRC, §5 register map, §4.3
PDN_UART, "Microstep resolution by MS1/MS2", VACTUAL.

* UART (§4.1): write datagram = sync+reserved (low nibble 0101b, i.e. 05h), 8-bit node
  address, register address | 80h, 32-bit data MSB first, CRC; read request = sync,
  address, register, CRC; reply = 05h, FFh (master address), register, 32-bit data, CRC.
  CRC-8 poly 07h, init 0, each byte LSB first, over all bytes before it (§4.2). Only
  datagrams with a correct CRC and this node's address are accepted; IFCNT counts
  accepted writes (mod 256). The node address is MS1 + 2 x MS2 (pins).
* Registers: GCONF (00h, reset 101h), GSTAT (01h, reset flag set, write 1 to clear),
  IFCNT (02h), SLAVECONF (03h), IOIN (06h, pin states + VERSION 21h in bits 31:24),
  IHOLD_IRUN (10h), TPOWERDOWN (11h), TSTEP (12h), VACTUAL (22h), CHOPCONF (6Ch, reset
  10000053h), DRV_STATUS (6Fh), PWMCONF (70h, reset C10D0024h), MSCNT (6Ah). Reading a
  write-only register replies 0 (counted in ``reads_of_write_only``).
* Motion: a STEP rising edge (both edges with CHOPCONF.dedge) moves one microstep when the
  driver is enabled (ENN low and CHOPCONF.TOFF != 0). Direction = DIR xor GCONF.shaft.
  Resolution = 256 >> CHOPCONF.MRES when GCONF.mstep_reg_select, else from MS2/MS1:
  00 -> 8, 01 -> 32, 10 -> 64, 11 -> 16. VACTUAL != 0 moves the motor from the internal
  generator at VACTUAL x 0.715 microsteps/s (fCLK 12 MHz / 2^24) and STEP is ignored.
  Position is kept in 1/256 full steps (``position_256``, counting up while DIR xor
  shaft = 1); MSCNT = position mod 1024. ``on_position(position_256)`` (optional) is called
  after every move so the bench can drive end-stop switches.
* ``step_pwm`` accepts a PWM-generated STEP train (steps = frequency x time).
"""

from chips import ManualClock
from chips.crc import crc8_tmc

GCONF = 0x00
GSTAT = 0x01
IFCNT = 0x02
SLAVECONF = 0x03
OTP_PROG = 0x04
OTP_READ = 0x05
IOIN = 0x06
FACTORY_CONF = 0x07
IHOLD_IRUN = 0x10
TPOWERDOWN = 0x11
TSTEP = 0x12
TPWMTHRS = 0x13
TCOOLTHRS = 0x14
VACTUAL = 0x22
SGTHRS = 0x40
SG_RESULT = 0x41
COOLCONF = 0x42
MSCNT = 0x6A
MSCURACT = 0x6B
CHOPCONF = 0x6C
DRV_STATUS = 0x6F
PWMCONF = 0x70
PWM_SCALE = 0x71
PWM_AUTO = 0x72

_RESET = {
    GCONF: 0x00000101, GSTAT: 0x00000001, SLAVECONF: 0, FACTORY_CONF: 0, IHOLD_IRUN: 0x00001F10,
    TPOWERDOWN: 20, TPWMTHRS: 0, TCOOLTHRS: 0, VACTUAL: 0, SGTHRS: 0, COOLCONF: 0,
    CHOPCONF: 0x10000053, PWMCONF: 0xC10D0024, OTP_PROG: 0,
}
_READABLE = (GCONF, GSTAT, IFCNT, OTP_READ, IOIN, FACTORY_CONF, TSTEP, SG_RESULT, MSCNT,
             MSCURACT, CHOPCONF, DRV_STATUS, PWMCONF, PWM_SCALE, PWM_AUTO)
_WRITABLE = (GCONF, GSTAT, SLAVECONF, OTP_PROG, FACTORY_CONF, IHOLD_IRUN, TPOWERDOWN,
             TPWMTHRS, TCOOLTHRS, VACTUAL, SGTHRS, COOLCONF, CHOPCONF, PWMCONF)
VERSION = 0x21
FCLK_HZ = 12_000_000
_MS_PINS = (8, 32, 64, 16)  # index MS2 * 2 + MS1


def datagram_write(node, reg, value):
    d = bytearray((0x05, node, reg | 0x80, (value >> 24) & 0xFF, (value >> 16) & 0xFF,
                   (value >> 8) & 0xFF, value & 0xFF, 0))
    d[7] = crc8_tmc(d, 7)
    return bytes(d)


def datagram_read(node, reg):
    d = bytearray((0x05, node, reg & 0x7F, 0))
    d[3] = crc8_tmc(d, 3)
    return bytes(d)


class TMC2209:
    UART_BAUD_RANGE = (9600, 500_000)  # auto-baud range (§4.1)

    def __init__(self, clock=None, ms1=0, ms2=0):
        self.clock = clock if clock is not None else ManualClock()
        self.ms1 = ms1
        self.ms2 = ms2
        self.regs = dict(_RESET)
        self.ifcnt = 0
        self.enn = 1  # pin levels as last seen (ENN pulled up: disabled)
        self.dir = 0
        self.step_level = 0
        self.diag = 0
        self.position_256 = 0  # 1/256 full steps
        self._frac_256 = 0.0
        self.steps = 0  # accepted STEP edges
        self.steps_ignored = 0  # edges while disabled or in VACTUAL mode
        self.crc_errors = 0
        self.reads_of_write_only = 0
        self.datagrams = 0
        self._rx = bytearray()
        self._resync = False
        self._last_rx_ns = None
        self.uart_baud = 115200  # set by machine.UART on every write
        self._pwm_hz = 0
        self._t_ns = self.clock.now_ns
        self._last_step_ns = None
        self._tstep = 0xFFFFF
        self.on_position = None

    # -- configuration helpers --------------------------------------------------------------
    @property
    def node(self):
        return self.ms1 + 2 * self.ms2

    @property
    def microsteps(self):
        if self.regs[GCONF] & 0x80:  # mstep_reg_select
            return 256 >> min(8, (self.regs[CHOPCONF] >> 24) & 0xF)
        return _MS_PINS[self.ms2 * 2 + self.ms1]

    @property
    def enabled(self):
        return self.enn == 0 and (self.regs[CHOPCONF] & 0xF) != 0

    def _direction(self):
        shaft = (self.regs[GCONF] >> 3) & 1
        return 1 if (self.dir ^ shaft) else -1

    @property
    def position_fullsteps(self):
        self._integrate()
        return (self.position_256 + self._frac_256) / 256

    def _vactual(self):
        v = self.regs[VACTUAL] & 0xFFFFFF
        return v - (1 << 24) if v & 0x800000 else v

    # -- continuous motion (VACTUAL, PWM step train) ---------------------------------------
    def _integrate(self):
        now = self.clock.now_ns
        dt = now - self._t_ns
        self._t_ns = now
        if dt <= 0 or not self.enabled:
            return
        per_ustep = 256 / self.microsteps
        va = self._vactual()
        if va:
            ustep_per_s = va * FCLK_HZ / (1 << 24)
            self._frac_256 += ustep_per_s * dt / 1e9 * per_ustep
        elif self._pwm_hz:
            n = self._pwm_hz * dt / 1e9
            self.steps += int(n)
            self._frac_256 += self._direction() * n * per_ustep
        whole = int(self._frac_256)
        if whole:
            self.position_256 += whole
            self._frac_256 -= whole
            if self.on_position is not None:
                self.on_position(self.position_256)

    def step_pwm(self, freq_hz, duty_u16, active):
        """machine.BENCH.watch_pwm callback: STEP generated by a PWM slice."""
        self._integrate()
        self._pwm_hz = freq_hz if active and 0 < duty_u16 < 65535 else 0

    # -- pins -------------------------------------------------------------------------------
    def step_changed(self, level):
        prev = self.step_level
        self.step_level = level
        dedge = (self.regs[CHOPCONF] >> 29) & 1
        if not (level == 1 and prev == 0) and not (dedge and level != prev):
            return
        self._integrate()
        if not self.enabled or self._vactual():
            self.steps_ignored += 1
            return
        self.steps += 1
        self.position_256 += self._direction() * (256 // self.microsteps)
        if self.on_position is not None:
            self.on_position(self.position_256)
        now = self.clock.now_ns
        if self._last_step_ns is not None:
            self._tstep = min(0xFFFFF, (now - self._last_step_ns) * FCLK_HZ // 1_000_000_000)
        self._last_step_ns = now

    def dir_changed(self, level):
        self._integrate()
        self.dir = level

    def enn_changed(self, level):
        self._integrate()
        self.enn = level

    # -- registers --------------------------------------------------------------------------
    def read_reg(self, reg):
        if reg == IFCNT:
            return self.ifcnt
        if reg == IOIN:
            return (VERSION << 24) | (self.dir << 9) | (self.step_level << 7) | (
                self.ms2 << 3) | (self.ms1 << 2) | (self.diag << 4) | self.enn
        if reg == MSCNT:
            self._integrate()
            return self.position_256 % 1024
        if reg == TSTEP:
            return self._tstep
        if reg in (DRV_STATUS, SG_RESULT, MSCURACT, PWM_SCALE, PWM_AUTO, OTP_READ):
            return 0
        return self.regs.get(reg, 0)

    def write_reg(self, reg, value):
        self._integrate()
        if reg == GSTAT:
            self.regs[GSTAT] &= ~value & 0x7
        elif reg in _WRITABLE:
            self.regs[reg] = value & 0xFFFFFFFF

    # -- UART -------------------------------------------------------------------------------
    def uart_rx(self, data):
        """Bytes on PDN_UART from the host; returns the reply bytes (read datagrams).

        Bytes of one ``UART.write`` arrive back to back; between writes the line idles.
        After 63 idle bit times the interface resets (§4.1), so a broken datagram only
        spoils the rest of its burst: after a CRC error everything is ignored until the
        line has been idle that long."""
        now = self.clock.now_ns
        idle_ns = 63 * 1_000_000_000 // max(1, self.uart_baud)
        if self._last_rx_ns is not None and now - self._last_rx_ns > idle_ns:
            self._rx = bytearray()
            self._resync = False
        self._last_rx_ns = now + len(data) * 10 * 1_000_000_000 // max(1, self.uart_baud)
        if self._resync:
            return b""
        self._rx.extend(data)
        out = bytearray()
        buf = self._rx
        while len(buf) >= 4:
            if buf[0] & 0x0F != 0x05:
                buf = buf[1:]  # resynchronise on the sync nibble
                continue
            is_write = buf[2] & 0x80
            size = 8 if is_write else 4
            if len(buf) < size:
                break
            frame = buf[:size]
            if crc8_tmc(frame, size - 1) != frame[size - 1]:
                self.crc_errors += 1
                self._resync = True
                buf = bytearray()
                break
            buf = buf[size:]
            if frame[1] != self.node:
                continue
            self.datagrams += 1
            reg = frame[2] & 0x7F
            if is_write:
                value = (frame[3] << 24) | (frame[4] << 16) | (frame[5] << 8) | frame[6]
                self.write_reg(reg, value)
                self.ifcnt = (self.ifcnt + 1) & 0xFF
            else:
                if reg not in _READABLE:
                    self.reads_of_write_only += 1
                    value = 0
                else:
                    value = self.read_reg(reg)
                reply = bytearray((0x05, 0xFF, reg, (value >> 24) & 0xFF, (value >> 16) & 0xFF,
                                   (value >> 8) & 0xFF, value & 0xFF, 0))
                reply[7] = crc8_tmc(reply, 7)
                out.extend(reply)
        self._rx = bytearray(buf)
        return bytes(out)
