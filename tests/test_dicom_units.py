"""Unit conversions and tolerant parsing (agent.dicom.units): each conversion against worked values."""

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat

from agent.dicom import units


@pytest.mark.parametrize("raw, expected", [
    ("12.5", Decimal("12.5")), (b" 12.5\x00", Decimal("12.5")), ("+1e3", Decimal("1000")), (".5", Decimal("0.5")),
    ("-0.93 ", Decimal("-0.93")), (0.1, Decimal("0.1")), (40, Decimal(40)), (DSfloat("0.000123"), Decimal("0.000123")),
])
def test_to_decimal_reads_dicom_numbers(raw, expected):
    assert units.to_decimal(raw) == expected


@pytest.mark.parametrize("raw", ["", "abc", "nan", "inf", "1e999", "12,5,0", "1.2.3", None, b"\xff\xfe"])
def test_to_decimal_rejects_non_numbers(raw):
    assert units.to_decimal(raw) is None


def test_to_decimals_splits_multi_values_and_drops_invalid_parts():
    assert units.to_decimals("80\\81\\x") == [Decimal(80), Decimal(81)]
    assert units.to_decimals(b"70\\72") == [Decimal(70), Decimal(72)]
    assert units.to_decimals(MultiValue(str, ["1.5", "2"])) == [Decimal("1.5"), Decimal(2)]


@pytest.mark.parametrize("spelling", ["Gy.m2", "Gy·m²", "Gym2", "Gy m^2", "GY.M2", "Gy*m2"])
def test_unit_key_normalises_spellings(spelling):
    assert units.unit_key(spelling) == "gym2"


def test_unit_key_micro_and_cm_by_cm():
    assert units.unit_key("µA.s") == units.unit_key("μAs") == units.unit_key("uA.s") == "uas"
    assert units.unit_key("dGy*cm*cm") == "dgycm2"


@pytest.mark.parametrize("value, unit, gy_m2", [
    ("0.000123", "Gy.m2", 0.000123), ("0.000123", "Gym2", 0.000123), ("12.3", "dGy.cm2", 0.000123),
    ("12.3", "dGy·cm²", 0.000123), ("123", "cGy.cm2", 0.000123), ("1230", "mGy.cm2", 0.000123),
    ("123", "uGy.m2", 0.000123), ("123", "µGy.m2", 0.000123), ("5", "dGy*cm*cm", 5e-5), ("1.23", "Gy.cm2", 0.000123),
])
def test_dap_variants_to_gy_m2_exactly(value, unit, gy_m2):
    assert units.dap_to_gy_m2(value, unit) == gy_m2


@pytest.mark.parametrize("value, unit", [("5", "furlong"), ("5", None), ("-1", "Gy.m2"), ("x", "Gy.m2")])
def test_dap_unknown_unit_or_bad_value_is_none(value, unit):
    assert units.dap_to_gy_m2(value, unit) is None


def test_image_dap_dgy_cm2_to_gy_m2_is_exact():
    assert units.dap_dgy_cm2_to_gy_m2("12.3") == 0.000123  # float 12.3 * 1e-5 would be 0.00012300000000000001
    assert units.dap_dgy_cm2_to_gy_m2("0.0923") == 9.23e-7


def test_uas_to_mas():
    assert units.uas_to_mas(12500) == 12.5
    assert units.uas_to_mas("1040") == 1.04


def test_us_to_ms_and_ua_to_ma():
    assert units.us_to_ms("6500.0") == 6.5
    assert units.ua_to_ma("160000") == 160.0


def test_mgy_to_gy_for_dose_rp():
    assert units.mgy_to_gy("2.1") == 0.0021


@pytest.mark.parametrize("value, unit, gy", [("2.1", "mGy", 0.0021), ("0.0021", "Gy", 0.0021), ("2100", "uGy", 0.0021),
                                             ("0.21", "cGy", 0.0021), ("0.021", "dGy", 0.0021)])
def test_dose_to_gy(value, unit, gy):
    assert units.dose_to_gy(value, unit) == gy


def test_dose_to_mgy_and_dgy_to_mgy():
    assert units.dose_to_mgy("0.0061", "Gy") == 6.1
    assert units.dose_to_mgy("6.1", "mGy") == 6.1
    assert units.dgy_to_mgy(3) == 300.0


@pytest.mark.parametrize("value, unit, ma", [("250", "mA", 250.0), ("12500", "uA", 12.5), ("0.25", "A", 250.0)])
def test_current_to_ma(value, unit, ma):
    assert units.current_to_ma(value, unit) == ma


