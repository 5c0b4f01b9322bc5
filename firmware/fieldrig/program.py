"""Recipes on the running rig: load, start, abort, tick, apply, persist, resume.

``RecipeHost`` owns the recipe (validated by ``echem.recipe``) and its ``RecipeRunner``.
The rig's ``echem`` task calls it every 10 ms (software pulse phases are >= 10 ms); when
something can have happened to the runner (``tick``: its planned time, at most 100 ms
away, an alarm, a voltage cut-off, an output someone else changed) it fills the
runner's ``Measurements`` from the rig's signals, ticks it and applies the ``Output``:

- current: ``galvanostat.set_current_ma`` when the set-point changes (off when the
  output is off); a PIO pulse train (``Output.pulse`` is a level) is started on the
  board's ``pulse_gate`` when it appears or changes and stopped when it goes;
- temperature / pressure targets: the heater and pressure loops, when they change,
  within the same margins the commands enforce (else the recipe is aborted);
- actions: every dict with "event" goes out as an EVENT; ``safe_state`` latches the
  rig's safe state (``measure.latch_safe_state``), ``eis`` starts a sweep.

Interlocks come first: a latched fatal trip aborts the recipe; a current-off warning
holds it (step clock paused, ``recipe_held`` / ``recipe_continued`` events).

The cursor goes to flash (``recipe_store``) at every step change and every
``CURSOR_SAVE_S``; at boot ``resume_at_boot`` resumes a running recipe or aborts it,
per its ``on_reset`` field, and says which in an EVENT.
"""

from fieldrig import commands as cmds
from fieldrig.clock import DIFF_MS_CAP, US_PER_S, diff_ms
from fieldrig.echem import recipe as rcp
from fieldrig.echem_host import (
    block_adc,
    impedance_host,
    latch_safe_state,
    pulse_gate,
    recipe_host,
)
from fieldrig.recipe_store import RecipeStore

TYPE_CHECKING = False  # the type comments' names: the checker's only, never imported here
if TYPE_CHECKING:
    from fieldrig._types import Any  # noqa: F401  (a stub: fieldrig/_types.pyi)

CURSOR_SAVE_S = 60  # periodic cursor save: at most this much step time is lost by a reset
MS_REBASE = 1 << 28  # keep the runner's ms counter a small int on 32-bit ports
IDLE_TICK_MS = 100  # longest gap between runner ticks (temperature, pressure, sweep done)
MAX_RECIPE_TEXT = 16384  # chunked recipe_load: longest assembled JSON text

STATE_IDLE = "idle"  # nothing loaded
STATE_LOADED = "loaded"
STATE_RUNNING = "running"
STATE_HELD = "held"  # running, paused by a current-off interlock
STATE_DONE = "done"
STATE_ABORTED = "aborted"


def boot(rig):
    """At boot, when the board's recipe file exists: resume or abort what it holds."""
    return recipe_host(rig).resume_at_boot()


