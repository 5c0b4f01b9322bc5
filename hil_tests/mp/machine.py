"""``machine`` stand-in for the HIL bench (MicroPython unix port and CPython).

Placed ahead of the firmware on MICROPYPATH, this module replaces the unix port's
built-in ``machine`` so the unmodified rig firmware talks to chip models instead of
silicon. Everything runs in-process: an SPI transfer is a method call into the model of
the chip whose chip-select pin is low.

One module-level object, ``BENCH``, owns the emulated board:

* virtual time (``now_ns``) -- nothing here reads the host clock. ``BENCH.advance_ns`` moves
  time forward and fires, in time order, everything scheduled before the target: ADC
  conversions (DRDY edges -> pin IRQ handlers), RTD/load-cell conversions, ``Timer``
  callbacks, watchdog expiry.
* the wiring registry: ``add_spi`` (chip model per chip-select pin, on the SCK/MOSI/MISO
  pins it is wired to), ``add_i2c`` (model per 7-bit address on an SDA/SCL pair),
  ``add_uart`` (model on a TX/RX pair, optionally single-wire), ``add_clocked`` (a model
  with its own events), ``watch`` / ``watch_pwm`` (callbacks on pin levels and PWM
  settings), ``drive`` (a model or the bench driving an input pin).
* bus error counters (``errors``: name -> count) and fault injection (``nak``,
  ``stuck_miso``); chip-level faults live on the models.
* watchdog and reset bookkeeping (``wdt_feeds``, ``reset_cause``, ``ResetRequested``).

Pin, bus and peripheral behaviour follows the MicroPython ``rp2`` port (RP2350, Pico 2 W):
pin-function checks raise ``ValueError("bad SCK pin")`` like ``machine_spi.c``; a NAK on
a hardware I2C data transfer raises ``OSError(EIO)`` and on a zero-length write (``scan``)
``OSError(ENODEV)`` like ``machine_i2c.c``; ``WDT`` accepts at most 16777 ms (RP2350).
"""

import errno

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_NS_PER_S = const(1_000_000_000)
_NEVER = const(1 << 62)  # "no event scheduled" (fits a small int on 64-bit ports)
_N_GPIO = const(30)  # RP2350A (Pico 2 W): GPIO0..29
# GPIOs the Pico 2 W wires to the CYW43 wireless chip (WL_ON, WL_D, WL_CS, WL_CLK).
_CYW43_GPIOS = (23, 24, 25, 29)

_MODE_IN = const(0)
_MODE_OUT = const(1)
_MODE_OPEN_DRAIN = const(2)
_MODE_ALT = const(3)
_PULL_UP = const(1)
_PULL_DOWN = const(2)
_IRQ_LOW_LEVEL = const(1)
_IRQ_HIGH_LEVEL = const(2)
_IRQ_FALLING = const(4)
_IRQ_RISING = const(8)


class ResetRequested(SystemExit):
    """Raised when the emulated RP2350 resets (``machine.reset()``, watchdog expiry).

    A ``SystemExit`` so that the firmware's ``except Exception`` handlers cannot swallow
    it, just as no handler survives a real reset. ``args[0]`` is the cause."""


def _pin_number(pin):
    """GPIO number (or "LED") of a Pin, an int or a "GPn" name; ValueError otherwise."""
    if isinstance(pin, Pin):
        return pin._st.pid
    if isinstance(pin, int):
        if 0 <= pin < _N_GPIO:
            return pin
        raise ValueError("invalid pin")
    if isinstance(pin, str):
        if pin in ("LED", "WL_GPIO0"):
            return "LED"
        if pin.startswith("GP") and pin[2:].isdigit():
            return _pin_number(int(pin[2:]))
    raise ValueError("invalid pin")


class _PinState:
    """One GPIO: what the firmware drives, what the outside world drives, the level."""

    __slots__ = (
        "board_pull", "ext", "irq_handler", "irq_pin", "irq_trigger", "level", "listeners",
        "mode", "out", "pid", "pull",
    )

    def __init__(self, pid):
        self.pid = pid
        self.mode = None  # never configured: high impedance input
        self.pull = None
        self.out = 0
        self.ext = None  # level driven from outside the RP2350 (model/bench), None = not
        self.board_pull = None  # resistor on the board (1 up, 0 down, None none)
        self.level = 0
        self.listeners = []
        self.irq_handler = None
        self.irq_trigger = 0
        self.irq_pin = None


class _Watchdog:
    def __init__(self, bench):
        self.bench = bench
        self.timeout_ns = None
        self.deadline_ns = None

    def next_event_ns(self):
        return self.deadline_ns

    def on_event(self, now_ns):
        self.deadline_ns = None
        self.bench.wdt_expired += 1
        self.bench._reset("wdt")


class _SpiDevice:
    __slots__ = ("chip", "cs", "miso", "mosi", "name", "sck", "selected")

    def __init__(self, chip, cs, sck, mosi, miso, name):
        self.chip = chip
        self.cs = cs
        self.sck = sck
        self.mosi = mosi
        self.miso = miso
        self.name = name
        self.selected = False


