"""HIL bench board: the Pico 2 W's real drivers on emulated buses, in lockstep with a
simulated cell.

Runs only under the MicroPython unix port with ``hil_tests/mp/vtime`` and
``hil_tests/mp`` ahead of the firmware on MICROPYPATH (``fieldrig_hil.bench`` starts it
that way): ``import machine`` then yields the bench's stand-in, whose ``BENCH`` holds the
chip models that ``wiring.Wiring`` connects to the pins of ``boards.pico2w``. The drivers
are built by ``pico2w.build`` itself -- same pins, same options, same constructors -- so
what runs here is what runs on the board (part initialisation, range switch, pulse gate,
watchdog included); this file only adds what is bench-specific: the chip models, the
lockstep clock, the TCP link and the load-cell scale of the simulated plant.

The lockstep exchange (docs/hil.md, "The bench"): the board's clock is virtual and its
``sleep_until`` is the sync point. Time is cut into steps (``t_end`` chosen by the bench).
When the firmware wants to sleep past the end of the current step, the board reports the
actuator outputs at the step end (message OUT), receives the analog inputs and faults for
the next step (INPUT: cell V/I as one block of ADC conversions, RTD temperature, force,
fault flags), applies them to the chip models and advances ``machine.BENCH`` virtual time.
Between step ends nothing leaves the process: the scheduler jumps deadline to deadline.
The rig's link to the edge stays a TCP socket (as on ``unix_synthetic``), so the bench's
own edge or a real gateway connects to it; the exchange has its own Unix-domain socket.

Options (``--key value``): ``bench`` (path of the bench's Unix socket, required),
``host`` / ``port`` (TCP link), ``coalesce_adc`` (``1`` default, ``0`` converts every
ADC sample as an event), ``press_start_mm`` (screw travel at power-up), ``config``
(config file), and every ``pico2w.DEFAULTS`` option (``rtd_settle_ms`` among them).
"""

import json
import struct

import machine

from boards import pico2w
from boards.unix_synthetic import TcpLink
from fieldrig.clock import US_PER_S, diff_ms

# The rp2 stubs know neither the bench's BENCH nor the wiring module: look them up.
BENCH = getattr(machine, "BENCH")
wiring = __import__("wiring")

PROTOCOL = 1
MSG_BOOT = 0x01  # rig -> bench: JSON (front end, pins, plant constants)
MSG_OUT = 0x02  # rig -> bench: actuator outputs at a step end
MSG_RESET = 0x03  # rig -> bench: the MCU resets now (watchdog, machine.reset)
MSG_INPUT = 0x81  # bench -> rig: inputs for the next step
MSG_NETWORK = 0x82  # bench -> rig, before an INPUT: the cell's small-signal network

HEADER = "<IB"  # payload length, type
HEADER_SIZE = 5
# OUT: t_ns, dac_code, range_index, dac_pd, gate_level, gate_pio, gate_duty, gate_period_s,
# gate_high_s, heater_duty, heater_j, press_pos_256, press_enabled, endstop_min,
# endstop_max, wdt_feeds, adc_rate_hz, adc_read, adc_lost, adc_underruns, bus_errors,
# rtd_conversions, loadcell_conversions, link_tx (bytes written on the link connection)
OUT_FMT = "<qHbBBBfffffiBBBIfIIIIIII"
OUT_SIZE = struct.calcsize(OUT_FMT)
# INPUT: t_end_ns, cell_v, cell_i_a, ref_v, temp_c, force_n, force_slope (N per 1/256 full
# step of the screw), rtd_mode, endstops, flags, crc_corrupt, i2c_nak, edge_conns,
# edge_tx, n_block; then n_block float32 cell volts, n_block float32 amps
INPUT_FMT = "<qffffffBBBHhHIH"
INPUT_SIZE = struct.calcsize(INPUT_FMT)
# NETWORK: enabled, r0_ohm, n; then n float32 r_ohm and n float32 tau_s (wiring.py's
# small-signal cell: the cell's Foster network reduced to a few relaxations per decade)
NETWORK_FMT = "<BfH"
NETWORK_SIZE = struct.calcsize(NETWORK_FMT)
MAX_RELAXATIONS = 64

RTD_OK = 0
RTD_OPEN = 1  # element open: ratio at full scale, high-threshold fault
RTD_SHORT = 2  # element shorted: ratio near zero, low-threshold fault
RTD_FORCE_OPEN = 3  # FORCE- lead broken (found by the fault-detection cycle)
RTD_OVERVOLTAGE = 4
SHORTED_RTD_OHM = 0.5

