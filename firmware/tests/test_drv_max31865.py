# MAX31865: exact register bytes (read 0x0n / write 0x8n, auto-increment), configuration
# values, threshold layout, fault flag -> fault status names, and the RTD code ->
# temperature conversion against the datasheet's PT100 / R_REF = 400 ohm table,
# including below 0 degC. The part is a small register model behind the fake SPI bus.
import math

from fakebus import BusLog, FakePin, FakeSPI, runs_with_heap_locked

from fieldrig.drivers import max31865 as m
from fieldrig.drivers.max31865 import MAX31865


class Max31865Model:
    """Registers 0x00..0x07 with address auto-increment within one CS-low period.
    Self-clearing bits (fault clear, 1-shot, fault-cycle) behave as in the datasheet."""

    def __init__(self):
        self.regs = bytearray(8)
        self.regs[m.REG_HFT_MSB] = 0xFF  # power-on values of the high threshold
        self.regs[m.REG_HFT_LSB] = 0xFF
        self.fault_cycle_polls = 2
        self.fault_after_cycle = 0
        self._addr = None

    def set_code(self, code, fault_status=0):
        raw = (code << 1) | (1 if fault_status else 0)
        self.regs[m.REG_RTD_MSB] = raw >> 8
        self.regs[m.REG_RTD_LSB] = raw & 0xFF
        self.regs[m.REG_FAULT_STATUS] = fault_status

    def select(self):
        self._addr = None

    def deselect(self):
        pass

    def _write(self, reg, value):
        if reg == m.REG_CONFIG:
            if value & m.CFG_FAULT_CLEAR:
                self.regs[m.REG_FAULT_STATUS] = 0
                self.regs[m.REG_RTD_LSB] &= 0xFE
            value &= ~(m.CFG_FAULT_CLEAR | m.CFG_1SHOT)
        if reg in (m.REG_HFT_MSB, m.REG_HFT_LSB, m.REG_LFT_MSB, m.REG_LFT_LSB, m.REG_CONFIG):
            self.regs[reg] = value

    def _read(self, reg):
        value = self.regs[reg]
        if reg == m.REG_CONFIG and value & m.CFG_FAULT_CYCLE_MASK:
            # The cycle reports itself running for a few polls, then finishes.
            self.fault_cycle_polls -= 1
            if self.fault_cycle_polls <= 0:
                self.regs[m.REG_CONFIG] = value & ~m.CFG_FAULT_CYCLE_MASK
                self.regs[m.REG_FAULT_STATUS] = self.fault_after_cycle
        return value

    def transfer(self, tx, rx):
        for i in range(len(tx)):
            if self._addr is None:
                self._addr = tx[i]
                out = 0
            else:
                a = self._addr & 0x7F
                if self._addr & 0x80:
                    self._write(a, tx[i])
                    out = 0
                else:
                    out = self._read(a)
                self._addr = (self._addr & 0x80) | ((a + 1) & 0x7F)
            if rx is not None:
                rx[i] = out


def _rtd(r_ref_ohm=400.0, r0_ohm=100.0, wires=3, filter_hz=50):
    log = BusLog()
    spi = FakeSPI(1, log, baudrate=4_000_000, polarity=0, phase=1)
    cs = FakePin(14, value=1)
    model = spi.attach(cs, Max31865Model(), "rtd")
    return MAX31865(spi, cs, r_ref_ohm, r0_ohm, wires, filter_hz), model, log


def _spi_tx(log):
    return [e[2] for e in log.of("spi")]


def test_init_config_bytes_3wire_50hz():
    rtd, model, log = _rtd()
    rtd.init()
    assert _spi_tx(log) == [
        b"\x80\x11",  # filter 50 Hz + 3-wire, conversions off (filter set outside auto)
        b"\x80\xd1",  # + VBIAS + auto conversion
        b"\x83\xff\xfe\x09\x9a",  # HFT 400 ohm (code 0x7fff << 1), LFT 15 ohm (1229 << 1)
        b"\x80\xd3",  # fault status clear: D1 with D5, D3, D2 zero
        b"\x00\x00",  # read back configuration
    ]
    assert model.regs[m.REG_CONFIG] == 0xD1
    # Every access is framed by its own CS low..high.
    assert log.of("cs")[:2] == [("cs", "rtd", 0), ("cs", "rtd", 1)]


