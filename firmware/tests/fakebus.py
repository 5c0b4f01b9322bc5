"""Recording bus doubles for driver tests under the MicroPython unix port.

Drivers take their bus objects in the constructor, so a test hands them these doubles
instead of ``machine.SPI`` / ``I2C`` / ``Pin`` / ``PWM`` / ``UART`` / ``WDT``. Every
exchange is appended to a shared ``BusLog`` so a test can assert the exact bytes on the
wire (the way protocol tests of instrument libraries check exchanges without hardware):

    ("cs", name, level)                       chip-select pin changed
    ("spi", name, tx_bytes, rx_bytes)         one SPI transfer to the selected device
    ("i2c_w", addr, reg, data_bytes)          register write (writeto_mem)
    ("i2c_r", addr, reg, data_bytes)          register read (readfrom_mem_into)
    ("pin", name, level)                      output pin changed
    ("pwm", name, duty_u16)                   PWM duty changed
    ("uart_tx", name, bytes) / ("uart_rx", name, bytes)

Devices answer from a script (``ScriptedSpiDevice``) or a small register model
(``I2CRegisterDevice``, or a part model written in the test). Hot-path tests set
``log.enabled = False``: the doubles then allocate nothing per transfer, so a
``micropython.heap_lock()`` around the driver call proves the driver allocates nothing.
"""


class BusLog:
    def __init__(self):
        self.entries = []
        self.enabled = True

    def add(self, entry):
        if self.enabled:
            self.entries.append(entry)

    def of(self, kind, name=None):
        """Entries of one kind (and, for named kinds, one device name or address)."""
        return [e for e in self.entries if e[0] == kind and (name is None or e[1] == name)]

    def clear(self):
        self.entries = []


def _no_hook(level):
    pass


class FakePin:
    """``machine.Pin`` double. Outputs log their changes; inputs read ``level`` (or
    ``source()`` when a callable is given, e.g. a DRDY line driven by a device model)."""

    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id=None, mode=-1, pull=-1, *, value=None, log=None, name=None,
                 source=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        self.name = name if name is not None else "pin%s" % (id,)
        self.log = log
        self.source = source
        self.level = 0 if value is None else value
        self.on_change = _no_hook  # called with the new level on every change
        self.changes = 0

    def init(self, mode=-1, pull=-1, *, value=None):
        if mode != -1:
            self.mode = mode
        if pull != -1:
            self.pull = pull
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            if self.source is not None:
                return self.source()
            return self.level
        v = 1 if v else 0
        if v != self.level:
            self.level = v
            self.changes += 1
            if self.log is not None and self.log.enabled:
                self.log.add(("pin", self.name, v))
            self.on_change(v)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def high(self):
        self.value(1)

    def low(self):
        self.value(0)


class ScriptedSpiDevice:
    """Replies to each transfer with the next scripted bytes (zeros when the script is
    exhausted) and keeps every received transfer in ``received``."""

    def __init__(self, replies=()):
        self.replies = list(replies)
        self.received = []

    def select(self):
        pass

    def deselect(self):
        pass

    def transfer(self, tx, rx):
        self.received.append(bytes(tx))
        reply = self.replies.pop(0) if self.replies else b""
        if rx is not None:
            for i in range(len(rx)):
                rx[i] = reply[i] if i < len(reply) else 0


class NullSpiDevice:
    """Accepts every transfer and answers zeros without recording or allocating (for
    allocation tests of write-only parts); counts transfers."""

    def __init__(self):
        self.count = 0

    def select(self):
        pass

    def deselect(self):
        pass

    def transfer(self, tx, rx):
        self.count += 1
        if rx is not None:
            for i in range(len(rx)):
                rx[i] = 0


