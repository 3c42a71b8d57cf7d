"""Automatic exposure control (AEC) QC: reproducibility over repeated exposures of one phantom, and thickness
tracking across phantom thicknesses. The quantity is the detector-side air kerma (a meter behind the phantom) or
the exposure index EI (IEC 62494-1) of the session's images, taken from their DICOM (limits.aec_quantity). Both
limits are local choices (no federal AEC limit): limits.CITATIONS["aec_*"]."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from agent.qc.criteria import fmt, judged, lacking, pending, result, station_key
from agent.qc.limits import QcLimits
from agent.qc.models import Criterion, QcExposure, TestResult
from agent.qc.output import _differs

QUANTITIES = {"air_kerma": ("air_kerma_ugy", "ugy", "µGy", "detector air kerma"),
              "exposure_index": ("dicom_exposure_index", "ei", "1", "exposure index")}


def aec_quantity(exposures: Sequence[QcExposure], limits: QcLimits) -> str:
    """The quantity judged: as configured, or (auto) air kerma when every exposure has it, else the EI."""
    if limits.aec_quantity != "auto":
        return limits.aec_quantity
    if exposures and all(e.air_kerma_ugy is not None for e in exposures):
        return "air_kerma"
    if exposures and all(e.dicom_exposure_index is not None for e in exposures):
        return "exposure_index"
    return "air_kerma" if any(e.air_kerma_ugy is not None for e in exposures) else "exposure_index"


def aec_reproducibility(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """C = s / mean of the detector air kerma (or EI) <= limits.aec_max_cv over >= limits.aec_min_exposures
    exposures of one phantom at one kV."""
    quantity = aec_quantity(exposures, limits)
    attr, key, unit, what = QUANTITIES[quantity]
    reason = (lacking(exposures, attr, what) or _differs(exposures, "set_kvp", "kV")
              or _differs(exposures, "phantom_thickness_mm", "mm phantom"))
    if reason or not exposures:
        return result("aec_reproducibility", exposures, limits, reason=reason)
    values = [getattr(e, attr) for e in exposures]
    need, limit = limits.aec_min_exposures, limits.aec_max_cv
    rule = f"C = s / mean of the {what} <= {fmt(limit)}, n >= {need}"
    inputs: dict = {"quantity": what, f"values_{key}": values, "n": len(values)}
    if len(values) < 2:
        crit = pending("aec_reproducibility", "all exposures", inputs, "<=", "1", rule,
                       f"needs {need} exposures, {len(values)} so far")
        return result("aec_reproducibility", exposures, limits, [crit])
    mean = statistics.fmean(values)
    if mean == 0:
        crit = pending("aec_reproducibility", "all exposures", inputs, "<=", "1", rule, f"mean {what} is zero")
        return result("aec_reproducibility", exposures, limits, [crit])
    sd = statistics.stdev(values)
    inputs.update({f"mean_{key}": mean, f"sd_{key}": sd})
    if len(values) < need:
        crit = pending("aec_reproducibility", "all exposures", inputs, "<=", "1", rule,
                       f"needs {need} exposures, {len(values)} so far", value=sd / mean, limit=limit)
    else:
        crit = judged("aec_reproducibility", "all exposures", inputs, sd / mean, limit, "<=", "1", rule)
    return result("aec_reproducibility", exposures, limits, [crit])


def aec_thickness_tracking(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Per phantom thickness (technique `phantom_thickness_mm`): (mean at the thickness - mean over all
    thicknesses) / mean over all within +-limits.aec_tracking_tolerance_fraction; at least two thicknesses."""
    quantity = aec_quantity(exposures, limits)
    attr, key, unit, what = QUANTITIES[quantity]
    reason = lacking(exposures, attr, what) or lacking(exposures, "phantom_thickness_mm", "phantom thickness")
    if reason or not exposures:
        return result("aec_thickness_tracking", exposures, limits, reason=reason)
    by_thickness: dict[float, list[float]] = {}
    for exp in exposures:
        by_thickness.setdefault(station_key(exp.phantom_thickness_mm), []).append(getattr(exp, attr))
    if len(by_thickness) < 2:
        return result("aec_thickness_tracking", exposures, limits,
                      reason=f"needs exposures at two or more phantom thicknesses; only "
                             f"{fmt(next(iter(by_thickness)))} mm so far")
    means = {t: statistics.fmean(v) for t, v in by_thickness.items()}
    overall = statistics.fmean(means.values())
    tol = limits.aec_tracking_tolerance_fraction
    rule = f"(mean {what} at the thickness - mean over thicknesses) / mean over thicknesses within +-{fmt(tol)}"
    criteria: list[Criterion] = []
    for t in sorted(means):
        inputs: dict = {"quantity": what, "phantom_thickness_mm": t, f"values_{key}": by_thickness[t],
                        f"mean_{key}": means[t], f"mean_over_thicknesses_{key}": overall}
        if overall == 0:
            criteria.append(pending("aec_thickness_tracking", f"{fmt(t)} mm", inputs, "abs<=", "1", rule,
                                    f"mean {what} is zero"))
            continue
        criteria.append(judged("aec_thickness_tracking", f"{fmt(t)} mm", inputs, (means[t] - overall) / overall,
                               tol, "abs<=", "1", rule))
    return result("aec_thickness_tracking", exposures, limits, criteria)
