"""Unit conversions to the canonical units named in quantity names (`air_kerma_ugy`, `dap_gy_m2`, ...).

Every unit maps to (dimension, factor to the dimension's base unit); a conversion is value * f_from / f_to.
Rates are written "X/Y" (e.g. "uGy/h", "Gy*m2/s") and convert as X over Y.

Exposure to air kerma: 1 R = 2.58e-4 C/kg, and air kerma per unit exposure is about 8.76 mGy/R
(W/e = 33.97 J/C for dry air), so 1 mR ~= 8.76 uGy (meters.md, "Unit facts"). It is an approximation that ignores
bremsstrahlung losses, fine for diagnostic beams.
"""

from __future__ import annotations

AIR_KERMA_GY_PER_R = 8.76e-3  # meters.md "Unit facts": 1 mR ~= 8.76 uGy air kerma

# unit -> (dimension, factor to base). Base units: Gy (kerma), Sv, Gy*m2 (DAP), s, V, m, m of Al (HVL), count.
UNITS: dict[str, tuple[str, float]] = {
    "Gy": ("kerma", 1.0), "mGy": ("kerma", 1e-3), "uGy": ("kerma", 1e-6), "nGy": ("kerma", 1e-9),
    "R": ("kerma", AIR_KERMA_GY_PER_R), "mR": ("kerma", AIR_KERMA_GY_PER_R * 1e-3),
    "uR": ("kerma", AIR_KERMA_GY_PER_R * 1e-6),
    "Sv": ("dose_equivalent", 1.0), "mSv": ("dose_equivalent", 1e-3), "uSv": ("dose_equivalent", 1e-6),
    "nSv": ("dose_equivalent", 1e-9), "rem": ("dose_equivalent", 1e-2), "mrem": ("dose_equivalent", 1e-5),
    # DAP: 1 Gy*m2 = 1e4 Gy*cm2 = 1e5 dGy*cm2 = 1e6 cGy*cm2 (meters.md); R*cm2 via the air-kerma factor.
    "Gy*m2": ("dap", 1.0), "mGy*m2": ("dap", 1e-3), "uGy*m2": ("dap", 1e-6),
    "Gy*cm2": ("dap", 1e-4), "dGy*cm2": ("dap", 1e-5), "cGy*cm2": ("dap", 1e-6), "mGy*cm2": ("dap", 1e-7),
    "uGy*cm2": ("dap", 1e-10), "R*cm2": ("dap", AIR_KERMA_GY_PER_R * 1e-4),
    "s": ("time", 1.0), "ms": ("time", 1e-3), "us": ("time", 1e-6), "min": ("time", 60.0), "h": ("time", 3600.0),
    "V": ("voltage", 1.0), "kV": ("voltage", 1e3),
    "m": ("length", 1.0), "cm": ("length", 1e-2), "mm": ("length", 1e-3),
    "mmAl": ("length_al", 1e-3), "cmAl": ("length_al", 1e-2),
    "hPa": ("pressure", 100.0), "kPa": ("pressure", 1000.0), "Pa": ("pressure", 1.0),
    "1": ("count", 1.0), "count": ("count", 1.0),
}
ALIASES = {"cpm": "1/min", "cps": "1/s", "kVp": "kV", "sec": "s"}

# Canonical unit of each quantity: exact names first, then by the name's suffix (longest suffix wins).
QUANTITY_UNITS = {"kvp": "kV", "kvp_avg": "kV", "kvp_max": "kV", "pulses": "1", "filter_position": "1"}
SUFFIX_UNITS = {
    "_gy_m2_s": "Gy*m2/s", "_gy_m2": "Gy*m2", "_ugy_s": "uGy/s", "_ugy_h": "uGy/h", "_ugy": "uGy",
    "_usv_h": "uSv/h", "_usv": "uSv", "_ms": "ms", "_s": "s", "_mm_al": "mmAl", "_kv": "kV", "_v": "V",
    "_cpm": "1/min", "_cps": "1/s", "_counts": "1", "_hpa": "hPa",
}


