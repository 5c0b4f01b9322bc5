"""Impedance on the running rig: ADC blocks under a superimposed (multi)sine, operando
tracking at a cadence, EIS sweeps for recipe steps, and the failure detector fed from
every tracking estimate (docs/firmware.md, "Electrochemistry").

Acquisition. A block is n samples of cell voltage and current, read by the ADC driver
(``adc.read_block_codes_into``) as raw codes into two array('i') allocated once, the
first time impedance is used. The excitation is a DAC set-point table (dc + amplitude x
a unit-peak (multi)sine, coherent with the block) written one entry per sample, just
before the sample's frame is read, so the ADC's DRDY paces both; the current range is
held for the whole block (a range switch mid-block would glitch the cell). A settle
stretch (the table's last samples, which lead continuously into its first) is played
and discarded before the block. The read blocks the main loop for its duration, which
is therefore bounded (``max_block_ms``, settle included): the safety task runs again
right after it (docs/firmware.md, "Interlock latency during a block").

Tracking. Three odd bins, log-spaced between ``lf_hz`` and ``hf_hz`` (snapped to whole
periods of the block): the low tone gives Re Z below the interfacial arc (electrolyte +
interface), the high tone the electrolyte intercept, the middle one the phase near the
arc's apex; the empty bins next to them give the voltage noise. Each block becomes three
MSG_IMPEDANCE points and one ``detect.Observation``.

Nothing here is imported until a recipe or the impedance tracking is first used.
"""

import gc
import json
import math
import struct
from array import array

from fieldrig import link
from fieldrig.echem import detect, impedance
from fieldrig.echem_host import route_alarm

TYPE_CHECKING = False  # the type comments' names: the checker's only, never imported here
if TYPE_CHECKING:
    from fieldrig._types import Any  # noqa: F401  (a stub: fieldrig/_types.pyi)

# Board-overridable defaults (board key ``echem``: {name: value}).
OPTIONS = {
    "block_n": 1024,  # samples per block: two array('i') of 4 * block_n bytes
    "max_block_ms": 250,  # longest blocking read (settle + block); the loop stalls for it
    "check_ms": 100,  # inside a block: V and I checked against the limits this often
    "settle_fraction": 0.25,  # settle stretch before a tracking block, fraction of n
    "lf_hz": 10.0,  # tracking tones: lowest (below the interfacial arc) ...
    "hf_hz": 1000.0,  # ... and highest (electrolyte intercept); snapped to odd bins
    "amplitude_mv": 10.0,  # peak perturbation (linear response of a Li interface)
    "min_amplitude_ma": 1e-4,
    "max_amplitude_ma": 10.0,
    "track_period_s": 30.0,  # tracking cadence while a recipe runs (no explicit period)
    "max_decimation": 64,  # summed codes stay far inside an int32 (64 * 2**23 < 2**30)
    "min_detect_rel_err": 0.1,  # estimates less certain than this are not fed to detect
    "calibration": None,  # impedance.Calibration.as_dict() of the rig's front end
}
# MSG_IMPEDANCE flags (docs/link.md): quality in bits 0-1, source in bits 4-7.
IMP_GOOD = 0
IMP_FAIR = 1
IMP_POOR = 2
IMP_TRACKING = 0x00
IMP_SWEEP = 0x10
EIS_POINTS_PER_CHUNK = 6  # one MSG_EIS body holds 6 points with their header (< 480 B)
QUALITY_CODE = {"good": IMP_GOOD, "fair": IMP_FAIR, "poor": IMP_POOR}
SKIPPED = 3  # quality code of a sweep point that could not be measured


def _sig(x, digits=5):
    """A float rounded to ``digits`` significant digits (EVENT / EIS bodies are JSON in
    480-byte frames: full float reprs would not fit)."""
    if not isinstance(x, float) or x != x or x in (math.inf, -math.inf) or x == 0.0:
        return x
    e = math.floor(math.log10(abs(x)))
    return round(x, digits - 1 - e)


def compact(obj):
    """Floats in a JSON-able structure rounded to 5 significant digits."""
    if isinstance(obj, float):
        return _sig(obj)
    if isinstance(obj, dict):
        return {k: compact(obj[k]) for k in obj}
    if isinstance(obj, list):
        return [compact(v) for v in obj]
    return obj


