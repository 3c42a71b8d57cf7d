"""Mammography QC (21 CFR 900.12(e)(5); ACR Digital Mammography QC Manual): the accreditation phantom's average
glandular dose, kVp accuracy and reproducibility, HVL (kVp/100 minimum and the optional target/filter upper bound of
agent/qc/hvl.py), and output (air kerma) reproducibility. Limits and citations: agent/qc/limits.py."""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Sequence

from agent.qc.beam import kvp_accuracy
from agent.qc.criteria import fmt, judged, lacking, pending, result, unconfirmed
from agent.qc.hvl import hvl
from agent.qc.limits import MAMMO_UPPER_C_MM_AL, QcLimits
from agent.qc.models import Criterion, QcExposure, TestResult
from agent.qc.output import TECHNIQUE, _differs


def agd_from_entrance_kerma(kerma_mgy: float, hvl_mm_al: float,
                            table: Sequence[tuple[float, float]]) -> float | None:
    """AGD (mGy) = entrance air kerma (mGy, no backscatter) x conversion factor at the HVL, the factor linearly
    interpolated in `table` ([HVL mm Al, mGy/mGy] rows, increasing HVL); None outside the table (no
    extrapolation: the published tables end where their validity does)."""
    hvls = [row[0] for row in table]
    if not hvls[0] <= hvl_mm_al <= hvls[-1]:
        return None
    i = min(max(bisect.bisect_left(hvls, hvl_mm_al), 1), len(hvls) - 1)
    (h0, f0), (h1, f1) = table[i - 1], table[i]
    return kerma_mgy * (f0 + (f1 - f0) * (hvl_mm_al - h0) / (h1 - h0))


