# Impedance estimation: coherent single-bin DFT in fixed point, joint detrend, quality
# figures, multisine design, sweep planning and calibration. Every expected value is
# computed here from the circuit, never copied from the estimator.
import math

import test_echem_synth as syn

from fieldrig.echem import _dft_py, impedance
from fieldrig.echem.impedance import DftEngine, estimate, measure, measure_bins

FS = 32000.0
N = 4096
SCALE_OHM = syn.V_LSB / syn.I_LSB
BUF = syn.buffers(N)  # one pair for the whole module: the heap is 256 KB


def _check(z_est, z_true, tol_rel, tol_deg):
    zr, zi = z_est
    z = complex(zr, zi)
    err = abs(z - z_true) / abs(z_true)
    dph = syn.phase_deg(z) - syn.phase_deg(z_true)
    assert err < tol_rel, (z, z_true, err)
    assert abs(dph) < tol_deg, (z, z_true, dph)
    return err, dph


def _freqs(n, fs, ks):
    return [k * fs / n for k in ks]


def test_rc_rpc_randles_noise_free_within_0p1_percent():
    circuits = [
        lambda f: syn.rc_series(20.0, 10e-6, f),
        lambda f: syn.r_par_c(50.0, 2e-6, f),
        lambda f: syn.randles(8.0, 40.0, 20e-6, 15.0, f),
    ]
    for zf in circuits:
        for k in (1, 7, 33, 301, 1200):
            f = k * FS / N
            z = zf(f)
            # 10 mV perturbation: pick the current amplitude from |Z|.
            ia = 0.010 / abs(z)
            v, i = syn.blocks(zf, [(f, 0.3)], N, FS, ia, into=BUF)
            _check(estimate(v, i, N, FS, f, SCALE_OHM), z, 1e-3, 0.1)


def test_noisy_within_1_percent_and_quality_is_honest():
    zf = lambda f: syn.randles(8.0, 40.0, 20e-6, 15.0, f)  # noqa: E731
    worst = 0.0
    for seed, k in ((3, 3), (4, 41), (5, 511)):
        f = k * FS / N
        z = zf(f)
        ia = 0.010 / abs(z)
        # ~5 % of the 10 mV amplitude per sample on V, 2 % on I (SNR 26..34 dB/sample).
        v, i = syn.blocks(zf, [(f, 1.0)], N, FS, ia, v_noise_v=0.5e-3, i_noise_a=0.02 * ia,
                          seed=seed, into=BUF)
        est = measure(v, i, N, FS, f, syn.V_LSB, syn.I_LSB)
        err, _ = _check((est.z_re_ohm, est.z_im_ohm), z, 0.01, 1.0)
        # The reported 1-sigma error matches the noise we injected (theory:
        # sqrt(2/N) * sqrt(0.05^2 + 0.02^2) ~ 1.2e-3) within a factor of 2.
        assert 0.6e-3 < est.rel_err < 2.4e-3, est.rel_err
        assert est.quality() == "good"
        # Block SNR of the worse channel: 23 dB per sample + 10 log10(N/2) = 56 dB.
        assert 50 < est.snr_db < 62, est.snr_db
        worst = max(worst, err / est.rel_err)
    assert worst < 5.0, worst


def test_operando_dc_current_and_drift_removed():
    zf = lambda f: syn.r_par_c(30.0, 5e-6, f)  # noqa: E731
    for k in (1, 2, 5):
        f = k * FS / N
        z = zf(f)
        ia = 0.010 / abs(z)
        # 1 mA DC through the cell (30 mV IR drop), voltage creeping 4 mV over the block
        # (polarisation), current drifting 0.5 % of its amplitude.
        v, i = syn.blocks(zf, [(f, 0.7)], N, FS, ia, i_dc_a=1e-3, v_dc_v=0.030,
                          v_drift_v=0.004, i_drift_a=0.005 * ia, into=BUF)
        est = measure(v, i, N, FS, f, syn.V_LSB, syn.I_LSB)
        _check((est.z_re_ohm, est.z_im_ohm), z, 1e-3, 0.1)
        assert abs(est.i_dc - 1e-3) < 1e-6
        # v_dc is the voltage at the block centre: 30 mV + half the drift.
        assert abs(est.v_dc - 0.032) < 1e-5, est.v_dc
        assert abs(est.v_drift_per_s - 0.004 / ((N - 1) / FS)) < 0.02 * 0.004 * FS / N
        # The same block without the ramp term is badly biased: the drift matters.
        cv = impedance._goertzel(v, N, k, v[0])
        ci = impedance._goertzel(i, N, k, i[0])
        zr, zi = impedance._cdiv(cv[0], -cv[1], ci[0], -ci[1])
        naive = complex(zr, zi) * SCALE_OHM
        assert abs(naive - z) / abs(z) > 0.02, naive


