"""``rp2`` stand-in for the HIL bench: PIO assembler, state machines, gate waveforms.

``asm_pio`` assembles a program exactly as the MicroPython ``rp2`` module does (same
instruction encodings, same ``[data, -1, -1, execctrl, shiftctrl, out_init, set_init,
sideset_init]`` program list), so the firmware's PIO code runs unmodified. A
``StateMachine`` then *executes* the program (RP2350 datasheet §11.4: JMP, WAIT, IN, OUT,
PUSH, PULL, MOV, IRQ, SET, side-set, delays, wrap, autopull/autopush, FIFOs) on a cycle
counter tied to the bench's virtual clock, and records every level change of the pins it
drives. Two accelerations keep MHz programs cheap: a ``jmp x--``/``y--`` onto itself is
collapsed into one step, and once the machine state seen at a pin edge repeats, the rest
is a periodic pattern -- nothing more is simulated until the firmware touches the machine
again (``put``, ``exec``, ``active``, ``restart``).

For the bench (the cell model applies the gate to the cell current block by block):
``sm.describe(pin)`` (period, on/off durations, pulses so far, halted), ``sm.duty(pin,
t0_ns, t1_ns)``, ``sm.edges(pin, t0_ns, t1_ns, limit)``, ``sm.level_at(pin, t_ns)`` and
``machine.BENCH.pio_pins`` (pin -> state machine).

Not modelled: ``mov exec``/``out exec``, WAIT on IRQ flags set by other machines, program
offsets in instruction memory (jumps are program-relative), GPIO input sampling delay.
"""

from array import array

from machine import BENCH, Pin

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_PROG_DATA = const(0)
_PROG_EXECCTRL = const(3)
_PROG_SHIFTCTRL = const(4)
_PROG_OUT_PINS = const(5)
_PROG_SET_PINS = const(6)
_PROG_SIDESET_PINS = const(7)
_M32 = const(0xFFFFFFFF)
SIM_BUDGET = 200_000  # instructions per simulation run before giving up


class PIO:
    IN_LOW = 0
    IN_HIGH = 1
    OUT_LOW = 2
    OUT_HIGH = 3
    SHIFT_LEFT = 0
    SHIFT_RIGHT = 1
    JOIN_NONE = 0
    JOIN_TX = 1
    JOIN_RX = 2
    IRQ_SM0 = 0x100
    IRQ_SM1 = 0x200
    IRQ_SM2 = 0x400
    IRQ_SM3 = 0x800

    def __init__(self, id):
        if id not in (0, 1, 2):
            raise ValueError("invalid PIO")
        self._id = id
        self.programs = []

    def add_program(self, program):
        if len(program[_PROG_DATA]) > 32:
            raise ValueError("program too long")
        self.programs.append(program)

    def remove_program(self, program=None):
        if program is None:
            self.programs = []
        elif program in self.programs:
            self.programs.remove(program)

    def state_machine(self, id, program=None, *args, **kw):
        sm = StateMachine(self._id * 4 + id)
        if program is not None:
            sm.init(program, *args, **kw)
        return sm

    def irq(self, handler=None, trigger=0, hard=False):
        return None


class PIOASMError(Exception):
    pass


