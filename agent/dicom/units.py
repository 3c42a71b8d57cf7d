"""Unit conversions and tolerant parsing of DICOM numbers, ages and date-times. Pure functions, no pydicom.

Every converter returns the value in the canonical unit named by the payload field (kV, mA, ms, mAs, Gy·m², Gy, mGy,
mm), or None when the input is missing, unparsable, non-finite, negative (a magnitude cannot be) or in an unknown unit:
a value is never guessed. Arithmetic is done in Decimal on the value as written, so "12.3" dGy·cm² becomes exactly
0.000123 Gy·m² (float arithmetic would give 0.00012300000000000001).
"""

from __future__ import annotations

import math
from functools import lru_cache
from collections.abc import Iterable
import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal

# DS/IS grammar, tolerating a decimal point in IS ("12.5" in Exposure) and surrounding padding.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# A decimal comma ("70,5", "0,0923"): real vendor output from devices localised for comma locales. DICOM has no
# thousands separator (PS3.5 6.2: DS is [+-]digits[.digits][E[+-]digits]), so one comma is the decimal mark.
_COMMA_NUMBER = re.compile(r"[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?")
# Text that may be quoted in a warning's `raw`: a number, possibly with a short unit or typo suffix ("9.5x", "12 kV").
# Anything else (letters inside, long strings) could carry an identifier, so it is never quoted.
_NUMBER_LIKE = re.compile(r"[+-]?[\d.,]*\d[\d.,]*([eE][+-]?\d+)?\s?[A-Za-z%]{0,3}")
RAW_MAX_CHARS = 16
_MAX_ABS_EXPONENT = 100  # no dose quantity is beyond 1e±100; also keeps Decimal arithmetic far from overflow
SID_DM_MAX = Decimal(30)  # an SID <= 30 cannot be mm (no X-ray geometry is 3 cm); vendors that send dm send 10..18

_DAP_GY_M2 = {"gym2": "1", "dgym2": "0.1", "cgym2": "0.01", "mgym2": "1e-3", "ugym2": "1e-6",
              "gycm2": "1e-4", "dgycm2": "1e-5", "cgycm2": "1e-6", "mgycm2": "1e-7", "ugycm2": "1e-10"}
_DOSE_GY = {"gy": "1", "dgy": "0.1", "cgy": "0.01", "mgy": "1e-3", "ugy": "1e-6"}
_DOSE_MGY = {"gy": "1e3", "dgy": "100", "cgy": "10", "mgy": "1", "ugy": "1e-3"}
_CURRENT_MA = {"a": "1e3", "ma": "1", "ua": "1e-3"}
_TIME_MS = {"min": "6e4", "s": "1e3", "ms": "1", "us": "1e-3"}
_TIME_S = {"min": "60", "s": "1", "ms": "1e-3", "us": "1e-6"}
_CHARGE_MAS = {"as": "1e3", "mas": "1", "uas": "1e-3"}  # "mA.s", "mAs", "uA.s", "uAs", "µAs"
_VOLTAGE_KV = {"kv": "1", "kvp": "1", "v": "1e-3"}
_DISTANCE_MM = {"m": "1e3", "dm": "100", "cm": "10", "mm": "1"}
_FORCE_N = {"n": "1", "dan": "10", "kn": "1e3"}  # compression force; UCUM "N", some send "daN"

_AGE = re.compile(r"(\d{1,3})([DWMY])")
_DAYS_PER_UNIT = {"D": 1, "W": 7}
_DT = re.compile(r"(\d{8})(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?")
_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})")


def to_decimal(value: object) -> Decimal | None:
    """One DICOM number (str, bytes, int, float, pydicom DS/IS) as a finite Decimal, or None if it is not one."""
    text = bytes(value).decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
    text = text.strip(" \x00\t\r\n")
    if not _NUMBER.fullmatch(text):
        if not _COMMA_NUMBER.fullmatch(text):
            return None
        text = text.replace(",", ".")
    number = Decimal(text)
    return number if number.is_zero() or abs(number.adjusted()) <= _MAX_ABS_EXPONENT else None


