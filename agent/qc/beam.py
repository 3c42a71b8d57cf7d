"""Beam analyses: kVp and exposure-time accuracy per station, half-value layer minimum, DAP agreement."""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Sequence
from typing import NamedTuple

from agent.qc.criteria import fmt, judged, lacking, pending, result, station_key
from agent.qc.limits import HvlRow, QcLimits
from agent.qc.models import Criterion, QcExposure, TestResult, TestType


class _Accuracy(NamedTuple):
    test_type: TestType
    name: str
    set_attr: str
    measured_attr: str
    unit: str        # as shown: kV, ms
    key_unit: str    # as in input keys: kv, ms
    what: str        # reading's name in reasons


KVP = _Accuracy("kvp_accuracy", "kvp_accuracy", "set_kvp", "kvp", "kV", "kv", "measured kVp")
TIMER = _Accuracy("timer_accuracy", "timer_accuracy", "set_time_ms", "exposure_time_ms", "ms", "ms",
                  "measured exposure time")


def kvp_accuracy(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Per set-kV station: |mean measured kV - set kV| / set kV <= 0.05 by default (manufacturer's limit,
    21 CFR 1020.31(a)(4); the reference's common default)."""
    return _accuracy(KVP, exposures, limits, limits.kvp_tolerance_fraction, None)


def timer_accuracy(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Per set-time station: |mean measured ms - set ms| / set ms <= 0.10 by default, for set times above 50 ms
    (the reference's common default); shorter stations are reported as not applicable."""
    return _accuracy(TIMER, exposures, limits, limits.timer_tolerance_fraction, limits.timer_min_set_time_ms)


def _accuracy(spec: _Accuracy, exposures: Sequence[QcExposure], limits: QcLimits, tolerance: float,
              applies_above: float | None) -> TestResult:
    reason = lacking(exposures, spec.set_attr, f"set {spec.unit}")
    if reason or not exposures:
        return result(spec.test_type, exposures, limits, reason=reason)
    stations: dict[float, list[tuple[int, QcExposure]]] = {}
    for number, exp in enumerate(exposures, 1):
        stations.setdefault(station_key(getattr(exp, spec.set_attr)), []).append((number, exp))
    criteria = [_station(spec, s, stations[s], tolerance, applies_above) for s in sorted(stations)]
    return result(spec.test_type, exposures, limits, criteria)


def _station(spec: _Accuracy, set_value: float, numbered: list[tuple[int, QcExposure]], tolerance: float,
             applies_above: float | None) -> Criterion:
    crit = _station_check(spec, set_value, numbered, tolerance, applies_above)
    if applies_above is not None and set_value <= applies_above:
        crit = crit.model_copy(update={
            "passed": None, "applies": False,
            "reason": f"the limit applies to set values above {fmt(applies_above)} {spec.unit}"})
    return crit


def _station_check(spec: _Accuracy, set_value: float, numbered: list[tuple[int, QcExposure]], tolerance: float,
                   applies_above: float | None) -> Criterion:
    subject = f"{fmt(set_value)} {spec.unit}"
    rule = f"|mean measured - set| / set <= {fmt(tolerance)}"
    if applies_above is not None:
        rule += f", for set values above {fmt(applies_above)} {spec.unit}"
    group = [exp for _, exp in numbered]
    measured = [getattr(e, spec.measured_attr) for e in group]
    inputs: dict = {f"set_{spec.key_unit}": set_value, f"measured_{spec.key_unit}": measured}
    missing = lacking(group, spec.measured_attr, spec.what, [n for n, _ in numbered])
    if missing:
        return pending(spec.name, subject, inputs, "abs<=", "1", rule, missing)
    if set_value == 0:
        return pending(spec.name, subject, inputs, "abs<=", "1", rule, f"set {spec.unit} is zero")
    mean = statistics.fmean(measured)
    inputs[f"mean_measured_{spec.key_unit}"] = mean
    inputs[f"deviation_{spec.key_unit}"] = mean - set_value
    return judged(spec.name, subject, inputs, (mean - set_value) / set_value, tolerance, "abs<=", "1", rule)


class HvlMinimum(NamedTuple):
    """Minimum HVL at a kV and the table rows it was interpolated between (equal rows when exactly on one)."""

    mm_al: float
    below: HvlRow
    above: HvlRow


def hvl_minimum(table: Sequence[HvlRow], kv: float) -> HvlMinimum | None:
    """Minimum HVL (mm Al) for a measured kV by linear interpolation between the table's rows (21 CFR 1020.30(m)(1)
    Table 1); None outside the table's kV range. Rows must be in increasing kV order (QcLimits checks this)."""
    kvs = [row[0] for row in table]
    if not kvs[0] <= kv <= kvs[-1]:
        return None
    i = bisect.bisect_left(kvs, kv)
    if kvs[i] == kv:
        return HvlMinimum(table[i][1], table[i], table[i])
    (kv0, mm0), (kv1, mm1) = table[i - 1], table[i]
    return HvlMinimum(mm0 + (mm1 - mm0) * (kv - kv0) / (kv1 - kv0), table[i - 1], table[i])


def hvl(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Per exposure: measured HVL >= the table's minimum at the measured kV (21 CFR 1020.30(m)(1))."""
    return result("hvl", exposures, limits, [_hvl_one(i, e, limits) for i, e in enumerate(exposures, 1)])


def _hvl_one(number: int, exp: QcExposure, limits: QcLimits) -> Criterion:
    subject, table = f"exposure {number}", limits.hvl_min_table_mm_al
    rule = "measured HVL >= minimum HVL at the measured kV (table, linear interpolation between rows)"
    inputs: dict = {"measured_kv": exp.kvp, "hvl_mm_al": exp.hvl_mm_al}
    if exp.hvl_mm_al is None or exp.kvp is None:
        what = "HVL reading" if exp.hvl_mm_al is None else "measured kVp"
        return pending("hvl_minimum", subject, inputs, ">=", "mm Al", rule, f"no {what}")
    minimum = hvl_minimum(table, exp.kvp)
    if minimum is None:
        return pending("hvl_minimum", subject, inputs, ">=", "mm Al", rule,
                       f"measured {fmt(exp.kvp)} kV is outside the HVL table ({fmt(table[0][0])}-"
                       f"{fmt(table[-1][0])} kV)")
    inputs.update(row_below_kv=minimum.below[0], row_below_mm_al=minimum.below[1],
                  row_above_kv=minimum.above[0], row_above_mm_al=minimum.above[1])
    return judged("hvl_minimum", subject, inputs, exp.hvl_mm_al, minimum.mm_al, ">=", "mm Al", rule)


def dap_agreement(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Per exposure: |DICOM DAP - reference DAP| / reference <= 0.25 by default (IEC 60580 field meters ±25 %);
    the reference is the DAP meter's reading, else air kerma x field area at the plane of the kerma measurement."""
    return result("dap_agreement", exposures, limits, [_dap_one(i, e, limits) for i, e in enumerate(exposures, 1)])


def _dap_one(number: int, exp: QcExposure, limits: QcLimits) -> Criterion:
    subject, tol = f"exposure {number}", limits.dap_tolerance_fraction
    rule = f"|DICOM DAP - reference DAP| / reference DAP <= {fmt(tol)}"
    inputs: dict = {"dicom_dap_gy_m2": exp.dicom_dap_gy_m2}
    if exp.dap_gy_m2 is not None:
        inputs.update(reference="DAP meter", reference_dap_gy_m2=exp.dap_gy_m2)
    elif exp.air_kerma_ugy is not None and exp.field_area_cm2 is not None:
        # µGy -> Gy is 1e-6, cm² -> m² is 1e-4.
        inputs.update(reference="air kerma x field area", air_kerma_ugy=exp.air_kerma_ugy,
                      field_area_cm2=exp.field_area_cm2,
                      reference_dap_gy_m2=exp.air_kerma_ugy * 1e-6 * exp.field_area_cm2 * 1e-4)
    else:
        return pending("dap_agreement", subject, inputs, "abs<=", "1", rule,
                       "no DAP meter reading, nor air kerma and field area")
    if exp.dicom_dap_gy_m2 is None:
        return pending("dap_agreement", subject, inputs, "abs<=", "1", rule, "the modality reported no DAP (DICOM)")
    ref = inputs["reference_dap_gy_m2"]
    if ref == 0:
        return pending("dap_agreement", subject, inputs, "abs<=", "1", rule, "reference DAP is zero")
    return judged("dap_agreement", subject, inputs, (exp.dicom_dap_gy_m2 - ref) / ref, tol, "abs<=", "1", rule)
