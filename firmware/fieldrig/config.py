"""Rig configuration and calibration: one JSON file on flash, versioned and validated.

Format (``SCHEMA_VERSION`` 1)::

    {"schema": 1,
     "reset_token": "...",                      # authorises reset_safety
     "limits": {"over_temp": 120.0, ...},       # diagnosis-table thresholds (safety.py)
     "heater": {"kp": .., "ki": .., "kd": .., "rate_per_s": .., "d_filter_s": ..},
     "pressure": {"area_mm2": .., "deadband_mpa": .., "gain_steps_per_mpa": ..,
                  "max_steps_per_s": .., "min_position": .., "max_position": ..},
     "galvanostat": {"ranges_ma": [0.01, 1.0, 100.0]},
     "link": {"backlog": 1024, "queue": 32, "window": 64, "ack_timeout_ms": 500},
     "calibration": {"rtd_offset_c": .., "voltage_gain": .., "voltage_offset_v": ..,
                     "current_gain": .., "current_offset_ma": .., "force_offset_n": ..}}

A key missing from a section takes its factory default (a file written by an older
firmware still loads); an unknown key, a wrong type or an out-of-range value makes the
whole file invalid (a misspelt limit must not silently fall back to its default).
Limits are checked against the diagnosis table's absolute bounds.

Writes are atomic: the new text goes to ``<path>.tmp``, then ``os.rename`` replaces the
file (LittleFS on the RP2350 and POSIX both replace atomically). A crash before the
rename leaves the old file as it was; the stale temp file is removed at the next boot.
"""

import json
import os

from fieldrig import safety

SCHEMA_VERSION = 1

NUM = "num"
INT = "int"
STR = "str"
RANGES = "ranges"

# section -> key -> (kind, min, max, default)
# fmt: off
SPEC = {
    "heater": {
        "kp":         (NUM, 0.0, 10.0, 0.08),    # duty per C of error
        "ki":         (NUM, 0.0, 1.0, 0.0008),   # duty per C*s
        "kd":         (NUM, 0.0, 100.0, 0.4),    # duty per C/s (on measurement)
        "rate_per_s": (NUM, 0.001, 10.0, 0.2),   # max duty change per second
        "d_filter_s": (NUM, 0.0, 100.0, 2.0),    # derivative low-pass time constant
    },
    "pressure": {
        "area_mm2":           (NUM, 1.0, 10000.0, 78.54),  # 10 mm pellet
        "deadband_mpa":       (NUM, 0.0, 5.0, 0.1),
        "gain_steps_per_mpa": (NUM, 0.1, 10000.0, 20.0),
        "max_steps_per_s":    (NUM, 1.0, 10000.0, 200.0),
        "min_position":       (INT, -1000000, 1000000, 0),
        "max_position":       (INT, -1000000, 1000000, 20000),
    },
    "galvanostat": {
        "ranges_ma": (RANGES, 0.0001, 100.0, [0.01, 1.0, 100.0]),
    },
    "link": {
        "backlog":        (INT, 16, 4096, 1024),
        "queue":          (INT, 8, 256, 32),
        "window":         (INT, 1, 1024, 64),
        "ack_timeout_ms": (INT, 20, 60000, 500),
    },
    "calibration": {
        "rtd_offset_c":      (NUM, -10.0, 10.0, 0.0),
        "voltage_gain":      (NUM, 0.5, 2.0, 1.0),
        "voltage_offset_v":  (NUM, -0.1, 0.1, 0.0),
        "current_gain":      (NUM, 0.5, 2.0, 1.0),
        "current_offset_ma": (NUM, -1.0, 1.0, 0.0),
        "force_offset_n":    (NUM, -10000.0, 10000.0, 0.0),
    },
}
# fmt: on
DEFAULT_RESET_TOKEN = "0000"  # change it per rig: set in the config file on flash


class ConfigError(ValueError):
    pass


def defaults(overrides=None) -> dict:
    """Factory configuration (a fresh dict), with optional board overrides
    (``{section: {key: value}}``) that are validated like a file."""
    cfg: dict = {"schema": SCHEMA_VERSION, "reset_token": DEFAULT_RESET_TOKEN,
                 "limits": safety.default_limits()}
    for section in SPEC:
        spec = SPEC[section]
        cfg[section] = {k: (list(spec[k][3]) if spec[k][0] == RANGES else spec[k][3])
                        for k in spec}
    if overrides:
        for section in overrides:
            if section not in cfg or not isinstance(cfg[section], dict):
                raise ConfigError("override of unknown section %s" % section)
            for k in overrides[section]:
                cfg[section][k] = overrides[section][k]
        cfg = validate(cfg)
    return cfg


def _is_num(v):
    return not isinstance(v, bool) and isinstance(v, (int, float)) and v == v


