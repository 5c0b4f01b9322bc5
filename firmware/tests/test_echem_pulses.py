# Current programs: PIO cycle-count arithmetic at 125/150 MHz checked by running the
# real gate program body through a cycle-accurate emulator of the PIO subset it uses;
# software programs, DAC tables, the off-board gate.
import math

from fieldrig.echem import pio_gate, pulses
from fieldrig.echem.pulses import PulseError, PulseTrain, pulse_cycles


class _PioAsm:
    """Records the instructions the program body emits, as rp2.asm_pio would."""

    def __init__(self):
        self.prog = []
        self.labels = {}

    def namespace(self):
        ns = {}
        for name in ("x", "y", "isr", "osr", "pins", "x_dec", "y_dec", "block", "noblock"):
            ns[name] = name
        ns["pull"] = lambda mode="block": self.prog.append(("pull", mode))
        ns["mov"] = lambda dst, src: self.prog.append(("mov", dst, src))
        ns["set"] = lambda dst, val: self.prog.append(("set", dst, val))
        ns["jmp"] = lambda cond, label: self.prog.append(("jmp", cond, label))
        ns["irq"] = lambda idx: self.prog.append(("irq", idx))
        ns["rel"] = lambda i: ("rel", i)

        def label(name):
            self.labels[name] = len(self.prog)

        ns["label"] = label
        return ns


def _assemble():
    # Run the body with its module globals swapped, exactly like rp2.asm_pio does.
    asm = _PioAsm()
    fn = pio_gate.gate_program
    g = fn.__globals__
    saved = dict(g)
    g.clear()
    g.update(asm.namespace())
    try:
        fn()
    finally:
        g.clear()
        g.update(saved)
    return asm


def _run(asm, words, max_cycles):
    """Emulate one instruction per cycle (a set takes effect from the next cycle).
    Returns the pin's runs [(level, cycles)] from the first rising edge until the
    program blocks on an empty FIFO again (the last low run ends there)."""
    regs = {"x": 0, "y": 0, "isr": 0, "osr": 0}
    fifo = list(words)
    pin = 0
    edges = []  # (cycle from which the new level holds, level)
    pc = 0
    for cycle in range(max_cycles):
        if pc >= len(asm.prog):
            pc = 0  # wrap
        op = asm.prog[pc]
        nxt = pc + 1
        if op[0] == "pull":
            if not fifo:
                edges.append((cycle, None))
                break
            regs["osr"] = fifo.pop(0)
        elif op[0] == "mov":
            regs[op[1]] = regs[op[2]]
        elif op[0] == "set":
            if op[2] != pin:
                pin = op[2]
                edges.append((cycle + 1, pin))
        elif op[0] == "jmp":
            reg = op[1][0]
            if regs[reg] != 0:
                nxt = asm.labels[op[2]]
            regs[reg] = (regs[reg] - 1) & 0xFFFFFFFF
        pc = nxt
    else:
        raise AssertionError("did not finish")
    return [(edges[j][1], edges[j + 1][0] - edges[j][0]) for j in range(len(edges) - 1)]


def test_program_timing_matches_cycle_math_at_125_and_150_mhz():
    asm = _assemble()
    assert [op[0] for op in asm.prog][:5] == ["pull", "mov", "pull", "mov", "pull"]
    cases = [(1e6, 0.5, 7), (250e3, 0.1, 5), (10e3, 0.9, 3), (20e6, 0.5, 4), (333e3, 0.33, 6)]
    for f_sm in (125000000, 150000000):
        for freq, duty, count in cases:
            if f_sm / freq < 7:
                continue
            on, off = pulse_cycles(freq, duty, f_sm)
            period = int(f_sm / freq + 0.5)
            assert on + off == period
            assert on == int(period * duty + 0.5)
            train = PulseTrain(2.0, freq, duty, count, f_sm)
            runs = _run(asm, train.words, 2 * count * period + 100)
            highs = [n for lvl, n in runs if lvl == 1]
            lows = [n for lvl, n in runs if lvl == 0]
            assert highs == [on] * count, (f_sm, freq, highs, on)
            # every off phase between pulses is exact; the last low lasts until the end
            assert lows[:-1] == [off] * (count - 1), (f_sm, freq, lows, off)
            assert abs(train.freq_hz - f_sm / period) < 1e-6


def test_exact_values_at_1_mhz():
    # 150 MHz: 150 cycles per us -> 75/75; 125 MHz: 125 -> 63/62 (duty 50.4 %).
    assert pulse_cycles(1e6, 0.5, 150000000) == (75, 75)
    assert pulse_cycles(1e6, 0.5, 125000000) == (63, 62)
    t = PulseTrain(1.0, 1e6, 0.5, 10, 150000000)
    assert t.words == (9, 72, 71)
    assert abs(t.duration_ms - 0.01) < 1e-12
    t = PulseTrain(1.0, 1e6, 0.5, 10, 125000000)
    assert t.words == (9, 60, 58)
    assert abs(t.duty - 63 / 125) < 1e-12


