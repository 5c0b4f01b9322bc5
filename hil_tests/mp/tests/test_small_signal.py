"""The rig's small-signal cell (electrical.py): exact step responses of its relaxations,
conversions averaged over their interval, nothing added once delta_i is back to zero."""

import math

from electrical import SmallSignalCell

PERIOD_NS = 1000000  # 1 kSPS
KV = 0.2  # ADC volts per cell volt (5:1 divider)
KI = 10.0  # ADC volts per cell amp (10 ohm shunt)


class Stage:
    def __init__(self):
        self.i_a = 0.0

    def current(self):
        return self.i_a


def make(r0=2.0, r=(3.0,), tau=(0.01,)):
    stage = Stage()
    cell = SmallSignalCell(stage.current, lambda: PERIOD_NS, KV, KI)
    cell.set_network(0, True, r0, r, tau)
    cell.held(0)
    return stage, cell


def close(a, b, tol=1e-9):
    return abs(a - b) <= tol * (1.0 + abs(b))


def test_inert_while_the_stage_drives_the_held_current():
    stage, cell = make()
    stage.i_a = 0.0
    assert cell.adjust(PERIOD_NS, 0.5, 0.1) == (0.5, 0.1)
    assert cell.evaluations == 0


def test_step_response_is_the_mean_of_the_exact_exponential():
    stage, cell = make(r0=2.0, r=(3.0,), tau=(0.01,))
    stage.i_a = 0.001
    cell.current_changed(0)
    t_s = PERIOD_NS * 1e-9
    for k in range(1, 6):
        v0, v1 = cell.adjust(k * PERIOD_NS, 0.0, 0.0)
        # mean over ((k-1)T, kT] of r0 u + R u (1 - exp(-t / tau))
        a0 = math.exp(-(k - 1) * t_s / 0.01)
        a1 = math.exp(-k * t_s / 0.01)
        mean_x = 3.0 * 0.001 * (1.0 - 0.01 / t_s * (a0 - a1))
        assert close(v0, KV * (2.0 * 0.001 + mean_x)), (k, v0)
        assert close(v1, KI * 0.001)


def test_a_resistor_network_gives_r0_times_delta_i():
    stage, cell = make(r0=5.0, r=(), tau=())
    stage.i_a = -0.002
    cell.current_changed(0)
    v0, v1 = cell.adjust(PERIOD_NS, 1.0, 0.0)
    assert close(v0, 1.0 + KV * 5.0 * -0.002) and close(v1, KI * -0.002)


def test_the_transient_decays_after_the_plant_takes_the_current_over():
    stage, cell = make(r0=0.0, r=(1.0,), tau=(0.002,))
    stage.i_a = 0.01
    cell.current_changed(0)
    cell.adjust(PERIOD_NS, 0.0, 0.0)
    cell.held(PERIOD_NS)  # step end: the plant holds 10 mA from here
    v_prev = cell.adjust(2 * PERIOD_NS, 0.0, 0.0)[0]
    assert v_prev > 0.0  # the charge of the first period is still there
    k = 3
    while cell.active:
        v = cell.adjust(k * PERIOD_NS, 0.0, 0.0)[0]
        assert 0.0 <= v < v_prev
        v_prev = v
        k += 1
        assert k < 80  # 10 mV x exp(-t / 2 ms) falls below the quiet level in ~37 ms
    assert cell.adjust(k * PERIOD_NS, 0.0, 0.0) == (0.0, 0.0)  # free again


def test_a_disabled_network_adds_nothing():
    stage, cell = make()
    cell.set_network(0, False, 2.0, (3.0,), (0.01,))
    stage.i_a = 0.005
    cell.current_changed(0)
    assert cell.adjust(PERIOD_NS, 0.5, 0.1) == (0.5, 0.1)


def test_no_current_command_means_no_delta():
    stage, cell = make()
    stage.i_a = None  # a PIO program gates the stage: the plant models the current
    cell.current_changed(0)
    assert cell.adjust(PERIOD_NS, 0.5, 0.1) == (0.5, 0.1)


def test_decayed_fast_relaxations_are_dropped_without_changing_the_output():
    # After an excitation the slow relaxations stay charged for minutes: the fast ones
    # (decayed below their share of the quiet level) are zeroed and no longer evaluated.
    stage, cell = make(r0=1.0, r=(0.5, 2.0, 3.0), tau=(0.001, 10.0, 0.05))
    ref_stage, ref = make(r0=1.0, r=(0.5, 2.0, 3.0), tau=(0.001, 10.0, 0.05))
    ref._quiet_each_v = 0.0  # never trims: every relaxation evaluated throughout
    for st, c in ((stage, cell), (ref_stage, ref)):
        st.i_a = 0.002
        c.current_changed(0)
        for k in range(1, 21):
            c.adjust(k * PERIOD_NS, 0.0, 0.0)
        c.held(20 * PERIOD_NS)
    assert cell.n_live == 3
    for k in range(21, 2000):
        v = cell.adjust(k * PERIOD_NS, 0.0, 0.0)[0]
        v_ref = ref.adjust(k * PERIOD_NS, 0.0, 0.0)[0]
        assert abs(v - v_ref) <= KV * 1e-10, (k, v, v_ref)
    assert cell.active and cell.n_live == 1  # only the 10 s relaxation is left
    assert ref.n_live == 3