def test_float_goertzel_path_matches_fixed_point():
    zf = lambda f: syn.randles(8.0, 40.0, 20e-6, 15.0, f)  # noqa: E731
    k = 17
    f = k * FS / N
    v, i = syn.blocks(zf, [(f, 0.2)], N, FS, 2e-4, v_drift_v=1e-3, as_codes=False)
    z_float = estimate(v, i, N, FS, f)
    _check(z_float, zf(f), 1e-6, 1e-4)
    vc, ic = syn.blocks(zf, [(f, 0.2)], N, FS, 2e-4, v_drift_v=1e-3, into=BUF)
    z_int = estimate(vc, ic, N, FS, f, SCALE_OHM)
    assert abs(complex(*z_int) - complex(*z_float)) / abs(complex(*z_float)) < 2e-4


def test_viper_and_plain_kernels_bit_identical():
    zf = lambda f: syn.r_par_c(50.0, 2e-6, f)  # noqa: E731
    f = 9 * FS / 1024
    v, i = syn.blocks(zf, [(f, 0.0)], 1024, FS, 1e-4, i_dc_a=-2e-3, v_dc_v=-0.4,
                      v_noise_v=1e-4, into=BUF)
    fast = DftEngine(1024, native=True)
    plain = DftEngine(1024, native=False)
    assert plain.kernels is _dft_py
    for e in (fast, plain):
        e.prepare(1024)
    for buf in (v, i):
        res = []
        for e in (fast, plain):
            e.scan(buf, 1024)
            e.bin(buf, 1024, 9)
            res.append(list(e.out))
        assert res[0] == res[1], res


def test_cosine_table_exact_symmetry_and_large_dc():
    from array import array
    eng = DftEngine(1024)
    eng.prepare(1000)
    tab = eng.table
    assert sum(tab[t] for t in range(1000)) == 0
    for t in range(251):
        assert tab[500 - t] == -tab[t] and tab[1000 - t if t else 0] == tab[t]
    assert tab[0] == 32767 and tab[250] == 0 and tab[500] == -32767
    # Near full-scale DC offsets of opposite sign under small tones.
    n = 1024
    k = 3
    v = array("i", [8000000 + round(2000 * math.cos(2 * math.pi * k * t / n))
                    for t in range(n)])
    i = array("i", [-8000000 + round(1000 * math.cos(2 * math.pi * k * t / n))
                    for t in range(n)])
    zr, zi = estimate(v, i, n, 1000.0, k * 1000.0 / n, eng=eng)
    assert abs(zr - 2.0) < 1e-4 and abs(zi) < 1e-4, (zr, zi)


def test_goertzel_inner_loop_allocates_nothing_after_warm_up():
    import gc

    import micropython

    zf = lambda f: syn.r_par_c(50.0, 2e-6, f)  # noqa: E731
    for native in (True, False):
        eng = DftEngine(4096, native=native)
        v, _ = syn.blocks(zf, [(64 * FS / 4096, 0.0)], 4096, FS, 1e-4, into=BUF)
        eng.prepare(4096)
        eng.scan(v, 4096)
        eng.bin(v, 4096, 64)  # warm-up
        gc.collect()
        before = gc.mem_alloc()
        micropython.heap_lock()
        try:
            eng.scan(v, 4096)
            eng.bin(v, 4096, 64)
            eng.bin(v, 4096, 65)
        finally:
            micropython.heap_unlock()
        assert gc.mem_alloc() == before


def test_coherence_is_enforced():
    try:
        impedance.bin_for(1001.0, 32000.0, 4096)
    except impedance.CoherenceError as e:
        assert "not coherent" in str(e)
    else:
        raise AssertionError("incoherent frequency accepted")
    assert impedance.bin_for(250.0, 32000.0, 4096) == 32


def test_multisine_schroeder_crest_factor_and_estimates():
    n = 4096
    bins = impedance.log_bins(3, 900, 12)
    assert len(bins) == 12 and all(b % 2 == 1 for b in bins)
    assert all(bins[j] < bins[j + 1] for j in range(11))
    zero = impedance.crest_factor(impedance.multisine(bins, [0.0] * 12, n))
    assert abs(zero - math.sqrt(2 * 12)) < 1e-6  # all peaks aligned at t = 0
    # Textbook case, 16 consecutive harmonics: Schroeder's crest factor is < 1.9
    # (zero phases: sqrt(32) = 5.7).
    dense = list(range(1, 17))
    assert impedance.crest_factor(
        impedance.multisine(dense, impedance.schroeder_phases(dense), 256)) < 1.9
    # Sparse log grid: well below the zero-phase sqrt(2K) (4.9); clipping improves it.
    ph = impedance.schroeder_phases(bins)
    cf = impedance.crest_factor(impedance.multisine(bins, ph, n))
    assert cf < 0.7 * zero, cf
    small = impedance.log_bins(3, 400, 12)
    ph_s = impedance.schroeder_phases(small)
    cf_s = impedance.crest_factor(impedance.multisine(small, ph_s, 1024))
    ph2, cf2 = impedance.improve_phases(small, ph_s, 1024, iterations=4)
    assert cf2 < cf_s - 0.02, (cf2, cf_s)
    assert abs(impedance.crest_factor(impedance.multisine(small, ph2, 1024)) - cf2) < 1e-9
    # Multisine through a Randles cell: every tone within 0.1 % / 0.1 deg.
    zf = lambda f: syn.randles(8.0, 40.0, 20e-6, 15.0, f)  # noqa: E731
    tones = [(b * FS / n, ph[j]) for j, b in enumerate(bins)]
    v, i = syn.blocks(zf, tones, n, FS, 1e-4, v_drift_v=2e-3, i_dc_a=5e-4, into=BUF)
    ests = measure_bins(v, i, n, FS, bins, syn.V_LSB, syn.I_LSB)
    for j, e in enumerate(ests):
        _check((e.z_re_ohm, e.z_im_ohm), zf(bins[j] * FS / n), 1e-3, 0.1)