class RecipeHost:
    def __init__(self, rig):
        self.rig = rig
        self.store = RecipeStore(rig.recipe_path)
        self.recipe = None  # type: Any
        self.runner = None  # type: Any
        self.state = STATE_IDLE
        self.result = None  # type: Any  # last recipe_done event (results: ccd_ma_cm2)
        self.m = rcp.Measurements()
        self.m.events = []
        self._alarms = []  # detector alarms since the last tick
        self._ms = 0
        self._last_s = 0
        self._last_us = 0
        # ms after _last_s/_last_us of the runner's next planned tick, and the voltage
        # window that brings it sooner (tick): due at once.
        self._wait_ms = 0
        self._v_lo = -rcp.NO_LIMIT_V
        self._v_hi = rcp.NO_LIMIT_V
        self._applied_ma = None  # last current set-point applied (None: re-apply)
        self._pulse = None  # describe() of the train running on the gate
        self._temp_c = None
        self._pressure_mpa = None
        self._save_s = 0
        self._text = []  # parts of a chunked recipe_load
        self._text_len = 0

    # ---- limits --------------------------------------------------------------------

    def max_current_ma(self):
        rig = self.rig
        lim = rig.safety.threshold("over_current")
        top = rig.galvanostat.ranges_ma[-1]
        return top if top < lim else lim

    def running(self):
        return self.state in (STATE_RUNNING, STATE_HELD)

    # ---- load / start / abort ----------------------------------------------------------

    def add_text_part(self, text, part, parts):
        """Collect one part of a recipe sent in pieces; returns the whole text after the
        last part, else None. Raises ValueError on a part out of order or too much text."""
        if part == 0:
            self._text = []
            self._text_len = 0
        elif part != len(self._text):
            raise ValueError("part %d out of order (expected %d)" % (part, len(self._text)))
        if self._text_len + len(text) > MAX_RECIPE_TEXT:
            self._text = []
            self._text_len = 0
            raise ValueError("recipe text longer than %d characters" % MAX_RECIPE_TEXT)
        self._text.append(text)
        self._text_len += len(text)
        if part + 1 < parts:
            return None
        whole = "".join(self._text)
        self._text = []
        self._text_len = 0
        return whole

    def load(self, recipe):
        """Validate (raises rcp.RecipeError naming step and field) and keep it as the
        loaded recipe. Nothing else changes."""
        checked = rcp.validate(recipe, self.max_current_ma())
        self.recipe = checked
        self.state = STATE_LOADED
        self.result = None
        return self.summary()

    def summary(self):
        r = self.recipe
        return {"name": r["name"], "fingerprint": rcp.fingerprint(r),
                "steps": len(r["steps"]), "on_reset": r.get("on_reset", "abort")}

    def start(self):
        """Start the loaded recipe (the caller checked the interlocks). Raises OSError
        when the recipe cannot be stored (then nothing has changed)."""
        runner = rcp.RecipeRunner(self.recipe, self.max_current_ma(), self._f_sm_hz())
        if not self.store.save_recipe(self.recipe) or not self.store.save_cursor(
                runner.cursor()):
            raise OSError("recipe not stored")
        self.runner = runner
        self._begin()
        self.rig.session.send_event({"event": "recipe_started", "name": self.recipe["name"],
                                     "fingerprint": runner.fp})
        return {"name": self.recipe["name"], "fingerprint": runner.fp, "state": self.state}

    def _begin(self):
        self.state = STATE_RUNNING
        self.result = None
        self._applied_ma = None
        self._pulse = None
        self._temp_c = None
        self._pressure_mpa = None
        self._alarms = []
        clock = self.rig.clock
        self._last_s = clock.s
        self._last_us = clock.us
        self._save_s = clock.s
        self.wake()
        rig = self.rig
        if rig.impedance is not None:
            # A new experiment: conditions and cell state differ from what was learned.
            rig.impedance.detector.rebaseline()
        elif block_adc(rig):
            impedance_host(rig)  # tracking (and the detector) run while recipes run

    def _f_sm_hz(self):
        gate = pulse_gate(self.rig)
        f = getattr(gate, "f_sm_hz", None)
        return f if f else rcp.pulses.F_SM_RP2350_HZ

    def abort(self, reason):
        """Safe stop: current off, pulse train stopped, heater and press targets kept
        (dropping the stack pressure at once could open voids). Returns True when a
        recipe was running."""
        if not self.running():
            return False
        out = self.runner.abort(reason)
        self._apply(out)
        return True

    # ---- resume ----------------------------------------------------------------------

    def resume_at_boot(self):
        """Look at what the store holds after a reset: resume a recipe that was running
        (its on_reset is "resume") or abort it; an EVENT says which."""
        recipe, cursor = self.store.load()
        if recipe is None or not isinstance(cursor, dict):
            return None
        try:
            checked = rcp.validate(recipe, self.max_current_ma())
            runner = rcp.RecipeRunner(checked, self.max_current_ma(), self._f_sm_hz())
        except (rcp.RecipeError, ValueError) as e:
            self._event({"event": "recipe_not_resumed", "reason": "invalid", "detail": str(e)})
            return None
        self.recipe = checked
        if cursor.get("state") != "running":
            self.state = STATE_LOADED  # it had ended before the reset: nothing to do
            return None
        name = checked["name"]
        policy = checked.get("on_reset", "abort")
        if policy == "resume":
            try:
                runner.resume(cursor)
            except ValueError as e:
                policy = "abort"
                detail = str(e)
            else:
                self.runner = runner
                self._begin()
                self._event({"event": "recipe_resumed", "name": name, "fingerprint": runner.fp,
                             "path": runner.path(), "elapsed_s": runner.step_elapsed_ms / 1000.0,
                             "total_charge_mah_cm2": runner.total_charge})
                return "resumed"
        else:
            detail = "on_reset is abort"
        # Abort: mark the stored cursor so a second reset does not ask again.
        try:
            runner.resume(cursor)
        except ValueError:
            pass
        runner.abort("reset")
        self.runner = runner
        self.state = STATE_ABORTED
        self.store.save_cursor(runner.cursor())
        self._event({"event": "recipe_done", "name": name, "result": "aborted",
                     "reason": "reset", "detail": detail, "fingerprint": runner.fp})
        return "aborted"

    def _event(self, ev):
        self.rig.session.send_event(ev)

    # ---- alarms ------------------------------------------------------------------------

    def on_alarm(self, ev):
        """A detector alarm for the runner's next tick (the next 10 ms pass)."""
        self._alarms.append(ev)

    def wake(self):
        """News for the runner (an impedance result, a finished sweep): tick it at the
        next 10 ms pass, not at its planned time."""
        self._wait_ms = 0

    # ---- the task ----------------------------------------------------------------------

    def tick(self):
        """The echem task's recipe part, every 10 ms. The runner itself ticks only when
        something can have happened to it: its planned time (``next_tick_ms``, at most
        IDLE_TICK_MS away), an alarm, a cell voltage outside the step's voltage end
        conditions, or a set-point that is no longer the one applied (an interlock or a
        tracking block took the output). time_s ends, pulse edges and voltage cut-offs
        keep the 10 ms resolution; a 1 h plating step costs 10x fewer runner ticks."""
        if not self.running():
            return
        rig = self.rig
        clock = rig.clock
        dt = diff_ms(clock.s, clock.us, self._last_s, self._last_us)
        if (dt < self._wait_ms and not self._alarms
                and rig.galvanostat.setpoint_ma == self._applied_ma):
            v = rig.signals.cell_voltage_v
            if not (v > self._v_hi or v < self._v_lo):
                return
        if 0 < dt < DIFF_MS_CAP:
            # Keep the sub-ms rest: a board's passes come some us late, and dropping it
            # at every tick would slow the recipe's clock by up to 1 ms per tick.
            self._ms += dt
            us = self._last_us + dt * 1000
            self._last_s += us // US_PER_S
            self._last_us = us % US_PER_S
        elif dt != 0:
            self._ms += dt if dt > 0 else 0
            self._last_s = clock.s
            self._last_us = clock.us
        runner = self.runner
        if self._ms > MS_REBASE and runner.last_ms is not None:
            runner.last_ms -= self._ms
            self._ms = 0
        if rig.safety.tripped:
            # The safe state is already in force (the safety module did it); the
            # recipe cannot continue without the operator.
            self._apply(runner.abort("safety_trip"))
            return
        if rig.safety.current_inhibited():
            if self.state != STATE_HELD:
                self.state = STATE_HELD
                self._applied_ma = None  # current_off turned the galvanostat off
                self._stop_pulse()
                self._event({"event": "recipe_held", "rows": rig.safety.active_rows(),
                             "path": runner.path()})
            runner.hold()
            return
        if self.state == STATE_HELD:
            self.state = STATE_RUNNING
            self._event({"event": "recipe_continued", "path": runner.path()})
        m = self.m
        sig = rig.signals
        m.voltage_v = sig.cell_voltage_v
        m.current_ma = sig.cell_current_ma
        m.temp_c = sig.cell_temp_c
        m.pressure_mpa = sig.stack_pressure_mpa
        imp = rig.impedance
        m.active = imp.detector.raised if imp is not None else ()
        events = m.events
        for ev in self._alarms:
            events.append(ev)
        self._alarms = []
        out = runner.tick(self._ms, m)
        events.clear()
        self._apply(out)
        if self.state == STATE_RUNNING:
            self._plan(runner, m.current_ma)

    def _plan(self, runner, current_ma):
        """The runner's next planned tick and the voltage window that brings it sooner."""
        self._wait_ms = runner.next_tick_ms(IDLE_TICK_MS, current_ma)
        self._v_lo, self._v_hi = runner.voltage_window()

    def _apply(self, out):
        rig = self.rig
        runner = self.runner
        step_changed = False
        for act in out.actions:
            if "event" in act:
                ev = act
                if act["event"] == "recipe_step":
                    step_changed = True
                elif act["event"] == "recipe_done":
                    self.result = act
                self._event(ev)
            name = act.get("action")
            if name == "safe_state":
                latch_safe_state(rig, act.get("alarm", "recipe"))
            elif name == "eis":
                imp = impedance_host(rig)
                imp.start_sweep(act["eis_seq"], act["f_start_hz"], act["f_stop_hz"],
                                act["points_per_decade"], act["amplitude_mv"], act["dc_ma"])
        if out.done:
            self._finish(runner)
            return
        if not self._apply_targets(out):
            return
        self._apply_current(out)
        clock = rig.clock
        if step_changed or clock.s - self._save_s >= CURSOR_SAVE_S:
            self._save_s = clock.s
            self.store.save_cursor(runner.cursor())

    def _finish(self, runner):
        rig = self.rig
        self._stop_pulse()
        rig.galvanostat.off()
        self._applied_ma = None
        self.state = STATE_ABORTED if runner.state == "aborted" else STATE_DONE
        self.store.save_cursor(runner.cursor())
        imp = rig.impedance
        if imp is not None and imp.sweep is not None:
            imp.sweep = None  # the step that asked for it is gone

    def _apply_targets(self, out):
        """Heater / press targets when they change. False when one is beyond what the
        rig's limits allow now (the recipe is then aborted)."""
        rig = self.rig
        if out.temp_c != self._temp_c and out.temp_c is not None:
            hi = rig.safety.threshold("over_temp") - cmds.TEMP_MARGIN_C
            if out.temp_c > hi or not rig.heater_loop.valid:
                why = "temp_c %s above %s C" % (out.temp_c, hi) if out.temp_c > hi \
                    else "no valid RTD reading"
                self._apply(self.runner.abort("target_refused: " + why))
                return False
            rig.set_temperature(out.temp_c)
        self._temp_c = out.temp_c
        p = out.pressure_mpa
        if p != self._pressure_mpa and p is not None:
            lo = rig.safety.threshold("under_pressure")
            hi = rig.safety.threshold("over_pressure") * cmds.PRESSURE_MARGIN
            if not lo < p <= hi:
                self._apply(self.runner.abort(
                    "target_refused: pressure_mpa %s outside (%s, %s] MPa" % (p, lo, hi)))
                return False
            rig.set_pressure(p)
        self._pressure_mpa = p
        return True

    def _apply_current(self, out):
        rig = self.rig
        g = rig.galvanostat
        want = out.current_ma if out.output_on else 0.0
        if out.pulse != self._pulse and out.pulse is not None:
            # The gate first: a pulse amplitude set while the stage still conducts DC
            # would flow as DC until the train starts (range relay, SPI: ms on a board),
            # and DC at a pulse amplitude is what a pulsed protocol exists to avoid
            # (it is above a polycrystal's DC CCD).
            pulse_gate(rig).start(self.runner.program)
            self._pulse = out.pulse
        if want != self._applied_ma:
            g.set_current_ma(want)
            self._applied_ma = want
        if out.pulse is None:
            self._stop_pulse()

    def output_taken(self):
        """Someone else stopped the pulse gate and set the galvanostat (a tracking block):
        the next tick applies this recipe's output again, train first."""
        self._pulse = None
        self._applied_ma = None

    def _stop_pulse(self):
        if self._pulse is not None:
            pulse_gate(self.rig).stop()
            self._pulse = None

    # ---- status ------------------------------------------------------------------------

    def status(self):
        st = {"state": self.state}  # type: dict[str, Any]
        if self.recipe is not None:
            st["name"] = self.recipe["name"]
            st["fingerprint"] = rcp.fingerprint(self.recipe)
        r = self.runner
        if r is not None and self.running():
            st["path"] = r.path()
            st["type"] = r._step()["type"]
            st["elapsed_s"] = r.step_elapsed_ms / 1000.0
            st["step_charge_mah_cm2"] = round(r.step_charge, 6)
            st["total_charge_mah_cm2"] = round(r.total_charge, 6)
        if self.result is not None:
            res = {k: self.result[k] for k in self.result
                   if k in ("result", "reason", "ccd_ma_cm2", "last_passed_ma_cm2")}
            st["result"] = res
        return st
