"""Electrochemistry algorithms of the rig: impedance, detection, current programs,
recipes and mitigation (see docs/echem.md).

Every module here is self-contained: it takes sample buffers, measurements and times as
arguments and returns set-points, estimates and event dicts. Nothing touches a pin or
the clock; the platform (app, drivers, scheduler, link) wires them in.
"""