class _I2cDevice:
    __slots__ = ("addr", "model", "name", "scl", "sda")

    def __init__(self, model, addr, sda, scl, name):
        self.model = model
        self.addr = addr
        self.sda = sda
        self.scl = scl
        self.name = name


class _UartDevice:
    __slots__ = ("model", "name", "rx", "single_wire", "tx")

    def __init__(self, model, tx, rx, single_wire, name):
        self.model = model
        self.tx = tx
        self.rx = rx
        self.single_wire = single_wire
        self.name = name


class Bench:
    """The emulated board around the RP2350: virtual clock, wiring registry, faults."""

    def __init__(self):
        self.reset()

    def reset(self):
        """Forget all wiring, state and time (the object itself stays: modules hold it)."""
        self.now_ns = 0
        self._pins = {}
        self._spi = []
        self._i2c = []
        self._uart = []
        self._sources = []  # objects with next_event_ns() / on_event(now_ns)
        self._pwm_listeners = {}
        self._pwm = {}  # pin -> PWM settings (freq_hz, duty_u16, invert, active)
        self._slice_freq = {}
        self._advancing = False
        self._next_cache = None  # earliest event time while nothing changed; None = stale
        self._irq_enabled = True
        self._irq_pending = []
        self.errors = {}
        self.i2c_nak_remaining = {}  # 7-bit address -> NAKs left (-1 = until cleared)
        self.stuck_miso = {}  # SCK pin -> byte the MISO line is stuck at
        self.wdt = _Watchdog(self)
        self._sources.append(self.wdt)
        self.wdt_feeds = 0
        self.wdt_expired = 0
        self.reset_cause = None
        self.reset_at_ns = None
        self.resets = 0
        self.last_reset_cause = PWRON_RESET
        self.raise_on_reset = True
        # Called with the cause just before a reset: a board that reports resets to its
        # host (the bench's lockstep) learns of every one, wherever it happens (a
        # watchdog expiring inside a driver's busy-wait, not only in a sleep).
        self.on_reset = None
        self.freq_hz = 150_000_000  # RP2350 default system clock
        self.unique_id = b"\xe6\x61\x41\x04\x03\x5f\x2a\x21"
        self.adc_volts = {}
        self.pio_pins = {}  # pin -> rp2.StateMachine driving it
        # vtime (opt-in virtual ``time``): virtual cost of one ticks_*() call, and the
        # wall-clock second that virtual time 0 corresponds to.
        self.tick_cost_ns = 1000
        self.epoch_s = 1_767_225_600  # 2026-01-01T00:00:00Z

    # -- virtual time ---------------------------------------------------------------
    def ticks_us(self):
        return self.now_ns // 1000

    def ticks_ms(self):
        return self.now_ns // 1_000_000

    def add_clocked(self, source):
        """Register an event source: ``next_event_ns()`` -> int|None, ``on_event(now_ns)``."""
        self._next_cache = None
        if source not in self._sources:
            self._sources.append(source)

    def remove_clocked(self, source):
        self._next_cache = None
        if source in self._sources:
            self._sources.remove(source)

    def invalidate(self):
        """Bench code that changes a model's schedule directly (not through a bus, a pin
        or a timer) calls this so the next ``advance_ns`` asks every source again."""
        self._next_cache = None

    def next_event_ns(self):
        best = None
        for src in self._sources:
            t = src.next_event_ns()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def advance_ns(self, dt_ns):
        """Move virtual time forward by dt_ns, firing every event due on the way in order."""
        if dt_ns < 0:
            raise ValueError("time runs forward only")
        if self._advancing:
            raise RuntimeError("BENCH.advance called from inside an event handler")
        target = self.now_ns + dt_ns
        cached = self._next_cache
        if cached is not None and cached > target:
            # Nothing has touched the board since the event times were last asked for:
            # no source can be due (the fast path of polling loops under vtime).
            self.now_ns = target
            return
        self._advancing = True
        try:
            sources = self._sources
            while True:
                best = None
                best_src = None
                for src in sources:
                    t = src.next_event_ns()
                    if t is not None and (best is None or t < best):
                        best = t
                        best_src = src
                if best is None or best > target:
                    self._next_cache = _NEVER if best is None else best
                    break
                self._next_cache = None
                if best > self.now_ns:
                    self.now_ns = best
                best_src.on_event(self.now_ns)
            self.now_ns = target
        finally:
            self._advancing = False

    def advance_us(self, dt_us):
        self.advance_ns(int(dt_us * 1000))

    def advance_ms(self, dt_ms):
        self.advance_ns(int(dt_ms * 1_000_000))

    def advance_to_ns(self, t_ns):
        if t_ns > self.now_ns:
            self.advance_ns(t_ns - self.now_ns)

    # -- errors and faults -----------------------------------------------------------
    def error(self, name):
        self.errors[name] = self.errors.get(name, 0) + 1

    def error_count(self, name=None):
        if name is None:
            return sum(self.errors.values())
        return self.errors.get(name, 0)

    def nak(self, addr, count=-1):
        """Make the device at 7-bit ``addr`` NAK its address: ``count`` transactions, or
        until ``clear_nak`` when -1."""
        self.i2c_nak_remaining[addr] = count

    def clear_nak(self, addr=None):
        if addr is None:
            self.i2c_nak_remaining.clear()
        else:
            self.i2c_nak_remaining.pop(addr, None)

    def set_stuck_miso(self, sck, value):
        """MISO of the bus on SCK pin ``sck`` reads ``value`` (0xFF, 0x00) for every byte;
        None releases it. The chips still receive MOSI."""
        sck = _pin_number(sck)
        if value is None:
            self.stuck_miso.pop(sck, None)
        else:
            self.stuck_miso[sck] = value & 0xFF

    # -- pins -----------------------------------------------------------------------
    def pin_state(self, pin):
        pid = _pin_number(pin)
        st = self._pins.get(pid)
        if st is None:
            st = _PinState(pid)
            self._pins[pid] = st
        return st

    def level(self, pin):
        return self.pin_state(pin).level

    def board_pull(self, pin, level):
        """A resistor on the board pulls ``pin`` to ``level`` (1/0) when nothing drives it."""
        st = self.pin_state(pin)
        st.board_pull = level
        self._pin_update(st)

    def drive(self, pin, level):
        """Drive ``pin`` from outside the RP2350 (a chip output, a switch); None releases."""
        st = self.pin_state(pin)
        st.ext = None if level is None else (1 if level else 0)
        if st.ext is not None and st.mode == _MODE_OUT and st.out != st.ext:
            self.error("pin_contention")
        self._pin_update(st)

    def driver_for(self, pin):
        """A callable(level) that drives ``pin`` (what a chip model's output gets)."""
        st = self.pin_state(pin)
        bench = self

        def _drive(level):
            st.ext = None if level is None else (1 if level else 0)
            if st.ext is not None and st.mode == _MODE_OUT and st.out != st.ext:
                bench.error("pin_contention")
            bench._pin_update(st)

        return _drive

    def watch(self, pin, callback):
        """Call ``callback(level)`` whenever the level of ``pin`` changes."""
        self.pin_state(pin).listeners.append(callback)

    def watch_pwm(self, pin, callback):
        """Call ``callback(freq_hz, duty_u16, active)`` whenever PWM on ``pin`` changes."""
        pid = _pin_number(pin)
        self._pwm_listeners.setdefault(pid, []).append(callback)

    def pwm_state(self, pin):
        """(freq_hz, duty_u16 at the pin after inversion, active) or None."""
        return self._pwm.get(_pin_number(pin))

    def _pin_update(self, st):
        self._next_cache = None
        mode = st.mode
        if mode == _MODE_OUT:
            new = st.out
        elif mode == _MODE_OPEN_DRAIN and st.out == 0:
            new = 0
        elif st.ext is not None:
            new = st.ext
        elif st.pull == _PULL_UP:
            new = 1
        elif st.pull == _PULL_DOWN:
            new = 0
        elif st.board_pull is not None:
            new = st.board_pull
        else:
            new = 0
        if new == st.level:
            return
        st.level = new
        for cb in st.listeners:
            cb(new)
        trig = st.irq_trigger
        if trig and st.irq_handler is not None:
            if (new == 0 and trig & (_IRQ_FALLING | _IRQ_LOW_LEVEL)) or (
                new == 1 and trig & (_IRQ_RISING | _IRQ_HIGH_LEVEL)
            ):
                if self._irq_enabled:
                    st.irq_handler(st.irq_pin)
                else:
                    self._irq_pending.append(st)

    # -- wiring registry --------------------------------------------------------------
    def add_spi(self, chip, cs, sck, mosi, miso, name=None):
        """Wire an SPI chip model: CS pin (board pull-up) and the bus pins it sits on.

        The chip gets ``spi_select()`` on CS falling, ``spi_deselect()`` on CS rising and
        ``spi_xfer(tx, rx)`` for the bytes clocked while it is selected (rx None when the
        host only writes). It may declare ``SPI_MODES`` ((polarity, phase), ...) and
        ``SPI_MAX_HZ``."""
        dev = _SpiDevice(chip, _pin_number(cs), _pin_number(sck), _pin_number(mosi),
                         _pin_number(miso) if miso is not None else None,
                         name or type(chip).__name__)
        self._spi.append(dev)
        st = self.pin_state(cs)
        st.board_pull = 1
        self._pin_update(st)
        dev.selected = st.level == 0

        def _cs(level):
            if level == 0:
                if not dev.selected:
                    dev.selected = True
                    chip.spi_select()
            elif dev.selected:
                dev.selected = False
                chip.spi_deselect()

        st.listeners.append(_cs)
        return dev

    def add_i2c(self, model, addr, sda, scl, name=None):
        """Wire an I2C model at 7-bit ``addr``: ``i2c_write(data)`` -> bytes acked,
        ``i2c_read(n)`` -> bytes; optional ``I2C_MAX_HZ``."""
        dev = _I2cDevice(model, addr, _pin_number(sda), _pin_number(scl),
                         name or type(model).__name__)
        self._i2c.append(dev)
        self.board_pull(sda, 1)
        self.board_pull(scl, 1)
        return dev

    def add_uart(self, model, tx, rx, single_wire=False, name=None):
        """Wire a UART model to the host's TX/RX pins: ``uart_rx(data)`` -> reply bytes.
        With ``single_wire`` the host's TX is tied to its RX through a resistor (TMC2209
        PDN_UART), so the host reads back every byte it sends before any reply."""
        dev = _UartDevice(model, _pin_number(tx), _pin_number(rx), single_wire,
                          name or type(model).__name__)
        self._uart.append(dev)
        return dev

    def spi_devices(self, sck):
        sck = _pin_number(sck)
        return [d for d in self._spi if d.sck == sck]

    # -- bus transfers (called by SPI / I2C / UART objects) -------------------------------
    def _spi_transfer(self, spi, tx, rx):
        self._next_cache = None
        devs = spi._devs
        if devs is None:
            devs = spi._devs = [d for d in self._spi if d.sck == spi._sck]
        sel = None
        nsel = 0
        for d in devs:
            if d.selected:
                nsel += 1
                sel = d
        n = len(tx)
        if nsel == 0:
            self.error("spi_no_cs")
            if rx is not None:
                for i in range(n):
                    rx[i] = 0xFF  # nobody drives MISO; the line floats/pulls high
        elif nsel == 1:
            self._spi_one(spi, sel, tx, rx)
        else:
            self.error("spi_multi_cs")
            acc = None
            for d in devs:
                if d.selected:
                    part = bytearray(n) if rx is not None else None
                    self._spi_one(spi, d, tx, part)
                    if part is not None:
                        if acc is None:
                            acc = part
                        else:
                            for i in range(n):
                                acc[i] &= part[i]  # contention: modelled as wired-AND
            if rx is not None:
                rx[:n] = acc
        stuck = self.stuck_miso.get(spi._sck)
        if stuck is not None and rx is not None:
            for i in range(n):
                rx[i] = stuck

    def _spi_one(self, spi, dev, tx, rx):
        chip = dev.chip
        if (dev.mosi != spi._mosi) or (dev.miso is not None and dev.miso != spi._miso):
            self.error("spi_pin_mismatch")
            if rx is not None:
                for i in range(len(tx)):
                    rx[i] = 0xFF
            return
        modes = getattr(chip, "SPI_MODES", None)
        bad_mode = modes is not None and (spi._polarity, spi._phase) not in modes
        lsb = spi._firstbit == SPI.LSB
        if spi._baudrate > getattr(chip, "SPI_MAX_HZ", spi._baudrate):
            self.error("spi_baudrate")
        if not bad_mode and not lsb:
            chip.spi_xfer(tx, rx)
            return
        # Misconfigured bus: the chip samples on the wrong edge (data shifted by one bit)
        # or sees the bits in the wrong order. Deliver what the wires would carry.
        if bad_mode:
            self.error("spi_mode")
        if lsb:
            self.error("spi_bit_order")
        seen = bytearray(tx)
        if lsb:
            _reverse_bits(seen)
        if bad_mode:
            _shift_right_1(seen)
        out = bytearray(len(tx)) if rx is not None else None
        chip.spi_xfer(seen, out)
        if out is not None:
            if bad_mode:
                _shift_left_1(out)
            if lsb:
                _reverse_bits(out)
            rx[: len(out)] = out

    def _i2c_find(self, bus, addr):
        self._next_cache = None
        for d in self._i2c:
            if d.addr == addr and d.sda == bus._sda and d.scl == bus._scl:
                left = self.i2c_nak_remaining.get(addr)
                if left is not None:
                    if left > 0:
                        left -= 1
                        if left == 0:
                            del self.i2c_nak_remaining[addr]
                        else:
                            self.i2c_nak_remaining[addr] = left
                    return None
                if bus._freq > getattr(d.model, "I2C_MAX_HZ", bus._freq):
                    self.error("i2c_freq")
                return d
        return None

    def _uart_find(self, uart):
        self._next_cache = None
        for d in self._uart:
            if d.tx == uart._tx:
                if d.rx != uart._rx and not d.single_wire:
                    return None
                return d
        return None

    # -- PWM ------------------------------------------------------------------------
    def _pwm_changed(self, pid, freq_hz, duty_u16, active):
        slice_no = (pid >> 1) & 7 if isinstance(pid, int) else pid
        if active and freq_hz:
            other = self._slice_freq.get(slice_no)
            if other is not None and other[0] != pid and other[1] != freq_hz:
                # Both channels of a PWM slice share one counter, hence one frequency.
                self.error("pwm_slice_freq_conflict")
            self._slice_freq[slice_no] = (pid, freq_hz)
        self._pwm[pid] = (freq_hz, duty_u16, active)
        for cb in self._pwm_listeners.get(pid, ()):
            cb(freq_hz, duty_u16, active)

    # -- interrupts, watchdog, reset --------------------------------------------------------
    def _enable_irq(self):
        self._irq_enabled = True
        pending = self._irq_pending
        self._irq_pending = []
        for st in pending:
            if st.irq_handler is not None:
                st.irq_handler(st.irq_pin)

    def wdt_start(self, timeout_ms):
        self._next_cache = None
        self.wdt.timeout_ns = timeout_ms * 1_000_000
        self.wdt.deadline_ns = self.now_ns + self.wdt.timeout_ns

    def wdt_feed(self):
        self._next_cache = None
        self.wdt_feeds += 1
        if self.wdt.timeout_ns is not None:
            self.wdt.deadline_ns = self.now_ns + self.wdt.timeout_ns

    def _reset(self, cause):
        self.reset_cause = cause
        self.reset_at_ns = self.now_ns
        self.resets += 1
        self.last_reset_cause = WDT_RESET if cause == "wdt" else PWRON_RESET
        self.wdt.timeout_ns = None
        self.wdt.deadline_ns = None
        if self.on_reset is not None:
            self.on_reset(cause)
        if self.raise_on_reset:
            raise ResetRequested(cause)