def _check(section, key, kind, lo, hi, v):
    where = section + "." + key
    if kind == STR:
        if not isinstance(v, str):
            raise ConfigError(where + " must be a string")
        return v
    if kind == RANGES:
        if not isinstance(v, list) or not 1 <= len(v) <= 4:
            raise ConfigError(where + " must be a list of 1..4 full scales")
        prev = 0.0
        for x in v:
            if not _is_num(x) or not lo <= x <= hi or x <= prev:
                raise ConfigError(where + " must ascend within %s..%s" % (lo, hi))
            prev = x
        return [float(x) for x in v]
    if not _is_num(v) or (kind == INT and not isinstance(v, int)):
        raise ConfigError(where + " must be " + ("an integer" if kind == INT else "a number"))
    if not lo <= v <= hi:
        raise ConfigError("%s out of range %s..%s" % (where, lo, hi))
    return float(v) if kind == NUM else v


def validate(raw, base=None) -> dict:
    """Return a complete, checked config built from ``raw`` (missing keys from ``base``,
    factory defaults when None). Raises ConfigError naming the first problem."""
    if not isinstance(raw, dict):
        raise ConfigError("config is not a JSON object")
    if raw.get("schema") != SCHEMA_VERSION:
        raise ConfigError("unsupported schema %r (expected %d)"
                          % (raw.get("schema"), SCHEMA_VERSION))
    base = base if base is not None else defaults()
    out: dict = {"schema": SCHEMA_VERSION}
    for key in raw:
        if key not in base:
            raise ConfigError("unknown key %s" % key)
    token = raw.get("reset_token", base["reset_token"])
    if not isinstance(token, str) or not 4 <= len(token) <= 32:
        raise ConfigError("reset_token must be a string of 4..32 characters")
    out["reset_token"] = token
    limits = raw.get("limits", {})
    if not isinstance(limits, dict):
        raise ConfigError("limits must be an object")
    out["limits"] = dict(base["limits"])
    for row_id in limits:
        try:
            out["limits"][row_id] = safety.check_threshold(row_id, limits[row_id])
        except safety.LimitError as e:
            raise ConfigError("limits.%s: %s" % (row_id, e.detail))
    for section in SPEC:
        spec = SPEC[section]
        sec = raw.get(section, {})
        if not isinstance(sec, dict):
            raise ConfigError(section + " must be an object")
        for key in sec:
            if key not in spec:
                raise ConfigError("unknown key %s.%s" % (section, key))
        got = {}
        for key in spec:
            kind, lo, hi, _ = spec[key]
            got[key] = _check(section, key, kind, lo, hi, sec.get(key, base[section][key]))
        out[section] = got
    p = out["pressure"]
    if p["min_position"] >= p["max_position"]:
        raise ConfigError("pressure.min_position must be below max_position")
    return out


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class ConfigStore:
    """The config file on flash. ``path`` None keeps the config in RAM only."""

    def __init__(self, path, overrides=None):
        self.path = path
        self.overrides = overrides

    def load(self):
        """Return (config, problem): problem is None when the file was good, else
        (reason, detail) with reason "missing" / "corrupt" / "invalid" and config the
        factory defaults."""
        base = defaults(self.overrides)
        if self.path is None:
            return base, ("missing", "no config storage on this board")
        tmp = self.path + ".tmp"
        if _exists(tmp):
            # An interrupted save: the rename never happened, so the old file stands.
            try:
                os.remove(tmp)
            except OSError:
                pass
        try:
            with open(self.path) as f:
                text = f.read()
        except OSError:
            return base, ("missing", "no file %s" % self.path)
        try:
            raw = json.loads(text)
        except Exception:  # any parse failure (ValueError, UnicodeError...) is corruption
            return base, ("corrupt", "%s is not valid JSON" % self.path)
        try:
            return validate(raw, base), None
        except ConfigError as e:
            return base, ("invalid", str(e))

    def save(self, cfg):
        """Validate and write atomically (temp file + rename)."""
        cfg = validate(cfg)
        if self.path is not None:
            self.write_tmp(cfg)
            self.commit()
        return cfg

    def write_tmp(self, cfg):
        """Step 1 of a save: the whole new file under the temp name."""
        with open(self.path + ".tmp", "w") as f:
            f.write(json.dumps(cfg))
        sync = getattr(os, "sync", None)
        if sync is not None:
            sync()

    def commit(self):
        """Step 2: the rename is the commit point (atomic on LittleFS and POSIX)."""
        os.rename(self.path + ".tmp", self.path)


def public_section(cfg, section):
    """A config section as get_config returns it (the reset token never leaves the rig)."""
    if section == "reset_token":
        return None
    return cfg.get(section)