def test_harmonic_distortion_reported():
    from array import array
    n = 2048
    k = 5
    w = 2 * math.pi * k / n
    # Current a pure tone; voltage with a 4 % 2nd and 3 % 3rd harmonic (nonlinear cell).
    i = array("i", [round(50000 * math.cos(w * t)) for t in range(n)])
    v = array("i", [round(20000 * (math.cos(w * t) + 0.04 * math.cos(2 * w * t + 0.3)
                                       + 0.03 * math.cos(3 * w * t))) for t in range(n)])
    e = measure(v, i, n, 1000.0, k * 1000.0 / n)
    assert abs(e.thd_v - 0.05) < 1e-3, e.thd_v
    assert e.thd_i < 1e-4
    assert e.quality() == "fair"  # 5 % THD: above the 5 % good limit, within 3x


def test_auto_amplitude():
    a, clamped = impedance.auto_amplitude_ma(50.0, target_mv=10.0)
    assert abs(a - 0.2) < 1e-12 and not clamped
    a, clamped = impedance.auto_amplitude_ma(0.5, target_mv=10.0, max_ma=5.0)
    assert a == 5.0 and clamped
    # 0.9 mA DC in a 1 mA range leaves 0.1 mA of room.
    a, clamped = impedance.auto_amplitude_ma(20.0, dc_ma=0.9, range_ma=1.0)
    assert abs(a - 0.1) < 1e-12 and clamped
    a, clamped = impedance.auto_amplitude_ma(None)
    assert clamped and a == 1e-4


def test_sweep_plan_is_coherent_and_bounded():
    plan = impedance.plan_sweep(10000.0, 0.1, 10)
    assert len(plan) == 51
    for p in plan:
        assert p.n % 4 == 0 and p.n <= 4096
        k = impedance.bin_for(p.f_hz, p.fs_eff_hz, p.n)
        assert k == p.periods >= 1
        assert abs(p.f_hz / p.f_target_hz - 1.0) < 0.01, p.as_dict()
        assert p.fs_eff_hz / p.f_hz >= 2.5
    assert plan[0].fs_hz == 32000.0 and plan[0].periods > 100
    low = plan[-1]
    assert low.periods == 1 and low.block_s >= 10.0
    total = impedance.sweep_duration_s(plan)
    assert 60 < total < 400, total


def test_calibration_removes_gain_and_phase_error():
    # The front end: V path gain 1.02, I path 0.97 with a 2 us group delay mismatch and
    # a 1st-order pole at 20 kHz: Z_meas = Z * G(f).
    def g(f):
        w = 2 * math.pi * f
        return (1.02 / 0.97) * complex(math.cos(-w * 2e-6), math.sin(-w * 2e-6)) / complex(
            1.0, f / 20000.0)

    plan = [p for p in impedance.plan_sweep(10000.0, 10.0, 5)]
    r_ref = 47.0
    pts = []
    for p in plan:
        k = p.periods
        zf = lambda f: r_ref * g(f)  # noqa: E731
        v, i = syn.blocks(zf, [(p.f_hz, 0.0)], p.n, p.fs_eff_hz, 2e-4, into=BUF)
        zr, zi = estimate(v, i, p.n, p.fs_eff_hz, p.f_hz, SCALE_OHM)
        pts.append((p.f_hz, zr, zi))
        assert k >= 1
    cal = impedance.Calibration.from_reference(r_ref, pts)
    cal = impedance.Calibration.from_dict(cal.as_dict())  # persisted and reloaded
    for p in plan:
        zcell = syn.r_par_c(80.0, 1e-6, p.f_hz)
        zf = lambda f: syn.r_par_c(80.0, 1e-6, f) * g(f)  # noqa: E731
        v, i = syn.blocks(zf, [(p.f_hz, 0.5)], p.n, p.fs_eff_hz, 1e-4, into=BUF)
        zr, zi = estimate(v, i, p.n, p.fs_eff_hz, p.f_hz, SCALE_OHM)
        raw = complex(zr, zi)
        assert abs(raw - zcell) / abs(zcell) > 0.04  # uncalibrated: > 4 % off
        _check(cal.correct(p.f_hz, zr, zi), zcell, 1e-3, 0.1)
    # Between calibration points the interpolated gain stays close (smooth G).
    f = math.sqrt(plan[5].f_hz * plan[6].f_hz)
    gr, gi = cal.gain(f)
    assert abs(complex(gr, gi) - g(f)) / abs(g(f)) < 0.005