def mammo_phantom_dose(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Per phantom exposure: AGD <= limits.mammo_phantom_dose_limit_mgy (3.0 mGy, MQSA; 2.0 mGy for the ACR DM
    phantom). The AGD the modality reported (Organ Dose or the dose report) is judged; when the session measured the
    entrance air kerma and the HVL (from the meter, else the one the modality reported) and a conversion table is
    configured, the computed AGD is judged as well. Both are shown when both exist."""
    criteria: list[Criterion] = []
    limit = limits.mammo_phantom_dose_limit_mgy
    rule = f"AGD <= {fmt(limit)} mGy"
    for number, exp in enumerate(exposures, 1):
        subject = f"exposure {number}"
        if exp.dicom_agd_mgy is not None:
            criteria.append(judged("mammo_phantom_dose", f"{subject}: reported AGD",
                                   {"reported_agd_mgy": exp.dicom_agd_mgy}, exp.dicom_agd_mgy, limit, "<=", "mGy",
                                   rule + " (the modality's reported AGD)"))
        computed = _computed_agd(subject, exp, limits, rule)
        if computed is not None:
            criteria.append(computed)
        elif exp.dicom_agd_mgy is None:
            criteria.append(pending("mammo_phantom_dose", subject, {}, "<=", "mGy", rule,
                                    "no AGD reported by the modality, and no entrance air kerma with HVL to compute "
                                    "it from"))
    return result("mammo_phantom_dose", exposures, limits, criteria)


def _computed_agd(subject: str, exp: QcExposure, limits: QcLimits, rule: str) -> Criterion | None:
    if exp.air_kerma_ugy is None:
        return None
    hvl_mm_al = exp.hvl_mm_al if exp.hvl_mm_al is not None else exp.dicom_hvl_mm_al
    kerma_mgy = exp.air_kerma_ugy / 1000.0
    inputs: dict = {"entrance_air_kerma_mgy": kerma_mgy, "hvl_mm_al": hvl_mm_al,
                    "hvl_basis": None if hvl_mm_al is None else ("measured" if exp.hvl_mm_al is not None
                                                                 else "reported by the modality"),
                    "conversion_source": limits.mammo_agd_conversion_source or None}
    subject = f"{subject}: computed AGD"
    rule = rule + " (computed: entrance air kerma x conversion factor at the HVL)"
    limit = limits.mammo_phantom_dose_limit_mgy
    if limits.mammo_agd_conversion is None:
        return pending("mammo_phantom_dose", subject, inputs, "<=", "mGy", rule,
                       "no conversion table configured (qc.limits.mammo_agd_conversion)")
    if hvl_mm_al is None:
        return pending("mammo_phantom_dose", subject, inputs, "<=", "mGy", rule, "no HVL measured or reported")
    agd = agd_from_entrance_kerma(kerma_mgy, hvl_mm_al, limits.mammo_agd_conversion)
    if agd is None:
        return pending("mammo_phantom_dose", subject, inputs, "<=", "mGy", rule,
                       f"HVL {fmt(hvl_mm_al)} mm Al is outside the conversion table")
    inputs["conversion_factor"] = agd / kerma_mgy if kerma_mgy else None
    return judged("mammo_phantom_dose", subject, inputs, agd, limit, "<=", "mGy", rule)


def mammo_kvp(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Per indicated-kV station: accuracy within +-limits.mammo_kvp_tolerance_fraction (5 %) of indicated, and
    reproducibility: the coefficient of variation of the measured kV <= limits.mammo_kvp_max_cv (0.02) over at
    least limits.mammo_min_exposures exposures (21 CFR 900.12(e)(5)(ii))."""
    accuracy = kvp_accuracy(exposures, limits.model_copy(update={
        "kvp_tolerance_fraction": limits.mammo_kvp_tolerance_fraction}))
    criteria = [c.model_copy(update={"name": "mammo_kvp_accuracy"}) for c in accuracy.criteria
                if c.name != "reading_validity"]
    stations: dict[float, list[tuple[int, QcExposure]]] = {}
    for number, exp in enumerate(exposures, 1):
        if exp.set_kvp is not None:
            stations.setdefault(exp.set_kvp, []).append((number, exp))
    for kv in sorted(stations):
        criteria.append(_cv_criterion("mammo_kvp_reproducibility", f"{fmt(kv)} kV", stations[kv], "kvp", "kv",
                                      limits.mammo_kvp_max_cv, limits.mammo_min_exposures))
    return result("mammo_kvp", exposures, limits, criteria, reason=accuracy.reason if not criteria else None)


def _cv_criterion(name: str, subject: str, numbered: list[tuple[int, QcExposure]], attr: str, key: str,
                  limit: float, needed: int) -> Criterion:
    group = [e for _, e in numbered]
    values = [getattr(e, attr) for e in group]
    rule = f"C = s / mean <= {fmt(limit)}, n >= {needed}"
    inputs: dict = {f"values_{key}": values, "n": len(values)}
    missing = lacking(group, attr, attr.replace("_", " "), [n for n, _ in numbered])
    if missing:
        return pending(name, subject, inputs, "<=", "1", rule, missing)
    if len(values) < 2:
        return pending(name, subject, inputs, "<=", "1", rule, f"needs {needed} exposures, {len(values)} so far")
    mean = statistics.fmean(values)
    if mean == 0:
        return pending(name, subject, inputs, "<=", "1", rule, "mean is zero")
    sd = statistics.stdev(values)
    inputs.update({f"mean_{key}": mean, f"sd_{key}": sd})
    if len(values) < needed:
        return pending(name, subject, inputs, "<=", "1", rule, f"needs {needed} exposures, {len(values)} so far",
                       value=sd / mean, limit=limit)
    return judged(name, subject, inputs, sd / mean, limit, "<=", "1", rule)


def mammo_hvl(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """HVL >= kVp/100 mm Al, and < kVp/100 + C by target/filter: the HVL analysis with the mammography rule, whatever
    the room's radiographic hvl_rule. The target/filter is limits.mammography_target_filter, else the one the
    session's images all report (DICOM anode target and filter material) when the upper-bound table has it."""
    update: dict = {"hvl_rule": "mammography"}
    reported = {e.target_filter for e in exposures if e.target_filter}
    if limits.mammography_target_filter is None and len(reported) == 1 and reported <= set(MAMMO_UPPER_C_MM_AL):
        update["mammography_target_filter"] = reported.pop()
    return hvl(exposures, limits.model_copy(update=update)).model_copy(update={"test_type": "mammo_hvl"})


def mammo_output_reproducibility(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Air kerma at one technique: C = s / mean <= limits.mammo_output_max_cv (0.05), n >= mammo_min_exposures."""
    reason = unconfirmed(exposures) or next(filter(None, (_differs(exposures, a, u) for a, u in TECHNIQUE)), None)
    if reason or not exposures:
        return result("mammo_output_reproducibility", exposures, limits, reason=reason)
    crit = _cv_criterion("mammo_output_reproducibility", "all exposures", list(enumerate(exposures, 1)),
                         "air_kerma_ugy", "ugy", limits.mammo_output_max_cv, limits.mammo_min_exposures)
    return result("mammo_output_reproducibility", exposures, limits, [crit])
