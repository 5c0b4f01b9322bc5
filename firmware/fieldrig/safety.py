"""Safety interlocks as one declarative diagnosis table (in the spirit of foxBMS).

Each limit is one row: the signal it watches, the comparison, the default threshold,
the absolute bound no configuration may loosen it past, the tier, the debounce delay
and the reaction. ``Safety.evaluate`` walks the table every safety period:

- a row whose condition holds for its whole debounce delay trips;
- fatal rows put the rig in the safe state (current off, heater off, stepper
  stopped, pulses stopped) in that same call, and latch: the rig stays safe until an
  authorised reset (token from config) while no fatal condition is present;
- warning rows apply their reaction (current off, or just the event) and clear by
  themselves when the condition goes away; info rows only report;
- every trip and clear is an EVENT on the reliable link stream.

Thresholds live in config (``limits``: row id -> threshold). The hard bounds below are
code, not config: over-temperature can never be set above 150 C (LAGP/Li interphase
decomposes above 200 C, oxide/Li runaway above 250 C: margin for sensor lag and
gradients), stack pressure never above 100 MPa, current never above 100 mA.
"""

FATAL = "fatal"
WARNING = "warning"
INFO = "info"

SAFE_STATE = "safe_state"  # current off, heater off, press held, pulses stopped; latched
CURRENT_OFF = "current_off"  # galvanostat off; new current refused while active
EVENT_ONLY = "event"

ABOVE = ">"
BELOW = "<"
FLAG = "flag"  # signal is a bool; no threshold


# Row fields (a row is a plain tuple: 15 small tuples cost a fraction of 15 objects).
# ``hard`` bounds the threshold on its loosening side (max for ABOVE rows, min for
# BELOW rows); ``sane`` bounds the tightening side (a value past it is a typo, not a
# tighter limit). ``gate`` names a bool signal that must be true for the row to be
# evaluated at all (under-pressure only matters while the pressure loop holds).
ID = 0
SIGNAL = 1
CMP = 2
THRESHOLD = 3
HARD = 4
SANE = 5
TIER = 6
DEBOUNCE_MS = 7
REACTION = 8
UNIT = 9
GATE = 10

# fmt: off
ROWS: tuple = (
    # id             signal                 cmp    default hard   sane  tier   debounce
    #                                                                   reaction      unit  gate
    ("over_temp",      "cell_temp_c",         ABOVE, 120.0, 150.0, 20.0, FATAL, 500,
     SAFE_STATE, "C", None),
    ("heater_runaway", "rise_heater_off_c",   ABOVE, 10.0, 30.0, 1.0, FATAL, 2000,
     SAFE_STATE, "C", None),
    ("over_pressure",  "stack_pressure_mpa",  ABOVE, 30.0, 100.0, 0.5, FATAL, 200,
     SAFE_STATE, "MPa", None),
    ("under_pressure", "stack_pressure_mpa",  BELOW, 1.0, 0.1, 50.0, WARNING, 5000,
     CURRENT_OFF, "MPa", "pressure_holding"),
    ("over_current",   "cell_current_abs_ma", ABOVE, 50.0, 100.0, 0.001, FATAL, 20,
     SAFE_STATE, "mA", None),
    ("over_voltage",   "cell_voltage_v",      ABOVE, 4.5, 5.0, 0.0, FATAL, 50,
     SAFE_STATE, "V", None),
    ("under_voltage",  "cell_voltage_v",      BELOW, -1.0, -5.0, 4.0, WARNING, 50,
     CURRENT_OFF, "V", None),
    ("rtd_open",       "rtd_open",            FLAG, None, None, None, FATAL, 300,
     SAFE_STATE, "", None),
    ("rtd_short",      "rtd_short",           FLAG, None, None, None, FATAL, 300,
     SAFE_STATE, "", None),
    ("loadcell_sat",   "loadcell_saturated",  FLAG, None, None, None, FATAL, 100,
     SAFE_STATE, "", None),
    ("sensor_bus",     "sensor_bus",          FLAG, None, None, None, FATAL, 300,
     SAFE_STATE, "", None),
    ("adc_crc",        "adc_crc_errors_per_s", ABOVE, 10.0, 100.0, 0.0, WARNING, 1000,
     CURRENT_OFF, "1/s", None),
    ("link_loss",      "link_silence_ms",     ABOVE, 30000, 600000, 1000, WARNING, 0,
     EVENT_ONLY, "ms", None),
    ("watchdog",       "loop_gap_ms",         ABOVE, 500, 2000, 20, FATAL, 0,
     SAFE_STATE, "ms", None),
    ("backlog_high",   "backlog_fill_pct",    ABOVE, 75.0, 100.0, 1.0, INFO, 0,
     EVENT_ONLY, "%", None),
)
# fmt: on


def row_by_id(row_id):
    for row in ROWS:
        if row[ID] == row_id:
            return row
    return None


def default_limits():
    """{row id: default threshold} for every adjustable row (the config's ``limits``)."""
    return {r[ID]: r[THRESHOLD] for r in ROWS if r[CMP] != FLAG}


class LimitError(ValueError):
    def __init__(self, code, detail):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def check_threshold(row_id, value):
    """Validate a threshold for a row; returns it as float or raises LimitError."""
    row = row_by_id(row_id)
    if row is None:
        raise LimitError("unknown_row", "no diagnosis row %s" % row_id)
    if row[CMP] == FLAG:
        raise LimitError("not_adjustable", "%s is a fault flag, it has no threshold" % row_id)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise LimitError("bad_type", "threshold must be a number")
    value = float(value)
    hard = row[HARD]
    sane = row[SANE]
    if row[CMP] == ABOVE:
        loose, tight = value > hard, value < sane
    else:
        loose, tight = value < hard, value > sane
    if loose:
        raise LimitError("beyond_absolute_limit", "%s %s past the absolute limit %s %s"
                         % (row_id, value, hard, row[UNIT]))
    if tight:
        raise LimitError("out_of_range", "%s %s past the sane bound %s %s"
                         % (row_id, value, sane, row[UNIT]))
    return value


