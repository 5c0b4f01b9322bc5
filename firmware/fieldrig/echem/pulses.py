"""Current programs: DC, rests, pulse trains, reverse pulses, sine/multisine set-points.

Two timing paths, chosen by the length of the shortest phase:

- Hardware (PIO), for phases from tens of ns to ~10 ms: the DAC holds the "on" current
  and a PIO state machine gates the stage's enable switch (``pio_gate``), so the off
  phase is zero current (the stage disconnected). Timing is exact in state-machine
  cycles; limits below.
- Software, for phases >= SOFTWARE_MIN_PHASE_MS: the scheduler changes the DAC
  set-point (``setpoint_ma(t_ms)``). Any currents, including reverse (negative) ones.

A fast train whose off phase is not zero would need the DAC to switch at PIO speed; the
stage cannot (the DAC8551 settles in ~10 us and the SPI write costs more): refused.

PIO timing limits (f_sm = state-machine clock, the system clock with divider 1:
125 MHz on an RP2040 board, 150 MHz on the Pico 2 W's RP2350):

- resolution 1 / f_sm (8 ns at 125 MHz, 6.7 ns at 150 MHz), for on and off separately;
- on >= 3 cycles, off >= 4 cycles (the program's fixed instructions), so the fastest
  train is f_sm / 7; the analog stage, not the PIO, limits real pulses to ~1 MHz;
- on, off <= 2**32 + 2 cycles (28 s at 150 MHz); count 1 .. 2**32;
- the requested frequency and duty are rounded to whole cycles: period = round(f_sm / f),
  on = round(period * duty); the achieved values are reported.
"""

import math
from array import array

from fieldrig.echem import pio_gate

F_SM_RP2040_HZ = 125000000
F_SM_RP2350_HZ = 150000000
MIN_ON_CYCLES = pio_gate.ON_OVERHEAD
MIN_OFF_CYCLES = pio_gate.OFF_OVERHEAD
MAX_PHASE_CYCLES = 0xFFFFFFFF + 3  # y counts 0..2**32-1, plus the fixed instructions
MAX_COUNT = 0x100000000
# The scheduler runs set-point changes on a ms grid: a phase shorter than this is
# left to the PIO.
SOFTWARE_MIN_PHASE_MS = 10


class PulseError(ValueError):
    pass


def pulse_cycles(freq_hz, duty, f_sm_hz):
    """(on_cycles, off_cycles) for a train at freq_hz with duty (0 < duty < 1) on a state
    machine clocked at f_sm_hz. Raises PulseError beyond the PIO's limits."""
    if not freq_hz > 0:
        raise PulseError("freq_hz must be > 0")
    if not 0.0 < duty < 1.0:
        raise PulseError("duty must be between 0 and 1 (exclusive)")
    period = int(f_sm_hz / freq_hz + 0.5)
    if period < MIN_ON_CYCLES + MIN_OFF_CYCLES:
        raise PulseError("%g Hz is above the PIO limit f_sm/%d = %g Hz"
                         % (freq_hz, MIN_ON_CYCLES + MIN_OFF_CYCLES,
                            f_sm_hz / (MIN_ON_CYCLES + MIN_OFF_CYCLES)))
    on = int(period * duty + 0.5)
    off = period - on
    if on < MIN_ON_CYCLES:
        raise PulseError("on phase %d cycles < minimum %d (%.3g ns at %g MHz)"
                         % (on, MIN_ON_CYCLES, MIN_ON_CYCLES * 1e9 / f_sm_hz, f_sm_hz / 1e6))
    if off < MIN_OFF_CYCLES:
        raise PulseError("off phase %d cycles < minimum %d (%.3g ns at %g MHz)"
                         % (off, MIN_OFF_CYCLES, MIN_OFF_CYCLES * 1e9 / f_sm_hz,
                            f_sm_hz / 1e6))
    if on > MAX_PHASE_CYCLES or off > MAX_PHASE_CYCLES:
        raise PulseError("phase longer than the PIO counter (use software timing)")
    return on, off


def fifo_words(count, on_cycles, off_cycles):
    """The three TX FIFO words of one train (see pio_gate)."""
    if not 1 <= count <= MAX_COUNT:
        raise PulseError("count must be 1..%d" % MAX_COUNT)
    if on_cycles < MIN_ON_CYCLES or off_cycles < MIN_OFF_CYCLES:
        raise PulseError("phase below the PIO minimum")
    return (count - 1, on_cycles - MIN_ON_CYCLES, off_cycles - MIN_OFF_CYCLES)


