"""Board definitions: each module holds one board's wiring and builds its drivers and
link transport. ``load(name)`` imports ``boards.<name>`` and returns its ``build(opts)``."""


def load(name):
    return __import__("boards." + name, None, None, ["build"]).build