def alarm_event(ev):
    """A detector event for the link: evidence rows without their signal and statistic
    names (both follow from the row id in ``detect.ROWS``), floats rounded (``t_s``, the
    uptime, to the ms)."""
    out = {}
    for k in ev:
        if k == "t_s" and isinstance(ev[k], float):
            # Uptime: to the ms (5 significant digits would be 1 s steps after 3 h and
            # 10 s after a day: lead times and alarm annotations need better).
            out[k] = round(ev[k], 3)
        elif k != "evidence":
            out[k] = compact(ev[k])
    if "evidence" in ev:
        items = []
        for it in ev["evidence"]:
            items.append(compact({k: it[k] for k in it if k not in ("signal", "stat")}))
        out["evidence"] = items
    return out


class TypedTelemetry:
    """Lets the session's telemetry stream carry MSG_IMPEDANCE points beside SAMPLEs.

    An impedance point is a periodic measurement like a sample: same stream, sequence
    numbers, backlog, acks and loss accounting (docs/link.md). Its body has the length
    of a SAMPLE body, so it takes a ring slot like one; a bit per slot (128 bytes for
    1024 slots) says which type the slot holds. ``session.Session`` frames every
    telemetry slot as a SAMPLE; installed when impedance is first used, this adapter
    wraps the session's encoder (a telemetry frame takes the type of its slot) and its
    ``add_sample`` (a new sample clears its slot's bit), so the session's own sending,
    go-back-N and drop logic are used unchanged. The plain rig keeps its boot heap (a
    session subclass loaded at boot cost the 2 KB the 128 KiB budget does not have);
    the cleaner home for the type bit is session.py itself (docs/firmware.md).
    """

    def __init__(self, ses):
        self.ses = ses
        ring = ses.telemetry
        self.capacity = ring.capacity
        self.bits = bytearray((ring.capacity + 7) // 8)  # every slot so far: a sample
        self.enc = ses.encoder
        self._add_sample = ses.add_sample
        ses.encoder = self
        ses.add_sample = self.add_sample

    def _mark(self, seq, impedance):
        slot = seq % self.capacity
        if impedance:
            self.bits[slot >> 3] |= 1 << (slot & 7)
        else:
            self.bits[slot >> 3] &= ~(1 << (slot & 7)) & 0xFF

    def frame(self, msg_type, seq, body, body_len=-1, offset=0):
        """FrameEncoder.frame, with a telemetry slot framed as the type it holds."""
        if msg_type == link.MSG_SAMPLE:
            slot = seq % self.capacity
            if self.bits[slot >> 3] & (1 << (slot & 7)):
                msg_type = link.MSG_IMPEDANCE
        return self.enc.frame(msg_type, seq, body, body_len, offset)

    def sample(self, *args):
        return self.enc.sample(*args)

    def add_sample(self, t_s, t_us, cell_voltage_v, cell_current_ma, cell_temp_c,
                   stack_pressure_mpa, rig_state):
        # The slot of next_seq is the one a full ring drops first: clearing its bit
        # before the session stores the sample is right either way.
        self._mark(self.ses.telemetry.next_seq, False)
        return self._add_sample(t_s, t_us, cell_voltage_v, cell_current_ma, cell_temp_c,
                                stack_pressure_mpa, rig_state)

    def add_impedance(self, t_s, t_us, f_hz, z_re_ohm, z_im_ohm, rel_err, flags):
        """Store one MSG_IMPEDANCE point in the backlog, as Session.add_sample stores a
        sample; returns its telemetry seq."""
        ses = self.ses
        ring = ses.telemetry
        if ring.next_seq - ring.base >= ring.capacity:
            ses._drop_oldest_sample()  # reported as telemetry_dropped, like samples
        seq = ring.next_seq
        self._mark(seq, True)
        struct.pack_into(link.IMPEDANCE_FMT, ring.chunk(seq), ring.offset(seq), t_s, t_us,
                         f_hz, z_re_ohm, z_im_ohm, rel_err, flags)
        ring.next_seq = seq + 1
        ses._pump(ring)
        return seq


def send_reliable(ses, msg_type, body):
    """Queue a non-EVENT reliable message (MSG_EIS chunks); returns its seq."""
    if len(body) > link.MAX_BODY:
        raise ValueError("reliable body longer than %d bytes" % link.MAX_BODY)
    return ses._enqueue(msg_type, body)


class ImpedanceHost:
    def __init__(self, rig):
        self.rig = rig
        board = rig.board
        opts = dict(OPTIONS)
        extra = board.get("echem")
        if extra:
            for k in extra:
                if k not in opts:
                    raise ValueError("unknown echem board option %s" % k)
                opts[k] = extra[k]
        self.opts = opts
        adc = board["adc"]
        self.adc = adc
        # Blocks need the driver's block read and its scales (ADS131M04, plant doubles).
        self.supported = (hasattr(adc, "read_block_codes_into")
                          and hasattr(adc, "cell_v_per_code")
                          and hasattr(adc, "cell_i_a_per_code")
                          and hasattr(adc, "data_rate_sps"))
        self.fs_hz = float(adc.data_rate_sps) if self.supported else 0.0
        cal = opts["calibration"]
        self.calibration = impedance.Calibration.from_dict(cal) if cal else None
        self.detector = detect.Detector()
        self.telemetry = TypedTelemetry(rig.session)
        self.v = None  # type: Any  # array('i') blocks, allocated on first use
        self.i = None  # type: Any
        self.period_s = 0.0  # commanded tracking period (0: only while a recipe runs)
        self.next_s = 0
        self.sweep = None  # type: Any
        self.last_mag_ohm = None  # |Z| at the low tone: sizes the next perturbation
        self.last_estimates = []
        self.blocks = 0
        self.rejected_blocks = 0  # ADC frames rejected (CRC, reset) inside a block
        self.aborted_blocks = 0  # blocks abandoned at a fast limit (over-current, ...)
        self.skipped = 0  # due blocks not taken (interlock, pulse train, no room)
        self.observations = 0
        self.alarms = 0
        self.block_ms = 0  # duration of the last block read (settle included)
        self.seen_setpoint_ma = None
        self.current_changed_s = None
        self._track_plan = None
        # self.unit holds the tracking multisine (True) or a sweep point's tone (False):
        # one buffer for both, refilled for tracking after a sweep used it.
        self._unit_tracking = False

    # ---- buffers -------------------------------------------------------------------

    def _buffers(self):
        if self.v is not None:
            return
        n = self.opts["block_n"]
        if n % 4 or n < 16:
            raise ValueError("block_n must be a multiple of 4, at least 16")
        # Once, on first use: collect first and share one zero source, so the four 4n-byte
        # buffers find room in a fragmented heap.
        gc.collect()
        zero = bytes(4 * n)
        self.v = array("i", zero)
        self.i = array("i", zero)
        self.unit = array("f", zero)  # unit-peak waveform of the excitation
        self.frac = array("f", zero)  # DAC fractions of the current block
        zero = None
        self.one_v = array("i", [0])
        self.one_i = array("i", [0])
        self.eng = impedance.DftEngine(n)

    def max_samples(self, fs_eff_hz, settle_fraction):
        """Largest n (multiple of 4, <= block_n) whose block plus settle fits
        max_block_ms at fs_eff_hz."""
        total = self.opts["max_block_ms"] * fs_eff_hz / 1000.0
        n = int(total / (1.0 + settle_fraction)) // 4 * 4
        return n if n < self.opts["block_n"] else self.opts["block_n"]

    # ---- tracking plan -----------------------------------------------------------------

    def tracking_plan(self):
        """(n, bins) of the tracking multisine for this ADC rate, computed once."""
        if self._track_plan is not None:
            return self._track_plan
        o = self.opts
        n = self.max_samples(self.fs_hz, o["settle_fraction"])
        if n < 32:
            raise ValueError("the ADC rate %g SPS leaves no tracking block in %d ms"
                             % (self.fs_hz, o["max_block_ms"]))
        top = n // 2 - 4  # room above the high tone for its noise bins
        k_lo = int(o["lf_hz"] * n / self.fs_hz + 0.5)
        k_hi = int(o["hf_hz"] * n / self.fs_hz + 0.5)
        k_lo = 1 if k_lo < 1 else k_lo
        k_lo = k_lo if k_lo % 2 else k_lo + 1
        k_hi = top if k_hi > top else k_hi
        if k_hi < k_lo + 8:
            k_hi = k_lo + 8
        bins = impedance.log_bins(k_lo, k_hi, 3, odd=True)
        self._buffers()
        self._track_plan = (n, bins)
        self._tracking_waveform(n, bins)
        return self._track_plan

    def _tracking_waveform(self, n, bins):
        _unit_multisine(bins, impedance.schroeder_phases(bins), n, self.unit)
        self._unit_tracking = True

    # ---- acquisition -----------------------------------------------------------------

    def _choose_range(self, dc_ma, want_ma):
        """Range for dc + amplitude: the DC's own range while current flows (no switch
        under the cell), a coarser one only when it leaves no room at all."""
        g = self.rig.galvanostat
        lo = self.opts["min_amplitude_ma"]
        idx = g.range_index
        if idx >= 0 and g.ranges_ma[idx] - abs(dc_ma) >= lo:
            return idx
        idx = g.range_for(abs(dc_ma) + want_ma)
        if idx < 0:
            idx = len(g.ranges_ma) - 1
        return idx

    def acquire(self, n, decimation, settle_n, dc_ma, amp_ma, range_index):
        """Read one block of n stored samples (each the sum of ``decimation`` frames),
        the excitation dc_ma + amp_ma x unit[k] played on range ``range_index``. Returns
        the number of rejected frames (0: the block is complete). The galvanostat's
        set-point and range are restored afterwards."""
        rig = self.rig
        g = rig.galvanostat
        adc = self.adc
        v = self.v
        cur = self.i
        sp = g.setpoint_ma
        idx0 = g.range_index
        wdt = rig.wdt
        if wdt is not None:
            wdt.feed()  # the block may take up to max_block_ms
        if amp_ma == 0.0 and decimation == 1 and settle_n == 0:
            # Plain block, no excitation: one driver call, allocation-free.
            good = adc.read_block_codes_into(v, cur, n)
            return n - good
        fs_range = g.ranges_ma[range_index]
        # Every check_ms of frames the block checks the fast limits itself and counts as
        # a loop pass (docs/firmware.md, "Interlock latency during a block").
        every = int(self.fs_hz * self.opts["check_ms"] / 1000.0 / decimation)
        every = 1 if every < 1 else every
        safety = rig.safety
        v_scale, i_scale = self._scales()
        v_hi = safety.threshold("over_voltage") / v_scale
        v_lo = safety.threshold("under_voltage") / v_scale
        i_hi = safety.threshold("over_current") / (i_scale * 1000.0)
        sched = rig.sched
        frac = self.frac
        unit = self.unit
        for k in range(n):
            frac[k] = (dc_ma + amp_ma * unit[k]) / fs_range
        if g.range_index != range_index:
            # Glitch-free order, as the galvanostat does it: DAC to zero, then switch.
            g.dac.set_fraction(0.0)
            g.range_switch.select(range_index)
            g.range_index = range_index
        dac = g.dac
        ov = self.one_v
        oi = self.one_i
        bad = 0
        try:
            # Settle first: the table's last samples lead continuously into its first (the
            # tones are whole periods of the block), so the block starts in steady state.
            for m in range(settle_n + n):
                k = m - settle_n
                if k < 0:
                    k += n
                dac.set_fraction(frac[k])
                sv = 0
                si = 0
                for _ in range(decimation):
                    if adc.read_block_codes_into(ov, oi, 1):
                        sv += ov[0]
                        si += oi[0]
                    elif m >= settle_n:
                        bad += 1
                if m >= settle_n:
                    v[k] = sv
                    cur[k] = si
                if m % every == 0:
                    sched.checkpoint()
                    if wdt is not None:
                        wdt.feed()
                    x = oi[0]
                    if ov[0] > v_hi or ov[0] < v_lo or x > i_hi or -x > i_hi:
                        # Beyond a fast limit: abandon the block; the safety task runs
                        # right after and trips with its own debounce.
                        self.aborted_blocks += 1
                        return n
        finally:
            self._restore(sp, idx0)
        return bad

    def _restore(self, setpoint_ma, range_index):
        g = self.rig.galvanostat
        if range_index < 0:
            g.off()
            return
        if g.range_index != range_index:
            g.dac.set_fraction(0.0)
            g.range_switch.select(range_index)
            g.range_index = range_index
        g.dac.set_fraction(setpoint_ma / g.ranges_ma[range_index])
        g.setpoint_ma = setpoint_ma

    def _scales(self):
        cal = self.rig.cfg["calibration"]
        return (self.adc.cell_v_per_code() * cal["voltage_gain"],
                self.adc.cell_i_a_per_code() * cal["current_gain"])

    def _correct(self, est):
        """(z_re, z_im) after the ratiometric front-end calibration, if the board has one."""
        if self.calibration is None:
            return est.z_re_ohm, est.z_im_ohm
        return self.calibration.correct(est.f_hz, est.z_re_ohm, est.z_im_ohm)

    def _amplitude(self, dc_ma, range_index):
        o = self.opts
        g = self.rig.galvanostat
        amp, _ = impedance.auto_amplitude_ma(self.last_mag_ohm, o["amplitude_mv"],
                                             o["min_amplitude_ma"], o["max_amplitude_ma"],
                                             dc_ma, g.ranges_ma[range_index])
        return amp

    # ---- scheduling ------------------------------------------------------------------

    def effective_period_s(self):
        if self.period_s > 0:
            return self.period_s
        rh = self.rig.recipes
        if rh is not None and rh.running():
            return float(self.opts["track_period_s"])
        return 0.0

    def blocked_reason(self):
        """Why a block may not be taken now (None: it may)."""
        rig = self.rig
        if not self.supported:
            return "no_block_adc"
        if rig.safety.tripped or rig.safety.current_inhibited():
            return "interlock"
        return None

    def service(self):
        """Impedance task (every 100 ms): one sweep point, or a tracking block when due."""
        clock = self.rig.clock
        g = self.rig.galvanostat
        if g.setpoint_ma != self.seen_setpoint_ma:
            # The overpotential / LF baselines wait for the cell to settle after this.
            self.seen_setpoint_ma = g.setpoint_ma
            self.current_changed_s = clock.s + clock.us / 1000000.0
        if self.sweep is not None:
            self._sweep_step()
            return
        if clock.s < self.next_s:
            return  # checked first: the cheap test, true on all but one call in 3000
        period = self.effective_period_s()
        if period <= 0:
            return
        self.next_s = clock.s + int(period + 0.5)
        if self.blocked_reason() is not None:
            self.skipped += 1
            return
        self.track_once()

    # ---- tracking --------------------------------------------------------------------

    def track_once(self):
        """One tracking block: three impedance points on the link and one detector
        observation. Returns the estimates (low, middle, high tone) or None."""
        rig = self.rig
        n, bins = self.tracking_plan()
        if not self._unit_tracking:
            # An EIS sweep played its tones from the same table since the last block:
            # without this, tracking after a sweep excites its last tone, not its own
            # bins, and every estimate is too uncertain for the detector (it goes blind).
            self._tracking_waveform(n, bins)
        g = rig.galvanostat
        dc = g.setpoint_ma
        gate = rig.pulse_gate
        if gate is not None and gate.busy():
            # A PIO train gates the stage: no coherent excitation on top of it. Pause it
            # for the block, which measures at rest, and turn the stage off with it
            # (the block restores the set-point it finds: the pulse amplitude without
            # its train would flow as DC). The recipe's next tick restarts both
            # (Output.pulse is a level). Without this, pulsed plating (a soft-short
            # mitigation) would leave the detector blind to a hard short. Not at the
            # train's mean current: as DC that can exceed the cell's DC CCD (the very
            # thing pulsing avoids) and nucleate a filament in one block.
            dc = 0.0
            gate.stop()
            g.set_current_ma(0.0)
            if rig.recipes is not None:
                rig.recipes.output_taken()
        # No |Z| known yet: a probe block at the smallest amplitude only sizes the next
        # one (a badly quantised probe must not reach the link or the detector's
        # baselines); the real block follows at the next service call.
        probe = self.last_mag_ohm is None
        want = self.opts["amplitude_mv"] / self.last_mag_ohm if self.last_mag_ohm else 0.0
        idx = self._choose_range(dc, want)
        try:
            amp = self._amplitude(dc, idx)
        except ValueError:
            self.skipped += 1  # the DC fills the range: no room for a perturbation
            return None
        settle = int(n * self.opts["settle_fraction"]) // 4 * 4
        clock = rig.clock
        clock.update()
        s0, us0 = clock.s, clock.us
        bad = self.acquire(n, 1, settle, dc, amp, idx)
        clock.update()
        self.block_ms = (clock.s - s0) * 1000 + (clock.us - us0) // 1000
        self.blocks += 1
        if bad:
            self.rejected_blocks += 1
            return None
        v_scale, i_scale = self._scales()
        ests = impedance.measure_bins(self.v, self.i, n, self.fs_hz, bins, v_scale, i_scale,
                                      self.eng)
        if probe:
            mag = ests[0].mag_ohm
            self.last_mag_ohm = mag if mag > 0 and mag == mag else None
            self.next_s = clock.s
            return None
        self.last_estimates = ests
        for est in ests:
            zr, zi = self._correct(est)
            self.telemetry.add_impedance(clock.s, clock.us, est.f_hz, zr, zi, est.rel_err,
                                         QUALITY_CODE[est.quality()] | IMP_TRACKING)
        lf, mid, hf = ests[0], ests[1], ests[-1]
        self.last_mag_ohm = lf.mag_ohm
        rh = rig.recipes
        if rh is not None:
            rh.m.impedance_ohm = lf.mag_ohm
            rh.wake()  # an impedance end condition is checked at once
        limit = self.opts["min_detect_rel_err"]
        if lf.rel_err > limit or hf.rel_err > limit:
            return ests  # too noisy to judge the cell by: telemetry only
        self.observe(lf, mid, hf, dc)
        return ests

    def observe(self, lf, mid, hf, dc_ma):
        """Feed one detector observation; send its events and hand alarms on."""
        rig = self.rig
        sig = rig.signals
        clock = rig.clock
        lf_re, _ = self._correct(lf)
        hf_re, _ = self._correct(hf)
        mid_re, mid_im = self._correct(mid)
        obs = detect.Observation(
            clock.s + clock.us / 1000000.0, sig.cell_temp_c, sig.stack_pressure_mpa,
            current_ma=dc_ma, voltage_v=lf.v_dc, z_hf_ohm=hf_re, z_lf_ohm=lf_re,
            phase_mid_deg=math.degrees(math.atan2(mid_im, mid_re)),
            v_noise_mv=lf.v_noise_rms * 1000.0, current_changed_s=self.current_changed_s)
        self.observations += 1
        for ev in self.detector.update(obs):
            if ev.get("event") == "echem_alarm":
                self.alarms += 1
            rig.session.send_event(alarm_event(ev))
            route_alarm(rig, ev)

    # ---- EIS sweeps ------------------------------------------------------------------

    def start_sweep(self, eis_seq, f_start_hz=10000.0, f_stop_hz=0.1, points_per_decade=10,
                    amplitude_mv=10.0, dc_ma=0.0):
        """Plan a sweep; its points are measured one per impedance-task run."""
        decades = math.log10(f_stop_hz / f_start_hz)
        count = int(abs(decades) * points_per_decade + 0.5) + 1
        freqs = [f_start_hz * 10.0 ** (decades * j / (count - 1)) if count > 1
                 else f_start_hz for j in range(count)]
        clock = self.rig.clock
        self.sweep = {"eis_seq": eis_seq, "freqs": freqs, "j": 0, "points": [],
                      "amplitude_mv": amplitude_mv, "dc_ma": dc_ma, "measured": 0,
                      "t0_s": clock.s, "mag": self.last_mag_ohm}
        self.rig.session.send_event({"event": "eis_started", "eis_seq": eis_seq,
                                     "points": count, "f_start_hz": f_start_hz,
                                     "f_stop_hz": f_stop_hz, "dc_ma": _sig(dc_ma)})
        if not self.supported:
            # Nothing can be measured here: report every point skipped, end the step.
            for f in freqs:
                self.sweep["points"].append([_sig(f), None, None, None, SKIPPED])
            self._finish_sweep("no_block_adc")

    def _plan_point(self, f_hz):
        o = self.opts
        p = impedance.plan_point(f_hz, (self.fs_hz,), o["block_n"], 1,
                                 o["max_block_ms"] / 2000.0)
        if p.decimation > o["max_decimation"]:
            raise ValueError("decimation")
        settle_n = int(p.settle_s * p.fs_eff_hz + 0.999)
        settle_n = p.n if settle_n > p.n else settle_n
        if (p.n + settle_n) * p.decimation * 1000.0 / self.fs_hz > o["max_block_ms"]:
            raise ValueError("block longer than max_block_ms")
        return p, settle_n

    def _sweep_step(self):
        sw = self.sweep
        if self.blocked_reason() is not None:
            self._finish_sweep("interlock")
            return
        f = sw["freqs"][sw["j"]]
        sw["j"] += 1
        try:
            p, settle_n = self._plan_point(f)
        except ValueError:
            sw["points"].append([_sig(f), None, None, None, SKIPPED])
        else:
            self._buffers()
            _unit_multisine((p.periods,), (0.0,), p.n, self.unit)
            self._unit_tracking = False
            dc = sw["dc_ma"]
            mag = sw["mag"]
            want = sw["amplitude_mv"] / mag if mag else 0.0
            idx = self._choose_range(dc, want)
            o = self.opts
            g = self.rig.galvanostat
            amp, _ = impedance.auto_amplitude_ma(mag, sw["amplitude_mv"],
                                                 o["min_amplitude_ma"], o["max_amplitude_ma"],
                                                 dc, g.ranges_ma[idx])
            bad = self.acquire(p.n, p.decimation, settle_n, dc, amp, idx)
            self.blocks += 1
            if bad:
                self.rejected_blocks += 1
                sw["points"].append([_sig(f), None, None, None, SKIPPED])
            elif mag is None:
                # Probe: this block only sized the perturbation; measure the point again.
                v_scale, i_scale = self._scales()
                est = impedance.measure_bins(self.v, self.i, p.n, p.fs_eff_hz, (p.periods,),
                                             v_scale, i_scale, self.eng)[0]
                sw["mag"] = est.mag_ohm if est.mag_ohm > 0 else 1000.0
                sw["j"] -= 1
                return
            else:
                v_scale, i_scale = self._scales()
                est = impedance.measure_bins(self.v, self.i, p.n, p.fs_eff_hz, (p.periods,),
                                             v_scale, i_scale, self.eng)[0]
                zr, zi = self._correct(est)
                q = QUALITY_CODE[est.quality()]
                clock = self.rig.clock
                self.telemetry.add_impedance(clock.s, clock.us, est.f_hz, zr, zi,
                                             est.rel_err, q | IMP_SWEEP)
                sw["points"].append([_sig(est.f_hz), _sig(zr), _sig(zi), _sig(est.rel_err),
                                     q])
                sw["measured"] += 1
                sw["mag"] = est.mag_ohm
                rh = self.rig.recipes
                if rh is not None:
                    rh.m.impedance_ohm = est.mag_ohm
                    rh.wake()
        if sw["j"] >= len(sw["freqs"]):
            self._finish_sweep(None)

    def _finish_sweep(self, error):
        sw = self.sweep
        self.sweep = None  # type: Any
        rig = self.rig
        ses = rig.session
        pts = sw["points"]
        chunks = (len(pts) + EIS_POINTS_PER_CHUNK - 1) // EIS_POINTS_PER_CHUNK
        for c in range(chunks):
            part = pts[c * EIS_POINTS_PER_CHUNK:(c + 1) * EIS_POINTS_PER_CHUNK]
            body = {"eis_seq": sw["eis_seq"], "chunk": c, "chunks": chunks, "points": part}
            send_reliable(ses, link.MSG_EIS, json.dumps(body).encode())
        ev = {"event": "eis_done", "eis_seq": sw["eis_seq"], "points": len(pts),
              "measured": sw["measured"], "skipped": len(pts) - sw["measured"],
              "chunks": chunks, "duration_s": rig.clock.s - sw["t0_s"]}
        if error is not None:
            ev["error"] = error
        ses.send_event(ev)
        rh = rig.recipes
        if rh is not None:
            rh.m.eis_done = sw["eis_seq"]
            rh.wake()

    def status(self):
        return {"period_s": self.effective_period_s(), "supported": self.supported,
                "fs_hz": self.fs_hz, "blocks": self.blocks, "rejected": self.rejected_blocks,
                "skipped": self.skipped, "aborted": self.aborted_blocks,
                "observations": self.observations,
                "alarms": self.alarms, "sweeping": self.sweep is not None,
                "last_mag_ohm": _sig(self.last_mag_ohm) if self.last_mag_ohm else None}


def _unit_multisine(bins, phases, n, out):
    """sum_j cos(2 pi k_j t / n + phi_j) over out[0:n], scaled to a peak of exactly 1."""
    impedance.multisine(bins, phases, n, out=out)
    peak = 0.0
    for t in range(n):
        a = out[t]
        if a < 0:
            a = -a
        if a > peak:
            peak = a
    g = 1.0 / peak if peak > 0 else 0.0
    for t in range(n):
        out[t] = out[t] * g