class FakeSPI:
    """``machine.SPI`` double with devices attached by their chip-select pin. A transfer
    goes to the device whose CS is low; with none (or two) selected it raises, because on
    a real bus that is a wiring or driver bug."""

    MSB = 0
    LSB = 1

    def __init__(self, id=0, log=None, **settings):
        self.id = id
        self.log = log if log is not None else BusLog()
        self.settings = settings
        self._devices = []
        self._selected = None
        self._names = {}
        self.transfers = 0

    def init(self, **settings):
        self.settings.update(settings)

    def attach(self, cs, device, name):
        """Route transfers to ``device`` while ``cs`` (a FakePin, active low) is low."""
        self._devices.append((cs, device))
        self._names[id(device)] = name
        cs.log = None  # the bus logs CS changes as ("cs", ...) entries
        cs.name = name

        def on_change(level, device=device, name=name):
            if self.log.enabled:
                self.log.add(("cs", name, level))
            if level == 0:
                if self._selected is not None:
                    raise OSError("two chip selects low on one SPI bus")
                self._selected = device
                device.select()
            elif self._selected is device:
                self._selected = None
                device.deselect()

        cs.on_change = on_change
        if cs.level == 0:
            raise OSError("CS of %s starts low" % name)
        return device

    def _device(self):
        dev = self._selected
        if dev is None:
            raise OSError("SPI transfer with no chip select low")
        return dev

    def write_readinto(self, wbuf, rbuf):
        dev = self._device()
        self.transfers += 1
        dev.transfer(wbuf, rbuf)
        if self.log.enabled:
            self.log.add(("spi", self._names[id(dev)], bytes(wbuf), bytes(rbuf)))

    def write(self, wbuf):
        dev = self._device()
        self.transfers += 1
        dev.transfer(wbuf, None)
        if self.log.enabled:
            self.log.add(("spi", self._names[id(dev)], bytes(wbuf), b""))

    def readinto(self, rbuf, write=0):
        tx = bytes([write]) * len(rbuf)
        self.write_readinto(tx, rbuf)

    def read(self, n, write=0):
        rbuf = bytearray(n)
        self.readinto(rbuf, write)
        return bytes(rbuf)


class I2CRegisterDevice:
    """An I2C device as 256 8-bit registers with auto-increment. Subclasses (or
    ``on_write`` / ``on_read`` callables) model side effects such as self-clearing bits."""

    def __init__(self, regs=None):
        self.regs = bytearray(256) if regs is None else regs
        self.on_write = None
        self.on_read = None

    def write(self, reg, data):
        for i in range(len(data)):
            self.regs[(reg + i) & 0xFF] = data[i]
            if self.on_write is not None:
                self.on_write((reg + i) & 0xFF, data[i])

    def read_into(self, reg, buf):
        if self.on_read is not None:
            self.on_read(reg)
        for i in range(len(buf)):
            buf[i] = self.regs[(reg + i) & 0xFF]


class FakeI2C:
    """``machine.I2C`` double: register reads/writes go to the device at that address;
    an address with no device raises ``OSError(19)`` (ENODEV) like the rp2 port."""

    def __init__(self, id=0, log=None, **settings):
        self.id = id
        self.log = log if log is not None else BusLog()
        self.settings = settings
        self.devices = {}

    def attach(self, addr, device):
        self.devices[addr] = device
        return device

    def _dev(self, addr):
        dev = self.devices.get(addr)
        if dev is None:
            raise OSError(19)
        return dev

    def scan(self):
        return sorted(self.devices)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._dev(addr).write(memaddr, buf)
        if self.log.enabled:
            self.log.add(("i2c_w", addr, memaddr, bytes(buf)))

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        self._dev(addr).read_into(memaddr, buf)
        if self.log.enabled:
            self.log.add(("i2c_r", addr, memaddr, bytes(buf)))

    def readfrom_mem(self, addr, memaddr, n, addrsize=8):
        buf = bytearray(n)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)


class FakePWM:
    """``machine.PWM`` double; duty is 0..65535 as ``duty_u16``."""

    def __init__(self, pin=None, freq=0, duty_u16=0, log=None, name="pwm"):
        self.pin = pin
        self._freq = freq
        self._duty = duty_u16
        self.log = log if log is not None else BusLog()
        self.name = name
        self.deinited = False

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f
        return None

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        if not 0 <= d <= 65535:
            raise ValueError("duty_u16 out of range")
        self._duty = d
        if self.log.enabled:
            self.log.add(("pwm", self.name, d))
        return None

    def deinit(self):
        self.deinited = True


