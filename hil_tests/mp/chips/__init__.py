"""Chip models for the HIL bench: plain Python that runs under MicroPython and CPython.

Each model behaves at the pins and bytes of its datasheet. Models never import
``machine``: the bus stand-ins in ``machine.py`` call into them, and the bench sets their
analog inputs and reads their actuator outputs directly. Time comes from a ``clock``
object with an integer ``now_ns`` attribute (``machine.BENCH`` in the bench,
``ManualClock`` in stand-alone use).
"""


class ManualClock:
    """Virtual time for a model used without the machine stand-in (tests, CPython)."""

    def __init__(self, now_ns=0):
        self.now_ns = now_ns


def _noop_drive(level):
    pass


def clamp(value, lo, hi):
    if value < lo:
        return lo
    if value > hi:
        return hi
    return value
