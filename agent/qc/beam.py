"""Beam analyses: kVp and exposure-time accuracy per indicated-technique station, DAP agreement (HVL: agent/qc/hvl.py).

The indicated (selected) technique is what 21 CFR 1020.31(a) judges the generator against: the session confirms the
DICOM-reported values as the indicated ones or has them corrected (agent/qc/sessions.py)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import NamedTuple

from agent.qc.criteria import fmt, judged, lacking, pending, result, station_key
from agent.qc.limits import QcLimits
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


KV_QUANTITY_NAMES = {"peak": "peak kV (kVp)", "average": "average kV", "practical_peak": "practical peak voltage (PPV)"}


def kvp_accuracy(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Per indicated-kV station: (mean measured kV - indicated kV) / indicated kV within +-0.05 by default (the
    manufacturer's stated accuracy, 21 CFR 1020.31(a)(4)). The kV quantity judged is named in the criterion."""
    return _accuracy(KVP, exposures, limits, limits.kvp_tolerance_fraction, 0.0, None)


def timer_accuracy(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Per indicated-time station: |mean measured ms - indicated ms| <= fraction x indicated + absolute ms (default
    10 % + 1 ms), so the 2-30 ms exposures of digital radiography are judged too; stations at or below
    timer_min_set_time_ms (default 0) are reported as not applicable."""
    return _accuracy(TIMER, exposures, limits, limits.timer_tolerance_fraction, limits.timer_tolerance_ms,
                     limits.timer_min_set_time_ms or None)


def _accuracy(spec: _Accuracy, exposures: Sequence[QcExposure], limits: QcLimits, tolerance: float,
              absolute: float, applies_above: float | None) -> TestResult:
    reason = lacking(exposures, spec.set_attr, f"set {spec.unit}")
    if reason or not exposures:
        return result(spec.test_type, exposures, limits, reason=reason)
    stations: dict[float, list[tuple[int, QcExposure]]] = {}
    for number, exp in enumerate(exposures, 1):
        stations.setdefault(station_key(getattr(exp, spec.set_attr)), []).append((number, exp))
    criteria = [_station(spec, s, stations[s], tolerance, absolute, applies_above, limits) for s in sorted(stations)]
    return result(spec.test_type, exposures, limits, criteria)


def _station(spec: _Accuracy, set_value: float, numbered: list[tuple[int, QcExposure]], tolerance: float,
             absolute: float, applies_above: float | None, limits: QcLimits) -> Criterion:
    crit = _station_check(spec, set_value, numbered, tolerance, absolute, applies_above, limits)
    if applies_above is not None and set_value <= applies_above:
        crit = crit.model_copy(update={
            "passed": None, "applies": False,
            "reason": f"the limit applies to set values above {fmt(applies_above)} {spec.unit}"})
    return crit


def _station_check(spec: _Accuracy, set_value: float, numbered: list[tuple[int, QcExposure]], tolerance: float,
                   absolute: float, applies_above: float | None, limits: QcLimits) -> Criterion:
    subject = f"{fmt(set_value)} {spec.unit}"
    group = [exp for _, exp in numbered]
    measured = [getattr(e, spec.measured_attr) for e in group]
    inputs: dict = {f"set_{spec.key_unit}": set_value, f"measured_{spec.key_unit}": measured, "n": len(measured)}
    if spec.test_type == "kvp_accuracy":
        quantity = KV_QUANTITY_NAMES[limits.kv_quantity]
        inputs["kv_quantity"] = quantity
        rule = (f"deviation = (mean measured {quantity} - indicated kV) / indicated kV; "
                f"|deviation| <= {fmt(tolerance)}")
        unit = "1"
    else:
        rule = (f"deviation = mean measured ms - indicated ms; |deviation| <= {fmt(tolerance)} x indicated + "
                f"{fmt(absolute)} ms")
        unit = "ms"
    if applies_above is not None:
        rule += f", for indicated values above {fmt(applies_above)} {spec.unit}"
    missing = lacking(group, spec.measured_attr, spec.what, [n for n, _ in numbered])
    if missing:
        return pending(spec.name, subject, inputs, "abs<=", unit, rule, missing)
    if set_value == 0:
        return pending(spec.name, subject, inputs, "abs<=", unit, rule, f"set {spec.unit} is zero")
    mean = statistics.fmean(measured)
    inputs[f"mean_measured_{spec.key_unit}"] = mean
    inputs[f"sd_measured_{spec.key_unit}"] = statistics.stdev(measured) if len(measured) > 1 else None
    inputs[f"deviation_{spec.key_unit}"] = mean - set_value
    if spec.test_type == "kvp_accuracy":
        return judged(spec.name, subject, inputs, (mean - set_value) / set_value, tolerance, "abs<=", unit, rule)
    limit = tolerance * set_value + absolute
    inputs["limit_ms"] = limit
    return judged(spec.name, subject, inputs, mean - set_value, limit, "abs<=", unit, rule)


def dap_agreement(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Per exposure: deviation = (DICOM DAP - reference DAP) / reference within +-0.35 by default (the displayed dose
    indication's accuracy, limits.CITATIONS), or the site's tighter dap_local_tolerance_fraction; the reference is
    the DAP meter's reading, else air kerma x field area at the plane of the kerma measurement."""
    return result("dap_agreement", exposures, limits, [_dap_one(i, e, limits) for i, e in enumerate(exposures, 1)])


def _dap_one(number: int, exp: QcExposure, limits: QcLimits) -> Criterion:
    subject, tol = f"exposure {number}", limits.dap_tolerance
    rule = f"deviation = (DICOM DAP - reference DAP) / reference DAP; |deviation| <= {fmt(tol)}"
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
