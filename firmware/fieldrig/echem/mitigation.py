"""Mitigation policy: what the rig does when the detector suspects a failure.

A recipe may carry ``"mitigation": {kind: {...}}`` overriding the defaults below per
alarm kind. Each kind lists ``actions`` in execution order plus their parameters.
``Mitigator.respond`` turns one alarm into a list of action dicts; each is also the
EVENT the platform sends on the link (``{"event": "mitigation", ...}``) and the recipe
runner applies it (see recipe.RecipeRunner).

Actions:

- ``stop_plating``: current to zero now (only while plating).
- ``rest``: hold zero current for ``rest_s`` before the step resumes.
- ``reverse_pulse``: strip ``reverse_ma_cm2`` for ``reverse_s`` (dissolves the tip of a
  filament; only after plating).
- ``pulsed_current``: from now on, plating steps run as pulses (``pulse_freq_hz``,
  ``pulse_duty``) at the same on-current: rests let Li+ and stress relax at defect tips.
- ``lower_current``: multiply plating (soft short) or stripping (void) current by
  ``lower_factor``, never below ``min_current_ma_cm2``. For a void seen during a plate
  step the plate current is lowered: in a Li|SE|Li cell that step strips the counter
  electrode, where the void grows.
- ``raise_temperature``: heater target + ``temp_step_c``, capped at ``temp_max_c``
  (creep and self-diffusion speed up, voids heal, the CCD rises).
- ``raise_pressure``: stack pressure + ``pressure_step_mpa``, capped at
  ``pressure_max_mpa`` (Li creeps back into voids; above the window it shorts cells).
- ``safe_state``: the platform's safe state (current off, heater off, press held).

A hard short always ends in ``safe_state`` and a policy cannot change that. After
``max_attempts`` responses to the same kind the next one is ``safe_state`` too. With
``recheck`` (default for soft_short) a response whose kind the detector still holds
raised when its interlude (stop / rest / reverse) ends counts as failed and the policy
responds again: a bridged filament does not heal in a rest, so a persistent soft short
ends in the safe state after max_attempts, before it fuses into a hard short. Void
growth heals slowly (creep), so it is not rechecked by default.
"""

ACTIONS = ("stop_plating", "rest", "reverse_pulse", "pulsed_current", "lower_current",
           "raise_temperature", "raise_pressure", "safe_state")

KINDS = ("soft_short", "hard_short", "void", "crack")

# Hard bounds no recipe may exceed (the safety table trips at 120 C / 30 MPa).
TEMP_LIMIT_C = 100.0
PRESSURE_LIMIT_MPA = 25.0

DEFAULT_POLICY = {
    "soft_short": {"actions": ["stop_plating", "rest", "reverse_pulse", "pulsed_current",
                               "lower_current", "raise_temperature"],
                   "rest_s": 60.0, "reverse_ma_cm2": 0.1, "reverse_s": 5.0,
                   "pulse_freq_hz": 1000.0, "pulse_duty": 0.5, "lower_factor": 0.5,
                   "min_current_ma_cm2": 0.01, "temp_step_c": 5.0, "temp_max_c": 80.0,
                   "max_attempts": 3, "recheck": True},
    "void": {"actions": ["raise_pressure", "lower_current"], "pressure_step_mpa": 1.0,
             "pressure_max_mpa": 10.0, "lower_factor": 0.5, "min_current_ma_cm2": 0.01,
             "max_attempts": 3, "recheck": False},
    "crack": {"actions": ["stop_plating", "rest"], "rest_s": 300.0, "max_attempts": 1},
    "hard_short": {"actions": ["safe_state"]},
}

# parameter: (lower bound exclusive?, low, high, unit)
PARAMS = {
    "rest_s": (False, 0.0, 86400.0),
    "reverse_ma_cm2": (True, 0.0, 50.0),
    "reverse_s": (True, 0.0, 3600.0),
    "pulse_freq_hz": (True, 0.0, 1000000.0),
    "pulse_duty": (True, 0.0, 1.0),
    "lower_factor": (True, 0.0, 1.0),
    "min_current_ma_cm2": (True, 0.0, 50.0),
    "temp_step_c": (True, 0.0, 50.0),
    "temp_max_c": (False, -20.0, TEMP_LIMIT_C),
    "pressure_step_mpa": (True, 0.0, 10.0),
    "pressure_max_mpa": (True, 0.0, PRESSURE_LIMIT_MPA),
    "max_attempts": (False, 1, 100),
}


class PolicyError(ValueError):
    def __init__(self, path, reason):
        super().__init__("%s: %s" % (path, reason))
        self.path = path
        self.reason = reason


def _is_num(v):
    return not isinstance(v, bool) and isinstance(v, (int, float)) and v == v


