# NAU7802: register writes in the datasheet power-up order, PUR / CALS / CR polling,
# calibration errors, 24-bit two's-complement reads, force and pressure conversion,
# and saturation at either rail. The part is a register model behind the fake I2C bus.
import math

from fakebus import BusLog, FakeI2C, I2CRegisterDevice, runs_with_heap_locked

from fieldrig.drivers import nau7802 as n
from fieldrig.drivers.nau7802 import NAU7802


class Nau7802Model(I2CRegisterDevice):
    """PUR rises a few polls after PUD; CALS clears a few polls after it is set (with
    CAL_ERR if ``cal_error``); CR is set by ``convert`` and cleared by reading ADCO."""

    def __init__(self):
        I2CRegisterDevice.__init__(self)
        self.pur_delay = 2
        self.cal_delay = 3
        self.cal_error = False
        self.calibrations = []
        self.codes = []
        self._pur_in = -1
        self._cal_in = -1
        self.on_write = self._written
        self.on_read = self._reading

    def _written(self, reg, value):
        if reg == n.REG_PU_CTRL:
            if value & n.PU_RR:
                for i in range(len(self.regs)):
                    self.regs[i] = 0
                self.regs[n.REG_PU_CTRL] = n.PU_RR
                return
            pur = self.regs[n.REG_PU_CTRL] & (n.PU_PUR | n.PU_CR)
            self.regs[n.REG_PU_CTRL] = (value & ~(n.PU_PUR | n.PU_CR)) | pur
            if value & n.PU_PUD and not pur & n.PU_PUR and self._pur_in < 0:
                self._pur_in = self.pur_delay
        elif reg == n.REG_CTRL2 and value & n.CTRL2_CALS:
            self.calibrations.append(value & n.CTRL2_CALMOD_MASK)
            self._cal_in = self.cal_delay

    def _reading(self, reg):
        if reg == n.REG_PU_CTRL and self._pur_in >= 0:
            if self._pur_in == 0:
                self.regs[n.REG_PU_CTRL] |= n.PU_PUR
            self._pur_in -= 1
        if reg == n.REG_CTRL2 and self._cal_in >= 0:
            if self._cal_in == 0:
                v = self.regs[n.REG_CTRL2] & ~n.CTRL2_CALS
                self.regs[n.REG_CTRL2] = v | (n.CTRL2_CAL_ERR if self.cal_error else 0)
            self._cal_in -= 1
        if reg == n.REG_PU_CTRL and self.codes and not self.regs[reg] & n.PU_CR:
            self.convert(self.codes.pop(0))
        if reg == n.REG_ADCO_B2:
            self.regs[n.REG_PU_CTRL] &= ~n.PU_CR

    def convert(self, code):
        raw = code & 0xFFFFFF
        self.regs[n.REG_ADCO_B2] = raw >> 16
        self.regs[n.REG_ADCO_B1] = (raw >> 8) & 0xFF
        self.regs[n.REG_ADCO_B0] = raw & 0xFF
        self.regs[n.REG_PU_CTRL] |= n.PU_CR


def _cell(**kw):
    log = BusLog()
    i2c = FakeI2C(0, log, freq=400_000)
    model = i2c.attach(n.I2C_ADDR, Nau7802Model())
    return NAU7802(i2c, **kw), model, log


def test_power_up_sequence_register_writes_in_order():
    cell, model, log = _cell(gain=128, ldo_v=3.3, rate_sps=80)
    cell.init()
    writes = [(e[2], e[3]) for e in log.of("i2c_w", n.I2C_ADDR)]
    assert writes == [
        (0x00, b"\x01"),  # RR: register reset
        (0x00, b"\x02"),  # RR = 0, PUD: power up digital
        (0x00, b"\x06"),  # PUA: power up analog
        (0x01, b"\x27"),  # CTRL1: VLDO 3.3 V (100b), gain 128 (111b)
        (0x00, b"\x86"),  # AVDDS: AVDD from the internal LDO
        (0x02, b"\x30"),  # CTRL2: 80 SPS (011b), channel 1
        (0x00, b"\x96"),  # CS: cycle start
        (0x02, b"\x34"),  # CALMOD internal offset + CALS
    ]
    # PUR was polled (read of PU_CTRL) before anything past power-up was written.
    order = [(e[0], e[2]) for e in log.entries]
    assert order.index(("i2c_r", 0x00)) < order.index(("i2c_w", 0x01))
    assert model.calibrations == [n.CALMOD_INTERNAL_OFFSET]