class PIOASMEmit:
    def __init__(self, *, out_init=None, set_init=None, sideset_init=None, side_pindir=False,
                 in_shiftdir=0, out_shiftdir=0, autopush=False, autopull=False,
                 push_thresh=32, pull_thresh=32, fifo_join=0):
        self.labels = {}
        execctrl = side_pindir << 29
        shiftctrl = (fifo_join << 30 | (pull_thresh & 0x1F) << 25 | (push_thresh & 0x1F) << 20
                     | out_shiftdir << 19 | in_shiftdir << 18 | autopull << 17 | autopush << 16)
        self.prog = [array("H"), -1, -1, execctrl, shiftctrl, out_init, set_init, sideset_init]
        self.wrap_used = False
        if sideset_init is None:
            self.sideset_count = 0
        elif isinstance(sideset_init, int):
            self.sideset_count = 1
        else:
            self.sideset_count = len(sideset_init)

    def start_pass(self, pass_):
        if pass_ == 1:
            if not self.wrap_used and self.num_instr:
                self.wrap()
            self.delay_max = 31
            if self.sideset_count:
                self.sideset_opt = self.num_sideset != self.num_instr
                if self.sideset_opt:
                    self.prog[_PROG_EXECCTRL] |= 1 << 30
                    self.sideset_count += 1
                self.delay_max >>= self.sideset_count
        self.pass_ = pass_
        self.num_instr = 0
        self.num_sideset = 0

    def __getitem__(self, key):
        return self.delay(key)

    def delay(self, delay):
        if self.pass_ > 0:
            if delay > self.delay_max:
                raise PIOASMError("delay too large")
            self.prog[_PROG_DATA][-1] |= delay << 8
        return self

    def side(self, value):
        self.num_sideset += 1
        if self.pass_ > 0:
            if self.sideset_count == 0:
                raise PIOASMError("no sideset")
            if value >= (1 << self.sideset_count):
                raise PIOASMError("sideset too large")
            set_bit = 13 - self.sideset_count
            self.prog[_PROG_DATA][-1] |= self.sideset_opt << 12 | value << set_bit
        return self

    def wrap_target(self):
        self.prog[_PROG_EXECCTRL] |= self.num_instr << 7

    def wrap(self):
        if not self.num_instr:
            raise PIOASMError("wrap with no instructions")
        self.prog[_PROG_EXECCTRL] |= (self.num_instr - 1) << 12
        self.wrap_used = True

    def label(self, label):
        if self.pass_ == 0:
            if label in self.labels:
                raise PIOASMError(f"duplicate label {label}")
            self.labels[label] = self.num_instr

    def word(self, instr, label=None):
        self.num_instr += 1
        if self.pass_ > 0:
            if label is None:
                label = 0
            else:
                if label not in self.labels:
                    raise PIOASMError(f"unknown label {label}")
                label = self.labels[label]
            self.prog[_PROG_DATA].append(instr | label)
        return self

    def nop(self):
        return self.word(0xA042)

    def jmp(self, cond, label=None):
        if label is None:
            label = cond
            cond = 0
        return self.word(0x0000 | cond << 5, label)

    def wait(self, polarity, src, index):
        if src == 6:
            src = 1
        elif src != 0:
            src = 2
        return self.word(0x2000 | polarity << 7 | src << 5 | index)

    def in_(self, src, data):
        if not 0 < data <= 32:
            raise PIOASMError(f"invalid bit count {data}")
        return self.word(0x4000 | src << 5 | data & 0x1F)

    def out(self, dest, data):
        if dest == 8:
            dest = 7
        if not 0 < data <= 32:
            raise PIOASMError(f"invalid bit count {data}")
        return self.word(0x6000 | dest << 5 | data & 0x1F)

    def push(self, value=0, value2=0):
        value |= value2
        if not value & 1:
            value |= 0x20
        return self.word(0x8000 | (value & 0x60))

    def pull(self, value=0, value2=0):
        value |= value2
        if not value & 1:
            value |= 0x20
        return self.word(0x8080 | (value & 0x60))

    def mov(self, dest, src):
        if dest == 8:
            dest = 4
        return self.word(0xA000 | dest << 5 | src)

    def irq(self, mod, index=None):
        if index is None:
            index = mod
            mod = 0
        return self.word(0xC000 | (mod & 0x60) | index)

    def set(self, dest, data):
        return self.word(0xE000 | dest << 5 | data)


_pio_funcs = {
    "gpio": 0, "pins": 0, "x": 1, "y": 2, "null": 3, "pindirs": 4, "pc": 5, "status": 5,
    "isr": 6, "osr": 7, "exec": 8,
    "invert": lambda x: x | 0x08, "reverse": lambda x: x | 0x10,
    "not_x": 1, "x_dec": 2, "not_y": 3, "y_dec": 4, "x_not_y": 5, "pin": 6, "not_osre": 7,
    "noblock": 0x01, "block": 0x21, "iffull": 0x40, "ifempty": 0x40, "clear": 0x40,
    "rel": lambda x: x | 0x10,
}
_pio_directives = ("wrap_target", "wrap", "label")
_pio_instructions = ("word", "nop", "jmp", "wait", "in_", "out", "push", "pull", "mov", "irq",
                     "set")


