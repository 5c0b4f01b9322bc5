"""Open a rig's byte stream: TCP (firmware under the unix port, Wi-Fi rigs) or USB serial."""

from __future__ import annotations

import asyncio

from fieldrig_edge.config import RigConfig

# How long opening a link may take before it counts as a failed attempt.
OPEN_TIMEOUT_S = 5.0


class LinkUnavailable(OSError):
    """The rig's port cannot be opened right now (unplugged, refused, timed out)."""


async def open_link(rig: RigConfig) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, where, arg = rig.transport
    try:
        if kind == "tcp":
            return await asyncio.wait_for(asyncio.open_connection(where, arg), OPEN_TIMEOUT_S)
        import serial_asyncio_fast

        # An unplugged USB device raises serial.SerialException, an OSError: the
        # normal hot-plug case, retried with backoff below.
        return await asyncio.wait_for(
            serial_asyncio_fast.open_serial_connection(url=where, baudrate=arg),
            OPEN_TIMEOUT_S)
    except TimeoutError:
        raise LinkUnavailable(f"opening {rig.port} timed out") from None
    except OSError as exc:
        if isinstance(exc, LinkUnavailable):
            raise
        raise LinkUnavailable(f"{rig.port}: {exc.strerror or exc}") from None


def describe(rig: RigConfig) -> str:
    kind, where, arg = rig.transport
    return f"tcp://{where}:{arg}" if kind == "tcp" else f"serial:{where}@{arg}"