def test_other_gain_ldo_rate_channel_bytes():
    cell, _, log = _cell(gain=1, ldo_v=4.5, rate_sps=320, channel=2)
    cell.init()
    writes = dict((e[2], e[3]) for e in log.of("i2c_w") if e[2] != 0x02)
    assert writes[0x01] == b"\x00"
    ctrl2 = [e[3] for e in log.of("i2c_w") if e[2] == 0x02]
    assert ctrl2 == [b"\xf0", b"\xf4"]  # CHS | 320 SPS (111b), then + CALS


def test_power_up_timeout_raises():
    cell, model, _ = _cell()
    model.pur_delay = 10_000
    try:
        cell.init(max_polls=5)
    except OSError as e:
        assert "PUR" in str(e)
        return
    raise AssertionError("init returned without PUR")


def test_missing_part_raises():
    cell = NAU7802(FakeI2C(0))
    try:
        cell.init()
    except OSError:
        return
    raise AssertionError("init succeeded with no device at 0x2A")


def test_calibration_error_raises():
    cell, model, _ = _cell()
    cell.init()
    model.cal_error = True
    try:
        cell.calibrate(n.CALMOD_SYSTEM_OFFSET)
    except OSError as e:
        assert "CAL_ERR" in str(e)
    else:
        raise AssertionError("CAL_ERR ignored")
    assert model.calibrations[-1] == n.CALMOD_SYSTEM_OFFSET


def test_system_gain_calibration_bytes():
    cell, model, log = _cell()
    cell.init()
    cell.calibrate(n.CALMOD_SYSTEM_GAIN)
    assert log.of("i2c_w")[-1][2:] == (0x02, b"\x37")
    assert model.calibrations[-1] == n.CALMOD_SYSTEM_GAIN


def test_twos_complement_reads():
    cell, model, log = _cell()
    for code in (0, 1, -1, 123456, -123456, 0x7FFFFE, -0x7FFFFF):
        model.convert(code)
        assert cell.read_code() == code
        assert not cell.saturated
    assert log.of("i2c_r")[-1][2:] == (0x12, bytes([0x80, 0x00, 0x01]))


def test_wait_code_polls_cycle_ready():
    cell, model, log = _cell()
    model.codes = [4242]
    assert cell.wait_code() == 4242
    reads = [e[2] for e in log.of("i2c_r")]
    assert reads == [0x00, 0x12]
    assert not cell.data_ready()  # CR cleared by the ADCO read


def test_force_and_pressure():
    # 1 N per 100 codes; a 10 mm diameter cell (78.54 mm^2).
    area = math.pi * 5.0 * 5.0
    cell, model, _ = _cell(zero_offset_code=1000, n_per_code=0.01, area_mm2=area)
    model.convert(1000 + 39270)
    f = cell.read_force_n()
    assert abs(f - 392.70) < 1e-6
    model.convert(1000 + 39270)
    assert abs(cell.read_pressure_mpa() - 5.0) < 1e-4  # 392.7 N over 78.54 mm^2


def test_saturation_at_both_rails_gives_nan_and_counts():
    cell, model, _ = _cell(n_per_code=0.01)
    model.convert(0x7FFFFF)
    assert math.isnan(cell.read_force_n())
    assert cell.saturated
    model.convert(-0x800000)
    assert math.isnan(cell.read_pressure_mpa())
    assert cell.saturations == 2
    model.convert(5)
    assert cell.read_force_n() == 0.05
    assert not cell.saturated


def test_tare_and_span_calibration():
    cell, model, _ = _cell()
    model.codes = [990, 1010] * 4
    assert cell.tare(8) == 1000
    model.codes = [101000] * 4
    assert abs(cell.calibrate_span(50.0, 4) - 50.0 / 100000) < 1e-12
    model.convert(51000)
    assert abs(cell.read_force_n() - 25.0) < 1e-9


def test_calibration_refuses_saturated_readings():
    cell, model, _ = _cell()
    model.codes = [0x7FFFFF]
    try:
        cell.tare(1)
    except OSError:
        return
    raise AssertionError("tare accepted a saturated reading")


def test_read_code_allocates_nothing():
    cell, model, log = _cell()
    model.convert(-77)
    log.enabled = False
    model.on_read = lambda reg: None  # no side effects: the model would allocate

    def read():
        cell.read_code()

    assert runs_with_heap_locked(read)
    assert cell.read_code() == -77