def asm_pio(**kw):
    emit = PIOASMEmit(**kw)

    def dec(f):
        gl = f.__globals__
        old_gl = gl.copy()
        gl.clear()
        gl.update(_pio_funcs)
        for name in _pio_directives:
            gl[name] = getattr(emit, name)
        for name in _pio_instructions:
            gl[name] = getattr(emit, name)
        try:
            emit.start_pass(0)
            f()
            emit.start_pass(1)
            f()
        finally:
            gl.clear()
            gl.update(old_gl)
        return emit.prog

    return dec


def asm_pio_encode(instr, sideset_count, sideset_opt=False):
    emit = PIOASMEmit()
    emit.sideset_count = sideset_count
    emit.sideset_opt = sideset_opt != 0
    emit.delay_max = 31 >> (emit.sideset_count + emit.sideset_opt)
    emit.pass_ = 1
    emit.num_instr = 0
    emit.num_sideset = 0
    gl = dict(_pio_funcs)
    for name in _pio_instructions:
        gl[name] = getattr(emit, name)
    gl["jmp"] = None
    exec(instr, gl)
    if len(emit.prog[_PROG_DATA]) != 1:
        raise PIOASMError("expecting exactly 1 instruction")
    return emit.prog[_PROG_DATA][0]


def bootsel_button():
    return 0


def _pin_list(base, init):
    if base is None:
        return []
    pid = base._st.pid if isinstance(base, Pin) else BENCH.pin_state(base).pid
    n = 0 if init is None else (1 if isinstance(init, int) else len(init))
    return [pid + i for i in range(n)] if isinstance(pid, int) else [pid]


def _init_levels(pins, init):
    if init is None:
        return {}
    inits = (init,) if isinstance(init, int) else tuple(init)
    out = {}
    for i, p in enumerate(pins):
        if i < len(inits):
            out[p] = 1 if inits[i] in (PIO.OUT_HIGH, PIO.IN_HIGH) else 0
    return out


class _Segment:
    """A stretch of the recorded waveform: explicit edges, or a repeating pattern."""

    __slots__ = ("dx", "edges", "end", "levels0", "limit", "period", "start", "x0")

    def __init__(self, start, levels0, period=0):
        self.start = start
        self.end = None
        self.levels0 = dict(levels0)
        self.period = period
        self.edges = {}  # pin -> [(cycle (absolute, or offset for periodic), level)]
        # A counted loop (X falls by dx per period from x0 at start): periodic only up
        # to ``limit``, a couple of periods before the counter runs out.
        self.x0 = 0
        self.dx = 0
        self.limit = None


