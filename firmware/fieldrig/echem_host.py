"""The electrochemistry's attachment to the rig, kept small: the ``echem`` task hook,
the pulse gate, the latched safe state for shorts, alarm routing, and the lazily created
recipe host (program.py) and impedance host (measure.py). A rig that runs recipes
without a block ADC never loads the impedance modules, and one that only tracks
impedance never loads the recipe modules (docs/firmware.md, "Resource budget").
"""

IMPEDANCE_EVERY = 10  # echem ticks (10 ms) per impedance service while nothing is on


def latch_safe_state(rig, kind):
    """A hard short (detector or recipe mitigation): the rig's safe state, latched like
    a fatal row of the diagnosis table (``reset_safety`` clears it)."""
    sf = rig.safety
    was = sf.tripped
    rig.safe_state()
    sf.tripped = True
    if not was:
        sf.trip_count += 1
        rig.session.send_event({"event": "limit_tripped", "row": "echem_" + kind,
                                "tier": "fatal", "reaction": "safe_state"})


def route_alarm(rig, ev):
    """A detector event: to the running recipe (its mitigation policy decides), else a
    hard short goes straight to the safe state."""
    if ev.get("event") != "echem_alarm":
        return
    rh = rig.recipes
    if rh is not None and rh.running():
        rh.on_alarm(ev)
    elif ev.get("kind") == "hard_short":
        latch_safe_state(rig, "hard_short")


def pulse_gate(rig):
    """The rig's pulse gate: the board's PIO gate, else a RecordingGate (unix, bench:
    the bench reads ``rig.pulse_gate.log``)."""
    if rig.pulse_gate is None:
        from fieldrig.echem.pulses import RecordingGate

        rig.pulse_gate = RecordingGate()
    return rig.pulse_gate


class Echem:
    """``rig.echem``: the electrochemistry's foot in the rig's tasks, created on first use
    (``echem(rig)``). It also gives the rig ``recipes`` (program.RecipeHost),
    ``impedance`` (ImpedanceHost), ``pulse_gate`` and ``recipe_path`` (board keys)."""

    def __init__(self, rig):
        self.rig = rig
        self._impedance_wait = 0  # echem ticks until the next impedance service
        rig.recipes = None
        rig.impedance = None
        rig.pulse_gate = rig.board.get("pulse_gate")
        rig.recipe_path = rig.board.get("recipe_path")

    @property
    def active(self):
        """A recipe is running: it owns the current (manual set_current is refused)."""
        rh = self.rig.recipes
        return rh is not None and rh.running()

    def tick(self):
        """The rig's ``echem`` task, every 10 ms: the recipe (program.RecipeHost.tick
        decides when its runner has work), and the impedance host every 100 ms (tracking
        is due on a seconds grid), every 10 ms while a sweep runs or when the current
        set-point has just changed (the detector times its settling from it)."""
        rig = self.rig
        if rig.recipes is not None:
            rig.recipes.tick()
        imp = rig.impedance
        if imp is not None:
            if (self._impedance_wait <= 0 or imp.sweep is not None
                    or rig.galvanostat.setpoint_ma != imp.seen_setpoint_ma):
                self._impedance_wait = IMPEDANCE_EVERY - 1
                imp.service()
            else:
                self._impedance_wait -= 1

    def abort(self, reason):
        if self.rig.recipes is not None:
            self.rig.recipes.abort(reason)

    def current_off(self):
        """Part of the rig's current-off / safe-state reaction: the pulse gate stops."""
        gate = self.rig.pulse_gate
        if gate is not None:
            gate.stop()


def echem(rig):
    if rig.echem is None:
        rig.echem = Echem(rig)
    return rig.echem


def impedance_host(rig):
    """The rig's impedance host (measure.py), created on first use."""
    echem(rig)
    if rig.impedance is None:
        from fieldrig.measure import ImpedanceHost

        rig.impedance = ImpedanceHost(rig)
    return rig.impedance


def recipe_host(rig):
    """The rig's recipe host (program.py), created on first use."""
    echem(rig)
    if rig.recipes is None:
        from fieldrig.program import RecipeHost

        rig.recipes = RecipeHost(rig)
    return rig.recipes


def block_adc(rig):
    """True when the board's ADC reads blocks (impedance is possible)."""
    adc = rig.board["adc"]
    return hasattr(adc, "read_block_codes_into") and hasattr(adc, "data_rate_sps")