def _reverse_bits(buf):
    for i in range(len(buf)):
        b = buf[i]
        r = 0
        for _ in range(8):
            r = (r << 1) | (b & 1)
            b >>= 1
        buf[i] = r


def _shift_right_1(buf):
    carry = 0
    for i in range(len(buf)):
        b = buf[i]
        buf[i] = (b >> 1) | (carry << 7)
        carry = b & 1


def _shift_left_1(buf):
    for i in range(len(buf)):
        nxt = buf[i + 1] >> 7 if i + 1 < len(buf) else 1  # idle MISO pulled high
        buf[i] = ((buf[i] << 1) & 0xFF) | nxt


PWRON_RESET = const(1)
WDT_RESET = const(3)

BENCH = Bench()


# ---------------------------------------------------------------------------------------
# Pins
# ---------------------------------------------------------------------------------------
class _PinIRQ:
    def __init__(self, st):
        self._st = st

    def trigger(self, trigger=None):
        if trigger is not None:
            self._st.irq_trigger = trigger
        return self._st.irq_trigger

    def flags(self):
        return self._st.irq_trigger


class Pin:
    IN = _MODE_IN
    OUT = _MODE_OUT
    OPEN_DRAIN = _MODE_OPEN_DRAIN
    ALT = _MODE_ALT
    PULL_UP = _PULL_UP
    PULL_DOWN = _PULL_DOWN
    IRQ_LOW_LEVEL = _IRQ_LOW_LEVEL
    IRQ_HIGH_LEVEL = _IRQ_HIGH_LEVEL
    IRQ_FALLING = _IRQ_FALLING
    IRQ_RISING = _IRQ_RISING
    ALT_SPI = 1
    ALT_UART = 2
    ALT_I2C = 3
    ALT_PWM = 4
    ALT_SIO = 5
    ALT_PIO0 = 6
    ALT_PIO1 = 7
    ALT_PIO2 = 8

    def __init__(self, id, mode=-1, pull=-1, *, value=None, alt=-1):
        self._st = BENCH.pin_state(id)
        if self._st.pid in _CYW43_GPIOS:
            BENCH.error("pin_cyw43_conflict")
        self.init(mode, pull, value=value, alt=alt)

    def init(self, mode=-1, pull=-1, *, value=None, alt=-1):
        st = self._st
        if value is not None:
            st.out = 1 if value else 0
        if mode is not None and mode != -1:
            st.mode = mode
            if pull == -1:
                st.pull = None
        if pull != -1:
            st.pull = pull
        BENCH._pin_update(st)

    def value(self, x=None):
        st = self._st
        if x is None:
            return st.level
        st.out = 1 if x else 0
        if st.mode == _MODE_OUT or st.mode == _MODE_OPEN_DRAIN:
            BENCH._pin_update(st)
        return None

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def high(self):
        self.value(1)

    def low(self):
        self.value(0)

    def toggle(self):
        self.value(1 - self._st.out)

    def mode(self, mode=None):
        if mode is None:
            return self._st.mode
        self.init(mode)
        return None

    def pull(self, pull=None):
        if pull is None:
            return self._st.pull
        self._st.pull = pull
        BENCH._pin_update(self._st)
        return None

    def irq(self, handler=None, trigger=_IRQ_FALLING | _IRQ_RISING, hard=False):
        st = self._st
        st.irq_handler = handler
        st.irq_trigger = trigger if handler is not None else 0
        st.irq_pin = self
        return _PinIRQ(st)

    def __repr__(self):
        return f"Pin(GPIO{self._st.pid})"