def normalize_unit(unit: str) -> str:
    """Spell a unit the way UNITS does: 'µGy·m²' -> 'uGy*m2', 'cGy cm2' -> 'cGy*cm2', 'cpm' -> '1/min'."""
    text = unit.strip().replace("µ", "u").replace("μ", "u").replace("·", "*").replace("²", "2")
    text = "*".join(text.split())
    return ALIASES.get(text, text)


def dimension_and_factor(unit: str) -> tuple[str, float]:
    """(dimension, factor to base) of a unit, rates included; raises ValueError for an unknown unit."""
    text = normalize_unit(unit)
    if "/" in text:
        num, _, den = text.partition("/")
        (d1, f1), (d2, f2) = dimension_and_factor(num), dimension_and_factor(den)
        return f"{d1}/{d2}", f1 / f2
    if text not in UNITS:
        raise ValueError(f"unknown unit {unit!r}")
    return UNITS[text]


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert value between two units of the same dimension; raises ValueError otherwise."""
    d_from, f_from = dimension_and_factor(from_unit)
    d_to, f_to = dimension_and_factor(to_unit)
    if d_from != d_to:
        raise ValueError(f"cannot convert {from_unit!r} ({d_from}) to {to_unit!r} ({d_to})")
    # 12 significant digits: more than any meter resolves, and 100 mR gives 876.0 uGy, not 876.0000000000001.
    return float(f"{value * f_from / f_to:.12g}")


def canonical_unit(quantity: str) -> str | None:
    """The unit a quantity name implies (`air_kerma_ugy` -> 'uGy'), or None if the name carries no unit."""
    if quantity in QUANTITY_UNITS:
        return QUANTITY_UNITS[quantity]
    suffixes = sorted((s for s in SUFFIX_UNITS if quantity.endswith(s)), key=len, reverse=True)
    return SUFFIX_UNITS[suffixes[0]] if suffixes else None


def to_canonical(quantity: str, value: float, unit: str) -> float:
    """Convert value (in `unit`) to the canonical unit of `quantity`; raises ValueError if impossible."""
    target = canonical_unit(quantity)
    if target is None:
        raise ValueError(f"quantity {quantity!r} has no unit suffix; cannot convert from {unit!r}")
    return convert(value, unit, target)


def implied_decimals(digits: str, places: int) -> float:
    """Apply implied decimals to an integer field: ('002305', 2) -> 23.05 (Ludlum 2363 `RR` reply)."""
    text = digits.strip()
    if not text.lstrip("+-").isdigit():
        raise ValueError(f"not an integer field: {digits!r}")
    return int(text) / 10**places


def mr_to_ugy(mr: float) -> float:
    """Exposure in mR to air kerma in uGy (x 8.76)."""
    return convert(mr, "mR", "uGy")


def r_cm2_to_gy_m2(value: float) -> float:
    """DAP in R*cm2 to Gy*m2 (x 8.76e-3 Gy/R x 1e-4 m2/cm2)."""
    return convert(value, "R*cm2", "Gy*m2")


def cgy_cm2_to_gy_m2(value: float) -> float:
    """DAP in cGy*cm2 to Gy*m2 (/ 1e6)."""
    return convert(value, "cGy*cm2", "Gy*m2")


def gy_cm2_to_gy_m2(value: float) -> float:
    """DAP in Gy*cm2 to Gy*m2 (/ 1e4)."""
    return convert(value, "Gy*cm2", "Gy*m2")


def ugy_m2_to_gy_m2(value: float) -> float:
    """DAP in uGy*m2 to Gy*m2 (/ 1e6)."""
    return convert(value, "uGy*m2", "Gy*m2")


def s_to_ms(seconds: float) -> float:
    """Seconds to milliseconds."""
    return convert(seconds, "s", "ms")