ENDSTOP_MIN = 0x01  # force the retracted end stop triggered (switch open / wire broken)
ENDSTOP_MAX = 0x02
FLAG_STOP = 0x01  # leave the main loop (end of a bench run)
FLAG_RESET = 0x02  # machine.reset(): the MCU restarts (the bench starts a new boot)
NAK_CLEAR = -2
NAK_UNTIL_CLEARED = -1

MAX_BLOCK = 8192  # conversions per step: 32 kSPS for 250 ms
EDGE_LIVE = 0xFFFF  # edge_conns: no lockstep edge (a real gateway): the link runs live
LINK_WAIT_MS = 10000


class LockstepLink:
    """The TCP link, made a function of virtual time when the bench's own edge is on it.

    The edge writes only while the rig is paused at a step end and announces in INPUT how
    many connections it opened and how many bytes it wrote on the current one. Before the
    next step runs, this link accepts those connections and pulls exactly those bytes out
    of the socket (waiting for the kernel if it has not delivered them yet: under load,
    loopback delivery may lag the sender); the session then reads them from here. Every
    write is counted, and OUT reports the count so the edge reads exactly that much.
    With a real gateway (``EDGE_LIVE``) it is the plain ``TcpLink``."""

    def __init__(self, tcp):
        self.tcp = tcp
        self.live = True
        self.tx = 0
        self._accepted = 0
        self._pulled = 0
        self._new = False
        self._buf = bytearray(4096)
        self._n = 0
        self._pos = 0
        self._closed = False

    def sync(self, edge_conns, edge_tx):
        if edge_conns == EDGE_LIVE:
            self.live = True
            return
        self.live = False
        import select

        tcp = self.tcp
        while self._accepted < edge_conns:
            tcp.close()
            tcp.accept()  # blocking: the edge has connected
            self._accepted += 1
            self._new = True
            self._closed = False
            self._pulled = 0
            self.tx = 0
            self._n = 0
            self._pos = 0
        want = edge_tx - self._pulled
        if want <= 0 or tcp.conn is None:
            return
        if self._pos == self._n:
            self._pos = 0
            self._n = 0
        if self._n + want > len(self._buf):
            self._buf.extend(bytes(self._n + want - len(self._buf)))
        poller = select.poll()
        poller.register(tcp.conn, select.POLLIN)
        mv = memoryview(self._buf)
        while want > 0:
            if not poller.poll(LINK_WAIT_MS):
                raise SystemExit("bench: edge bytes announced but not delivered")
            k = tcp.conn.readinto(mv[self._n:self._n + want])
            if not k:
                self._closed = True
                return
            self._n += k
            self._pulled += k
            want -= k

    def poll_accept(self):
        if self.live:
            return self.tcp.poll_accept()
        if self._new:
            self._new = False
            return True
        return False

    def write(self, data):
        ok = self.tcp.write(data)
        if ok:
            self.tx += len(data)
        return ok

    def readinto(self, buf):
        if self.live:
            return self.tcp.readinto(buf)
        if self.tcp.conn is None:
            return -1
        n = self._n - self._pos
        if n <= 0:
            return -1 if self._closed else 0
        if n > len(buf):
            n = len(buf)
        buf[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self):
        self.tcp.close()

# The load cell's scale follows from the plant (wiring.PLANT) and the driver's defaults:
# a ratiometric bridge at gain 128 gives code = V/V x 128 / 0.5 x 2^23.
LOADCELL_GAIN = 128


def loadcell_n_per_code(plant):
    span_v_per_v = plant["loadcell_mv_per_v"] / 1000.0
    return plant["loadcell_capacity_n"] / (span_v_per_v * LOADCELL_GAIN / 0.5 * (1 << 23))


def _af_unix():
    # Unix port only (the rp2 stubs have no AF_UNIX).
    import socket

    return getattr(socket, "AF_UNIX")


def _unix_addr(path):
    # MicroPython's unix socket module takes a raw struct sockaddr_un for AF_UNIX.
    return struct.pack("<H", _af_unix()) + path.encode() + bytes(1)


def watch_range_switch(w):
    """The V->I stage's range as the wiring sees it: from the levels of the board's range
    switch pins (``pico2w.RANGE_PINS``, one-hot, all low = disconnected)."""
    pins = [pico2w.PINS[name] for name in pico2w.RANGE_PINS]

    def changed(_level):
        index = -1
        for i in range(len(pins)):
            if BENCH.level(pins[i]):
                index = i
        if index != w.range_index:
            w.range_index = index
            w.stage_current_changed()

    for p in pins:
        BENCH.watch(p, changed)


