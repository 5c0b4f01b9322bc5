"""CRCs used by the modelled parts (table driven: the ADC frame CRC is on the hot path).

* CRC-16-CCITT, polynomial 0x1021, seed 0xFFFF, MSB first, no reflection, no final XOR:
  the ADS131M04 default frame CRC (MODE.CRC_TYPE = 0, datasheet SBAS890 §8.3.12).
  Check value over b"123456789" is 0x29B1.
* CRC-16-ANSI, polynomial 0x8005, seed 0xFFFF, MSB first (MODE.CRC_TYPE = 1).
* CRC-8-ATM, polynomial 0x07, seed 0, fed LSB first per byte: the TMC2209 UART datagram
  CRC (TMC2209 datasheet §4.2, ``swuart_calcCRC``).
"""


try:  # the native emitter under MicroPython (the bench); plain bytecode elsewhere
    from micropython import native
except ImportError:  # CPython runs the same models in tests

    def native(fn):
        return fn


def _table16(poly):
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return tuple(table)


CCITT_TABLE = _table16(0x1021)
ANSI_TABLE = _table16(0x8005)


@native
def crc16(data, start=0, end=None, table=CCITT_TABLE, seed=0xFFFF):
    """CRC-16 (MSB first) of data[start:end]; ``table`` selects CCITT or ANSI."""
    if end is None:
        end = len(data)
    crc = seed
    for i in range(start, end):
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ data[i]]
    return crc


def crc8_tmc(data, length=None):
    """TMC2209 UART CRC over data[:length] (datasheet §4.2): poly 0x07, init 0, LSB first."""
    if length is None:
        length = len(data)
    crc = 0
    for i in range(length):
        byte = data[i]
        for _ in range(8):
            if ((crc >> 7) ^ (byte & 0x01)) & 1:
                crc = ((crc << 1) ^ 0x07) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
            byte >>= 1
    return crc
