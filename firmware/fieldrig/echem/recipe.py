"""Recipes: validated, versioned JSON test programs and the state machine that runs them.

Format (docs/echem.md has the full reference)::

    {"recipe": 1, "name": "...", "area_cm2": 0.785,
     "stop_on": ["hard_short"],            # alarm kinds that end the whole recipe
     "mitigation": {...},                  # see mitigation.py
     "steps": [step, ...]}

Steps (``type``): plate, strip, rest, pulse, eis, set_temperature, set_pressure, wait,
loop. Sign convention: plating (Li deposited on the working electrode) is positive
current; ``strip`` applies the negative. End conditions live in ``until`` (any one
ends the step): time_s, charge_mah_cm2, voltage_v_above/below, impedance_ohm_above/below,
temp_c_above/below, pressure_mpa_above/below, event (alarm kind or list of kinds).

``RecipeRunner`` is a pure state machine: ``tick(now_ms, measurements)`` returns the
set-points and actions; ``cursor()`` / ``resume(cursor)`` carry progress across a reset
(persisting the cursor is the platform's job). Validation raises RecipeError naming the
field (``steps[3].current_ma_cm2: must be > 0``) and builds nothing.
"""

import binascii
import json

from fieldrig.echem import mitigation as mit
from fieldrig.echem import pulses

VERSION = 1
CURSOR_VERSION = 1
MAX_LOOP_DEPTH = 4
MAX_STEPS_PER_LIST = 64
MAX_LOOP_COUNT = 100000
MAX_CURRENT_MA_CM2 = 50.0
TEMP_MIN_C = -20.0
TEMP_MAX_C = mit.TEMP_LIMIT_C
PRESSURE_MAX_MPA = mit.PRESSURE_LIMIT_MPA
EIS_F_MIN_HZ = 0.01
EIS_F_MAX_HZ = 16000.0  # Nyquist of the ADS131M04's 32 kSPS

ALARM_KINDS = mit.KINDS
NO_LIMIT_V = 1e30  # voltage_window's bound where a step has no voltage end condition
# Output.actions: every dict with an "event" key is sent on the link as an EVENT; a dict
# whose "action" is one of these is also executed by the platform (the runner applies
# every other mitigation action itself, through the set-points it returns).
PLATFORM_ACTIONS = ("safe_state", "eis")
UNTIL_FIELDS = ("time_s", "charge_mah_cm2", "voltage_v_above", "voltage_v_below",
                "impedance_ohm_above", "impedance_ohm_below", "temp_c_above", "temp_c_below",
                "pressure_mpa_above", "pressure_mpa_below", "event")
STEP_TYPES = ("plate", "strip", "rest", "pulse", "eis", "set_temperature", "set_pressure",
              "wait", "loop")
# Fields each step type accepts besides "type", "label" and "until".
STEP_FIELDS = {
    "plate": ("current_ma_cm2",),
    "strip": ("current_ma_cm2",),
    "rest": (),
    "pulse": ("direction", "on_ma_cm2", "off_ma_cm2", "freq_hz", "duty", "count"),
    "eis": ("f_start_hz", "f_stop_hz", "points_per_decade", "amplitude_mv", "dc_ma_cm2"),
    "set_temperature": ("temp_c", "wait", "tolerance_c"),
    "set_pressure": ("pressure_mpa", "wait", "tolerance_mpa"),
    "wait": (),
    "loop": ("count", "steps"),
}
TOP_FIELDS = ("recipe", "name", "area_cm2", "stop_on", "mitigation", "steps", "description",
              "on_reset")
# What the platform does with a recipe that was running when the rig reset: "abort"
# (default: the reset may have been a fault, so nothing is energised again without an
# operator) or "resume" (long cycling tests survive a brown-out).
ON_RESET = ("abort", "resume")


class RecipeError(ValueError):
    def __init__(self, path, reason):
        super().__init__("%s: %s" % (path, reason))
        self.path = path
        self.reason = reason


# ---------------------------------------------------------------- validation

def _is_num(v):
    return not isinstance(v, bool) and isinstance(v, (int, float)) and v == v


def _num(d, key, path, required=True, gt=None, ge=None, le=None, lt=None, default=None):
    fp = path + "." + key if path else key
    if key not in d:
        if required:
            raise RecipeError(fp, "required")
        return default
    v = d[key]
    if not _is_num(v):
        raise RecipeError(fp, "must be a number")
    if gt is not None and not v > gt:
        raise RecipeError(fp, "must be > %g" % gt)
    if ge is not None and not v >= ge:
        raise RecipeError(fp, "must be >= %g" % ge)
    if lt is not None and not v < lt:
        raise RecipeError(fp, "must be < %g" % lt)
    if le is not None and not v <= le:
        raise RecipeError(fp, "must be <= %g" % le)
    return v


def _int(d, key, path, lo, hi, required=True, default=None):
    fp = path + "." + key
    if key not in d:
        if required:
            raise RecipeError(fp, "required")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise RecipeError(fp, "must be an integer from %d to %d" % (lo, hi))
    return v


def _bool(d, key, path, default):
    if key not in d:
        return default
    if not isinstance(d[key], bool):
        raise RecipeError(path + "." + key, "must be true or false")
    return d[key]


def _events(v, fp):
    kinds = v if isinstance(v, list) else [v]
    if not kinds:
        raise RecipeError(fp, "must name at least one alarm kind")
    for k in kinds:
        if k not in ALARM_KINDS:
            raise RecipeError(fp, "unknown alarm kind %s (one of %s)"
                              % (json.dumps(k), ", ".join(ALARM_KINDS)))
    return kinds


