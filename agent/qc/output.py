"""Tube output analyses: reproducibility (21 CFR 1020.31(b)) and mA/mAs linearity (21 CFR 1020.31(c))."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Literal

from agent.qc.criteria import fmt, judged, lacking, pending, result, station_key, unconfirmed
from agent.qc.limits import QcLimits
from agent.qc.models import Criterion, QcExposure, TestResult

TECHNIQUE = (("set_kvp", "kV"), ("set_ma", "mA"), ("set_mas", "mAs"), ("set_time_ms", "ms"))


def _differs(exposures: Sequence[QcExposure], attr: str, unit: str) -> str | None:
    """'set mAs differs between exposures (10, 20 mAs)' when the known values of `attr` are not all equal."""
    values = sorted({station_key(v) for e in exposures if (v := getattr(e, attr)) is not None})
    if len(values) < 2:
        return None
    return f"set {unit} differs between exposures ({', '.join(fmt(v) for v in values)} {unit})"


def _span_too_long(exposures: Sequence[QcExposure], limits: QcLimits) -> str | None:
    times = [e.measured_at for e in exposures]
    if limits.reproducibility_max_span_s is None or not times or any(t is None for t in times):
        return None
    span = (max(times) - min(times)).total_seconds()
    if span <= limits.reproducibility_max_span_s:
        return None
    return f"exposures span {fmt(span)} s, more than the {fmt(limits.reproducibility_max_span_s)} s allowed"


def reproducibility(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Air kerma reproducibility at one technique: C = s / mean (sample s, n - 1) <= 0.05 by default
    (21 CFR 1020.31(b)), or (Kmax - Kmin) / mean with reproducibility_method = 'range' (state shortcuts)."""
    reason = lacking(exposures, "air_kerma_ugy", "air kerma reading") or unconfirmed(exposures)
    # 1020.31(b)(1) is "for any specific combination of selected technique factors": mixed techniques are no test.
    reason = reason or next(filter(None, (_differs(exposures, a, u) for a, u in TECHNIQUE)), None)
    reason = reason or _span_too_long(exposures, limits)
    if reason or not exposures:
        return result("reproducibility", exposures, limits, reason=reason)
    return result("reproducibility", exposures, limits, [_variation(exposures, limits)])


def _variation(exposures: Sequence[QcExposure], limits: QcLimits) -> Criterion:
    kerma = [e.air_kerma_ugy for e in exposures]
    n, needed = len(kerma), limits.reproducibility_min_exposures
    mean = statistics.fmean(kerma)
    inputs: dict = {"air_kerma_ugy": kerma, "n": n, "mean_ugy": mean}
    if limits.reproducibility_method == "cv":
        name, limit, rule = "coefficient_of_variation", limits.reproducibility_max_cv, "C = s / mean"
    else:
        name, limit, rule = "range_fraction", limits.reproducibility_max_range_fraction, "(Kmax - Kmin) / mean"
    rule = f"{rule} <= {fmt(limit)}, n >= {needed}"
    if n < 2:
        return pending(name, "all exposures", inputs, "<=", "1", rule, f"needs {needed} exposures, {n} so far")
    if mean == 0:
        return pending(name, "all exposures", inputs, "<=", "1", rule, "mean air kerma is zero: no output measured")
    if limits.reproducibility_method == "cv":
        spread = inputs["sd_ugy"] = statistics.stdev(kerma)  # sample standard deviation, divisor n - 1
    else:
        spread = inputs["range_ugy"] = max(kerma) - min(kerma)
    value = spread / mean
    if n < needed:
        return pending(name, "all exposures", inputs, "<=", "1", rule, f"needs {needed} exposures, {n} so far",
                       value=value, limit=limit)
    return judged(name, "all exposures", inputs, value, limit, "<=", "1", rule)