def test_limits_are_enforced():
    # Fastest train: f_sm / 7.
    assert pulse_cycles(150e6 / 7, 0.45, 150000000) == (3, 4)
    for args, msg in (
        ((150e6 / 6, 0.5, 150000000), "above the PIO limit"),
        ((20e6, 0.2, 150000000), "on phase 2 cycles < minimum 3"),
        ((20e6, 0.95, 150000000), "off phase 0 cycles < minimum 4"),
        ((1e3, 1.0, 150000000), "duty must be"),
        ((0.0, 0.5, 150000000), "freq_hz must be > 0"),
    ):
        try:
            pulse_cycles(*args)
        except PulseError as e:
            assert msg in str(e), (args, str(e))
        else:
            raise AssertionError("accepted %r" % (args,))
    try:
        pulses.fifo_words(0, 10, 10)
    except PulseError:
        pass
    else:
        raise AssertionError("count 0 accepted")


def test_pulse_program_chooses_the_timing_path():
    slow = pulses.pulse_program(1.0, -0.5, 10.0, 0.5)  # 50 ms / 50 ms: software
    assert isinstance(slow, pulses.SoftwareProgram) and slow.kind == "pulses"
    assert slow.setpoint_ma(0) == 1.0 and slow.setpoint_ma(49) == 1.0
    assert slow.setpoint_ma(50) == -0.5 and slow.setpoint_ma(120) == 1.0
    fast = pulses.pulse_program(1.0, 0.0, 1e6, 0.25, count=100, f_sm_hz=125000000)
    assert isinstance(fast, PulseTrain) and fast.on_cycles == 31 and fast.gated
    # The DAC holds the on current for the train's duration (100 us), then zero.
    assert fast.setpoint_ma(0.05) == 1.0 and fast.setpoint_ma(0.1) == 0.0
    assert abs(fast.mean_ma() - 31 / 125) < 1e-12
    try:
        pulses.pulse_program(1.0, 0.2, 1e4, 0.5)
    except PulseError as e:
        assert "off_ma = 0" in str(e)
    else:
        raise AssertionError("fast train with off current accepted")


def test_reverse_pulses_and_counts():
    p = pulses.reverse_pulses(2.0, 100, -1.0, 20, count=3, rest_ms=30)
    assert p.period_ms == 150
    seq = [p.setpoint_ma(t) for t in (0, 99, 100, 119, 120, 149, 150, 449, 450)]
    assert seq == [2.0, 2.0, -1.0, -1.0, 0.0, 0.0, 2.0, 0.0, 0.0]
    assert p.done(450) and not p.done(449)
    assert abs(p.mean_ma() - (200 - 20) / 150) < 1e-12
    for bad in ((2.0, 5, -1.0, 20), (2.0, 100, 1.0, 20)):
        try:
            pulses.reverse_pulses(*bad)
        except PulseError:
            pass
        else:
            raise AssertionError(bad)


def test_setpoint_tables():
    from fieldrig.echem.impedance import schroeder_phases
    bins = [1, 3, 7, 15]
    tab = pulses.setpoint_table(0.5, 0.2, bins, schroeder_phases(bins), 256)
    hi = max(tab)
    lo = min(tab)
    assert abs(max(hi - 0.5, 0.5 - lo) - 0.2) < 1e-6  # peak exactly the amplitude
    mean = sum(tab) / 256
    assert abs(mean - 0.5) < 1e-6  # whole periods: the tones average to zero
    s = pulses.sine_table(0.0, 1.0, 4, 64)
    assert abs(s[4] - 1.0) < 1e-6 and abs(s[12] + 1.0) < 1e-6
    assert abs(sum(s)) < 1e-5
    assert abs(math.sqrt(sum(v * v for v in s) / 64) - math.sqrt(0.5)) < 1e-6


def test_off_board_gate_records_descriptions():
    gate = pulses.make_gate(pin_id=15)
    assert isinstance(gate, pulses.RecordingGate)
    train = PulseTrain(1.5, 500e3, 0.5, 1000, 150000000)
    gate.start(train)
    assert gate.busy()
    d = gate.log[0]
    assert d["kind"] == "pio_pulse_train" and d["on_cycles"] == 150 and d["count"] == 1000
    assert abs(d["on_us"] - 1.0) < 1e-9 and d["fifo"] == [999, 147, 146]
    gate.stop()
    assert not gate.busy() and gate.log[-1] == {"kind": "stop"}