class Sync:
    """The bench's end of the lockstep exchange (one blocking Unix socket)."""

    def __init__(self, path, w, link):
        import socket

        self._w = w
        self._link = link
        self._sock = socket.socket(_af_unix(), socket.SOCK_STREAM)
        self._sock.connect(_unix_addr(path))
        BENCH.on_reset = self.reset  # every reset, wherever the firmware is
        self.step_end_ns = 0
        self.steps = 0
        self._hdr = bytearray(HEADER_SIZE)
        self._out = bytearray(HEADER_SIZE + OUT_SIZE)
        struct.pack_into(HEADER, self._out, 0, OUT_SIZE, MSG_OUT)
        self._in = bytearray(INPUT_SIZE)
        # Two sets of block buffers, used in turn: the ADC model keeps a reference to the
        # block it is converting until the next one replaces it.
        self._blocks = ({}, {})
        self._which = 0
        self._zeros = {}
        self._rtd_mode = RTD_OK
        self._endstops = 0
        self.heater_j0 = 0.0
        self.gate_t_ns = BENCH.now_ns
        # The press is stiff and fast: the force follows the screw within the step (the
        # pressure loop would otherwise act on a force one step old and limit-cycle).
        # The bench sends the force at the step start and its slope per screw position.
        self._force0 = 0.0
        self._force_slope = 0.0
        self._pos_ref = w.press.position_256
        w.press.on_position = self._press_moved

    # -- transport --------------------------------------------------------------------
    def _recv_into(self, buf, nbytes):
        # A blocking MicroPython stream read fills the whole buffer unless the peer left.
        n = self._sock.readinto(buf)
        if n != nbytes:
            print("bench: lockstep socket closed (%s of %d bytes)" % (n, nbytes))
            raise SystemExit(1)

    def _send(self, msg_type, payload):
        hdr = bytearray(HEADER_SIZE)
        struct.pack_into(HEADER, hdr, 0, len(payload), msg_type)
        self._sock.write(hdr + payload)

    def _receive_input(self):
        self._recv_into(self._hdr, HEADER_SIZE)
        length, msg_type = struct.unpack_from(HEADER, self._hdr, 0)
        if msg_type == MSG_NETWORK:
            self._receive_network(length)
            self._recv_into(self._hdr, HEADER_SIZE)
            length, msg_type = struct.unpack_from(HEADER, self._hdr, 0)
        if msg_type != MSG_INPUT or length < INPUT_SIZE:
            raise SystemExit("bench sent message type %d (%d bytes)" % (msg_type, length))
        self._recv_into(self._in, INPUT_SIZE)
        fields = struct.unpack_from(INPUT_FMT, self._in, 0)
        n = fields[14]
        if length != INPUT_SIZE + 8 * n or n > MAX_BLOCK:
            raise SystemExit("bench INPUT of %d bytes for a block of %d" % (length, n))
        block = None
        if n:
            block = self._block_buffers(n)
            self._recv_into(block[0], 4 * n)
            self._recv_into(block[1], 4 * n)
        self._apply(fields, block)
        return fields[9]

    def _receive_network(self, length):
        from array import array

        head = bytearray(NETWORK_SIZE)
        if length < NETWORK_SIZE:
            raise SystemExit("bench NETWORK of %d bytes" % length)
        self._recv_into(head, NETWORK_SIZE)
        enabled, r0_ohm, n = struct.unpack_from(NETWORK_FMT, head, 0)
        if n > MAX_RELAXATIONS or length != NETWORK_SIZE + 8 * n:
            raise SystemExit("bench NETWORK of %d bytes for %d relaxations" % (length, n))
        r_ohm = array("f", bytes(4 * n))
        tau_s = array("f", bytes(4 * n))
        if n:
            self._recv_into(r_ohm, 4 * n)
            self._recv_into(tau_s, 4 * n)
        self._w.set_small_signal(enabled, r0_ohm, r_ohm, tau_s)

    def _block_buffers(self, n):
        from array import array

        self._which ^= 1
        pool = self._blocks[self._which]
        bufs = pool.get(n)
        if bufs is None:
            bufs = (array("f", bytes(4 * n)), array("f", bytes(4 * n)))
            pool[n] = bufs
        return bufs

    # -- inputs -----------------------------------------------------------------------
    def _apply(self, fields, block):
        (t_end, cell_v, cell_i_a, ref_v, temp_c, force_n, force_slope, rtd_mode, endstops,
         _flags, crc_corrupt, i2c_nak, edge_conns, edge_tx, n) = fields
        self._link.sync(edge_conns, edge_tx)
        w = self._w
        self.step_end_ns = t_end
        self.steps += 1
        self._force0 = force_n
        self._force_slope = force_slope
        self._pos_ref = w.press.position_256
        w.apply_inputs(cell_v=cell_v, cell_i_a=cell_i_a, ref_v=ref_v, force_n=force_n)
        if block is not None:
            self._load_block(block, n)
        rtd = w.rtd
        if rtd_mode != self._rtd_mode:
            rtd.force_minus_open = rtd_mode == RTD_FORCE_OPEN
            rtd.overvoltage = rtd_mode == RTD_OVERVOLTAGE
            self._rtd_mode = rtd_mode
        if rtd_mode == RTD_OPEN:
            rtd.rtd_ohm = None
        elif rtd_mode == RTD_SHORT:
            rtd.rtd_ohm = SHORTED_RTD_OHM
        else:
            w.apply_inputs(temp_c=temp_c)
        if endstops != self._endstops:
            self._endstops = endstops
            w.force_endstops(bool(endstops & ENDSTOP_MIN), bool(endstops & ENDSTOP_MAX))
        if crc_corrupt:
            w.adc.corrupt_crc(crc_corrupt)
        if i2c_nak == NAK_CLEAR:
            BENCH.clear_nak(0x2A)
        elif i2c_nak:
            BENCH.nak(0x2A, i2c_nak)
        BENCH.invalidate()  # model schedules may have changed outside the buses

    def _load_block(self, block, n):
        # Physical values -> ADC input volts with the front end of the wiring.
        a = self._w.analog
        kv = 1.0 / a["cell_v_divider"]
        ki = a["shunt_ohm"]
        bv = block[0]
        bi = block[1]
        for k in range(n):
            bv[k] *= kv
            bi[k] *= ki
        zeros = self._zeros.get(n)
        if zeros is None:
            from array import array

            zeros = array("f", bytes(4 * n))
            self._zeros[n] = zeros
        self._w.adc.load_block_v((bv, bi, zeros, zeros))

    def _press_moved(self, position_256):
        w = self._w
        w._press_moved(position_256)  # end stops
        slope = self._force_slope
        if slope:
            f = self._force0 + slope * (position_256 - self._pos_ref)
            w.apply_inputs(force_n=f if f > 0.0 else 0.0)

    # -- outputs ----------------------------------------------------------------------
    def _report(self):
        w = self._w
        now = BENCH.now_ns
        t0 = self.gate_t_ns
        gate_pin = w.pins["pulse_gate"]
        high_gpio = w._gate.take_high_ns()
        sm = BENCH.pio_pins.get(gate_pin)
        nan = float("nan")
        period_s = nan
        high_s = nan
        if sm is not None and sm.active():
            gate_pio = 1
            info = sm.describe(gate_pin)
            gate_level = info["level"]
            duty = sm.duty(gate_pin, t0, now) if now > t0 else float(gate_level)
            if info["periodic"]:
                period_s = info["period_s"]
                high_s = info["high_s"]
        else:
            gate_pio = 0
            gate_level = BENCH.level(gate_pin)
            duty = high_gpio / (now - t0) if now > t0 else float(gate_level)
        self.gate_t_ns = now
        if sm is not None:
            sm.forget_before(now)  # the next step's duty starts here
        heater = w.heater
        energy = heater.energy_since(0.0)
        heater_j = energy - self.heater_j0
        self.heater_j0 = energy
        adc = w.adc
        adc.sync()  # replay coalesced conversions: the counters are those of now
        w.small_signal_held()  # the plant holds the present stage current from here
        pins = w.pins
        press = w.press
        errors = 0
        for v in BENCH.errors.values():
            errors += v
        struct.pack_into(
            OUT_FMT, self._out, HEADER_SIZE, now, w.dac.code, w.range_index, w.dac.pd_mode,
            gate_level, gate_pio, duty, period_s, high_s, heater.duty, heater_j,
            press.position_256, 1 if press.enabled else 0, BENCH.level(pins["endstop_min"]),
            BENCH.level(pins["endstop_max"]), BENCH.wdt_feeds, adc.data_rate_hz,
            adc.samples_read, adc.samples_lost, adc.block_underruns, errors,
            w.rtd.conversions, w.loadcell.conversions, self._link.tx & 0xFFFFFFFF)
        self._sock.write(self._out)

    # -- the lockstep ------------------------------------------------------------------
    def boot(self, info):
        """First exchange, before any driver exists: the inputs of the first step are in
        place when the parts are initialised."""
        self._send(MSG_BOOT, json.dumps(info).encode())
        self._step_inputs()

    def exchange(self):
        """At the end of the current step: outputs out, next step's inputs in."""
        self._report()
        self._step_inputs()

    def _step_inputs(self):
        flags = self._receive_input()
        if flags & FLAG_STOP:
            raise SystemExit(0)
        if flags & FLAG_RESET:
            machine.reset()

    def reset(self, cause):
        """Tell the bench the MCU is resetting (the process ends right after)."""
        try:
            self._send(MSG_RESET, json.dumps({"cause": cause, "t_ns": BENCH.now_ns}).encode())
        except OSError:
            pass


