"""Unit conversions, each against a worked number."""

from __future__ import annotations

import pytest

from drivers import units


def test_mr_to_ugy_uses_8_76():
    # meters.md: 1 mR ~= 8.76 uGy air kerma; 100 mR -> 876 uGy.
    assert units.mr_to_ugy(100.0) == 876.0
    assert units.convert(1.0, "R", "mGy") == 8.76


def test_dap_conversions_to_gy_m2():
    assert units.r_cm2_to_gy_m2(1000.0) == pytest.approx(8.76e-4)  # 1000 R*cm2 * 8.76e-3 Gy/R * 1e-4 m2/cm2
    assert units.cgy_cm2_to_gy_m2(1234.0) == pytest.approx(1.234e-3)  # 1 Gy*m2 = 1e6 cGy*cm2
    assert units.gy_cm2_to_gy_m2(12.34) == pytest.approx(1.234e-3)  # 1 Gy*m2 = 1e4 Gy*cm2
    assert units.ugy_m2_to_gy_m2(1234.0) == pytest.approx(1.234e-3)  # 1 Gy*m2 = 1e6 uGy*m2
    assert units.convert(1.0, "Gy*m2", "dGy*cm2") == 1e5


def test_implied_decimals_ludlum_2363():
    assert units.implied_decimals("002305", 2) == 23.05
    assert units.implied_decimals("012456", 1) == 1245.6
    assert units.implied_decimals("-0015", 1) == -1.5
    with pytest.raises(ValueError):
        units.implied_decimals("12.34", 2)


def test_seconds_to_ms():
    assert units.s_to_ms(0.1) == 100.0
    assert units.convert(2, "min", "ms") == 120_000.0


def test_rates():
    assert units.convert(3600.0, "uGy/h", "uGy/s") == 1.0
    assert units.convert(642.1, "mR/h", "uGy/s") == pytest.approx(642.1 * 8.76 / 3600)
    assert units.convert(60.0, "cpm", "1/s") == 1.0
    assert units.convert(12.34, "Gy*cm2/s", "Gy*m2/s") == pytest.approx(1.234e-3)


def test_spellings_normalised():
    assert units.convert(1.0, "µGy·m²", "Gy*m2") == 1e-6
    assert units.convert(80.0, "kVp", "kV") == 80.0


def test_dimension_mismatch_and_unknown_unit():
    with pytest.raises(ValueError, match="cannot convert"):
        units.convert(1.0, "mGy", "ms")
    with pytest.raises(ValueError, match="unknown unit"):
        units.convert(1.0, "furlong", "m")


@pytest.mark.parametrize(("name", "unit"), [
    ("kvp", "kV"), ("kvp_avg", "kV"), ("air_kerma_ugy", "uGy"), ("exposure_time_ms", "ms"), ("dap_gy_m2", "Gy*m2"),
    ("dap_rate_gy_m2_s", "Gy*m2/s"), ("dose_rate_ugy_s", "uGy/s"), ("hvl_mm_al", "mmAl"), ("pulses", "1"),
    ("neutron_cpm", "1/min"), ("chamber_voltage_v", "V"), ("comment", None),
])
def test_canonical_unit_from_name(name, unit):
    assert units.canonical_unit(name) == unit


def test_to_canonical():
    assert units.to_canonical("air_kerma_ugy", 1.234, "mGy") == 1234.0
    with pytest.raises(ValueError):
        units.to_canonical("hvl_mm_al", 1.0, "mGy")
