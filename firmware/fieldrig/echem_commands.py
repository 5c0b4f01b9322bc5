"""Electrochemistry commands (recipes, impedance tracking); ``commands.Commands``
imports this module the first time one of them arrives, so a rig that never runs a
recipe never loads it (docs/firmware.md, "Resource budget"). Same rules as every
command: all validation first, ``CommandError`` with a code and a detail, and an
invalid command changes nothing.
"""

from fieldrig.commands import CommandError, _in_range, _number, _string
from fieldrig.echem_host import echem, impedance_host, recipe_host

MAX_RECIPE_PARTS = 64  # chunked recipe_load: 64 parts of ~400 characters
MIN_TRACK_PERIOD_S = 1.0  # a block stalls the loop for up to max_block_ms
MAX_TRACK_PERIOD_S = 86400.0


def _int(args, name, lo, hi):
    if name not in args:
        raise CommandError("missing_arg", "argument %s is required" % name)
    v = args[name]
    if isinstance(v, bool) or not isinstance(v, int):
        raise CommandError("bad_type", "%s must be an integer" % name)
    if not lo <= v <= hi:
        raise CommandError("out_of_range", "%s %d outside %d..%d" % (name, v, lo, hi))
    return v


def recipe_load(rig, args):
    if ("recipe" in args) == ("text" in args):
        raise CommandError("bad_args", "give recipe (an object) or text with part, parts")
    if "recipe" in args:
        recipe = args["recipe"]
        if not isinstance(recipe, dict):
            raise CommandError("bad_type", "recipe must be an object")
    else:
        text = _string(args, "text")
        parts = _int(args, "parts", 1, MAX_RECIPE_PARTS)
        part = _int(args, "part", 0, parts - 1)
    host = recipe_host(rig)
    if host.running():
        raise CommandError("recipe_running", "a recipe is running: recipe_abort first")
    if "text" in args:
        try:
            whole = host.add_text_part(text, part, parts)
        except ValueError as e:
            raise CommandError("out_of_range", str(e))
        if whole is None:
            return {"part": part, "parts": parts, "received": host._text_len}
        recipe = whole
    from fieldrig.echem.recipe import RecipeError

    try:
        return host.load(recipe)
    except RecipeError as e:
        # The text names the step and field: "steps[3].current_ma_cm2: must be > 0".
        raise CommandError("invalid_recipe", str(e))


def recipe_start(rig, args):
    echem(rig)
    host = rig.recipes
    if host is None or host.recipe is None:
        raise CommandError("no_recipe", "no recipe loaded: recipe_load first")
    if host.running():
        raise CommandError("recipe_running", "the recipe is already running")
    if rig.safety.tripped:
        raise CommandError("tripped", "safe state latched: reset_safety first")
    if rig.safety.current_inhibited():
        raise CommandError("inhibited", "current inhibited by %s"
                           % ",".join(rig.safety.active_rows()))
    try:
        return host.start()
    except OSError as e:
        raise CommandError("storage", "recipe not stored: %s" % e)


def recipe_abort(rig, args):
    echem(rig)
    host = rig.recipes
    if host is None:
        return {"aborted": False, "state": "idle"}
    aborted = host.abort("command")
    return {"aborted": aborted, "state": host.state}


def recipe_status(rig, args):
    echem(rig)
    host = rig.recipes
    return host.status() if host is not None else {"state": "idle"}


def track_impedance(rig, args):
    period = float(_number(args, "period_s") or 0.0)
    if period != 0:
        _in_range("period_s", period, MIN_TRACK_PERIOD_S, MAX_TRACK_PERIOD_S, "s")
    imp = impedance_host(rig)
    f_hz = []
    if period != 0:
        if not imp.supported:
            raise CommandError("unsupported", "the board's ADC has no block read")
        try:
            n, bins = imp.tracking_plan()
        except ValueError as e:
            raise CommandError("unsupported", str(e))
        f_hz = [round(k * imp.fs_hz / n, 3) for k in bins]
    imp.period_s = period
    imp.next_s = rig.clock.s
    return {"period_s": period, "f_hz": f_hz}


# name -> (handler, allowed argument names): looked up by commands.Commands.parse.
TABLE = {
    "recipe_load": (recipe_load, ("recipe", "text", "part", "parts")),
    "recipe_start": (recipe_start, ()),
    "recipe_abort": (recipe_abort, ()),
    "recipe_status": (recipe_status, ()),
    "track_impedance": (track_impedance, ("period_s",)),
}