def _validate_until(step, path, required):
    if "until" not in step:
        if required:
            raise RecipeError(path + ".until", "required (the step must end)")
        return
    u = step["until"]
    up = path + ".until"
    if not isinstance(u, dict):
        raise RecipeError(up, "must be an object")
    for key in sorted(u):
        if key not in UNTIL_FIELDS:
            raise RecipeError(up + "." + key, "unknown end condition")
    if not u:
        raise RecipeError(up, "needs at least one end condition")
    _num(u, "time_s", up, False, gt=0)
    _num(u, "charge_mah_cm2", up, False, gt=0)
    for key in ("voltage_v_above", "voltage_v_below"):
        _num(u, key, up, False, ge=-10.0, le=10.0)
    for key in ("impedance_ohm_above", "impedance_ohm_below"):
        _num(u, key, up, False, gt=0)
    for key in ("temp_c_above", "temp_c_below"):
        _num(u, key, up, False, ge=TEMP_MIN_C, le=TEMP_MAX_C)
    for key in ("pressure_mpa_above", "pressure_mpa_below"):
        _num(u, key, up, False, ge=0.0, le=PRESSURE_MAX_MPA)
    if "event" in u:
        _events(u["event"], up + ".event")


def _current(step, key, path, area_cm2, max_current_ma, required=True, ge0=False):
    if ge0:
        v = _num(step, key, path, required, ge=0.0, le=MAX_CURRENT_MA_CM2, default=0.0)
    else:
        v = _num(step, key, path, required, gt=0.0, le=MAX_CURRENT_MA_CM2, default=0.0)
    if v is not None and area_cm2 is not None and abs(v) * area_cm2 > max_current_ma:
        raise RecipeError(path + "." + key, "%g mA on %g cm2 exceeds the %g mA galvanostat limit"
                          % (abs(v) * area_cm2, area_cm2, max_current_ma))
    return v


def _validate_step(step, path, depth, area_cm2, max_current_ma):
    if not isinstance(step, dict):
        raise RecipeError(path, "must be an object")
    if "type" not in step:
        raise RecipeError(path + ".type", "required")
    t = step["type"]
    if t not in STEP_TYPES:
        raise RecipeError(path + ".type", "unknown step type %s" % json.dumps(t))
    allowed = STEP_FIELDS[t]
    for key in sorted(step):
        if key not in allowed and key not in ("type", "label", "until"):
            raise RecipeError(path + "." + key, "unknown field for a %s step" % t)
    if "label" in step and not isinstance(step["label"], str):
        raise RecipeError(path + ".label", "must be a string")
    if t in ("plate", "strip"):
        _current(step, "current_ma_cm2", path, area_cm2, max_current_ma)
        _validate_until(step, path, True)
    elif t == "rest":
        _validate_until(step, path, True)
    elif t == "pulse":
        d = step.get("direction", "plate")
        if d not in ("plate", "strip"):
            raise RecipeError(path + ".direction", "must be \"plate\" or \"strip\"")
        on = _current(step, "on_ma_cm2", path, area_cm2, max_current_ma)
        off = _num(step, "off_ma_cm2", path, False, ge=-MAX_CURRENT_MA_CM2, default=0.0)
        if off is not None and off > on:
            raise RecipeError(path + ".off_ma_cm2", "must be <= on_ma_cm2")
        freq = _num(step, "freq_hz", path, True, gt=0.0, le=1000000.0)
        duty = _num(step, "duty", path, True, gt=0.0, lt=1.0)
        count = _int(step, "count", path, 0, 0xFFFFFFFF, False, 0) or 0
        # The timing path must exist for these numbers (PIO or software).
        try:
            pulses.pulse_program(1.0, off, freq, duty, count)
        except pulses.PulseError as e:
            raise RecipeError(path + ".freq_hz", str(e)) from None
        _validate_until(step, path, count == 0)
    elif t == "eis":
        f0 = _num(step, "f_start_hz", path, False, ge=EIS_F_MIN_HZ, le=EIS_F_MAX_HZ,
                  default=10000.0)
        f1 = _num(step, "f_stop_hz", path, False, ge=EIS_F_MIN_HZ, le=EIS_F_MAX_HZ,
                  default=0.1)
        if f0 == f1:
            raise RecipeError(path + ".f_stop_hz", "must differ from f_start_hz")
        _int(step, "points_per_decade", path, 1, 50, False, 10)
        _num(step, "amplitude_mv", path, False, gt=0.0, le=100.0, default=10.0)
        dc = _num(step, "dc_ma_cm2", path, False, ge=-MAX_CURRENT_MA_CM2,
                  le=MAX_CURRENT_MA_CM2, default=0.0)
        if dc is not None and area_cm2 is not None and abs(dc) * area_cm2 > max_current_ma:
            raise RecipeError(path + ".dc_ma_cm2", "exceeds the %g mA galvanostat limit"
                              % max_current_ma)
        _validate_until(step, path, False)
    elif t == "set_temperature":
        _num(step, "temp_c", path, True, ge=TEMP_MIN_C, le=TEMP_MAX_C)
        _bool(step, "wait", path, True)
        _num(step, "tolerance_c", path, False, gt=0.0, le=20.0, default=1.0)
        _validate_until(step, path, False)
    elif t == "set_pressure":
        _num(step, "pressure_mpa", path, True, gt=0.0, le=PRESSURE_MAX_MPA)
        _bool(step, "wait", path, True)
        _num(step, "tolerance_mpa", path, False, gt=0.0, le=5.0, default=0.2)
        _validate_until(step, path, False)
    elif t == "wait":
        _validate_until(step, path, True)
    elif t == "loop":
        if depth >= MAX_LOOP_DEPTH:
            raise RecipeError(path, "loops nest at most %d deep" % MAX_LOOP_DEPTH)
        _int(step, "count", path, 1, MAX_LOOP_COUNT)
        _validate_steps(step.get("steps"), path + ".steps", depth + 1, area_cm2,
                        max_current_ma)


