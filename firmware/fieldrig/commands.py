"""COMMAND bodies from the edge: parse, validate, then execute.

Every check (JSON shape, command name, argument names and types, ranges, rig state)
runs before anything is touched, so an invalid command gets ``ok: false`` with an
error code and a human-readable detail and changes nothing.

Commands (args in braces):

- ``status`` {} -> rig state, set-points, measurements, link counters
- ``set_temperature`` {"temp_c": number | null}: null = heater off
- ``set_pressure`` {"pressure_mpa": number | null}: null = stop controlling (hold)
- ``set_current`` {"current_ma": number}: 0 = off
- ``stop`` {}: current off
- ``reset_safety`` {"token": str}: clear the fatal latch
- ``get_config`` {"section": str (optional)}
- ``set_limit`` {"row": str, "threshold": number}: never past the absolute bound
- ``recipe_load`` {"recipe": object} or {"text": str, "part": int, "parts": int}: validate
  (``echem.recipe``) and keep as the loaded recipe; a recipe longer than one frame is sent
  as JSON text in parts 0..parts-1, validated when the last arrives
- ``recipe_start`` {}: run the loaded recipe (not while tripped or current-inhibited)
- ``recipe_abort`` {}: safe stop of the running recipe (current off, pulses stopped)
- ``recipe_status`` {} -> state, step, elapsed, charge, last result
- ``track_impedance`` {"period_s": number}: operando impedance every period_s (0: only
  while a recipe runs)

The ``rig`` (app.Rig) provides the operations; see its methods.
"""

import json

from fieldrig import config, safety

# Set-points keep a margin from their trip limits, so reaching the set-point (with
# some overshoot) does not trip the interlock.
TEMP_MARGIN_C = 5.0
PRESSURE_MARGIN = 0.9  # set-point at most 90 % of the over-pressure limit
MIN_TEMP_C = 0.0


class CommandError(Exception):
    def __init__(self, code, detail):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _number(args, name, allow_null=False):
    if name not in args:
        raise CommandError("missing_arg", "argument %s is required" % name)
    v = args[name]
    if v is None and allow_null:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CommandError("bad_type", "%s must be a number%s"
                           % (name, " or null" if allow_null else ""))
    if v != v or v in (float("inf"), float("-inf")):
        raise CommandError("bad_type", "%s must be finite" % name)
    return float(v)


def _string(args, name, required=True):
    if name not in args:
        if required:
            raise CommandError("missing_arg", "argument %s is required" % name)
        return None
    v = args[name]
    if not isinstance(v, str):
        raise CommandError("bad_type", "%s must be a string" % name)
    return v


def _in_range(name, v, lo, hi, unit):
    if not lo <= v <= hi:
        raise CommandError("out_of_range", "%s %s outside %s..%s %s" % (name, v, lo, hi, unit))