def to_decimals(value: object) -> list[Decimal]:
    """All valid numbers of a possibly multi-valued DICOM value ("80\\81", a list, a scalar); invalid parts dropped."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1")
    if isinstance(value, str):
        parts = value.split("\\")
    else:
        parts = list(value) if isinstance(value, Iterable) else [value]  # list, tuple, pydicom MultiValue
    numbers = (to_decimal(part) for part in parts)
    return [number for number in numbers if number is not None]


def number_like(text: str | None) -> str | None:
    """`text` when it is number-like and short enough to quote in a warning without any risk of carrying patient
    data ("9.5x", "12 kV"); else None."""
    text = (text or "").strip(" \x00")
    return text if len(text) <= RAW_MAX_CHARS and _NUMBER_LIKE.fullmatch(text) else None


@lru_cache(maxsize=512)
def unit_key(unit: str | None) -> str:
    """Normalise a unit spelling: "Gy.m2", "Gy·m²", "Gym2", "Gy m^2" -> "gym2"; "µA.s", "uAs" -> "uas"."""
    text = (unit or "").replace("µ", "u").replace("μ", "u").replace("²", "2").lower()
    text = "".join(char for char in text if char.isascii() and char.isalnum())
    return text.replace("cmcm", "cm2")  # "dGy*cm*cm"


def _scaled(value: object, factor: str, *, signed: bool = False) -> float | None:
    number = value if isinstance(value, Decimal) else to_decimal(value)
    if number is None or not number.is_finite() or (number < 0 and not signed):
        return None
    return float(number * Decimal(factor))


def _per_unit(value: object, unit: str | None, factors: dict[str, str]) -> float | None:
    factor = factors.get(unit_key(unit))
    return None if factor is None else _scaled(value, factor)


def magnitude(value: object) -> float | None:
    """A non-negative quantity already in its canonical unit (kV, mA, ms, mAs, mGy, EI)."""
    return _scaled(value, "1")


def signed(value: object) -> float | None:
    """A quantity that may be negative (the deviation index)."""
    return _scaled(value, "1", signed=True)


def count(value: object) -> int | None:
    """A non-negative whole count (pulses, frames); "12.0" is accepted, "12.5" is not."""
    number = value if isinstance(value, Decimal) else to_decimal(value)
    if number is None or number < 0 or number != number.to_integral_value():
        return None
    return int(number)


def dap_to_gy_m2(value: object, unit: str | None) -> float | None:
    """Dose-area product in any spelling vendors use (Gy·m², "Gym2", dGy·cm², cGy·cm², mGy·cm², µGy·m²), in Gy·m²."""
    return _per_unit(value, unit, _DAP_GY_M2)


def dap_dgy_cm2_to_gy_m2(value: object) -> float | None:
    """Image header DAP (0018,115E) is in dGy·cm²; 1 dGy·cm² = 1e-5 Gy·m²."""
    return _scaled(value, "1e-5")


def dose_to_gy(value: object, unit: str | None) -> float | None:
    """Air kerma / dose in Gy, mGy, cGy, dGy or µGy, to Gy (Dose (RP) is Gy by the standard; some send mGy)."""
    return _per_unit(value, unit, _DOSE_GY)


def mgy_to_gy(value: object) -> float | None:
    """Dose at the reference point from mGy to Gy."""
    return _scaled(value, "1e-3")


def dose_to_mgy(value: object, unit: str | None) -> float | None:
    """Dose in any dose unit, to mGy (entrance exposure at RP)."""
    return _per_unit(value, unit, _DOSE_MGY)


def dgy_to_mgy(value: object) -> float | None:
    """Entrance Dose (0040,0302) is in dGy; 1 dGy = 100 mGy."""
    return _scaled(value, "100")


def current_to_ma(value: object, unit: str | None) -> float | None:
    """Tube current in A, mA or µA, to mA."""
    return _per_unit(value, unit, _CURRENT_MA)


def ua_to_ma(value: object) -> float | None:
    """Tube current from µA (XRayTubeCurrentInuA) to mA."""
    return _scaled(value, "1e-3")


def time_to_ms(value: object, unit: str | None) -> float | None:
    """A duration in min, s, ms or µs, to ms."""
    return _per_unit(value, unit, _TIME_MS)


def us_to_ms(value: object) -> float | None:
    """Exposure time from µs (ExposureTimeInuS) to ms."""
    return _scaled(value, "1e-3")


def time_to_s(value: object, unit: str | None) -> float | None:
    """A duration in min, s, ms or µs, to s (total fluoro time)."""
    return _per_unit(value, unit, _TIME_S)


def charge_to_mas(value: object, unit: str | None) -> float | None:
    """Tube current-time product in A·s, mA·s or µA·s ("uA.s", "uAs"), to mAs."""
    return _per_unit(value, unit, _CHARGE_MAS)


def uas_to_mas(value: object) -> float | None:
    """Exposure from µAs (ExposureInuAs) to mAs."""
    return _scaled(value, "1e-3")


def voltage_to_kv(value: object, unit: str | None) -> float | None:
    """Tube voltage in kV (UCUM "kV") or V, to kV."""
    return _per_unit(value, unit, _VOLTAGE_KV)


def distance_to_mm(value: object, unit: str | None) -> float | None:
    """A distance in m, dm, cm or mm, to mm."""
    return _per_unit(value, unit, _DISTANCE_MM)


def force_to_n(value: object, unit: str | None) -> float | None:
    """A force in N, daN or kN, to N (mammography compression force)."""
    return _per_unit(value, unit, _FORCE_N)


def sid_to_mm(value: object) -> float | None:
    """Source-image distance (0018,1110), defined in mm; values <= SID_DM_MAX are dm (a vendor quirk), so x100."""
    number = value if isinstance(value, Decimal) else to_decimal(value)
    if number is None or number <= 0:
        return None
    return _scaled(number, "100") if number <= SID_DM_MAX else _scaled(number, "1")


def deviation_index(exposure_index: float | None, target_exposure_index: float | None) -> float | None:
    """DI = 10·log10(EI / EI_T) (IEC 62494-1), rounded to 0.01; None unless both are positive."""
    if not exposure_index or not target_exposure_index or exposure_index < 0 or target_exposure_index < 0:
        return None
    return round(10 * (math.log10(exposure_index) - math.log10(target_exposure_index)), 2)  # no ratio overflow


def age_string_to_years(age: str | None) -> int | None:
    """Patient Age (AS) "045Y", "018M", "010W", "003D" in whole years (floor); None if malformed."""
    match = _AGE.fullmatch((age or "").strip().upper())
    if not match:
        return None
    number, unit = int(match[1]), match[2]
    if unit == "Y":
        return number
    if unit == "M":
        return number // 12
    return number * _DAYS_PER_UNIT[unit] // 365


def years_between(birth: date, on: date) -> int | None:
    """Whole years from `birth` to `on` (an age at a study date); None if `on` is before `birth`."""
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return years if years >= 0 else None


def parse_date(text: str | None) -> date | None:
    """A DICOM DA "YYYYMMDD" (also the old "YYYY.MM.DD"), or None."""
    digits = (text or "").strip().replace(".", "").replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


DT_HOUR_DIGITS = 10  # YYYYMMDDHH: the least a DT needs to place an exposure in time (parse_datetime's minimum)


def has_time(dt_text: str | None) -> bool:
    """True when a DT string holds at least the hour (a date-only DT "20240105" does not)."""
    return bool(dt_text) and len(re.match(r"\d*", dt_text.strip())[0]) >= DT_HOUR_DIGITS


def most_precise_dt(*candidates: str | None) -> str | None:
    """The first candidate DT that holds a time of day, else the first present one.

    Why: a DT attribute holding a date only ("20240105" in AcquisitionDateTime, valid per PS3.5 6.2 since DT may be
    truncated) must not hide the full time the same object holds in a date + time attribute pair."""
    present = [text for text in candidates if text]
    return next((text for text in present if has_time(text)), present[0] if present else None)


def combine_date_time(date_text: str | None, time_text: str | None) -> str | None:
    """A DA and a TM (also the old "HH:MM:SS") as one DT string, or None if either is missing."""
    day = parse_date(date_text)
    clock = (time_text or "").strip().replace(":", "")
    return f"{day:%Y%m%d}{clock}" if day and clock else None


def parse_utc_offset(text: str | None) -> tzinfo | None:
    """Timezone Offset From UTC (0008,0201) "+0100" / "-0500" as a fixed tzinfo, or None."""
    match = _OFFSET.fullmatch((text or "").strip())
    if not match or int(match[3]) >= 60 or int(match[2]) > 14:
        return None
    minutes = int(match[2]) * 60 + int(match[3])
    return timezone(timedelta(minutes=-minutes if match[1] == "-" else minutes))


def parse_datetime(text: str | None, default_tz: tzinfo) -> datetime | None:
    """A DICOM DT (to the hour at least) as an aware datetime; its own "&ZZXX" offset wins over `default_tz`."""
    match = _DT.fullmatch((text or "").strip())
    if not match:
        return None
    day, hour, minute, second, fraction, offset = match.groups()
    zone = parse_utc_offset(offset) if offset else default_tz
    if zone is None:
        return None
    try:
        stamp = datetime(int(day[:4]), int(day[4:6]), int(day[6:]), int(hour), int(minute or 0), int(second or 0),
                         int((fraction or "0").ljust(6, "0")))
    except ValueError:
        return None
    return stamp.replace(tzinfo=zone)