def _validate_steps(steps, path, depth, area_cm2, max_current_ma):
    if not isinstance(steps, list) or not steps:
        raise RecipeError(path, "must be a non-empty list")
    if len(steps) > MAX_STEPS_PER_LIST:
        raise RecipeError(path, "at most %d steps per list" % MAX_STEPS_PER_LIST)
    for j in range(len(steps)):
        _validate_step(steps[j], "%s[%d]" % (path, j), depth, area_cm2, max_current_ma)


def validate(recipe, max_current_ma=100.0):
    """Check a recipe (a dict, or JSON text). Returns the dict; raises RecipeError."""
    if isinstance(recipe, bytes):
        recipe = recipe.decode()
    if isinstance(recipe, str):
        try:
            recipe = json.loads(recipe)
        except ValueError:
            raise RecipeError("recipe", "not valid JSON") from None
    if not isinstance(recipe, dict):
        raise RecipeError("recipe", "must be a JSON object")
    if "recipe" not in recipe:
        raise RecipeError("recipe", "required (format version)")
    if recipe["recipe"] != VERSION or isinstance(recipe["recipe"], bool):
        raise RecipeError("recipe", "unsupported format version %s (this firmware reads %d)"
                          % (json.dumps(recipe["recipe"]), VERSION))
    for key in sorted(recipe):
        if key not in TOP_FIELDS:
            raise RecipeError(key, "unknown field")
    name = recipe.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise RecipeError("name", "must be a string of 1 to 64 characters")
    area = _num(recipe, "area_cm2", "", True, gt=0.0, le=100.0)
    if "stop_on" in recipe:
        _events(recipe["stop_on"], "stop_on")
    if "description" in recipe and not isinstance(recipe["description"], str):
        raise RecipeError("description", "must be a string")
    if "on_reset" in recipe and recipe["on_reset"] not in ON_RESET:
        raise RecipeError("on_reset", "must be \"abort\" or \"resume\"")
    try:
        mit.merged_policy(recipe.get("mitigation"))
    except mit.PolicyError as e:
        raise RecipeError(e.path, e.reason) from None
    _validate_steps(recipe.get("steps"), "steps", 0, area, max_current_ma)
    return recipe


def canonical(obj):
    """JSON with sorted keys: the same text for the same recipe on every port (dict
    order is not guaranteed in MicroPython), for the fingerprint."""
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(k) + ":" + canonical(obj[k]) for k in sorted(obj)) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in obj) + "]"
    return json.dumps(obj)


def _crc(obj, crc):
    # The CRC of canonical(obj), fed piece by piece: the whole text of a large recipe
    # is never built (a 60-step ladder would need tens of KB of transient strings).
    if isinstance(obj, dict):
        crc = binascii.crc32(b"{", crc)
        first = True
        for k in sorted(obj):
            if not first:
                crc = binascii.crc32(b",", crc)
            first = False
            crc = binascii.crc32((json.dumps(k) + ":").encode(), crc)
            crc = _crc(obj[k], crc)
        return binascii.crc32(b"}", crc)
    if isinstance(obj, (list, tuple)):
        crc = binascii.crc32(b"[", crc)
        for j in range(len(obj)):
            if j:
                crc = binascii.crc32(b",", crc)
            crc = _crc(obj[j], crc)
        return binascii.crc32(b"]", crc)
    return binascii.crc32(json.dumps(obj).encode(), crc)


def fingerprint(recipe):
    """CRC-32 of the recipe's canonical JSON (a cursor is only resumed on its recipe)."""
    return _crc(recipe, 0) & 0xFFFFFFFF


# ---------------------------------------------------------------- the runner

class Measurements:
    """Latest measurements, updated in place by the platform before each tick.
    current_ma is the measured current (integrated into charge); impedance_ohm the latest
    |Z| (None before the first); events the alarm kinds (or alarm event dicts) raised
    since the previous tick; active the alarm kinds the detector holds raised now (a
    mitigation whose kind is still raised when its interlude ends responds again, and
    after max_attempts goes to the safe state); eis_done the ``eis_seq`` of the last
    finished sweep (the eis action carries it), so a stale completion never ends a later
    eis step."""

    def __init__(self, voltage_v=0.0, current_ma=0.0, temp_c=25.0, pressure_mpa=0.0,
                 impedance_ohm=None, events=(), eis_done=0, active=()):
        self.active = active
        self.voltage_v = voltage_v
        self.current_ma = current_ma
        self.temp_c = temp_c
        self.pressure_mpa = pressure_mpa
        self.impedance_ohm = impedance_ohm
        self.events = events
        self.eis_done = eis_done