def merged_policy(policy=None, path="mitigation"):
    """Defaults overlaid with a recipe's policy, validated. Raises PolicyError naming the
    offending field; returns a new dict (the input is not modified)."""
    out = {}
    for kind in DEFAULT_POLICY:
        d = {}
        for k, v in DEFAULT_POLICY[kind].items():
            d[k] = list(v) if isinstance(v, list) else v
        out[kind] = d
    if policy is None:
        return out
    if not isinstance(policy, dict):
        raise PolicyError(path, "must be an object")
    for kind in sorted(policy):
        if kind not in DEFAULT_POLICY:
            raise PolicyError(path + "." + kind, "unknown alarm kind")
        spec = policy[kind]
        kp = path + "." + kind
        if not isinstance(spec, dict):
            raise PolicyError(kp, "must be an object")
        for key in sorted(spec):
            val = spec[key]
            fp = kp + "." + key
            if key == "actions":
                if not isinstance(val, list):
                    raise PolicyError(fp, "must be a list")
                for j in range(len(val)):
                    if val[j] not in ACTIONS:
                        raise PolicyError("%s[%d]" % (fp, j), "unknown action '%s'" % val[j])
                if kind == "hard_short" and val != ["safe_state"]:
                    raise PolicyError(fp, "a hard short always ends in [\"safe_state\"]")
                out[kind]["actions"] = list(val)
            elif key == "recheck":
                if not isinstance(val, bool):
                    raise PolicyError(fp, "must be true or false")
                out[kind][key] = val
            elif key in PARAMS:
                excl, lo, hi = PARAMS[key]
                if not _is_num(val):
                    raise PolicyError(fp, "must be a number")
                if (excl and val <= lo) or (not excl and val < lo) or val > hi:
                    raise PolicyError(fp, "must be %s %s and <= %s"
                                      % (">" if excl else ">=", lo, hi))
                if key == "max_attempts" and int(val) != val:
                    raise PolicyError(fp, "must be an integer")
                out[kind][key] = val
            else:
                raise PolicyError(fp, "unknown field")
    return out


class Context:
    """What the mitigator needs to know about the rig right now (filled by the runner)."""

    def __init__(self, plating=False, stripping=False, current_ma_cm2=0.0, temp_target_c=None,
                 pressure_target_mpa=None, plate_scale=1.0, strip_scale=1.0):
        self.plating = plating
        self.stripping = stripping
        self.current_ma_cm2 = current_ma_cm2
        self.temp_target_c = temp_target_c
        self.pressure_target_mpa = pressure_target_mpa
        self.plate_scale = plate_scale
        self.strip_scale = strip_scale


class Mitigator:
    def __init__(self, policy=None):
        self.policy = merged_policy(policy)
        self.attempts = {}

    def state(self):
        return {"attempts": dict(self.attempts)}

    def restore(self, st):
        self.attempts = dict(st.get("attempts", {}))

    def respond(self, kind, ctx, confidence=None):
        """Actions (each an EVENT dict) for one alarm of ``kind``."""
        if kind not in self.policy:
            return []
        spec = self.policy[kind]
        n = self.attempts.get(kind, 0) + 1
        self.attempts[kind] = n
        base = {"event": "mitigation", "alarm": kind, "attempt": n}
        if confidence is not None:
            base["confidence"] = confidence
        if kind != "hard_short" and n > spec.get("max_attempts", 1):
            ev = dict(base)
            ev["action"] = "safe_state"
            ev["why"] = "%d responses to %s did not clear it" % (n - 1, kind)
            return [ev]
        out = []
        for name in spec["actions"]:
            ev = dict(base)
            ev["action"] = name
            self._fill(name, spec, ctx, kind, ev)
            out.append(ev)
        return out

    def _fill(self, name, spec, ctx, kind, ev):
        # Parameters of each action, clamped to the policy's and the hard limits; an
        # action that cannot apply says so ("applied": False, "why") instead of vanishing.
        ev["applied"] = True
        if name in ("stop_plating", "reverse_pulse") and not ctx.plating:
            ev["applied"] = False
            ev["why"] = "not plating"
        if name == "rest":
            ev["rest_s"] = spec.get("rest_s", 60.0)
        elif name == "reverse_pulse":
            ev["current_ma_cm2"] = spec.get("reverse_ma_cm2", 0.1)
            ev["duration_s"] = spec.get("reverse_s", 5.0)
        elif name == "pulsed_current":
            ev["freq_hz"] = spec.get("pulse_freq_hz", 1000.0)
            ev["duty"] = spec.get("pulse_duty", 0.5)
        elif name == "lower_current":
            # A void grows on the electrode the present current strips: the working
            # electrode in a strip step, the counter electrode in a plate step (Li|SE|Li).
            target = "strip" if kind == "void" and not ctx.plating else "plate"
            scale = ctx.strip_scale if target == "strip" else ctx.plate_scale
            new = scale * spec.get("lower_factor", 0.5)
            lo = spec.get("min_current_ma_cm2", 0.01)
            cur = ctx.current_ma_cm2 if ctx.current_ma_cm2 > 0 else -ctx.current_ma_cm2
            base = cur / scale if scale > 0 else 0.0
            if base > 0 and base * new < lo:
                new = lo / base
                ev["at_limit"] = True
            ev["target"] = target
            ev["scale"] = new
        elif name == "raise_temperature":
            cap = spec.get("temp_max_c", 80.0)
            if cap > TEMP_LIMIT_C:
                cap = TEMP_LIMIT_C
            now = ctx.temp_target_c
            if now is None:
                ev["applied"] = False
                ev["why"] = "no temperature target set"
            else:
                new = now + spec.get("temp_step_c", 5.0)
                if new >= cap:
                    new = cap if cap > now else now
                    ev["at_limit"] = True
                ev["temp_c"] = new
        elif name == "raise_pressure":
            cap = spec.get("pressure_max_mpa", 10.0)
            if cap > PRESSURE_LIMIT_MPA:
                cap = PRESSURE_LIMIT_MPA
            now = ctx.pressure_target_mpa
            if now is None:
                ev["applied"] = False
                ev["why"] = "no pressure target set"
            else:
                new = now + spec.get("pressure_step_mpa", 1.0)
                if new >= cap:
                    new = cap if cap > now else now
                    ev["at_limit"] = True
                ev["pressure_mpa"] = new