class PulseTrain:
    """A PIO-gated train: ``on_ma`` during on, zero during off, ``count`` pulses."""

    kind = "pio_pulse_train"

    def __init__(self, on_ma, freq_hz, duty, count, f_sm_hz=F_SM_RP2350_HZ):
        self.on_ma = on_ma
        self.count = count
        self.f_sm_hz = f_sm_hz
        self.on_cycles, self.off_cycles = pulse_cycles(freq_hz, duty, f_sm_hz)
        self.words = fifo_words(count, self.on_cycles, self.off_cycles)
        period = self.on_cycles + self.off_cycles
        self.freq_hz = f_sm_hz / period
        self.duty = self.on_cycles / period
        self.duration_ms = count * period * 1000.0 / f_sm_hz

    # The same interface as SoftwareProgram: the DAC holds on_ma for the whole train
    # (the PIO does the timing by gating the stage), and the step ends with the train.
    gated = True

    def setpoint_ma(self, t_ms):
        return self.on_ma if 0 <= t_ms < self.duration_ms else 0.0

    def done(self, t_ms):
        return t_ms >= self.duration_ms

    def next_change_ms(self, t_ms):
        """ms from t_ms until the step's set-point next changes (the train's end: the
        PIO times the pulses), or None after it."""
        left = self.duration_ms - t_ms
        return left if left > 0 else None

    def mean_ma(self):
        return self.on_ma * self.duty

    def describe(self):
        return {"kind": self.kind, "on_ma": self.on_ma, "off_ma": 0.0,
                "freq_hz": self.freq_hz, "duty": self.duty, "count": self.count,
                "on_us": self.on_cycles * 1e6 / self.f_sm_hz,
                "off_us": self.off_cycles * 1e6 / self.f_sm_hz,
                "on_cycles": self.on_cycles, "off_cycles": self.off_cycles,
                "f_sm_hz": self.f_sm_hz, "fifo": list(self.words)}


# ---------------------------------------------------------------- software programs

class SoftwareProgram:
    """A set-point that is a function of time since start (ms), driven by the scheduler.
    ``segments``: (current_ma, duration_ms) repeated ``count`` times (0 = forever)."""

    kind = "software"
    gated = False

    def __init__(self, segments, count=1, kind=None):
        if not segments:
            raise PulseError("a program needs at least one segment")
        for cur, dur in segments:
            if dur <= 0:
                raise PulseError("segment durations must be > 0 ms")
        self.segments = segments
        self.count = count
        if kind is not None:
            self.kind = kind
        self.period_ms = 0
        for _, dur in segments:
            self.period_ms += dur

    def done(self, t_ms):
        return self.count > 0 and t_ms >= self.count * self.period_ms

    def next_change_ms(self, t_ms):
        """ms from t_ms until the set-point next changes (a segment boundary or the
        end), or None when it never does (one segment repeated forever: DC, rest)."""
        if t_ms < 0:
            return -t_ms
        if self.done(t_ms) or (self.count == 0 and len(self.segments) == 1):
            return None
        r = t_ms % self.period_ms
        edge = 0
        for _, dur in self.segments:
            edge += dur
            if r < edge:
                return edge - r
        return self.period_ms - r  # not reached: r < period

    def setpoint_ma(self, t_ms):
        """Current at t_ms after the start; 0 once done."""
        if t_ms < 0 or self.done(t_ms):
            return 0.0
        r = t_ms % self.period_ms
        for cur, dur in self.segments:
            if r < dur:
                return cur
            r -= dur
        return 0.0  # not reached: r < period

    def mean_ma(self):
        q = 0.0
        for cur, dur in self.segments:
            q += cur * dur
        return q / self.period_ms

    def describe(self):
        return {"kind": self.kind, "segments": [[c, d] for c, d in self.segments],
                "count": self.count}


def dc(current_ma):
    """Constant current until the step ends."""
    return SoftwareProgram(((current_ma, 1000),), count=0, kind="dc")


def rest():
    """Zero current (the galvanostat stays connected at 0 mA, so V is the OCV)."""
    return SoftwareProgram(((0.0, 1000),), count=0, kind="rest")


def reverse_pulses(forward_ma, forward_ms, reverse_ma, reverse_ms, count=0, rest_ms=0):
    """Forward / reverse (opposite sign) pulses, optionally with a rest after each."""
    if forward_ms < SOFTWARE_MIN_PHASE_MS or reverse_ms < SOFTWARE_MIN_PHASE_MS:
        raise PulseError("software phases must be >= %d ms" % SOFTWARE_MIN_PHASE_MS)
    if forward_ma * reverse_ma > 0:
        raise PulseError("reverse current must have the opposite sign")
    seg = [(forward_ma, forward_ms), (reverse_ma, reverse_ms)]
    if rest_ms:
        seg.append((0.0, rest_ms))
    return SoftwareProgram(tuple(seg), count, kind="reverse_pulses")


