# Galvanostat set-point: finest range for the set-point, glitch-free range switching,
# a safe off state.
from boards.unix_synthetic import CellPlant
from fieldrig.galvanostat import RANGE_OFF, Galvanostat


def _g():
    cell = CellPlant()
    return cell, Galvanostat(cell, cell)


def test_starts_off():
    cell, g = _g()
    assert cell.range_index == RANGE_OFF and cell.fraction == 0.0 and g.range_index == RANGE_OFF


def test_picks_the_finest_range_that_holds_the_setpoint():
    cell, g = _g()
    for i_ma, rng, frac in ((0.005, 0, 0.5), (-0.01, 0, -1.0), (0.011, 1, 0.011),
                            (0.5, 1, 0.5), (1.0, 1, 1.0), (25.0, 2, 0.25), (-100.0, 2, -1.0)):
        g.set_current_ma(i_ma)
        assert g.range_index == rng and cell.range_index == rng, i_ma
        assert abs(cell.fraction - frac) < 1e-12, (i_ma, cell.fraction)
        assert abs(cell.current_ma() - i_ma) < 1e-12


def test_range_change_zeroes_the_dac_before_switching():
    cell, g = _g()
    g.set_current_ma(0.5)
    cell.log = []
    g.set_current_ma(50.0)
    assert cell.log == [("dac", 0.0), ("range", 2), ("dac", 0.5)]
    cell.log = []
    g.set_current_ma(40.0)  # same range: no switching
    assert cell.log == [("dac", 0.4)]


def test_off_is_dac_zero_then_safe_range():
    cell, g = _g()
    g.set_current_ma(-3.0)
    cell.log = []
    g.off()
    assert cell.log == [("dac", 0.0), ("range", RANGE_OFF)]
    assert g.range_index == RANGE_OFF and g.setpoint_ma == 0.0 and cell.current_ma() == 0.0
    g.set_current_ma(2.0)
    g.set_current_ma(0)
    assert g.range_index == RANGE_OFF


def test_out_of_range_raises_and_changes_nothing():
    cell, g = _g()
    g.set_current_ma(0.2)
    for bad in (100.5, -150.0):
        try:
            g.set_current_ma(bad)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted %s mA" % bad)
        assert g.setpoint_ma == 0.2 and cell.range_index == 1 and cell.fraction == 0.2


def test_ranges_must_ascend():
    cell = CellPlant()
    try:
        Galvanostat(cell, cell, (1.0, 0.1))
    except ValueError:
        return
    raise AssertionError("descending ranges accepted")
