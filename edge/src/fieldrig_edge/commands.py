"""Command requests from MQTT: schema, ranges and rig-state checks before anything
reaches a rig (contract: docs/mqtt.md, "Commands").

The rig validates every command again (docs/link.md, "Commands"); the gateway's check
is the first fence, so a malformed or out-of-range request from any client on the
broker is refused with a clear error and never touches the link. Ranges here are the
absolute envelope of the reference rig; a rig's config may only tighten them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Rig state codes carried in every sample (MSG_SAMPLE rig_state), owned by the firmware
# (firmware/fieldrig/app.py): the gateway needs only which states forbid which commands.
RIG_STATE_IDLE = 0
RIG_STATE_RUNNING = 1
RIG_STATE_TRIPPED = 2  # an interlock latched the safe state until reset_safety

MAX_CMD_NAME = 32
MAX_STR = 64
RECIPE_PART_CHARS = 400  # recipe_load text per part (the rig's limit: echem_commands.py)
MAX_RECIPE_PARTS = 64


@dataclass(frozen=True, slots=True)
class Arg:
    kind: type  # float, int or str
    lo: float = 0.0
    hi: float = 0.0
    required: bool = True
    nullable: bool = False  # null = "off" (heater off, stop controlling pressure)
    max_len: int = MAX_STR  # strings: longest accepted, characters


def _off(name: str) -> Callable[[dict[str, Any]], bool]:
    # Switching an output off (null or 0) is allowed in every state: it makes a rig safer.
    return lambda args: args.get(name) in (None, 0, 0.0)


@dataclass(frozen=True, slots=True)
class Spec:
    args: dict[str, Arg]
    # None: allowed in any state (including before the first sample has been seen).
    states: frozenset[int] | None = None
    # The state check is skipped when this says the command only switches off.
    inert: Callable[[dict[str, Any]], bool] | None = None


_ACTIVE = frozenset({RIG_STATE_IDLE, RIG_STATE_RUNNING})

# The firmware's command table (firmware/fieldrig/commands.py), with the absolute
# envelope of the reference rig: the rig narrows it to its configured limits (e.g. a
# temperature set-point 5 degC under its over_temp threshold) and answers out_of_range.
CATALOGUE: dict[str, Spec] = {
    "status": Spec({}),
    "stop": Spec({}),  # current off: always allowed
    "set_temperature": Spec({"temp_c": Arg(float, 0.0, 145.0, nullable=True)}, _ACTIVE,
                            _off("temp_c")),
    "set_pressure": Spec({"pressure_mpa": Arg(float, 0.0, 90.0, nullable=True)}, _ACTIVE,
                         _off("pressure_mpa")),
    "set_current": Spec({"current_ma": Arg(float, -100.0, 100.0)}, _ACTIVE,
                        _off("current_ma")),
    # The way out of the tripped state; the rig checks the token.
    "reset_safety": Spec({"token": Arg(str)}),
    "get_config": Spec({"section": Arg(str, required=False)}),
    "set_limit": Spec({"row": Arg(str), "threshold": Arg(float, -1e9, 1e9)}),
    # The electrochemistry (firmware/fieldrig/echem_commands.py). A recipe travels as its
    # JSON text in parts that each fit one link frame (480-byte body, docs/link.md); the
    # rig validates the whole recipe and names the step and field of an error.
    "recipe_load": Spec({"text": Arg(str, max_len=RECIPE_PART_CHARS),
                         "part": Arg(int, 0, MAX_RECIPE_PARTS - 1),
                         "parts": Arg(int, 1, MAX_RECIPE_PARTS)}, _ACTIVE),
    "recipe_start": Spec({}, _ACTIVE),
    "recipe_abort": Spec({}),  # stops a recipe: always allowed
    "recipe_status": Spec({}),
    # 0 stops tracking (always allowed); else 1 s .. 1 day between impedance blocks.
    "track_impedance": Spec({"period_s": Arg(float, 0.0, 86400.0)}, _ACTIVE,
                            _off("period_s")),
}


class CommandError(ValueError):
    """A request refused by the gateway: ``code`` is the machine-readable error."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Command:
    cmd: str
    args: dict[str, int | float | str | None]

    def link_body(self) -> dict[str, Any]:
        return {"cmd": self.cmd, "args": self.args}


