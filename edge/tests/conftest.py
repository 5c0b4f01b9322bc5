"""pytest glue for the gateway tests: helpers live in edgekit.py, the CPython rig in
rig_emulator.py (both importable from every test module of this folder)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from edgekit import Recorder


@pytest.fixture
def recorder(mosquitto: Any) -> Iterator[Recorder]:
    r = Recorder(mosquitto.host, mosquitto.port).start()
    try:
        yield r
    finally:
        r.stop()