class Signals:
    """Latest value of every signal the table watches, written by the loops."""

    def __init__(self):
        self.cell_temp_c = 0.0
        self.rise_heater_off_c = 0.0
        self.stack_pressure_mpa = 0.0
        self.pressure_holding = False
        self.cell_voltage_v = 0.0
        self.cell_current_ma = 0.0
        self.cell_current_abs_ma = 0.0
        self.rtd_open = False
        self.rtd_short = False
        self.loadcell_saturated = False
        # Sensors whose last read failed on the bus (or gave no value): bit 1 cell ADC,
        # 2 RTD, 4 load cell / press (app.py BUS_*); 0 = all answered.
        self.sensor_bus = 0
        self.adc_crc_errors_per_s = 0.0
        self.link_silence_ms = 0
        self.loop_gap_ms = 0
        self.backlog_fill_pct = 0.0


class Safety:
    """Evaluates the table. ``reactor`` has ``safe_state()`` and ``current_off()``;
    ``emit(dict)`` sends an EVENT."""

    def __init__(self, reactor, emit, limits=None, rows=ROWS):
        self.rows = rows
        self.reactor = reactor
        self.emit = emit
        n = len(rows)
        self.thresholds = [r[THRESHOLD] for r in rows]
        # Debounce deadline per row (valid while _pending[i]); preallocated, no alloc.
        self._pending = bytearray(n)
        self._due_s = [0] * n
        self._due_us = [0] * n
        self.active = bytearray(n)  # row tripped and not cleared / reset
        self.tripped = False  # latched safe state
        self.trip_count = 0
        if limits:
            for row_id in limits:
                self.set_threshold(row_id, limits[row_id])

    def set_threshold(self, row_id, value):
        value = check_threshold(row_id, value)
        for i in range(len(self.rows)):
            if self.rows[i][ID] == row_id:
                self.thresholds[i] = value
        return value

    def threshold(self, row_id):
        for i in range(len(self.rows)):
            if self.rows[i][ID] == row_id:
                return self.thresholds[i]
        return None

    def condition(self, i, signals):
        """Is row i's condition present right now (ignoring debounce)?"""
        row = self.rows[i]
        if row[GATE] is not None and not getattr(signals, row[GATE]):
            return False
        value = getattr(signals, row[SIGNAL])
        if row[CMP] == FLAG:
            return bool(value)
        if row[CMP] == ABOVE:
            return value > self.thresholds[i]
        return value < self.thresholds[i]

    def evaluate(self, signals, now_s, now_us):
        """One pass over the table. Returns True while the rig is in the safe state."""
        rows = self.rows
        for i in range(len(rows)):
            if self.condition(i, signals):
                if self.active[i]:
                    continue
                if not self._pending[i]:
                    self._pending[i] = 1
                    us = now_us + rows[i][DEBOUNCE_MS] * 1000
                    self._due_s[i] = now_s + us // 1000000
                    self._due_us[i] = us % 1000000
                due_s = self._due_s[i]
                if now_s > due_s or (now_s == due_s and now_us >= self._due_us[i]):
                    self._trip(i, signals)
            else:
                self._pending[i] = 0
                if self.active[i] and rows[i][TIER] != FATAL:
                    self.active[i] = 0
                    self.emit({"event": "limit_cleared", "row": rows[i][ID],
                               "tier": rows[i][TIER]})
        return self.tripped

    def _trip(self, i, signals):
        row = self.rows[i]
        self.active[i] = 1
        self._pending[i] = 0
        # React first, report second: the event may block on a slow link.
        if row[REACTION] == SAFE_STATE:
            self.tripped = True
            self.trip_count += 1
            self.reactor.safe_state()
        elif row[REACTION] == CURRENT_OFF:
            self.reactor.current_off()
        value = getattr(signals, row[SIGNAL])
        ev = {"event": "limit_tripped", "row": row[ID], "tier": row[TIER],
              "reaction": row[REACTION], "value": value}
        if row[CMP] != FLAG:
            ev["threshold"] = self.thresholds[i]
        self.emit(ev)

    def current_inhibited(self):
        """True while a fatal latch or an active current-off row forbids current."""
        if self.tripped:
            return True
        for i in range(len(self.rows)):
            if self.active[i] and self.rows[i][REACTION] == CURRENT_OFF:
                return True
        return False

    def active_rows(self):
        return [self.rows[i][ID] for i in range(len(self.rows)) if self.active[i]]

    def reset(self, signals):
        """Clear the latch (token already checked). Returns the ids of fatal rows whose
        condition is still present (then nothing is cleared), else []."""
        rows = self.rows
        present = [rows[i][ID] for i in range(len(rows))
                   if rows[i][TIER] == FATAL and self.condition(i, signals)]
        if present:
            return present
        cleared = [rows[i][ID] for i in range(len(rows))
                   if self.active[i] and rows[i][TIER] == FATAL]
        for i in range(len(rows)):
            if rows[i][TIER] == FATAL:
                self.active[i] = 0
                self._pending[i] = 0
        was = self.tripped
        self.tripped = False
        if was:
            self.emit({"event": "safety_reset", "rows": cleared})
        return []
