"""Helpers shared by the chip tests (MicroPython and CPython): a fresh bench, reference
CRCs computed bit by bit (independent of the table-driven ones under test), frame
builders."""

import machine
from machine import BENCH, SPI, Pin


def fresh():
    BENCH.reset()
    return BENCH


def crc16_bitwise(data, poly=0x1021, crc=0xFFFF):
    """CRC-16, MSB first, no reflection: the textbook shift-register form."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def crc8_tmc_serial(data):
    """TMC2209 §4.2 CRC as a shift register fed LSB first (poly x^8 + x^2 + x + 1)."""
    crc = 0
    for b in data:
        for i in range(8):
            feedback = ((crc >> 7) ^ (b >> i)) & 1
            crc = (crc << 1) & 0xFF
            if feedback:
                crc ^= 0x07
    return crc


def word(value16, ws):
    """A 16-bit command/response word, MSB-aligned in a ws-byte device word."""
    return bytes((value16 >> 8, value16 & 0xFF)) + bytes(ws - 2)


def spi_bus(sck, mosi, miso, bus=0, baud=8_000_000, polarity=0, phase=1):
    return SPI(bus, baud, polarity=polarity, phase=phase, sck=Pin(sck), mosi=Pin(mosi),
               miso=Pin(miso))


def xfer(spi, cs, tx):
    rx = bytearray(len(tx))
    cs.value(0)
    spi.write_readinto(tx, rx)
    cs.value(1)
    return bytes(rx)


__all__ = [
    "BENCH",
    "crc8_tmc_serial",
    "crc16_bitwise",
    "fresh",
    "machine",
    "spi_bus",
    "word",
    "xfer",
]