@pytest.mark.parametrize("value, unit, ms", [("8", "s", 8000.0), ("40", "ms", 40.0), ("6500", "us", 6.5),
                                             ("1.5", "min", 90000.0)])
def test_time_to_ms(value, unit, ms):
    assert units.time_to_ms(value, unit) == ms


def test_time_to_s():
    assert units.time_to_s("480000", "ms") == 480.0
    assert units.time_to_s("8", "min") == 480.0


@pytest.mark.parametrize("value, unit, mas", [("10000", "uA.s", 10.0), ("10000", "uAs", 10.0), ("10", "mA.s", 10.0),
                                              ("10", "mAs", 10.0), ("10000", "µAs", 10.0)])
def test_charge_to_mas(value, unit, mas):
    assert units.charge_to_mas(value, unit) == mas


def test_voltage_and_distance():
    assert units.voltage_to_kv("75", "kV") == units.voltage_to_kv("75000", "V") == 75.0
    assert units.distance_to_mm("115", "cm") == units.distance_to_mm("1.15", "m") == 1150.0


@pytest.mark.parametrize("value, mm", [("1800", 1800.0), ("18", 1800.0), ("11.5", 1150.0), ("650", 650.0),
                                       ("0", None), ("-5", None)])
def test_sid_in_dm_quirk(value, mm):
    assert units.sid_to_mm(value) == mm


def test_magnitude_signed_and_count():
    assert units.magnitude("-1") is None
    assert units.signed("-0.5") == -0.5
    assert units.count("12.0") == 12
    assert units.count("12.5") is None
    assert units.count("-1") is None


@pytest.mark.parametrize("ei, ei_t, di", [(310, 250, 0.93), (250, 250, 0.0), (500, 250, 3.01), (125, 250, -3.01),
                                          (0, 250, None), (100, None, None), (None, 250, None)])
def test_deviation_index_iec_62494(ei, ei_t, di):
    assert units.deviation_index(ei, ei_t) == di


@pytest.mark.parametrize("age, years", [("045Y", 45), ("018M", 1), ("010W", 0), ("003D", 0), ("400D", 1),
                                        ("45y", 45), ("123Y", 123), ("45", None), ("", None), (None, None)])
def test_age_string_to_years(age, years):
    assert units.age_string_to_years(age) == years


def test_years_between_birthday_boundary():
    assert units.years_between(date(1958, 3, 17), date(2024, 3, 16)) == 65
    assert units.years_between(date(1958, 3, 17), date(2024, 3, 17)) == 66
    assert units.years_between(date(2024, 3, 17), date(1958, 3, 17)) is None


def test_parse_date_and_combine_date_time():
    assert units.parse_date("20240105") == date(2024, 1, 5)
    assert units.parse_date("2024.01.05") == date(2024, 1, 5)  # ACR-NEMA style
    assert units.parse_date("20241305") is None
    assert units.combine_date_time("20240105", "101530.25") == "20240105101530.25"
    assert units.combine_date_time("2024.01.05", "10:15:30") == "20240105101530"
    assert units.combine_date_time(None, "101530") is None


@pytest.mark.parametrize("text, minutes", [("+0100", 60), ("-0530", -330), ("+0000", 0)])
def test_parse_utc_offset(text, minutes):
    assert units.parse_utc_offset(text) == timezone(timedelta(minutes=minutes))


@pytest.mark.parametrize("text", ["0100", "+2500", "+0160", "", None])
def test_parse_utc_offset_rejects(text):
    assert units.parse_utc_offset(text) is None


def test_parse_datetime_uses_default_zone_with_dst():
    berlin = ZoneInfo("Europe/Berlin")
    assert units.parse_datetime("20240705101530", berlin).isoformat() == "2024-07-05T10:15:30+02:00"
    assert units.parse_datetime("20240105101530.25", berlin).isoformat() == "2024-01-05T10:15:30.250000+01:00"


def test_parse_datetime_own_offset_wins():
    parsed = units.parse_datetime("20240105101530+0200", ZoneInfo("Europe/Berlin"))
    assert parsed == datetime(2024, 1, 5, 8, 15, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["2024", "20240105", "2024010525", "20240105106000", "garbage", "", None])
def test_parse_datetime_rejects_incomplete_or_invalid(text):
    assert units.parse_datetime(text, timezone.utc) is None