class Output:
    """What the platform applies after a tick.

    current_ma: galvanostat set-point (0 with output_on False = off). pulse: the PIO
    train that should be running; a level, not an edge: start the gate when it appears
    or changes, stop it when it is None (a resumed recipe restarts its train by itself).
    temp_c / pressure_mpa: targets (None = not controlled by the recipe). actions: dicts
    in order; those with "event" go on the link, those whose "action" is in
    PLATFORM_ACTIONS are executed by the platform. done: the recipe is over."""

    def __init__(self):
        self.current_ma = 0.0
        self.output_on = False
        self.pulse = None  # type: dict | None
        self.temp_c = None  # type: float | None
        self.pressure_mpa = None  # type: float | None
        self.actions = []
        self.done = False
        self.step = ""
        self.step_type = ""


def _kind_of(ev):
    """Alarm kind of an event: a bare kind string or an alarm dict ({"kind": ...})."""
    if isinstance(ev, str):
        return ev
    if isinstance(ev, dict):
        return str(ev.get("kind") or ev.get("event") or "")
    return ""


class RecipeRunner:
    def __init__(self, recipe, max_current_ma=100.0, f_sm_hz=pulses.F_SM_RP2350_HZ):
        self.recipe = validate(recipe, max_current_ma)
        self.area_cm2 = self.recipe["area_cm2"]
        self.stop_on = _as_list(self.recipe.get("stop_on", ["hard_short"]))
        self.f_sm_hz = f_sm_hz
        self.fp = fingerprint(self.recipe)
        self.mitigator = mit.Mitigator(self.recipe.get("mitigation"))
        # Progress: one frame per nesting level, [steps list, index, iteration].
        self.frames = [[self.recipe["steps"], 0, 0]]
        self.state = "running"
        self.end_reason = None
        self.step_elapsed_ms = 0
        self.step_charge = 0.0  # mAh/cm2 in this step
        self.total_charge = 0.0  # mAh/cm2 since the start
        self.started = False  # current step announced
        self.last_ms = None
        self.temp_target_c = None
        self.pressure_target_mpa = None
        self.eis_requested = False
        self.eis_seq = 0
        # Mitigation overrides (persist until the recipe ends).
        self.plate_scale = 1.0
        self.strip_scale = 1.0
        self.pulsed = None  # (freq_hz, duty) for plating steps
        self.interlude = []  # [[current_ma_cm2, remaining_ms, label]]
        self.program = None
        self.ccd_ma_cm2 = None
        self.last_passed_ma_cm2 = None
        self.passed_before_ma_cm2 = None  # last_passed's previous value
        self.mitigating = None  # alarm kind of the latest mitigation response
        self.last_density_ma_cm2 = None  # |density| of the latest current step started
        self.pending = []

    # ---- navigation

    def _step(self):
        f = self.frames[-1]
        return f[0][f[1]]

    def path(self):
        """'steps[2].steps[0]' of the current step."""
        out = "steps[%d]" % self.frames[0][1]
        for f in self.frames[1:]:
            out += ".steps[%d]" % f[1]
        return out

    def _enter(self):
        # Descend into loops until the current step is a leaf.
        while True:
            st = self._step()
            if st["type"] != "loop":
                return
            self.frames.append([st["steps"], 0, 0])

    def _advance(self):
        """Move to the next leaf step; False when the recipe is over."""
        while True:
            f = self.frames[-1]
            f[1] += 1
            if f[1] < len(f[0]):
                self._enter()
                return True
            if len(self.frames) == 1:
                return False
            # End of a loop body: next iteration or leave the loop.
            parent = self.frames[-2]
            loop = parent[0][parent[1]]
            f[2] += 1
            if f[2] < loop["count"]:
                f[1] = -1
                continue
            self.frames.pop()

    # ---- cursor

    def cursor(self):
        """Serialisable progress (JSON-safe dict)."""
        return {"cursor": CURSOR_VERSION, "fingerprint": self.fp, "state": self.state,
                "path": [f[1] for f in self.frames], "loops": [f[2] for f in self.frames],
                "started": self.started, "elapsed_ms": self.step_elapsed_ms,
                "step_charge_mah_cm2": self.step_charge,
                "total_charge_mah_cm2": self.total_charge,
                "temp_c": self.temp_target_c, "pressure_mpa": self.pressure_target_mpa,
                "eis_requested": self.eis_requested, "eis_seq": self.eis_seq,
                "plate_scale": self.plate_scale, "strip_scale": self.strip_scale,
                "pulsed": list(self.pulsed) if self.pulsed else None,
                "interlude": [list(x) for x in self.interlude],
                "mitigating": self.mitigating,
                "ccd_ma_cm2": self.ccd_ma_cm2, "last_passed_ma_cm2": self.last_passed_ma_cm2,
                "passed_before_ma_cm2": self.passed_before_ma_cm2,
                "last_density_ma_cm2": self.last_density_ma_cm2,
                "mitigation": self.mitigator.state(), "end_reason": self.end_reason}

    def resume(self, c):
        """Continue from a cursor of this same recipe. Raises ValueError (and changes
        nothing) for another recipe's cursor or one that does not fit its steps."""
        if not isinstance(c, dict) or c.get("cursor") != CURSOR_VERSION:
            raise ValueError("not a recipe cursor v%d" % CURSOR_VERSION)
        if c.get("fingerprint") != self.fp:
            raise ValueError("cursor belongs to another recipe")
        if c.get("state") != "running":
            # Finished or aborted: nothing to run; keep the outcome.
            self.state = c.get("state")
            self.end_reason = c.get("end_reason")
            return
        path = c["path"]
        loops = c["loops"]
        frames = []
        steps = self.recipe["steps"]
        for depth in range(len(path)):
            idx = path[depth]
            if not 0 <= idx < len(steps):
                raise ValueError("cursor path does not fit the recipe")
            frames.append([steps, idx, loops[depth]])
            if depth + 1 < len(path):
                st = steps[idx]
                if st["type"] != "loop" or not 0 <= loops[depth + 1] < st["count"]:
                    raise ValueError("cursor path does not fit the recipe")
                steps = st["steps"]
        # Only a step that has not started yet may still sit on a loop (the first tick
        # descends into it).
        if steps[path[-1]]["type"] == "loop" and c.get("started"):
            raise ValueError("cursor path does not fit the recipe")
        self.frames = frames
        self.state = c["state"]
        self.started = c["started"]
        self.step_elapsed_ms = c["elapsed_ms"]
        self.step_charge = c["step_charge_mah_cm2"]
        self.total_charge = c["total_charge_mah_cm2"]
        self.temp_target_c = c["temp_c"]
        self.pressure_target_mpa = c["pressure_mpa"]
        self.eis_requested = c["eis_requested"]
        self.eis_seq = c["eis_seq"]
        self.plate_scale = c["plate_scale"]
        self.strip_scale = c["strip_scale"]
        self.pulsed = tuple(c["pulsed"]) if c["pulsed"] else None
        self.interlude = [list(x) for x in c["interlude"]]
        self.mitigating = c.get("mitigating")
        self.ccd_ma_cm2 = c["ccd_ma_cm2"]
        self.last_passed_ma_cm2 = c["last_passed_ma_cm2"]
        self.passed_before_ma_cm2 = c.get("passed_before_ma_cm2")
        self.last_density_ma_cm2 = c.get("last_density_ma_cm2")
        self.mitigator.restore(c["mitigation"])
        self.end_reason = c["end_reason"]
        self.last_ms = None  # uptime restarted: the next tick re-anchors the step clock
        self.program = None
        if self.started:
            self.program = self._make_program(self._step())

    # ---- control

    def hold(self):
        """The platform paused ticking (e.g. current inhibited by an interlock): the next
        tick re-anchors the step clock, so the pause counts neither as step time nor as
        charge."""
        self.last_ms = None

    def abort(self, reason="aborted"):
        """Stop now: current off, pulses stopped; the cursor says aborted."""
        if self.state == "running":
            self.state = "aborted"
            self.end_reason = reason
            self.pending.append({"event": "recipe_done", "name": self.recipe["name"],
                                 "result": "aborted", "reason": reason,
                                 "path": self.path(), "total_charge_mah_cm2": self.total_charge})
        return self._output()

    def _signed_density(self, st):
        """Signed set-point density of a current step (mA/cm2, + plating), after
        mitigation scaling; None for steps without a fixed current."""
        t = st["type"]
        if t == "plate":
            return st["current_ma_cm2"] * self.plate_scale
        if t == "strip":
            return -st["current_ma_cm2"] * self.strip_scale
        if t == "pulse":
            on = st["on_ma_cm2"]
            if st.get("direction", "plate") == "plate":
                return on * self.plate_scale
            return -on * self.strip_scale
        if t == "eis":
            return st.get("dc_ma_cm2", 0.0)
        return None

    def _make_program(self, st):
        t = st["type"]
        a = self.area_cm2
        if t in ("plate", "strip"):
            dens = self._signed_density(st)
            if t == "plate" and self.pulsed is not None:
                return pulses.pulse_program(dens * a, 0.0, self.pulsed[0], self.pulsed[1], 0,
                                            self.f_sm_hz)
            return pulses.dc(dens * a)
        if t == "pulse":
            sign = 1.0 if st.get("direction", "plate") == "plate" else -1.0
            scale = self.plate_scale if sign > 0 else self.strip_scale
            on = sign * st["on_ma_cm2"] * scale * a
            off = sign * st.get("off_ma_cm2", 0.0) * scale * a
            return pulses.pulse_program(on, off, st["freq_hz"], st["duty"], st.get("count", 0),
                                        self.f_sm_hz)
        if t == "eis":
            return pulses.dc(st.get("dc_ma_cm2", 0.0) * a)
        return None

    def _start_step(self, now_ms):
        st = self._step()
        self.started = True
        self.step_elapsed_ms = 0
        self.step_charge = 0.0
        self.eis_requested = False
        ev = {"event": "recipe_step", "phase": "start", "path": self.path(), "type": st["type"]}
        if "label" in st:
            ev["label"] = st["label"]
        loops = [f[2] for f in self.frames[1:]]
        if loops:
            ev["loop"] = loops
        self.pending.append(ev)
        t = st["type"]
        if t in ("plate", "strip", "pulse"):
            dens = self._signed_density(st)
            if dens:
                self.last_density_ma_cm2 = abs(dens)
        if t == "set_temperature":
            self.temp_target_c = st["temp_c"]
        elif t == "set_pressure":
            self.pressure_target_mpa = st["pressure_mpa"]
        elif t == "eis":
            self.eis_requested = True
            self.eis_seq += 1
            self.pending.append({"action": "eis", "eis_seq": self.eis_seq, "path": self.path(),
                                 "f_start_hz": st.get("f_start_hz", 10000.0),
                                 "f_stop_hz": st.get("f_stop_hz", 0.1),
                                 "points_per_decade": st.get("points_per_decade", 10),
                                 "amplitude_mv": st.get("amplitude_mv", 10.0),
                                 "dc_ma": st.get("dc_ma_cm2", 0.0) * self.area_cm2})
        self.program = self._make_program(st)

    def _end_reason(self, st, m, use_events):
        """Which end condition holds now (name) or None. Alarms end only the step that
        was running when they came (use_events), not the ones started in the same tick."""
        t = st["type"]
        u = st.get("until", {})
        if "time_s" in u and self.step_elapsed_ms >= u["time_s"] * 1000:
            return "time_s"
        if "charge_mah_cm2" in u and self.step_charge >= u["charge_mah_cm2"]:
            return "charge_mah_cm2"
        v = m.voltage_v
        if "voltage_v_above" in u and v > u["voltage_v_above"]:
            return "voltage_v_above"
        if "voltage_v_below" in u and v < u["voltage_v_below"]:
            return "voltage_v_below"
        z = m.impedance_ohm
        if z is not None:
            if "impedance_ohm_above" in u and z > u["impedance_ohm_above"]:
                return "impedance_ohm_above"
            if "impedance_ohm_below" in u and z < u["impedance_ohm_below"]:
                return "impedance_ohm_below"
        if "temp_c_above" in u and m.temp_c > u["temp_c_above"]:
            return "temp_c_above"
        if "temp_c_below" in u and m.temp_c < u["temp_c_below"]:
            return "temp_c_below"
        if "pressure_mpa_above" in u and m.pressure_mpa > u["pressure_mpa_above"]:
            return "pressure_mpa_above"
        if "pressure_mpa_below" in u and m.pressure_mpa < u["pressure_mpa_below"]:
            return "pressure_mpa_below"
        if "event" in u and use_events:
            want = _as_list(u["event"])
            for ev in m.events:
                if _kind_of(ev) in want:
                    return "event:" + _kind_of(ev)
        if t == "set_temperature" and st.get("wait", True):
            if abs(m.temp_c - st["temp_c"]) <= st.get("tolerance_c", 1.0):
                return "reached"
        elif t == "set_temperature":
            return "set"
        if t == "set_pressure" and st.get("wait", True):
            if abs(m.pressure_mpa - st["pressure_mpa"]) <= st.get("tolerance_mpa", 0.2):
                return "reached"
        elif t == "set_pressure":
            return "set"
        if t == "eis" and self.eis_requested and m.eis_done == self.eis_seq:
            return "eis_done"
        if self.program is not None and self.program.done(self.step_elapsed_ms):
            return "count"
        return None

    def _finish(self, result, reason):
        self.state = "done"
        self.end_reason = reason
        ev = {"event": "recipe_done", "name": self.recipe["name"], "result": result,
              "reason": reason, "total_charge_mah_cm2": self.total_charge}
        if self.ccd_ma_cm2 is not None:
            ev["ccd_ma_cm2"] = self.ccd_ma_cm2
        if self.last_passed_ma_cm2 is not None:
            ev["last_passed_ma_cm2"] = self.last_passed_ma_cm2
        self.pending.append(ev)

    def _context(self):
        st = self._step()
        dens = self._signed_density(st) or 0.0
        return mit.Context(plating=dens > 0 and not self.interlude,
                           stripping=dens < 0 and not self.interlude, current_ma_cm2=dens,
                           temp_target_c=self.temp_target_c,
                           pressure_target_mpa=self.pressure_target_mpa,
                           plate_scale=self.plate_scale, strip_scale=self.strip_scale)

    def _mitigate(self, kind, conf):
        self.mitigating = kind
        ctx = self._context()
        for act in self.mitigator.respond(kind, ctx, conf):
            self.pending.append(act)
            name = act["action"]
            if name == "safe_state":
                self.state = "aborted"
                self.end_reason = "safe_state:" + kind
                self.pending.append({"event": "recipe_done", "name": self.recipe["name"],
                                     "result": "aborted", "reason": self.end_reason,
                                     "path": self.path(),
                                     "total_charge_mah_cm2": self.total_charge})
                return
            if not act.get("applied", True):
                continue
            if name == "stop_plating":
                self.interlude.append([0.0, 0, "stop_plating"])
            elif name == "rest":
                self.interlude.append([0.0, int(act["rest_s"] * 1000), "rest"])
            elif name == "reverse_pulse":
                self.interlude.append([-act["current_ma_cm2"], int(act["duration_s"] * 1000),
                                       "reverse_pulse"])
            elif name == "pulsed_current":
                self.pulsed = (act["freq_hz"], act["duty"])
            elif name == "lower_current":
                if act["target"] == "strip":
                    self.strip_scale = act["scale"]
                else:
                    self.plate_scale = act["scale"]
            elif name == "raise_temperature":
                self.temp_target_c = act["temp_c"]
            elif name == "raise_pressure":
                self.pressure_target_mpa = act["pressure_mpa"]
        # The running step picks up new scales / pulsing when it resumes.
        self.program = self._make_program(self._step())

    def tick(self, now_ms, m):
        """Advance to now_ms with measurements m; returns an Output."""
        if self.state != "running":
            return self._output()
        dt = 0 if self.last_ms is None else now_ms - self.last_ms
        if dt < 0:
            dt = 0
        self.last_ms = now_ms
        # Charge actually passed (measured current), in mAh/cm2.
        dq = abs(m.current_ma) * dt / 3600000.0 / self.area_cm2
        self.total_charge += dq
        if not self.started:
            self._enter()
            self._start_step(now_ms)
            dt = 0
        elif self.interlude:
            # Mitigation interlude: the step's own clock and charge pause.
            seg = self.interlude[0]
            seg[1] -= dt
            if seg[1] <= 0:
                self.interlude.pop(0)
                self.pending.append({"event": "mitigation_step_done", "step": seg[2]})
                kind = self.mitigating
                if (not self.interlude and kind is not None and kind in m.active
                        and self.mitigator.policy.get(kind, {}).get("recheck", False)):
                    # The response did not clear the alarm (a bridged filament does not
                    # heal in a rest): respond again; past max_attempts, the safe state.
                    self._mitigate(kind, None)
                    if self.state != "running":
                        return self._output()
        else:
            self.step_elapsed_ms += dt
            self.step_charge += dq
        # Alarms: a hard short is always the safe state; kinds in stop_on end the recipe;
        # the rest go to the mitigation policy (unless the step ends on them).
        for ev in m.events:
            kind = _kind_of(ev)
            conf = ev.get("confidence") if isinstance(ev, dict) else None
            if kind == "hard_short":
                self._record_ccd(kind)
                self._mitigate(kind, conf)
                return self._output()
            if kind in self.stop_on:
                self._record_ccd(kind)
                self._finish("stopped", "stop_on:" + kind)
                return self._output()
        for ev in m.events:
            kind = _kind_of(ev)
            if kind in ALARM_KINDS and not self._ends_step_on(kind):
                conf = ev.get("confidence") if isinstance(ev, dict) else None
                self._mitigate(kind, conf)
                if self.state != "running":
                    return self._output()
        # End conditions (a step may end at once: loop through zero-length steps).
        guard = 0
        use_events = True
        while not self.interlude and guard < 64:
            guard += 1
            st = self._step()
            reason = self._end_reason(st, m, use_events)
            use_events = False
            if reason is None:
                break
            if reason.startswith("event:"):
                self._record_ccd(reason[6:])
            elif st["type"] in ("plate", "strip", "pulse") and reason in (
                    "time_s", "charge_mah_cm2", "count"):
                dens = self._signed_density(st)
                if dens and abs(dens) != self.last_passed_ma_cm2:
                    self.passed_before_ma_cm2 = self.last_passed_ma_cm2
                    self.last_passed_ma_cm2 = abs(dens)
            ev = {"event": "recipe_step", "phase": "end", "path": self.path(),
                  "type": st["type"], "reason": reason,
                  "elapsed_s": self.step_elapsed_ms / 1000.0,
                  "charge_mah_cm2": self.step_charge}
            self.pending.append(ev)
            if not self._advance():
                self._finish("completed", "completed")
                return self._output()
            self._start_step(now_ms)
        return self._output()

    # ---- when to tick next (the platform ticks between two of these only on news)

    def next_tick_ms(self, cap_ms, current_ma):
        """ms until the runner next has something to do on its own clock, at most
        cap_ms: a time_s end, an interlude's end, the program's next set-point change
        (a software pulse edge) or the end of its count, or when the step's charge is
        reached at current_ma (the measured current). 0: tick at once. Alarms, a
        voltage outside ``voltage_window`` and new impedance results are news the
        platform acts on itself; temperature, pressure and sweep completion are
        checked at cap_ms."""
        if self.state != "running" or not self.started:
            return 0
        best = cap_ms
        if self.interlude:
            left = self.interlude[0][1]
            if left < best:
                best = left
        else:
            u = self._step().get("until") or {}
            t = u.get("time_s")
            if t is not None:
                left = t * 1000 - self.step_elapsed_ms
                if left < best:
                    best = left
            q = u.get("charge_mah_cm2")
            if q is not None and current_ma != 0:
                a = current_ma if current_ma > 0 else -current_ma
                left = (q - self.step_charge) * self.area_cm2 * 3600000.0 / a
                if left < best:
                    best = left
            if self.program is not None:
                left = self.program.next_change_ms(self.step_elapsed_ms)
                if left is not None and left < best:
                    best = left
        if best <= 0:
            return 0
        n = int(best)
        return n if n == best else n + 1  # ceil: the condition holds by then

    def voltage_window(self):
        """(low_v, high_v): a cell voltage below low_v or above high_v ends the running
        step (its voltage_v_below / voltage_v_above); +-NO_LIMIT_V where it has none."""
        if self.state != "running" or self.interlude or not self.started:
            return -NO_LIMIT_V, NO_LIMIT_V
        u = self._step().get("until") or {}
        return u.get("voltage_v_below", -NO_LIMIT_V), u.get("voltage_v_above", NO_LIMIT_V)

    def _ends_step_on(self, kind):
        # An alarm the current step ends on (e.g. a CCD ladder step) is not mitigated.
        u = self._step().get("until", {})
        return "event" in u and kind in _as_list(u["event"])

    def _record_ccd(self, kind):
        # A short during a current step: that step's |density| is the CCD. Seen in a rest
        # (the detector needs a few tracking periods): the filament grew in the current
        # step before it, so that density is the CCD and it did not pass.
        if kind not in ("soft_short", "hard_short"):
            return
        st = self._step()
        dens = None
        if st["type"] in ("plate", "strip", "pulse"):
            dens = self._signed_density(st)
        ccd = abs(dens) if dens else self.last_density_ma_cm2
        if not ccd:
            return
        self.ccd_ma_cm2 = ccd
        lp = self.last_passed_ma_cm2
        if lp is not None and lp >= ccd:
            pb = self.passed_before_ma_cm2
            self.last_passed_ma_cm2 = pb if pb is not None and pb < ccd else None

    def _output(self):
        out = Output()
        out.actions = self.pending
        self.pending = []
        out.temp_c = self.temp_target_c
        out.pressure_mpa = self.pressure_target_mpa
        if self.state != "running":
            out.done = True
            return out
        st = self._step()
        out.step = self.path()
        out.step_type = st["type"]
        if self.interlude:
            out.current_ma = self.interlude[0][0] * self.area_cm2
            out.output_on = out.current_ma != 0.0
            return out
        prog = self.program
        if prog is not None:
            out.current_ma = prog.setpoint_ma(self.step_elapsed_ms)
            out.output_on = True
            if prog.gated:
                out.pulse = prog.describe()
        return out