def test_init_config_bytes_4wire_60hz():
    rtd, model, log = _rtd(wires=4, filter_hz=60)
    rtd.init()
    assert _spi_tx(log)[:2] == [b"\x80\x00", b"\x80\xc0"]
    assert model.regs[m.REG_CONFIG] == 0xC0


def test_init_raises_when_part_missing():
    rtd, model, _ = _rtd()

    def dead(tx, rx):
        for i in range(len(rx)):
            rx[i] = 0xFF  # floating MISO

    model.transfer = dead
    try:
        rtd.init()
    except OSError:
        return
    raise AssertionError("init succeeded without a part")


def test_shorted_rtd_trips_default_low_threshold():
    # The model flags a code below the low threshold the way the part does.
    rtd, model, _ = _rtd()
    rtd.init()
    lft = ((model.regs[m.REG_LFT_MSB] << 8) | model.regs[m.REG_LFT_LSB]) >> 1
    hft = ((model.regs[m.REG_HFT_MSB] << 8) | model.regs[m.REG_HFT_LSB]) >> 1
    assert m.rtd_resistance_ohm(-200.0, 100.0) * 32768 / 400 > lft  # real cold reads fine
    assert 2 * 32768 / 400 < lft  # a 2 ohm short (leads) is below it
    assert hft == 0x7FFF
    model.set_code(20, fault_status=m.FAULT_RTD_LOW)
    assert math.isnan(rtd.read_temperature_c())
    assert m.fault_names(rtd.fault_status) == ("rtd_low_threshold",)


def test_thresholds_left_justified_codes():
    rtd, model, log = _rtd()
    rtd.set_thresholds_ohm(80.0, 200.0)  # codes 6554 and 16384 for R_REF 400 ohm
    assert _spi_tx(log)[-1] == bytes([0x83, 0x80, 0x00, 0x33, 0x34])
    assert model.regs[m.REG_HFT_MSB:m.REG_LFT_LSB + 1] == bytes([0x80, 0x00, 0x33, 0x34])


# (degC, code) rows from the datasheet table "PT100, R_REF = 400 ohm": code = R/400 * 2^15.
DATASHEET_PT100_400 = (
    (-200, 1517), (-100, 4936), (-50, 6579), (0, 8192), (25, 8989), (100, 11347),
    (200, 14406), (300, 17370), (400, 20241), (550, 24370),
)


def test_code_to_temperature_matches_datasheet_table():
    rtd, model, _ = _rtd(r_ref_ohm=400.0)
    for t_c, code in DATASHEET_PT100_400:
        model.set_code(code)
        got = rtd.read_temperature_c()
        # One code is 0.0122 ohm = 0.03 degC (0.04 degC at 550 degC).
        assert abs(got - t_c) < 0.06, (t_c, code, got)


def test_zero_celsius_is_100_ohm_code_8192():
    rtd, model, log = _rtd(r_ref_ohm=400.0)
    model.set_code(8192)
    assert rtd.read_code() == 8192
    assert _spi_tx(log)[-1] == b"\x01\x00\x00"  # read RTD MSB, LSB in one access
    assert abs(rtd.read_resistance_ohm() - 100.0) < 1e-9
    assert abs(rtd.read_temperature_c()) < 1e-6


def test_pt1000_with_4k_reference_gives_same_temperatures():
    rtd, model, _ = _rtd(r_ref_ohm=4000.0, r0_ohm=1000.0)
    for t_c, code in DATASHEET_PT100_400:
        model.set_code(code)
        assert abs(rtd.read_temperature_c() - t_c) < 0.06