class Signal:
    def __init__(self, pin, invert=False):
        self._pin = pin if isinstance(pin, Pin) else Pin(pin)
        self._invert = 1 if invert else 0

    def value(self, x=None):
        if x is None:
            return self._pin.value() ^ self._invert
        self._pin.value((1 if x else 0) ^ self._invert)
        return None

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


# ---------------------------------------------------------------------------------------
# Buses. RP2350 GPIO function table (datasheet §9.4): SPI (n//8)%2, n%4 = RX/CSn/SCK/TX;
# I2C (n//2)%2, SDA on even, SCL on odd pins; UART ((n+4)//8)%2, n%4 = TX/RX/CTS/RTS.
# ---------------------------------------------------------------------------------------
_SPI_DEFAULT_PINS = ((18, 19, 16), (10, 11, 8))  # (sck, mosi, miso) per MicroPython rp2
_I2C_DEFAULT_PINS = ((8, 9), (6, 7))  # (sda, scl)
_UART_DEFAULT_PINS = ((0, 1), (4, 5))  # (tx, rx)


def _spi_fn_ok(bus, pin, role):
    return isinstance(pin, int) and (pin // 8) % 2 == bus and pin % 4 == role


class SPI:
    MSB = 1
    LSB = 0

    def __init__(self, id, baudrate=1_000_000, *, polarity=0, phase=0, bits=8, firstbit=1,
                 sck=None, mosi=None, miso=None):
        if id not in (0, 1):
            raise ValueError(f"SPI({id}) doesn't exist")
        self._id = id
        dsck, dmosi, dmiso = _SPI_DEFAULT_PINS[id]
        self._sck = dsck
        self._mosi = dmosi
        self._miso = dmiso
        self._devs = None
        self._baudrate = baudrate
        self._polarity = polarity
        self._phase = phase
        self._bits = bits
        self._firstbit = firstbit
        self.init(baudrate, polarity=polarity, phase=phase, bits=bits, firstbit=firstbit,
                  sck=sck, mosi=mosi, miso=miso)

    def init(self, baudrate=None, *, polarity=None, phase=None, bits=None, firstbit=None,
             sck=None, mosi=None, miso=None):
        if sck is not None:
            pin = _pin_number(sck)
            if not _spi_fn_ok(self._id, pin, 2):
                raise ValueError("bad SCK pin")
            self._sck = pin
        if mosi is not None:
            pin = _pin_number(mosi)
            if not _spi_fn_ok(self._id, pin, 3):
                raise ValueError("bad MOSI pin")
            self._mosi = pin
        if miso is not None:
            pin = _pin_number(miso)
            if not _spi_fn_ok(self._id, pin, 0):
                raise ValueError("bad MISO pin")
            self._miso = pin
        if baudrate is not None:
            self._baudrate = baudrate
        if polarity is not None:
            self._polarity = polarity
        if phase is not None:
            self._phase = phase
        if bits is not None:
            if bits != 8:
                raise ValueError("bits must be 8")
            self._bits = bits
        if firstbit is not None:
            self._firstbit = firstbit
        self._devs = None

    def deinit(self):
        pass

    def write(self, buf):
        BENCH._spi_transfer(self, buf, None)

    def read(self, nbytes, write=0x00):
        rx = bytearray(nbytes)
        BENCH._spi_transfer(self, bytes((write,)) * nbytes, rx)
        return bytes(rx)

    def readinto(self, buf, write=0x00):
        BENCH._spi_transfer(self, bytes((write,)) * len(buf), buf)

    def write_readinto(self, write_buf, read_buf):
        if len(write_buf) != len(read_buf):
            raise ValueError("buffers must be the same length")
        BENCH._spi_transfer(self, write_buf, read_buf)


class SoftSPI(SPI):
    """Bit-banged SPI on any pins: the same wires, so the same chips answer."""

    def __init__(self, baudrate=500_000, *, polarity=0, phase=0, bits=8, firstbit=1,
                 sck=None, mosi=None, miso=None):
        if sck is None or mosi is None or miso is None:
            raise ValueError("must specify all of sck/mosi/miso")
        self._id = -1
        self._sck = _pin_number(sck)
        self._mosi = _pin_number(mosi)
        self._miso = _pin_number(miso)
        self._devs = None
        self._baudrate = baudrate
        self._polarity = polarity
        self._phase = phase
        self._bits = bits
        self._firstbit = firstbit

    def init(self, baudrate=None, *, polarity=None, phase=None, bits=None, firstbit=None,
             sck=None, mosi=None, miso=None):
        for name, pin in (("_sck", sck), ("_mosi", mosi), ("_miso", miso)):
            if pin is not None:
                setattr(self, name, _pin_number(pin))
        if baudrate is not None:
            self._baudrate = baudrate
        if polarity is not None:
            self._polarity = polarity
        if phase is not None:
            self._phase = phase
        if firstbit is not None:
            self._firstbit = firstbit
        self._devs = None


class I2C:
    def __init__(self, id=0, *, scl=None, sda=None, freq=400_000, timeout=50_000):
        if id not in (0, 1):
            raise ValueError(f"I2C({id}) doesn't exist")
        self._id = id
        self._sda, self._scl = _I2C_DEFAULT_PINS[id]
        if scl is not None:
            pin = _pin_number(scl)
            if not (isinstance(pin, int) and (pin // 2) % 2 == id and pin % 2 == 1):
                raise ValueError("bad SCL pin")
            self._scl = pin
        if sda is not None:
            pin = _pin_number(sda)
            if not (isinstance(pin, int) and (pin // 2) % 2 == id and pin % 2 == 0):
                raise ValueError("bad SDA pin")
            self._sda = pin
        self._freq = freq
        self._timeout_us = timeout

    def _dev(self, addr, zero_length=False):
        dev = BENCH._i2c_find(self, addr)
        if dev is None:
            BENCH.error("i2c_nak")
            # rp2: hardware transfers report a NAK as EIO; zero-length writes go through
            # the soft-I2C path, which reports ENODEV.
            raise OSError(errno.ENODEV if zero_length else errno.EIO)
        return dev

    def scan(self):
        found = []
        for addr in range(0x08, 0x78):
            for d in BENCH._i2c:
                if d.addr == addr and d.sda == self._sda and d.scl == self._scl:
                    if addr not in BENCH.i2c_nak_remaining:
                        found.append(addr)
                    break
        return found

    def writeto(self, addr, buf, stop=True):
        dev = self._dev(addr, zero_length=len(buf) == 0)
        if len(buf) == 0:
            return 0
        return dev.model.i2c_write(bytes(buf))

    def writevto(self, addr, vector, stop=True):
        data = b"".join(bytes(v) for v in vector)
        return self.writeto(addr, data, stop)

    def readfrom(self, addr, nbytes, stop=True):
        dev = self._dev(addr)
        return bytes(dev.model.i2c_read(nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        dev = self._dev(addr)
        data = dev.model.i2c_read(len(buf))
        buf[: len(data)] = data

    def _memaddr(self, memaddr, addrsize):
        n = addrsize // 8
        return bytes((memaddr >> (8 * (n - 1 - i))) & 0xFF for i in range(n))

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        dev = self._dev(addr)
        dev.model.i2c_write(self._memaddr(memaddr, addrsize))
        return bytes(dev.model.i2c_read(nbytes))

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        dev = self._dev(addr)
        dev.model.i2c_write(self._memaddr(memaddr, addrsize))
        data = dev.model.i2c_read(len(buf))
        buf[: len(data)] = data

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        dev = self._dev(addr)
        dev.model.i2c_write(self._memaddr(memaddr, addrsize) + bytes(buf))


class SoftI2C(I2C):
    def __init__(self, scl, sda, *, freq=400_000, timeout=50_000):
        self._id = -1
        self._scl = _pin_number(scl)
        self._sda = _pin_number(sda)
        self._freq = freq
        self._timeout_us = timeout

    def writeto(self, addr, buf, stop=True):
        dev = BENCH._i2c_find(self, addr)
        if dev is None:
            BENCH.error("i2c_nak")
            raise OSError(errno.ENODEV)  # soft I2C reports every NAK as ENODEV
        return dev.model.i2c_write(bytes(buf)) if len(buf) else 0


class UART:
    INV_TX = 1
    INV_RX = 2
    RTS = 1
    CTS = 2

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, *, tx=None,
                 rx=None, txbuf=256, rxbuf=256, timeout=0, timeout_char=1, invert=0,
                 flow=0):
        if id not in (0, 1):
            raise ValueError(f"UART({id}) doesn't exist")
        self._id = id
        self._tx, self._rx = _UART_DEFAULT_PINS[id]
        self._rxq = bytearray()
        self.init(baudrate, bits, parity, stop, tx=tx, rx=rx, timeout=timeout)

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, *, tx=None, rx=None,
             timeout=0, **_kw):
        if tx is not None:
            pin = _pin_number(tx)
            if not (isinstance(pin, int) and ((pin + 4) // 8) % 2 == self._id and pin % 4 == 0):
                raise ValueError("bad TX pin")
            self._tx = pin
        if rx is not None:
            pin = _pin_number(rx)
            if not (isinstance(pin, int) and ((pin + 4) // 8) % 2 == self._id and pin % 4 == 1):
                raise ValueError("bad RX pin")
            self._rx = pin
        self._baudrate = baudrate
        self._bits = bits
        self._parity = parity
        self._stop = stop
        self._timeout_ms = timeout

    def deinit(self):
        self._rxq = bytearray()

    def write(self, buf):
        data = bytes(buf)
        dev = BENCH._uart_find(self)
        if dev is None:
            return len(data)  # nobody listens; the bytes go out anyway
        if dev.single_wire:
            self._rxq.extend(data)  # the host hears itself on the shared wire
        lo, hi = getattr(dev.model, "UART_BAUD_RANGE", (0, 1 << 30))
        if not lo <= self._baudrate <= hi or self._bits != 8 or self._parity is not None:
            BENCH.error("uart_format")
            return len(data)
        if hasattr(dev.model, "uart_baud"):
            dev.model.uart_baud = self._baudrate
        reply = dev.model.uart_rx(data)
        if reply:
            self._rxq.extend(reply)
        return len(data)

    def any(self):
        return len(self._rxq)

    def read(self, nbytes=None):
        if not self._rxq:
            return None
        if nbytes is None or nbytes >= len(self._rxq):
            out = bytes(self._rxq)
            self._rxq = bytearray()
        else:
            out = bytes(self._rxq[:nbytes])
            self._rxq = self._rxq[nbytes:]
        return out

    def readinto(self, buf, nbytes=None):
        n = len(buf) if nbytes is None else nbytes
        data = self.read(n)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        i = self._rxq.find(b"\n")
        return self.read(None if i < 0 else i + 1)

    def flush(self):
        pass

    def txdone(self):
        return True


# ---------------------------------------------------------------------------------------
# PWM, ADC, timers, watchdog, misc
# ---------------------------------------------------------------------------------------
class PWM:
    def __init__(self, dest, *, freq=None, duty_u16=None, duty_ns=None, invert=False):
        self._pid = _pin_number(dest)
        st = BENCH.pin_state(self._pid)
        st.mode = _MODE_ALT
        self._freq = 0
        self._duty = 0
        self._invert = bool(invert)
        self._active = True
        if freq is not None:
            self._freq = int(freq)
        if duty_u16 is not None:
            self._duty = int(duty_u16)
        if duty_ns is not None:
            self.duty_ns(duty_ns)
        self._notify()

    def init(self, *, freq=None, duty_u16=None, duty_ns=None, invert=None):
        self._active = True
        if freq is not None:
            self._freq = int(freq)
        if duty_u16 is not None:
            self._duty = int(duty_u16)
        if invert is not None:
            self._invert = bool(invert)
        if duty_ns is not None:
            self.duty_ns(duty_ns)
        self._notify()

    def _notify(self):
        duty = 65535 - self._duty if self._invert else self._duty
        BENCH._pwm_changed(self._pid, self._freq, duty, self._active)

    def freq(self, value=None):
        if value is None:
            return self._freq
        # RP2350 PWM: 16-bit counter and 8.4 divider -> about clk/(65536*256) .. clk/2.
        if not BENCH.freq_hz / (65536 * 256) <= value <= BENCH.freq_hz / 2:
            raise ValueError("freq out of range")
        self._freq = int(value)
        self._notify()
        return None

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        if not 0 <= value <= 65535:
            raise ValueError("duty_u16 out of range")
        self._duty = int(value)
        self._notify()
        return None

    def duty_ns(self, value=None):
        period_ns = _NS_PER_S // self._freq if self._freq else 0
        if value is None:
            return self._duty * period_ns // 65535 if period_ns else 0
        self._duty = min(65535, value * 65535 // period_ns) if period_ns else 0
        self._notify()
        return None

    def deinit(self):
        self._active = False
        self._notify()


class ADC:
    CORE_TEMP = 4

    def __init__(self, pin):
        self._ch = pin if isinstance(pin, int) and pin <= 4 else _pin_number(pin)

    def read_u16(self):
        # 12-bit converter scaled to 16 bits, 3.3 V reference.
        v = BENCH.adc_volts.get(self._ch, 0.0)
        code = int(max(0.0, min(3.3, v)) / 3.3 * 4095 + 0.5)
        return (code << 4) | (code >> 8)


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, *, mode=1, period=-1, freq=-1, tick_hz=1000, callback=None,
                 hard=True):
        self._id = id
        self._next_ns = None
        self._period_ns = 0
        self._mode = mode
        self._callback = None
        self.fired = 0
        if callback is not None or period != -1 or freq != -1:
            self.init(mode=mode, period=period, freq=freq, tick_hz=tick_hz,
                      callback=callback, hard=hard)

    def init(self, *, mode=1, period=-1, freq=-1, tick_hz=1000, callback=None, hard=True):
        if freq != -1 and freq is not None:
            period_ns = int(_NS_PER_S / freq)
        elif period != -1:
            period_ns = int(period * _NS_PER_S // tick_hz)
        else:
            raise ValueError("need period or freq")
        if period_ns <= 0:
            raise ValueError("period too short")
        self._period_ns = period_ns
        self._mode = mode
        self._callback = callback
        self._next_ns = BENCH.now_ns + period_ns
        BENCH.add_clocked(self)

    def deinit(self):
        self._next_ns = None
        BENCH.remove_clocked(self)

    def next_event_ns(self):
        return self._next_ns

    def on_event(self, now_ns):
        if self._mode == Timer.PERIODIC:
            self._next_ns += self._period_ns
        else:
            self._next_ns = None
            BENCH.remove_clocked(self)
        self.fired += 1
        if self._callback is not None:
            self._callback(self)


class WDT:
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError(f"WDT({id}) doesn't exist")
        if timeout > 16777:
            raise ValueError("timeout exceeds 16777")
        BENCH.wdt_start(timeout)

    def feed(self):
        BENCH.wdt_feed()


def reset():
    BENCH._reset("reset")


def soft_reset():
    BENCH._reset("soft_reset")


def reset_cause():
    return BENCH.last_reset_cause


def unique_id():
    return BENCH.unique_id


def freq(hz=None):
    if hz is None:
        return BENCH.freq_hz
    BENCH.freq_hz = int(hz)
    return None


def idle():
    """Wait for the next event (an interrupt on the board); at most one 1 ms tick."""
    if BENCH._advancing:
        return
    nxt = BENCH.next_event_ns()
    step = 1_000_000
    if nxt is not None and nxt - BENCH.now_ns < step:
        step = max(0, nxt - BENCH.now_ns)
    BENCH.advance_ns(step)


def lightsleep(time_ms=None):
    if time_ms is None:
        idle()
    else:
        BENCH.advance_ms(time_ms)


def deepsleep(time_ms=None):
    BENCH._reset("deepsleep")


def disable_irq():
    state = BENCH._irq_enabled
    BENCH._irq_enabled = False
    return state


def enable_irq(state=True):
    if state:
        BENCH._enable_irq()