class BenchClock:
    """Uptime from ``machine.BENCH`` virtual time; ``sleep_until`` is the lockstep sync.

    Driver busy-waits (``time.ticks_us`` under vtime) move BENCH time too, so ``update``
    reads it back: the scheduler sees the time the drivers really took."""

    virtual = True

    def __init__(self, sync):
        self._sync = sync
        self.s = 0
        self.us = 0
        self.update()

    def update(self):
        t_us = BENCH.now_ns // 1000
        s = t_us // US_PER_S
        self.s = s
        self.us = t_us - s * US_PER_S

    def ms_until(self, s, us):
        self.update()
        return diff_ms(s, us, self.s, self.us)

    def sleep_ms(self, ms):
        if ms > 0:
            self._wait_ns(BENCH.now_ns + ms * 1000000)

    def sleep_until(self, s, us):
        self._wait_ns((s * US_PER_S + us) * 1000)

    def advance(self, us):
        self._wait_ns(BENCH.now_ns + us * 1000)

    def _wait_ns(self, target_ns):
        sync = self._sync
        while target_ns >= sync.step_end_ns:
            BENCH.advance_to_ns(sync.step_end_ns)
            sync.exchange()
        BENCH.advance_to_ns(target_ns)
        self.update()


def build(opts):
    if "bench" not in opts:
        raise ValueError("the bench board needs --bench <unix socket path>")
    # Coalesced ADC conversions: exact while the firmware polls DRDY (it does), and ten
    # times fewer model events at 1 kSPS with one read per 10 ms.
    plant = {}
    if "press_start_mm" in opts:
        plant["press_start_mm"] = float(opts["press_start_mm"])  # where the screw is now
    w = wiring.Wiring(plant=plant, coalesce_adc=opts.get("coalesce_adc", "1") == "1")
    link = LockstepLink(TcpLink(opts.get("host", "127.0.0.1"), int(opts["port"])))
    sync = Sync(opts["bench"], w, link)
    sync.boot({
        "protocol": PROTOCOL, "rig": opts.get("rig", "rig-1"), "pins": w.pins,
        "pin_source": w.pin_source, "analog": w.analog,
        "plant": {k: (list(v) if isinstance(v, tuple) else v) for k, v in w.plant.items()},
    })
    board_opts = dict(opts)
    if "loadcell_n_per_code" not in board_opts:
        board_opts["loadcell_n_per_code"] = repr(loadcell_n_per_code(w.plant))
    watch_range_switch(w)
    # The Pico 2 W board as it is: parts initialised (with its rtd_settle_ms, which the
    # bench may set to 0), range switch on its pins, the PIO gate on the rp2 stand-in,
    # the watchdog on the bench's WDT.
    board = pico2w.build(board_opts, machine=machine, link=link)
    echem = {}
    for k in opts:
        if k.startswith("echem_"):
            # --echem_<name> <number>: measure.OPTIONS overrides (e.g. max_block_ms for
            # a sweep down to 1 Hz); measure.py rejects unknown names.
            v = opts[k]
            echem[k[6:]] = int(v) if v.isdigit() else float(v)
    if echem:
        board["echem"] = echem
    board.update({
        "clock": BenchClock(sync),
        "config_path": opts.get("config"),  # RAM only unless --config
        "bench_sync": sync,
        "bench_wiring": w,
    })
    return board