class FakeUART:
    """``machine.UART`` double. Bytes written go to ``device.receive(data)`` whose reply
    bytes are queued for reading. With ``echo`` the written bytes are queued first, as on
    a single-wire bus where TX and RX share the line (TMC2209 PDN_UART)."""

    def __init__(self, id=0, log=None, device=None, echo=False, name="uart", **settings):
        self.id = id
        self.log = log if log is not None else BusLog()
        self.device = device
        self.echo = echo
        self.name = name
        self.settings = settings
        self.rx = bytearray()

    def write(self, buf):
        data = bytes(buf)
        self.log.add(("uart_tx", self.name, data))
        if self.echo:
            self.rx.extend(data)
        if self.device is not None:
            reply = self.device.receive(data)
            if reply:
                self.rx.extend(reply)
        return len(data)

    def any(self):
        return len(self.rx)

    def readinto(self, buf, nbytes=-1):
        n = len(buf) if nbytes < 0 else nbytes
        n = min(n, len(self.rx))
        if n == 0:
            return None  # like machine.UART on timeout with nothing read
        buf[:n] = self.rx[:n]
        self.log.add(("uart_rx", self.name, bytes(self.rx[:n])))
        self.rx = self.rx[n:]
        return n

    def read(self, n=-1):
        if not self.rx:
            return None
        n = len(self.rx) if n < 0 else min(n, len(self.rx))
        buf = bytearray(n)
        self.readinto(buf)
        return bytes(buf)


class FakeWDT:
    """``machine.WDT`` double: counts feeds; ``timeout`` as given to the constructor."""

    instances = []

    def __init__(self, id=0, timeout=5000):
        self.id = id
        self.timeout = timeout
        self.feeds = 0
        FakeWDT.instances.append(self)

    def feed(self):
        self.feeds += 1


class FakeMachine:
    """Stands in for the ``machine`` module in a board's ``build()``: the same class
    names and constructor signatures, and a record of every object built so a test can
    check the wiring (``pins`` by GPIO number, ``spis``, ``i2cs``, ``pwms``, ...)."""

    def __init__(self):
        self.log = BusLog()
        self.pins = {}
        self.spis = []
        self.i2cs = []
        self.pwms = []
        self.uarts = []
        self.wdts = []
        machine = self

        class Pin(FakePin):
            def __init__(self, id, mode=-1, pull=-1, *, value=None):
                if id in machine.pins:
                    raise ValueError("GP%d constructed twice" % id)
                FakePin.__init__(self, id, mode, pull, value=value, log=machine.log,
                                 name="GP%d" % id)
                machine.pins[id] = self

        class SPI(FakeSPI):
            def __init__(self, id, **settings):
                FakeSPI.__init__(self, id, machine.log, **settings)
                machine.spis.append(self)

        class I2C(FakeI2C):
            def __init__(self, id, **settings):
                FakeI2C.__init__(self, id, machine.log, **settings)
                machine.i2cs.append(self)

        class PWM(FakePWM):
            def __init__(self, pin, freq=0, duty_u16=0):
                FakePWM.__init__(self, pin, freq, duty_u16, machine.log, "pwm")
                machine.pwms.append(self)

        class UART(FakeUART):
            def __init__(self, id, **settings):
                FakeUART.__init__(self, id, machine.log, **settings)
                machine.uarts.append(self)

        class WDT(FakeWDT):
            def __init__(self, id=0, timeout=5000):
                FakeWDT.__init__(self, id, timeout)
                machine.wdts.append(self)

        self.Pin = Pin
        self.SPI = SPI
        self.I2C = I2C
        self.PWM = PWM
        self.UART = UART
        self.WDT = WDT


def alloc_bytes(fn, n):
    """Bytes allocated by calling ``fn()`` n times (after a collection)."""
    import gc

    gc.collect()
    before = gc.mem_alloc()
    for _ in range(n):
        fn()
    return gc.mem_alloc() - before


def runs_with_heap_locked(fn):
    """Call fn() with the heap locked: True when it completes (allocated nothing)."""
    import micropython

    micropython.heap_lock()
    try:
        fn()
    except MemoryError:
        return False
    finally:
        micropython.heap_unlock()
    return True