class StateMachine:
    def __init__(self, id, program=None, freq=-1, **kw):
        if not 0 <= id < 12:
            raise ValueError("invalid StateMachine")
        self._id = id
        self._prog = None
        self._active = False
        self.freq_hz = 0
        self.words_put = []
        self.overrun = False
        if program is not None:
            self.init(program, freq, **kw)

    # -- configuration -------------------------------------------------------------------
    def init(self, program, freq=-1, *, in_base=None, out_base=None, set_base=None,
             jmp_pin=None, sideset_base=None, in_shiftdir=None, out_shiftdir=None,
             push_thresh=None, pull_thresh=None):
        sysclk = BENCH.freq_hz
        if freq == -1 or freq is None:
            freq = sysclk
        if not sysclk / 65536 <= freq <= sysclk:
            raise ValueError("freq out of range")
        self.freq_hz = int(freq)
        self._prog = program
        self._instr = list(program[_PROG_DATA])
        execctrl = program[_PROG_EXECCTRL]
        shiftctrl = program[_PROG_SHIFTCTRL]
        self._wrap_target = (execctrl >> 7) & 0x1F
        self._wrap_top = (execctrl >> 12) & 0x1F
        ss_init = program[_PROG_SIDESET_PINS]
        self._ss_count = 0 if ss_init is None else (1 if isinstance(ss_init, int) else len(ss_init))
        self._ss_opt = (execctrl >> 30) & 1
        self._ss_bits = self._ss_count + self._ss_opt
        self._out_right = (shiftctrl >> 19) & 1 if out_shiftdir is None else out_shiftdir
        self._in_right = (shiftctrl >> 18) & 1 if in_shiftdir is None else in_shiftdir
        self._autopull = (shiftctrl >> 17) & 1
        self._autopush = (shiftctrl >> 16) & 1
        pt = (shiftctrl >> 25) & 0x1F if pull_thresh is None else pull_thresh & 0x1F
        self._pull_thresh = pt or 32
        ph = (shiftctrl >> 20) & 0x1F if push_thresh is None else push_thresh & 0x1F
        self._push_thresh = ph or 32
        join = (shiftctrl >> 30) & 3
        self._tx_depth = 8 if join == PIO.JOIN_TX else (0 if join == PIO.JOIN_RX else 4)
        self._rx_depth = 8 if join == PIO.JOIN_RX else (0 if join == PIO.JOIN_TX else 4)
        self._set_pins = _pin_list(set_base, program[_PROG_SET_PINS])
        self._out_pins = _pin_list(out_base, program[_PROG_OUT_PINS])
        self._ss_pins = _pin_list(sideset_base, ss_init)
        self._in_base = None if in_base is None else BENCH.pin_state(in_base).pid
        self._jmp_pin = None if jmp_pin is None else BENCH.pin_state(jmp_pin).pid
        levels = {}
        for pins, init in ((self._set_pins, program[_PROG_SET_PINS]),
                           (self._out_pins, program[_PROG_OUT_PINS]),
                           (self._ss_pins, ss_init)):
            levels.update(_init_levels(pins, init))
        for p in self._set_pins + self._out_pins + self._ss_pins:
            levels.setdefault(p, 0)
            BENCH.pio_pins[p] = self
        self._pins = levels
        self._reset_core()
        self._t0_ns = BENCH.now_ns
        self._cycle = 0
        self._segments = [_Segment(0, levels)]
        self._forgotten_rises = {}  # pin -> rising edges in segments forgotten
        self._snapshots = {}
        self.halted = None
        self._active = False

    def _reset_core(self):
        self._pc = 0
        self._x = 0
        self._y = 0
        self._isr = 0
        self._isr_count = 0
        self._osr = 0
        self._osr_count = 32  # empty
        self._tx = []
        self._rx = []
        self._irq_flags = 0

    # -- time mapping ----------------------------------------------------------------------
    def _cycle_at(self, t_ns):
        return (t_ns - self._t0_ns) * self.freq_hz // 1_000_000_000

    def _ns_at(self, cycle):
        return self._t0_ns + cycle * 1_000_000_000 // self.freq_hz

    # -- firmware API ------------------------------------------------------------------------
    def active(self, value=None):
        if value is None:
            return 1 if self._active else 0
        if self._prog is None:
            raise ValueError("StateMachine not initialised")
        now = self._cycle_at(BENCH.now_ns)
        if value and not self._active:
            self._cycle = max(self._cycle, now)
            self._close_segment(self._cycle)
            self._segments.append(_Segment(self._cycle, self._pins))
            self._snapshots = {}
            self._active = True
            self._run_until(now)
        elif not value and self._active:
            self._run_until(now)
            self._materialise(now)
            self._close_segment(now)
            self._segments.append(_Segment(now, self._pins))
            self._active = False
        return None

    def restart(self):
        self._sync()
        self._materialise(self._cycle_at(BENCH.now_ns))
        self._pc = 0
        self._isr_count = 0
        self._osr_count = 32
        self.halted = None

    def put(self, value, shift=0):
        words = [value] if isinstance(value, int) else list(value)
        for w in words:
            self._sync()
            if len(self._tx) >= self._tx_depth:
                raise RuntimeError("PIO TX FIFO full: put() would block (virtual time)")
            self._materialise(self._cycle_at(BENCH.now_ns))
            self._tx.append((w >> shift) & _M32)
            self.words_put.append(w)
            if self.halted == "pull":
                self.halted = None
            self._run_until(self._cycle_at(BENCH.now_ns))

    def get(self, buf=None, shift=0):
        self._sync()
        if buf is None:
            if not self._rx:
                raise RuntimeError("PIO RX FIFO empty: get() would block (virtual time)")
            return self._rx.pop(0) >> shift
        for i in range(len(buf)):
            buf[i] = self.get(None, shift)
        return None

    def exec(self, instr):
        self._sync()
        self._materialise(self._cycle_at(BENCH.now_ns))
        word = asm_pio_encode(instr, self._ss_count, self._ss_opt) if isinstance(instr, str) \
            else instr
        self.halted = None
        self._execute(word, immediate=True)

    def tx_fifo(self):
        self._sync()
        return len(self._tx)

    def rx_fifo(self):
        self._sync()
        return len(self._rx)

    def irq(self, handler=None, trigger=0, hard=False):
        self._irq_handler = handler
        return None

    # -- bench API ------------------------------------------------------------------------
    def _sync(self):
        if self._active and self._prog is not None:
            self._run_until(self._cycle_at(BENCH.now_ns))

    def level_at(self, pin, t_ns):
        self._sync()
        return self._level_at_cycle(pin, self._cycle_at(t_ns))

    def duty(self, pin, t0_ns, t1_ns):
        """Fraction of [t0_ns, t1_ns) the pin was high (times up to BENCH.now_ns)."""
        self._sync()
        c0 = self._cycle_at(t0_ns)
        c1 = self._cycle_at(t1_ns)
        if c1 <= c0:
            return float(self._level_at_cycle(pin, c0))
        return self._high_cycles(pin, c0, c1) / (c1 - c0)

    def edges(self, pin, t0_ns, t1_ns, limit=10_000):
        """[(t_ns, level)] changes of ``pin`` in [t0_ns, t1_ns); None if more than limit."""
        self._sync()
        c0 = self._cycle_at(t0_ns)
        c1 = self._cycle_at(t1_ns)
        out = []
        for seg in self._segments:
            s_end = seg.end if seg.end is not None else c1
            lo = max(c0, seg.start)
            hi = min(c1, s_end)
            if lo >= hi:
                continue
            evs = seg.edges.get(pin, ())
            if seg.period:
                if evs and (hi - lo) // seg.period * len(evs) > limit:
                    return None
                k = (lo - seg.start) // seg.period
                while True:
                    base = seg.start + k * seg.period
                    if base >= hi:
                        break
                    for off, lvl in evs:
                        c = base + off
                        if lo <= c < hi:
                            out.append((self._ns_at(c), lvl))
                    k += 1
            else:
                for c, lvl in evs:
                    if lo <= c < hi:
                        out.append((self._ns_at(c), lvl))
            if len(out) > limit:
                return None
        return out

    def describe(self, pin):
        """The gate waveform as the bench applies it to the cell current."""
        self._sync()
        seg = self._segments[-1]
        info = {
            "active": self._active,
            "freq_hz": self.freq_hz,
            "level": self._pins.get(pin, 0),
            "periodic": bool(seg.period),
            "period_s": None,
            "high_s": None,
            "low_s": None,
            "pulses": self._rising_edges(pin, self._cycle_at(BENCH.now_ns)),
            "halted": self.halted,
            "words_put": len(self.words_put),
        }
        if seg.period:
            high = self._high_in_pattern(seg, pin)
            info["period_s"] = seg.period / self.freq_hz
            info["high_s"] = high / self.freq_hz
            info["low_s"] = (seg.period - high) / self.freq_hz
        return info

    # -- waveform bookkeeping ----------------------------------------------------------------
    def _close_segment(self, cycle):
        seg = self._segments[-1]
        if seg.end is None:
            seg.end = max(cycle, seg.start)

    def _materialise(self, cycle):
        """Leave a periodic stretch at the last repetition <= cycle; simulate onwards."""
        seg = self._segments[-1]
        if not seg.period or seg.end is not None:
            return
        k = max(0, (cycle - seg.start) // seg.period)
        restart = seg.start + k * seg.period
        seg.end = restart
        self._pins = dict(seg.levels0)
        if seg.dx:
            self._x = (seg.x0 - k * seg.dx) & 0xFFFFFFFF
        self._cycle = restart
        self._segments.append(_Segment(restart, self._pins))
        self._snapshots = {}
        self._run_until(cycle)

    def _level_at_cycle(self, pin, cycle):
        level = None
        for seg in self._segments:
            if cycle < seg.start:
                break
            level = seg.levels0.get(pin, 0)
            evs = seg.edges.get(pin, ())
            if seg.period:
                off = (cycle - seg.start) % seg.period
                for o, lvl in evs:
                    if o <= off:
                        level = lvl
            else:
                for c, lvl in evs:
                    if c <= cycle:
                        level = lvl
        return 0 if level is None else level

    def _high_in_pattern(self, seg, pin, upto=None):
        period = seg.period
        end = period if upto is None else upto
        level = seg.levels0.get(pin, 0)
        t = 0
        high = 0
        for off, lvl in seg.edges.get(pin, ()):
            if off >= end:
                break
            if level:
                high += off - t
            t = off
            level = lvl
        if level:
            high += end - t
        return high

    def _high_cycles(self, pin, c0, c1):
        high = 0
        for seg in self._segments:
            s_end = seg.end if seg.end is not None else max(c1, self._cycle)
            lo = max(c0, seg.start)
            hi = min(c1, s_end)
            if lo >= hi:
                continue
            if seg.period:
                high += self._high_upto(seg, pin, hi) - self._high_upto(seg, pin, lo)
            else:
                level = seg.levels0.get(pin, 0)
                t = lo
                for c, lvl in seg.edges.get(pin, ()):
                    if c <= lo:
                        level = lvl
                        continue
                    if c >= hi:
                        break
                    if level:
                        high += c - t
                    t = c
                    level = lvl
                if level:
                    high += hi - t
        return high

    def _high_upto(self, seg, pin, cycle):
        k, r = divmod(cycle - seg.start, seg.period)
        return k * self._high_in_pattern(seg, pin) + self._high_in_pattern(seg, pin, r)

    def forget_before(self, t_ns):
        """Drop the recorded waveform that ended before ``t_ns`` (bench API: the board
        calls it once a lockstep step is reported, so a run that starts and stops trains
        for hours keeps a bounded record; the pulse count carries over)."""
        c = self._cycle_at(t_ns)
        segs = self._segments
        k = 0
        while k < len(segs) - 1 and segs[k].end is not None and segs[k].end <= c:
            k += 1
        if k == 0:
            return
        for pin in self._pins:
            self._forgotten_rises[pin] = (self._forgotten_rises.get(pin, 0)
                                          + self._rises_in(segs[:k], pin, c))
        self._segments = segs[k:]

    def _rising_edges(self, pin, c1):
        return self._forgotten_rises.get(pin, 0) + self._rises_in(self._segments, pin, c1)

    def _rises_in(self, segments, pin, c1):
        n = 0
        for seg in segments:
            evs = seg.edges.get(pin, ())
            rises = [e for e in evs if e[1] == 1]
            if seg.period:
                end = seg.end if seg.end is not None else c1
                full, rem = divmod(max(0, end - seg.start), seg.period)
                n += full * len(rises) + sum(1 for o, _ in rises if o < rem)
            else:
                n += sum(1 for c, _ in rises if c < c1)
        return n

    def _set_pin(self, pin, level):
        if self._pins.get(pin) != level:
            self._pins[pin] = level
            seg = self._segments[-1]
            seg.edges.setdefault(pin, []).append((self._cycle, level))
            self._edge = True
            return True
        return False

    # -- the simulator -----------------------------------------------------------------------
    def _run_until(self, target):
        seg = self._segments[-1]
        if (self._active and not self.halted and seg.period and seg.end is None
                and seg.limit is not None and target > seg.limit):
            # The counted loop's last periods and its end are simulated exactly.
            self._materialise(seg.limit)
        if not self._active or self.halted or self._segments[-1].period:
            if not self._active or self.halted:
                self._cycle = max(self._cycle, target)
            return
        budget = SIM_BUDGET
        while self._cycle < target:
            budget -= 1
            if budget < 0:
                self.overrun = True
                BENCH.error("pio_sim_budget")
                self._cycle = target
                return
            edge = self._execute(self._instr[self._pc])
            if self.halted:
                self._cycle = max(self._cycle, target)
                return
            if edge and self._check_period():
                return

    def _check_period(self):
        # X is left out of the key: a state that repeats with X lower by dx is a counted
        # loop (the gate's pulse counter), periodic until the counter runs out.
        key = (self._pc, self._y, self._isr, self._isr_count, self._osr,
               self._osr_count, tuple(self._tx), len(self._rx), self._irq_flags,
               tuple(sorted(self._pins.items())))
        seen = self._snapshots.get(key)
        if seen is None:
            self._snapshots[key] = (self._cycle, dict(self._pins), self._x)
            return False
        start, levels, x0 = seen
        dx = (x0 - self._x) & 0xFFFFFFFF
        reps = x0 // dx if dx else 0
        if dx and reps < 8:
            # A short count (or X used as data): simulate it exactly.
            self._snapshots[key] = (self._cycle, dict(self._pins), self._x)
            return False
        seg = self._segments[-1]
        period = self._cycle - start
        pattern = {}
        for pin, evs in seg.edges.items():
            keep = [e for e in evs if e[0] < start]
            moved = [(c - start, lvl) for c, lvl in evs if c >= start]
            seg.edges[pin] = keep
            if moved:
                pattern[pin] = moved
        seg.end = start
        per = _Segment(start, levels, period)
        per.edges = pattern
        if dx:
            per.x0 = x0
            per.dx = dx
            per.limit = start + (reps - 2) * period
        self._segments.append(per)
        self._cycle = start + period
        return True

    def _side(self, instr):
        if not self._ss_bits:
            return (instr >> 8) & 0x1F
        field = (instr >> 8) & 0x1F
        dbits = 5 - self._ss_bits
        side = field >> dbits
        if not self._ss_opt or side >> (self._ss_bits - 1):
            value = side & ((1 << self._ss_count) - 1)
            for i, pin in enumerate(self._ss_pins):
                self._set_pin(pin, (value >> i) & 1)
        return field & ((1 << dbits) - 1)

    def _read_pins(self, base):
        value = 0
        if base is None:
            return 0
        for i in range(32):
            pid = base + i
            if pid >= 30:
                break
            lvl = self._pins[pid] if pid in self._pins else BENCH.level(pid)
            value |= lvl << i
        return value

    def _write_group(self, pins, value):
        edge = False
        for i, pin in enumerate(pins):
            edge |= self._set_pin(pin, (value >> i) & 1)
        return edge

    def _execute(self, instr, immediate=False):
        """Run one instruction at self._cycle; True when a pin changed."""
        self._edge = False
        delay = self._side(instr)
        op = instr >> 13
        pc = self._pc
        nxt = None  # None: advance with wrap
        cycles = 1 + delay
        if op == 0:  # JMP
            cond = (instr >> 5) & 7
            addr = instr & 0x1F
            if cond in (2, 4) and addr == pc and not immediate:
                # jmp x--/y-- onto itself: n + 1 executions, then fall through.
                n = self._x if cond == 2 else self._y
                cycles = (n + 1) * (1 + delay)
                if cond == 2:
                    self._x = _M32
                else:
                    self._y = _M32
            else:
                take = False
                if cond == 0:
                    take = True
                elif cond == 1:
                    take = self._x == 0
                elif cond == 2:
                    take = self._x != 0
                    self._x = (self._x - 1) & _M32
                elif cond == 3:
                    take = self._y == 0
                elif cond == 4:
                    take = self._y != 0
                    self._y = (self._y - 1) & _M32
                elif cond == 5:
                    take = self._x != self._y
                elif cond == 6:
                    take = self._jmp_pin is not None and BENCH.level(self._jmp_pin) == 1
                else:
                    take = self._osr_count < self._pull_thresh
                if take:
                    nxt = addr
        elif op == 1:  # WAIT
            pol = (instr >> 7) & 1
            src = (instr >> 5) & 3
            idx = instr & 0x1F
            if src == 0:
                lvl = self._pins.get(idx, BENCH.level(idx) if idx < 30 else 0)
            elif src == 1:
                pid = (self._in_base or 0) + idx
                lvl = self._pins.get(pid, BENCH.level(pid))
            else:
                lvl = (self._irq_flags >> (idx & 7)) & 1
            if lvl != pol:
                self.halted = "wait"
                return False
            if src == 2 and pol:
                self._irq_flags &= ~(1 << (idx & 7))
        elif op == 2:  # IN
            src = (instr >> 5) & 7
            n = instr & 0x1F or 32
            data = (self._read_pins(self._in_base), self._x, self._y, 0, 0, 0, self._isr,
                    self._osr)[src]
            mask = _M32 if n == 32 else (1 << n) - 1
            data &= mask
            if self._in_right:
                self._isr = ((self._isr >> n) | (data << (32 - n))) & _M32 if n < 32 else data
            else:
                self._isr = ((self._isr << n) | data) & _M32 if n < 32 else data
            self._isr_count = min(32, self._isr_count + n)
            if self._autopush and self._isr_count >= self._push_thresh:
                self._push()
        elif op == 3:  # OUT
            if self._autopull and self._osr_count >= self._pull_thresh:
                if not self._tx:
                    self.halted = "pull"
                    return False
                self._osr = self._tx.pop(0)
                self._osr_count = 0
            dest = (instr >> 5) & 7
            n = instr & 0x1F or 32
            mask = _M32 if n == 32 else (1 << n) - 1
            if self._out_right:
                data = self._osr & mask
                self._osr = self._osr >> n if n < 32 else 0
            else:
                data = (self._osr >> (32 - n)) & mask
                self._osr = (self._osr << n) & _M32 if n < 32 else 0
            self._osr_count = min(32, self._osr_count + n)
            if dest == 0:
                self._write_group(self._out_pins, data)
            elif dest == 1:
                self._x = data
            elif dest == 2:
                self._y = data
            elif dest == 5:
                nxt = data & 0x1F
            elif dest == 6:
                self._isr = data
                self._isr_count = n
            elif dest == 7:
                BENCH.error("pio_unsupported_exec")
        elif op == 4:  # PUSH / PULL
            if_flag = (instr >> 6) & 1
            block = (instr >> 5) & 1
            if instr & 0x80:  # PULL
                if not (if_flag and self._osr_count < self._pull_thresh):
                    if self._tx:
                        self._osr = self._tx.pop(0)
                        self._osr_count = 0
                    elif block:
                        self.halted = "pull"
                        return False
                    else:
                        self._osr = self._x
                        self._osr_count = 0
            elif not (if_flag and self._isr_count < self._push_thresh):
                if len(self._rx) >= self._rx_depth and block:
                    self.halted = "push"
                    return False
                self._push()
        elif op == 5:  # MOV
            dest = (instr >> 5) & 7
            mop = (instr >> 3) & 3
            src = instr & 7
            if src == 5:
                data = _M32 if not self._tx else 0  # STATUS: TX FIFO empty (default sel)
            else:
                data = (self._read_pins(self._in_base), self._x, self._y, 0, 0, 0, self._isr,
                        self._osr)[src]
            if mop == 1:
                data = ~data & _M32
            elif mop == 2:
                r = 0
                for _ in range(32):
                    r = (r << 1) | (data & 1)
                    data >>= 1
                data = r
            if dest == 0:
                self._write_group(self._out_pins, data)
            elif dest == 1:
                self._x = data
            elif dest == 2:
                self._y = data
            elif dest == 4:
                BENCH.error("pio_unsupported_exec")
            elif dest == 5:
                nxt = data & 0x1F
            elif dest == 6:
                self._isr = data
                self._isr_count = 0
            elif dest == 7:
                self._osr = data
                self._osr_count = 0
        elif op == 6:  # IRQ
            idx = instr & 7
            if (instr >> 6) & 1:
                self._irq_flags &= ~(1 << idx)
            else:
                self._irq_flags |= 1 << idx
                if (instr >> 5) & 1:
                    self.halted = "irq"
                    return False
        else:  # SET
            dest = (instr >> 5) & 7
            data = instr & 0x1F
            if dest == 0:
                self._write_group(self._set_pins, data)
            elif dest == 1:
                self._x = data
            elif dest == 2:
                self._y = data
        if not immediate:
            if nxt is None:
                nxt = self._wrap_target if pc == self._wrap_top else (pc + 1) & 0x1F
            self._pc = nxt
            self._cycle += cycles
        elif nxt is not None:
            self._pc = nxt
        return self._edge

    def _push(self):
        if len(self._rx) < self._rx_depth:
            self._rx.append(self._isr)
        self._isr = 0
        self._isr_count = 0
