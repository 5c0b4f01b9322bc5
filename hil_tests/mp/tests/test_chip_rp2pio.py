"""rp2 stand-in: the PIO assembler encodes like MicroPython's, the state machine runs the
program on the virtual clock and reports the gate waveform."""

import rp2
from benchutil import BENCH, fresh
from machine import Pin

GATE = 21


@rp2.asm_pio(set_init=rp2.PIO.OUT_LOW)
def pwm_gate():
    pull(block)  # noqa: F821 -- PIO assembler names, injected by asm_pio
    mov(isr, osr)  # noqa: F821  high cycles - 3
    pull(block)  # noqa: F821  low cycles - 3 stay in OSR
    wrap_target()  # noqa: F821
    mov(x, isr)  # noqa: F821
    set(pins, 1)  # noqa: F821
    label("high")  # noqa: F821
    jmp(x_dec, "high")  # noqa: F821
    mov(x, osr)  # noqa: F821
    set(pins, 0)  # noqa: F821
    label("low")  # noqa: F821
    jmp(x_dec, "low")  # noqa: F821
    wrap()  # noqa: F821


@rp2.asm_pio(set_init=rp2.PIO.OUT_LOW)
def burst():
    pull(block)  # noqa: F821  pulse count - 1
    mov(y, osr)  # noqa: F821
    label("p")  # noqa: F821
    set(pins, 1)[4]  # noqa: F821  5 cycles high
    set(pins, 0)[4]  # noqa: F821  5 cycles low
    jmp(y_dec, "p")  # noqa: F821


@rp2.asm_pio(set_init=rp2.PIO.OUT_LOW)
def counted():
    pull(block)  # noqa: F821  pulse count - 1, counted down in X like the firmware's gate
    mov(x, osr)  # noqa: F821
    label("p")  # noqa: F821
    set(pins, 1)[4]  # noqa: F821  5 cycles high
    set(pins, 0)[3]  # noqa: F821  4 cycles low + the jmp
    jmp(x_dec, "p")  # noqa: F821


def test_encodings_match_the_rp2_instruction_set():
    prog = pwm_gate
    data = list(prog[0])
    # PULL block 80A0h; MOV isr,osr A0C7h; MOV x,isr A026h; SET pins,1 E001h;
    # JMP x-- 5 = 0045h; MOV x,osr A027h; SET pins,0 E000h; JMP x-- 8 = 0048h
    assert data == [0x80A0, 0xA0C7, 0x80A0, 0xA026, 0xE001, 0x0045, 0xA027, 0xE000, 0x0048]
    assert (prog[3] >> 7) & 0x1F == 3 and (prog[3] >> 12) & 0x1F == 8  # wrap target/top
    assert list(burst[0])[2:4] == [0xE401, 0xE400]  # delay [4] in bits 12..8
    assert rp2.asm_pio_encode("nop()", 0) == 0xA042


def test_periodic_gate_waveform_duty_and_pulse_count():
    fresh()
    sm = rp2.StateMachine(0, pwm_gate, freq=1_000_000, set_base=Pin(GATE))
    assert BENCH.pio_pins[GATE] is sm
    sm.active(1)
    sm.put(7)  # high = 7 + 3 cycles = 10 us at 1 MHz
    sm.put(17)  # low = 17 + 3 cycles = 20 us
    t0 = BENCH.now_ns
    BENCH.advance_ms(3)
    d = sm.describe(GATE)
    assert d["periodic"] and d["active"]
    assert abs(d["period_s"] - 30e-6) < 1e-12 and abs(d["high_s"] - 10e-6) < 1e-12
    assert d["pulses"] == 100
    assert abs(sm.duty(GATE, t0, BENCH.now_ns) - 1 / 3) < 1e-3
    edges = sm.edges(GATE, t0, t0 + 60_000)
    assert [lvl for _, lvl in edges] == [1, 0, 1, 0]
    assert edges[1][0] - edges[0][0] == 10_000 and edges[2][0] - edges[0][0] == 30_000
    assert sm.edges(GATE, t0, BENCH.now_ns, limit=50) is None  # too many: use duty