def check_limits(limits: dict[str, tuple[float, float]]) -> None:
    """Config limits must name a catalogue argument and lie within its envelope."""
    for key, (lo, hi) in limits.items():
        name, _, arg = key.partition(".")
        spec = CATALOGUE.get(name)
        if spec is None or arg not in spec.args or spec.args[arg].kind is str:
            raise ValueError(f"limits: {key!r} is not a command argument "
                             f"(expected one of {sorted(all_args())})")
        a = spec.args[arg]
        if not (a.lo <= lo <= hi <= a.hi):
            raise ValueError(f"limits: {key} = [{lo}, {hi}] must lie within "
                             f"[{a.lo}, {a.hi}] and min <= max")


def all_args() -> list[str]:
    return [f"{c}.{a}" for c, s in CATALOGUE.items() for a, x in s.args.items()
            if x.kind is not str]


def parse_request(raw: bytes, max_bytes: int) -> Command:
    """Decode and validate the request's schema and ranges (not the rig state)."""
    if len(raw) > max_bytes:
        raise CommandError("too_large", f"payload of {len(raw)} bytes exceeds {max_bytes}")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CommandError("bad_payload", f"not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandError("bad_payload", "payload is not a JSON object")
    extra = set(obj) - {"schema", "cmd", "args"}
    if extra:
        raise CommandError("bad_schema", f"unknown field(s): {', '.join(sorted(extra))}")
    if obj.get("schema") != 1:
        raise CommandError("bad_schema", f"'schema' must be 1, got {obj.get('schema')!r}")
    name = obj.get("cmd")
    if not isinstance(name, str) or not name or len(name) > MAX_CMD_NAME:
        raise CommandError("bad_schema", "'cmd' must be a non-empty string")
    spec = CATALOGUE.get(name)
    if spec is None:
        raise CommandError("unknown_command",
                           f"unknown command {name!r}; known: {', '.join(sorted(CATALOGUE))}")
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise CommandError("bad_schema", "'args' must be an object")
    extra = set(args) - set(spec.args)
    if extra:
        raise CommandError("bad_schema", f"{name}: unknown argument(s) "
                                         f"{', '.join(sorted(extra))}")
    out: dict[str, int | float | str | None] = {}
    for aname, a in spec.args.items():
        if aname not in args:
            if a.required:
                raise CommandError("bad_schema", f"{name}: missing argument {aname!r}")
            continue
        v = args[aname]
        if v is None and a.nullable:
            out[aname] = None
        elif a.kind is str:
            if not isinstance(v, str) or not 0 < len(v) <= a.max_len:
                raise CommandError("bad_schema", f"{name}.{aname} must be a string of 1.."
                                                 f"{a.max_len} characters")
            out[aname] = v
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise CommandError("bad_schema", f"{name}.{aname} must be a number"
                                             + (" or null" if a.nullable else ""))
        elif a.kind is int and not (isinstance(v, int) or float(v).is_integer()):
            raise CommandError("bad_schema", f"{name}.{aname} must be an integer")
        else:
            out[aname] = int(v) if a.kind is int else float(v)
    return Command(name, out)


def _no_constant(name: str) -> float:
    # json accepts NaN/Infinity by default; a set-point of NaN must never reach a rig.
    raise ValueError(f"{name} is not allowed")


def check_ranges(c: Command, limits: dict[str, tuple[float, float]]) -> None:
    spec = CATALOGUE[c.cmd]
    for aname, v in c.args.items():
        a = spec.args[aname]
        if v is None or isinstance(v, str):
            continue
        lo, hi = limits.get(f"{c.cmd}.{aname}", (a.lo, a.hi))
        if not (math.isfinite(v) and lo <= v <= hi):
            raise CommandError("out_of_range",
                               f"{c.cmd}.{aname} = {v} is outside [{lo}, {hi}]")


def check_state(c: Command, rig_state: int | None) -> None:
    spec = CATALOGUE[c.cmd]
    states = spec.states
    if states is None or (spec.inert is not None and spec.inert(c.args)):
        return
    if rig_state is None:
        raise CommandError("rig_state", f"{c.cmd}: rig state not known yet (no sample "
                                        "received on this connection)")
    if rig_state not in states:
        raise CommandError("rig_state", f"{c.cmd} not allowed in rig state {rig_state} "
                                        f"(allowed: {sorted(states)})")