def linearity_ma(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Linearity over adjacent set-mA stations (21 CFR 1020.31(c)(1))."""
    return _linearity(exposures, limits, "ma")


def linearity_mas(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Linearity over adjacent set-mAs stations (21 CFR 1020.31(c)(2), (3))."""
    return _linearity(exposures, limits, "mas")


def _linearity(exposures: Sequence[QcExposure], limits: QcLimits, by: Literal["ma", "mas"]) -> TestResult:
    test_type = "linearity_ma" if by == "ma" else "linearity_mas"
    reason = (lacking(exposures, "air_kerma_ugy", "air kerma reading")
              or (lacking(exposures, "set_ma", "set mA") if by == "ma" else None)
              or lacking(exposures, "mas", "set mAs (nor set mA and time)")
              # 1020.31(c): "for any fixed x-ray tube potential".
              or _differs(exposures, "set_kvp", "kV"))
    if reason or not exposures:
        return result(test_type, exposures, limits, reason=reason)
    unit = "mA" if by == "ma" else "mAs"
    stations: dict[float, list[QcExposure]] = {}
    for exp in exposures:
        stations.setdefault(station_key(exp.set_ma if by == "ma" else exp.mas), []).append(exp)
    order = sorted(stations)  # adjacent means adjacent in setting, whatever order they were taken in
    if len(order) < 2:
        return result(test_type, exposures, limits,
                      reason=f"needs exposures at two adjacent {unit} stations; only {fmt(order[0])} {unit} so far")
    criteria = [_pair(s1, stations[s1], s2, stations[s2], unit, limits) for s1, s2 in zip(order, order[1:])]
    return result(test_type, exposures, limits, criteria)


def _output_per_mas(group: list[QcExposure]) -> float | None:
    """Average mGy/mAs of one station (mean of the per-exposure ratios); None if a set mAs is zero."""
    if any(e.mas == 0 for e in group):
        return None
    return statistics.fmean(e.air_kerma_ugy / 1000.0 / e.mas for e in group)


def _not_a_pair(s1: float, s2: float, group: list[QcExposure], unit: str, limits: QcLimits) -> str | None:
    """Why two stations are no 1020.31(c) pair: more than a factor of 2 apart (continuous selection), or their
    exposures spread over more than the time window."""
    ratio_max = limits.linearity_max_station_ratio
    if ratio_max is not None and s1 > 0 and s2 / s1 > ratio_max + 1e-9:
        return (f"{fmt(s1)} and {fmt(s2)} {unit} are {fmt(s2 / s1)}x apart, more than {fmt(ratio_max)}x: take a "
                f"station in between")
    times = [e.measured_at for e in group]
    if limits.linearity_max_span_s is not None and times and all(t is not None for t in times):
        span = (max(times) - min(times)).total_seconds()
        if span > limits.linearity_max_span_s:
            return f"the two stations' exposures span {fmt(span)} s, more than {fmt(limits.linearity_max_span_s)} s"
    return None


def _pair(s1: float, g1: list[QcExposure], s2: float, g2: list[QcExposure], unit: str, limits: QcLimits) -> Criterion:
    """|X1 - X2| <= k (X1 + X2), evaluated as L = |X1 - X2| / (X1 + X2) <= k."""
    k, key = limits.linearity_max_coefficient, unit.lower()
    subject = f"{fmt(s1)} {unit} vs {fmt(s2)} {unit}"
    rule = f"|X1 - X2| <= {fmt(k)} (X1 + X2), X = mean mGy/mAs per station; as L = |X1 - X2| / (X1 + X2) <= {fmt(k)}"
    inputs: dict = {f"station_1_{key}": s1, f"station_2_{key}": s2,
                    "air_kerma_1_ugy": [e.air_kerma_ugy for e in g1], "air_kerma_2_ugy": [e.air_kerma_ugy for e in g2],
                    "set_mas_1": [e.mas for e in g1], "set_mas_2": [e.mas for e in g2],
                    # 1020.31(c)(1), (3): with continuous selection the two settings differ by no more than 2x.
                    "station_ratio": s2 / s1 if s1 else None}
    x1, x2 = _output_per_mas(g1), _output_per_mas(g2)
    if x1 is None or x2 is None:
        zero = s1 if x1 is None else s2
        return pending("linearity", subject, inputs, "<=", "1", rule,
                       f"set mAs is zero at the {fmt(zero)} {unit} station: mGy/mAs is undefined")
    inputs.update(x1_mgy_per_mas=x1, x2_mgy_per_mas=x2, difference_mgy_per_mas=abs(x1 - x2),
                  limit_mgy_per_mas=k * (x1 + x2), n_1=len(g1), n_2=len(g2))
    not_a_pair = _not_a_pair(s1, s2, g1 + g2, unit, limits)
    if not_a_pair:
        return pending("linearity", subject, inputs, "<=", "1", rule, not_a_pair)
    if x1 + x2 == 0:
        return pending("linearity", subject, inputs, "<=", "1", rule,
                       "no air kerma at either station: is the meter in the beam?")
    value = abs(x1 - x2) / (x1 + x2)
    short = [fmt(s) for s, g in ((s1, g1), (s2, g2)) if len(g) < limits.linearity_min_exposures_per_station]
    if short:
        return pending("linearity", subject, inputs, "<=", "1", rule, value=value, limit=k,
                       reason=f"needs {limits.linearity_min_exposures_per_station} exposures per station "
                              f"({', '.join(short)} {unit} has fewer)")
    return judged("linearity", subject, inputs, value, k, "<=", "1", rule)