def test_callendar_van_dusen_round_trip_below_zero():
    for t_c in (-200.0, -150.0, -80.0, -10.0, -0.5, 0.0, 0.5, 60.0, 300.0, 850.0):
        r = m.rtd_resistance_ohm(t_c, 100.0)
        assert abs(m.rtd_temperature_c(r, 100.0) - t_c) < 1e-4, t_c
    # The C term matters below 0 degC: the quadratic alone would be off by ~0.25 degC.
    r = m.rtd_resistance_ohm(-200.0, 100.0)
    assert abs(r - 18.52) < 0.005


def test_fault_flag_reads_status_and_decodes_names():
    rtd, model, log = _rtd()
    model.set_code(0x7FFF, fault_status=m.FAULT_RTD_HIGH | m.FAULT_REFIN_LOW_FORCE_OPEN)
    t = rtd.read_temperature_c()
    assert math.isnan(t)
    assert rtd.fault_status == 0x90
    assert _spi_tx(log)[-1] == b"\x07\x00"  # fault status register read
    assert m.fault_names(rtd.fault_status) == (
        "rtd_high_threshold", "refin_below_0.85_vbias_force_open")
    assert rtd.faults == 1
    rtd.clear_fault()
    assert model.regs[m.REG_FAULT_STATUS] == 0
    model.set_code(8192)
    assert abs(rtd.read_temperature_c()) < 1e-6


def test_every_fault_bit_has_a_name():
    names = m.fault_names(0xFC)
    assert names == ("rtd_high_threshold", "rtd_low_threshold", "refin_above_0.85_vbias",
                     "refin_below_0.85_vbias_force_open",
                     "rtdin_below_0.85_vbias_force_open", "over_under_voltage")
    assert m.fault_names(0x03) == ()  # D1, D0 are don't-care


def test_fault_detection_cycle():
    rtd, model, log = _rtd()
    rtd.init()
    model.fault_after_cycle = m.FAULT_RTDIN_LOW_FORCE_OPEN
    status = rtd.run_fault_detection()
    assert status == m.FAULT_RTDIN_LOW_FORCE_OPEN
    tx = _spi_tx(log)
    i = tx.index(b"\x80\x95")  # 100X010Xb with 3-wire and 50 Hz
    assert tx[i + 1] == b"\x00\x00"  # polled until D3:D2 read 00
    assert b"\x07\x00" in tx[i:]
    assert tx[-1] == b"\x80\xd1"  # back to continuous conversion
    assert model.regs[m.REG_CONFIG] == 0xD1


def test_one_shot_sets_bit_once():
    rtd, model, log = _rtd()
    rtd.start_one_shot()
    assert _spi_tx(log)[-1] == b"\x80\xb1"  # VBIAS + 1-shot + 3-wire + 50 Hz
    assert model.regs[m.REG_CONFIG] == 0x91  # 1-shot clears itself


def test_read_code_allocates_nothing():
    rtd, model, log = _rtd()
    model.set_code(9000)
    log.enabled = False
    out = []

    def read():
        rtd.read_code()

    assert runs_with_heap_locked(read)
    out.append(rtd.read_code())
    assert out == [9000]


def test_fault_register_read():
    rtd, model, log = _rtd()
    model.set_code(100, fault_status=m.FAULT_RTD_LOW)
    assert rtd.fault() == m.FAULT_RTD_LOW
    assert _spi_tx(log)[-1] == b"\x07\x00"
    rtd.clear_fault()
    assert rtd.fault() == 0


def test_no_value_before_the_first_conversion():
    # Power-up: RTD registers 0 (= -242 degC) with no fault bit until the first automatic
    # conversion; the driver reports no value (NaN), not a fault and not a temperature.
    rtd, model, _ = _rtd(r_ref_ohm=430.0)
    rtd.init()
    assert rtd.read_code() == -1 and rtd.faults == 0 and rtd.fault_status == 0
    assert math.isnan(rtd.read_temperature_c()) and rtd.fault() == 0
    model.set_code(8192)  # the first conversion: 107.5 ohm
    assert rtd.read_code() == 8192 and abs(rtd.read_temperature_c() - 19.3) < 0.1