def test_new_words_change_the_running_waveform():
    fresh()
    sm = rp2.StateMachine(0, pwm_gate, freq=1_000_000, set_base=Pin(GATE))
    sm.active(1)
    sm.put(7)
    sm.put(17)
    BENCH.advance_ms(1)
    sm.active(0)
    level = sm.level_at(GATE, BENCH.now_ns)
    BENCH.advance_ms(1)
    assert sm.duty(GATE, BENCH.now_ns - 500_000, BENCH.now_ns) == float(level)
    sm.restart()
    sm.active(1)
    sm.put(97)  # 100 us high
    sm.put(97)  # 100 us low
    t1 = BENCH.now_ns
    BENCH.advance_ms(2)
    d = sm.describe(GATE)
    assert abs(d["period_s"] - 200e-6) < 1e-12
    assert abs(sm.duty(GATE, t1, BENCH.now_ns) - 0.5) < 0.01


def test_finite_burst_halts_on_the_empty_fifo():
    fresh()
    sm = rp2.StateMachine(1, burst, freq=10_000_000, set_base=Pin(GATE))
    sm.active(1)
    sm.put(4)  # 5 pulses
    BENCH.advance_ms(1)
    d = sm.describe(GATE)
    assert d["pulses"] == 5 and d["halted"] == "pull" and d["level"] == 0
    sm.put(1)  # 2 more
    BENCH.advance_ms(1)
    assert sm.describe(GATE)["pulses"] == 7
    assert sm.tx_fifo() == 0


def test_fifo_full_put_raises_instead_of_blocking_forever():
    fresh()
    sm = rp2.StateMachine(0, pwm_gate, freq=1_000_000, set_base=Pin(GATE))
    for w in range(4):
        sm.put(w)  # not active: nothing drains the 4-deep TX FIFO
    try:
        sm.put(5)
        raise AssertionError("put() on a full FIFO returned")
    except RuntimeError:
        pass


def test_freq_limits():
    fresh()
    try:
        rp2.StateMachine(0, pwm_gate, freq=1000, set_base=Pin(GATE))  # < 150 MHz / 65536
        raise AssertionError("accepted 1 kHz")
    except ValueError:
        pass


def test_a_long_counted_train_is_periodic_until_its_counter_runs_out():
    # 100 001 pulses of 1 us: simulated one by one the edge record would not fit the
    # heap; as a counted loop it is one period, and its end is simulated exactly.
    fresh()
    sm = rp2.StateMachine(2, counted, freq=10_000_000, set_base=Pin(GATE))
    sm.active(1)
    sm.put(100_000)
    t0 = BENCH.now_ns
    BENCH.advance_ms(50)
    d = sm.describe(GATE)
    assert d["periodic"] and abs(d["period_s"] - 1e-6) < 1e-12
    assert abs(d["high_s"] - 0.5e-6) < 1e-12
    assert abs(d["pulses"] - 50_000) <= 1, d["pulses"]
    assert abs(sm.duty(GATE, t0, BENCH.now_ns) - 0.5) < 1e-3
    BENCH.advance_ms(60)
    d = sm.describe(GATE)
    assert d["pulses"] == 100_001 and d["level"] == 0 and d["halted"] == "pull", d


def test_a_train_paused_for_hours_keeps_a_bounded_record():
    # Tracking pauses a recipe's train every block: thousands of start/stop cycles in a
    # long run. The board forgets what each reported step no longer needs; the pulse
    # count and the duty of the present step stay exact.
    fresh()
    sm = rp2.StateMachine(0, pwm_gate, freq=1_000_000, set_base=Pin(GATE))
    for _ in range(300):
        sm.active(1)
        sm.put(7)  # 10 us high
        sm.put(17)  # 20 us low
        BENCH.advance_ms(3)  # 100 pulses
        sm.active(0)
        sm.exec("set(pins, 0)")
        sm.restart()
        BENCH.advance_ms(1)
        sm.forget_before(BENCH.now_ns)
    assert len(sm._segments) <= 3, len(sm._segments)
    assert sm.describe(GATE)["pulses"] == 300 * 100
    sm.active(1)
    sm.put(7)
    sm.put(17)
    t0 = BENCH.now_ns
    BENCH.advance_ms(3)
    assert abs(sm.duty(GATE, t0, BENCH.now_ns) - 1 / 3) < 1e-3
    assert sm.describe(GATE)["pulses"] == 300 * 100 + 100
