"""Patient age and weight bands of dose rules. Pure.

Paediatric reference levels are set per age band in months (and days for the first month) or per weight band: ICRP
Publication 135 (2017), section 2.6 and Table 2.2, recommends weight bands for body examinations of children (<5, 5-<15,
15-<30, 30-<50, 50-<80 kg) and age bands for the head (0-<3 months, 3 months-<1 year, 1-<6 years, 6-<16 years); the
European Commission's Radiation Protection 185 (2018) uses the same bands. A band is [min, max): the lower bound is
inclusive, the upper exclusive.

An age bound is written "14d", "3m" or "6y" (an integer means years, as in files written for earlier versions); a
day bound is at most 28 days, since every patient aged one completed month or more is at least 28 days old. A year is
twelve months.

A band is decided on the values the object carries; when it cannot be (no age, no weight, or an age given in months
against a day bound), the answer is None: "unknown", never "adult".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AGE_BOUND = re.compile(r"^(\d{1,3})([dmy])$")
MAX_DAY_BOUND = 28


@dataclass(frozen=True)
class AgeBound:
    """One bound of an age band: `count` days ("d") or months ("m")."""

    unit: str
    count: int

    @classmethod
    def parse(cls, value: int | str) -> AgeBound:
        """From 6 (years), "6y", "3m" or "14d"; ValueError naming the accepted forms."""
        if isinstance(value, bool):
            raise ValueError("give an age like 6 (years), \"6y\", \"3m\" or \"14d\"")
        if isinstance(value, int):
            text = f"{value}y"
        else:
            text = str(value).strip().lower().replace(" ", "")
        match = AGE_BOUND.match(text)
        if not match or int(match[1]) > 200:
            raise ValueError(f"age bound {value!r}: give an age like 6 (years), \"6y\", \"3m\" or \"14d\"")
        count, unit = int(match[1]), match[2]
        if unit == "d" and count > MAX_DAY_BOUND:
            raise ValueError(f"age bound {value!r}: days only under one month (at most {MAX_DAY_BOUND}d); use months")
        return cls("d", count) if unit == "d" else cls("m", count * 12 if unit == "y" else count)

    def label(self) -> str:
        if self.unit == "d":
            return f"{self.count}d"
        return f"{self.count // 12}y" if self.count % 12 == 0 and self.count else f"{self.count}m"

    def in_days(self) -> float:
        """For ordering bounds only."""
        return self.count if self.unit == "d" else self.count * 30.4375


@dataclass(frozen=True)
class PatientAge:
    """A patient's age at the examination: completed months, and days when known (exact dates, or an age string in
    days or weeks). Either may be None."""

    months: int | None
    days: int | None = None

    def at_least(self, bound: AgeBound) -> bool | None:
        """Is the patient at least `bound` old? None when the age cannot answer it."""
        if bound.unit == "m":
            return None if self.months is None else self.months >= bound.count
        if self.days is not None:
            return self.days >= bound.count
        if self.months is not None and self.months >= 1:
            return True  # one completed month is at least 28 days, and day bounds are at most 28
        return None


def age_in_band(age: PatientAge | None, low: AgeBound | None, high: AgeBound | None) -> bool | None:
    """[low, high): True, False, or None when the age is unknown or cannot decide it."""
    if low is None and high is None:
        return True
    if age is None:
        return None
    above_low = True if low is None else age.at_least(low)
    below_high = True if high is None else (None if (reached := age.at_least(high)) is None else not reached)
    if above_low is False or below_high is False:
        return False
    if above_low is None or below_high is None:
        return None
    return True


def weight_in_band(weight_kg: float | None, low: float | None, high: float | None) -> bool | None:
    """[low, high) in kg: True, False, or None when the weight is unknown."""
    if low is None and high is None:
        return True
    if weight_kg is None:
        return None
    return (low is None or weight_kg >= low) and (high is None or weight_kg < high)


def band_label(age_min: AgeBound | None, age_max: AgeBound | None, weight_min: float | None,
               weight_max: float | None) -> str:
    """A readable band name: "3m-<1y", "5-<15kg", "any" (no band)."""
    parts = []
    if age_min is not None or age_max is not None:
        parts.append(f"{age_min.label() if age_min else '0d'}-<{age_max.label() if age_max else '∞'}")
    if weight_min is not None or weight_max is not None:
        parts.append(f"{weight_min if weight_min is not None else 0:g}-<"
                     f"{f'{weight_max:g}' if weight_max is not None else '∞'}kg")
    return " ".join(parts) or "any"