class Commands:
    def __init__(self, rig):
        self.rig = rig
        # name -> (handler, allowed argument names)
        self.table = {
            "status": (self._status, ()),
            "set_temperature": (self._set_temperature, ("temp_c",)),
            "set_pressure": (self._set_pressure, ("pressure_mpa",)),
            "set_current": (self._set_current, ("current_ma",)),
            "stop": (self._stop, ()),
            "reset_safety": (self._reset_safety, ("token",)),
            "get_config": (self._get_config, ("section",)),
            "set_limit": (self._set_limit, ("row", "threshold")),
        }

    def handle(self, body):
        """Run one COMMAND body. Returns (True, result) or (False, (code, detail))."""
        try:
            _, args, entry = self.parse(body)
            if entry[0] is None:
                return True, entry[2](self.rig, args)
            return True, entry[0](args)
        except CommandError as e:
            return False, (e.code, e.detail)

    def parse(self, body):
        """Validate the envelope; returns (name, args, table entry) or raises
        CommandError."""
        try:
            msg = json.loads(body)
        except Exception:  # ValueError, UnicodeError, recursion: all mean "not JSON"
            raise CommandError("bad_json", "body is not valid JSON")
        if not isinstance(msg, dict):
            raise CommandError("bad_request", "body must be a JSON object")
        for key in msg:
            if key not in ("cmd", "args"):
                raise CommandError("bad_request", "unknown field %s" % key)
        name = msg.get("cmd")
        if not isinstance(name, str):
            raise CommandError("bad_request", "cmd must be a string")
        entry = self.table.get(name)
        if entry is None and (name.startswith("recipe_") or name.startswith("track_")):
            # Electrochemistry commands live in echem_commands, imported on first use
            # (the plain rig never loads the recipe and impedance modules).
            from fieldrig import echem_commands

            lazy = echem_commands.TABLE.get(name)
            if lazy is not None:
                entry = (None, lazy[1], lazy[0])
        if entry is None:
            raise CommandError("unknown_command", "no command %s" % name[:40])
        args = msg.get("args", {})
        if not isinstance(args, dict):
            raise CommandError("bad_args", "args must be an object")
        for key in args:
            if key not in entry[1]:
                raise CommandError("unknown_arg", "%s takes no argument %s" % (name, str(key)[:40]))
        return name, args, entry

    # ---- handlers: validate everything first, then act -----------------------------

    def _status(self, args):
        return self.rig.status()

    def _set_temperature(self, args):
        rig = self.rig
        temp_c = _number(args, "temp_c", allow_null=True)
        if temp_c is not None:
            hi = rig.safety.threshold("over_temp") - TEMP_MARGIN_C
            _in_range("temp_c", temp_c, MIN_TEMP_C, hi, "C")
            if rig.safety.tripped:
                raise CommandError("tripped", "safe state latched: reset_safety first")
            if not rig.heater_loop.valid:
                raise CommandError("sensor_fault", "no valid RTD reading")
        rig.set_temperature(temp_c)
        return {"temp_c": temp_c}

    def _set_pressure(self, args):
        rig = self.rig
        p = _number(args, "pressure_mpa", allow_null=True)
        if p is not None:
            lo = rig.safety.threshold("under_pressure")
            hi = rig.safety.threshold("over_pressure") * PRESSURE_MARGIN
            if not lo < p <= hi:
                raise CommandError("out_of_range", "pressure_mpa %s outside (%s, %s] MPa"
                                   % (p, lo, hi))
            if rig.safety.tripped:
                raise CommandError("tripped", "safe state latched: reset_safety first")
            if rig.pressure_loop.saturated:
                raise CommandError("sensor_fault", "load cell saturated")
        rig.set_pressure(p)
        return {"pressure_mpa": p}

    def _set_current(self, args):
        rig = self.rig
        i_ma = _number(args, "current_ma")
        if i_ma != 0:
            lim = rig.safety.threshold("over_current")
            top = rig.galvanostat.ranges_ma[-1]
            if top < lim:
                lim = top
            _in_range("current_ma", i_ma, -lim, lim, "mA")
            if rig.safety.tripped:
                raise CommandError("tripped", "safe state latched: reset_safety first")
            if rig.safety.current_inhibited():
                raise CommandError("inhibited", "current inhibited by %s"
                                   % ",".join(rig.safety.active_rows()))
        if rig.echem is not None and rig.echem.active:
            # A running recipe owns the current (recipe_abort first).
            raise CommandError("inhibited", "current inhibited by %s" % "recipe")
        rig.set_current(i_ma)
        return {"current_ma": i_ma, "range": rig.galvanostat.range_index}

    def _stop(self, args):
        self.rig.stop()
        return {"current_ma": 0.0}

    def _reset_safety(self, args):
        rig = self.rig
        token = _string(args, "token")
        if token != rig.cfg["reset_token"]:
            raise CommandError("bad_token", "reset token does not match")
        was = rig.safety.tripped
        present = rig.reset_safety()
        if present:
            raise CommandError("condition_present",
                               "fatal condition still present: " + ",".join(present))
        return {"was_tripped": was, "state": rig.state_name()}

    def _get_config(self, args):
        cfg = self.rig.cfg
        section = _string(args, "section", required=False)
        if section is None:
            return {"schema": cfg["schema"],
                    "sections": [k for k in cfg if k not in ("schema", "reset_token")]}
        value = config.public_section(cfg, section)
        if value is None:
            raise CommandError("unknown_section", "no config section %s" % section[:40])
        return {section: value}

    def _set_limit(self, args):
        rig = self.rig
        row_id = _string(args, "row")
        if "threshold" not in args:
            raise CommandError("missing_arg", "argument threshold is required")
        try:
            value = safety.check_threshold(row_id, args["threshold"])
        except safety.LimitError as e:
            raise CommandError(e.code, e.detail)
        try:
            rig.set_limit(row_id, value)
        except OSError as e:
            raise CommandError("storage", "config not saved: %s" % e)
        return {"row": row_id, "threshold": value}
