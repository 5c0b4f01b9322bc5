"""Unix-port board with synthetic sensors and a TCP link, for the walking skeleton.

No bench is attached: the sensor values are deterministic functions of the sample
sequence number (dyadic fractions, exact in float32) so an end-to-end test can check
every stored value. The HIL bench board replaces this with real drivers on emulated
buses.
"""

import select
import socket


def synthetic_sample(seq):
    """(cell_voltage_v, cell_current_ma, cell_temp_c, stack_pressure_mpa) for sample seq."""
    current_ma = 0.5 if (seq // 50) % 2 == 0 else -0.5
    voltage_v = current_ma * 0.0625 + (seq % 16) / 1024
    temp_c = 25.0 + (seq % 8) / 8
    pressure_mpa = 5.0 + (seq % 4) / 16
    return voltage_v, current_ma, temp_c, pressure_mpa


class SyntheticSensors:
    def read(self, seq):
        return synthetic_sample(seq)


class TcpLink:
    """Listens on loopback; one edge connection at a time. Stands in for USB CDC."""

    def __init__(self, host, port):
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(socket.getaddrinfo(host, port)[0][-1])
        self._srv.listen(1)
        self.conn = None
        self._poll = select.poll()

    def accept(self):
        self.conn, _ = self._srv.accept()
        self._poll = select.poll()
        self._poll.register(self.conn, select.POLLIN)

    def write(self, data):
        conn = self.conn
        if conn is None:
            return False
        try:
            mv = memoryview(data)
            while len(mv):
                n = conn.write(mv)
                mv = mv[n:]
            return True
        except OSError:
            self.close()
            return False

    def readinto(self, buf):
        """Non-blocking read; returns count (0 when nothing is waiting) or -1 on close."""
        conn = self.conn
        if conn is None:
            return -1
        if not self._poll.poll(0):
            return 0
        try:
            n = conn.readinto(buf)
        except OSError:
            n = 0
        if not n:
            self.close()
            return -1
        return n

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def build(opts):
    return {
        "sensors": SyntheticSensors(),
        "link": TcpLink(opts.get("host", "127.0.0.1"), int(opts["port"])),
    }