def _as_list(v):
    return v if isinstance(v, list) else [v]


# ---------------------------------------------------------------- built-in recipes

def symmetric_cycling(area_cm2, current_ma_cm2, capacity_mah_cm2, cycles, rest_s=0.0,
                      name="symmetric-cycling", v_limit=1.0):
    """Li|SE|Li cycling: plate then strip ``capacity_mah_cm2`` at ``current_ma_cm2``,
    ``cycles`` times, optional rests; each half-cycle also ends beyond +-v_limit."""
    body = [{"type": "plate", "current_ma_cm2": current_ma_cm2,
             "until": {"charge_mah_cm2": capacity_mah_cm2, "voltage_v_above": v_limit}},
            {"type": "strip", "current_ma_cm2": current_ma_cm2,
             "until": {"charge_mah_cm2": capacity_mah_cm2, "voltage_v_below": -v_limit}}]
    if rest_s > 0:
        body.insert(1, {"type": "rest", "until": {"time_s": rest_s}})
        body.append({"type": "rest", "until": {"time_s": rest_s}})
    return {"recipe": VERSION, "name": name, "area_cm2": area_cm2,
            "stop_on": ["hard_short"],
            "steps": [{"type": "loop", "count": cycles, "steps": body}]}


def ccd_ladder(area_cm2, start_ma_cm2=0.1, step_ma_cm2=0.1, max_ma_cm2=3.0,
               capacity_mah_cm2=0.1, rest_s=60.0, name="ccd-ladder", pulse_hz=0.0,
               duty=0.5):
    """Critical current density: plate/strip ``capacity_mah_cm2`` at stepped current
    densities until a short. The recipe stops at the first short; the recipe_done event
    reports ``ccd_ma_cm2`` (the density at which it shorted) and
    ``last_passed_ma_cm2``. With ``pulse_hz`` > 0 each half-cycle is a pulse train
    (PIO-timed, 0 between pulses) whose on-current is the rung's density: the pulsed
    CCD, in pulse amplitude."""
    steps = []
    j = 0
    while True:
        dens = round(start_ma_cm2 + j * step_ma_cm2, 6)
        if dens > max_ma_cm2 + 1e-9:
            break
        lbl = "ccd %.3g mA/cm2" % dens
        for way in ("plate", "strip"):
            until = {"charge_mah_cm2": capacity_mah_cm2}
            if pulse_hz > 0:
                steps.append({"type": "pulse", "direction": way, "label": lbl,
                              "on_ma_cm2": dens, "off_ma_cm2": 0.0, "freq_hz": pulse_hz,
                              "duty": duty, "until": until})
            else:
                steps.append({"type": way, "label": lbl, "current_ma_cm2": dens,
                              "until": until})
            steps.append({"type": "rest", "until": {"time_s": rest_s}})
        j += 1
        if len(steps) + 4 > MAX_STEPS_PER_LIST:
            break
    if not steps:
        raise ValueError("empty ladder")
    return {"recipe": VERSION, "name": name, "area_cm2": area_cm2,
            "stop_on": ["soft_short", "hard_short"], "steps": steps}