def pulse_program(on_ma, off_ma, freq_hz, duty, count=0, f_sm_hz=F_SM_RP2350_HZ):
    """Pulse train on the right timing path: software when both phases are >=
    SOFTWARE_MIN_PHASE_MS, the PIO when off_ma == 0 and a phase is shorter; PulseError
    for a fast train with a non-zero off current. count 0 = until the step ends (the
    PIO then gets MAX_COUNT pulses and is stopped with the step)."""
    if not freq_hz > 0 or not 0.0 < duty < 1.0:
        raise PulseError("need freq_hz > 0 and 0 < duty < 1")
    period_ms = 1000.0 / freq_hz
    on_ms = period_ms * duty
    off_ms = period_ms - on_ms
    if on_ms >= SOFTWARE_MIN_PHASE_MS and off_ms >= SOFTWARE_MIN_PHASE_MS:
        return SoftwareProgram(((on_ma, int(on_ms + 0.5)), (off_ma, int(off_ms + 0.5))),
                               count, kind="pulses")
    if off_ma != 0:
        raise PulseError("a phase below %d ms needs off_ma = 0 (PIO gating)"
                         % SOFTWARE_MIN_PHASE_MS)
    return PulseTrain(on_ma, freq_hz, duty, count if count else MAX_COUNT, f_sm_hz)


# ---------------------------------------------------------------- DAC set-point tables

def setpoint_table(dc_ma, amp_ma, bins, phases, n, out=None):
    """DAC set-points (mA) for one block of n samples: dc + a (multi)sine on ``bins``
    scaled so that its peak is exactly amp_ma (the stage's range must hold
    |dc| + amp_ma). Played at the ADC block rate, the tones are coherent with the
    impedance estimator's blocks. Returns array('f')."""
    from fieldrig.echem.impedance import multisine

    tab = multisine(bins, phases, n, out=out)
    peak = 0.0
    for v in tab:
        a = v if v >= 0 else -v
        if a > peak:
            peak = a
    g = amp_ma / peak if peak > 0 else 0.0
    for t in range(n):
        tab[t] = dc_ma + g * tab[t]
    return tab


def sine_table(dc_ma, amp_ma, periods, n, out=None):
    """One sine of ``periods`` whole periods over n set-points (single-frequency EIS)."""
    if out is None:
        out = array("f", bytes(4 * n))
    w = 2.0 * math.pi * periods / n
    for t in range(n):
        out[t] = dc_ma + amp_ma * math.sin(w * t)
    return out


# ---------------------------------------------------------------- the gate

class RecordingGate:
    """Off-board stand-in for the PIO gate: records what it was asked to play (the bench
    applies these descriptions to the simulated cell)."""

    def __init__(self):
        self.log = []
        self.running = None

    def start(self, train):
        self.running = train.describe()
        self.log.append(self.running)

    def stop(self):
        if self.running is not None:
            self.log.append({"kind": "stop"})
        self.running = None

    def busy(self):
        return self.running is not None


class PioGate:
    """The enable switch driven by a PIO state machine (board only)."""

    def __init__(self, pin_id, sm_id=0, f_sm_hz=None):
        import machine
        import rp2

        if f_sm_hz is None:
            f_sm_hz = machine.freq()
        self.f_sm_hz = f_sm_hz
        self._pin = machine.Pin(pin_id, machine.Pin.OUT, value=0)
        prog = rp2.asm_pio(set_init=rp2.PIO.OUT_LOW)(pio_gate.gate_program)
        self.sm = rp2.StateMachine(sm_id, prog, freq=f_sm_hz, set_base=self._pin)
        self.running = None

    def start(self, train):
        if train.f_sm_hz != self.f_sm_hz:
            raise PulseError("train computed for %d Hz, state machine runs at %d Hz"
                             % (train.f_sm_hz, self.f_sm_hz))
        self.stop()
        self.sm.active(1)
        for w in train.words:
            self.sm.put(w)
        self.running = train.describe()

    def stop(self):
        # Stop, force the pin low, restart the program at its first pull. Words of a
        # train stopped before the program pulled them stay in the TX FIFO (restart does
        # not clear it): drain them, or the next start's put() blocks.
        self.sm.active(0)
        n = self.sm.tx_fifo()
        while n > 0:
            self.sm.exec("pull(noblock)")
            n -= 1
        self.sm.exec("set(pins, 0)")
        self.sm.restart()
        self.running = None

    def busy(self):
        return self.running is not None


def make_gate(pin_id=None, sm_id=0, f_sm_hz=None):
    """PioGate on a board with rp2, RecordingGate elsewhere (unix port, CPython)."""
    if pin_id is not None:
        try:
            import rp2  # noqa: F401
        except ImportError:
            return RecordingGate()
        return PioGate(pin_id, sm_id, f_sm_hz)
    return RecordingGate()
