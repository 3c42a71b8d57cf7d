"""Half-value layer: the minimum by 21 CFR 1020.30(m)(1) Table 1 (or the mammography rule), and the HVL itself, read
from a meter or computed from air kerma behind added aluminium.

Table minimum: linear interpolation between rows and linear extrapolation beyond them, as the table's footnote allows
("Linear extrapolation or interpolation may be made for an x-ray tube potential not listed", with the worked
examples 20 kVp -> 0.2 and 95 kVp -> 2.6 mm Al in the pre-2006 "other" column). Extrapolation beyond the table's ends
continues the end rows' segment; between rows it is plain interpolation, also across the 50/51 and 70/71 kV steps.
Mammography: HVL >= kVp/100 mm Al (21 CFR 900.12(e)(5)(iii); unverified here), optionally HVL < kVp/100 + C.

HVL from attenuation: exposures at one kV with added aluminium (technique `filtration_mm_al`, 0 for the open beam);
HVL = t1 + (t2 - t1) ln(2 K1 / K0) / ln(K1 / K2), log-linear between the two thicknesses whose air kerma brackets half
the open-beam value (AAPM Report 25 method). Without a bracket the criterion is incomplete (no extrapolation of
the attenuation curve). Air kerma falls with every added millimetre of aluminium: a series where it rises (a thickness
entered wrong, a reading of another beam) gives no HVL either, naming the two thicknesses.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence
from typing import NamedTuple

from agent.qc.criteria import fmt, judged, pending, result, station_key
from agent.qc.limits import MAMMO_UPPER_C_MM_AL, HvlRow, QcLimits
from agent.qc.models import Criterion, QcExposure, TestResult


class HvlMinimum(NamedTuple):
    """Minimum HVL at a kV and the table rows it was interpolated (or extrapolated) from (equal rows when on one)."""

    mm_al: float
    below: HvlRow
    above: HvlRow


def hvl_minimum(table: Sequence[HvlRow], kv: float) -> HvlMinimum:
    """Minimum HVL (mm Al) for a kV from the table's rows (increasing kV; QcLimits checks): the row itself, linear
    interpolation between rows, or linear extrapolation from the two end rows, never below 0."""
    kvs = [row[0] for row in table]
    i = bisect.bisect_left(kvs, kv)
    if i < len(kvs) and kvs[i] == kv:
        return HvlMinimum(table[i][1], table[i], table[i])
    i = min(max(i, 1), len(kvs) - 1)  # outside: the end segment
    (kv0, mm0), (kv1, mm1) = table[i - 1], table[i]
    return HvlMinimum(max(0.0, mm0 + (mm1 - mm0) * (kv - kv0) / (kv1 - kv0)), table[i - 1], table[i])


class Attenuation(NamedTuple):
    """HVL computed from an attenuation series at one kV."""

    hvl_mm_al: float
    k0_ugy: float
    thickness_1_mm_al: float
    kerma_1_ugy: float
    thickness_2_mm_al: float
    kerma_2_ugy: float


def hvl_from_attenuation(series: dict[float, float]) -> Attenuation | str:
    """Added Al (mm) -> mean air kerma (µGy), 0 mm included -> the HVL, or why it cannot be computed."""
    if 0.0 not in series:
        return "no open-beam exposure (filtration_mm_al = 0)"
    k0 = series[0.0]
    if k0 <= 0:
        return "no air kerma in the open beam"
    half = k0 / 2
    points = sorted(series.items())
    for (t1, k1), (t2, k2) in zip(points, points[1:]):
        if k2 > k1:
            return (f"air kerma rises from {fmt(t1)} mm to {fmt(t2)} mm Al ({fmt(k1)} to {fmt(k2)} µGy): added "
                    "aluminium cannot raise it; check the aluminium entered for these exposures and repeat them")
    for (t1, k1), (t2, k2) in zip(points, points[1:]):
        if k1 >= half >= k2 and k1 > k2 > 0:
            return Attenuation(t1 + (t2 - t1) * math.log(2 * k1 / k0) / math.log(k1 / k2), k0, t1, k1, t2, k2)
    largest, kerma = points[-1]
    return (f"no aluminium thickness halves the open-beam air kerma yet ({fmt(largest)} mm Al transmits "
            f"{fmt(100 * kerma / k0)} %): add thicker aluminium")


def hvl(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """HVL against the minimum for this X-ray unit (limits.hvl_rule / hvl_min_table_mm_al): per exposure when the
    meter reports HVL, else per kV station from the attenuation series."""
    if any(e.hvl_mm_al is not None for e in exposures):
        criteria = [c for i, e in enumerate(exposures, 1) for c in _judge_hvl(f"exposure {i}", e.hvl_mm_al,
                                                                               *_kv_of([e]), limits, {})]
        return result("hvl", exposures, limits, criteria)
    stations: dict[float | None, list[QcExposure]] = {}
    for exp in exposures:
        stations.setdefault(None if exp.set_kvp is None else station_key(exp.set_kvp), []).append(exp)
    criteria = []
    for kv in sorted(stations, key=lambda k: (k is None, k or 0)):
        criteria += _attenuation_station(kv, stations[kv], limits)
    return result("hvl", exposures, limits, criteria)


def _kv_of(group: Sequence[QcExposure]) -> tuple[float | None, str]:
    """The kV for the minimum: measured when the session measured it (the table is by measured potential), else the
    indicated kV, named as such."""
    measured = [e.kvp for e in group if e.kvp is not None]
    if measured:
        return statistics.fmean(measured), "measured"
    indicated = [e.set_kvp for e in group if e.set_kvp is not None]
    return (statistics.fmean(indicated), "indicated (no kV meter reading)") if indicated else (None, "")


def _attenuation_station(kv: float | None, group: list[QcExposure], limits: QcLimits) -> list[Criterion]:
    subject = "unknown kV" if kv is None else f"{fmt(kv)} kV"
    by_thickness: dict[float, list[float]] = {}
    for exp in group:
        if exp.air_kerma_ugy is not None and exp.filtration_mm_al is not None:
            by_thickness.setdefault(station_key(exp.filtration_mm_al), []).append(exp.air_kerma_ugy)
    series = {t: statistics.fmean(k) for t, k in by_thickness.items()}
    inputs: dict = {"added_al_mm": sorted(series), "mean_air_kerma_ugy": [series[t] for t in sorted(series)]}
    rule = "HVL from log-linear interpolation of air kerma vs added Al"
    if not series:
        return [pending("hvl_minimum", subject, inputs, ">=", "mm Al", rule,
                        "no exposure with both air kerma and the added aluminium (filtration, mm Al) entered")]
    found = hvl_from_attenuation(series)
    if isinstance(found, str):
        return [pending("hvl_minimum", subject, inputs, ">=", "mm Al", rule, found)]
    inputs.update(k0_ugy=found.k0_ugy, thickness_1_mm_al=found.thickness_1_mm_al, kerma_1_ugy=found.kerma_1_ugy,
                  thickness_2_mm_al=found.thickness_2_mm_al, kerma_2_ugy=found.kerma_2_ugy)
    return _judge_hvl(subject, found.hvl_mm_al, *_kv_of(group), limits, inputs)


def _judge_hvl(subject: str, hvl_mm_al: float | None, kv: float | None, basis: str, limits: QcLimits,
               inputs: dict) -> list[Criterion]:
    inputs = {**inputs, "hvl_mm_al": hvl_mm_al, "kv": kv, "kv_basis": basis or None}
    if limits.hvl_rule == "mammography":
        rule = "HVL >= kVp / 100 mm Al (mammography)"
    else:
        rule = "HVL >= minimum at the kV (1020.30(m)(1) table; linear interpolation/extrapolation)"
    if hvl_mm_al is None or not kv:  # a kV of 0 extrapolates the table to a 0 mm minimum: no kV at all
        what = "HVL reading" if hvl_mm_al is None else "kV (measured or indicated)"
        return [pending("hvl_minimum", subject, inputs, ">=", "mm Al", rule, f"no {what}")]
    if limits.hvl_rule == "mammography":
        out = [judged("hvl_minimum", subject, inputs, hvl_mm_al, kv / 100, ">=", "mm Al", rule)]
        if limits.mammography_target_filter:
            c = MAMMO_UPPER_C_MM_AL[limits.mammography_target_filter]
            upper_rule = f"HVL < kVp / 100 + {fmt(c)} mm Al ({limits.mammography_target_filter})"
            crit = judged("hvl_maximum", subject, {**inputs, "c_mm_al": c}, hvl_mm_al, kv / 100 + c, "<=",
                          "mm Al", upper_rule)
            out.append(crit)
        return out
    minimum = hvl_minimum(limits.hvl_min_table_mm_al, kv)
    table = limits.hvl_min_table_mm_al
    inputs.update(row_below_kv=minimum.below[0], row_below_mm_al=minimum.below[1],
                  row_above_kv=minimum.above[0], row_above_mm_al=minimum.above[1],
                  extrapolated="yes" if not table[0][0] <= kv <= table[-1][0] else "no")
    return [judged("hvl_minimum", subject, inputs, hvl_mm_al, minimum.mm_al, ">=", "mm Al", rule)]