def gitt(area_cm2, current_ma_cm2, pulse_s, rest_s, count, direction="plate",
         name="gitt"):
    """GITT-style intermittent titration: ``count`` current pulses of ``pulse_s`` each
    followed by a ``rest_s`` relaxation (the voltage relaxation is the measurement)."""
    return {"recipe": VERSION, "name": name, "area_cm2": area_cm2,
            "steps": [{"type": "loop", "count": count, "steps": [
                {"type": direction, "current_ma_cm2": current_ma_cm2,
                 "until": {"time_s": pulse_s}},
                {"type": "rest", "until": {"time_s": rest_s}}]}]}


def temperature_hold(area_cm2, temp_c, hold_s, tolerance_c=1.0, timeout_s=7200.0,
                     name="temperature-hold"):
    """Heat (or cool) to temp_c, wait until within tolerance (or timeout), hold at rest
    for hold_s."""
    return {"recipe": VERSION, "name": name, "area_cm2": area_cm2,
            "steps": [{"type": "set_temperature", "temp_c": temp_c, "tolerance_c": tolerance_c,
                       "until": {"time_s": timeout_s}},
                      {"type": "rest", "until": {"time_s": hold_s}}]}


def pressure_hold(area_cm2, pressure_mpa, hold_s, tolerance_mpa=0.2, timeout_s=600.0,
                  name="pressure-hold"):
    """Set stack pressure, wait until within tolerance (or timeout), hold for hold_s."""
    return {"recipe": VERSION, "name": name, "area_cm2": area_cm2,
            "steps": [{"type": "set_pressure", "pressure_mpa": pressure_mpa,
                       "tolerance_mpa": tolerance_mpa, "until": {"time_s": timeout_s}},
                      {"type": "rest", "until": {"time_s": hold_s}}]}
