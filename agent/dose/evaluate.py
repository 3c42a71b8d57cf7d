"""Pure rule evaluation: which exam rule (notification level, reference level) covers an exposure and in which
patient band, whether a value is above its level, the deviation-index band, the cumulative steps a study or patient
total has crossed, and the alerts these findings become. No I/O, no clock.

"Above" is strict everywhere: a value exactly at a level raises nothing (notification, cumulative), and DI limits are
strict too (DI = +3.00 is "over", not "excessive"; DI = -1.00 is "normal"). A missing value raises nothing: no DAP, no
DAP alert; no DI and no EI_T, band "unknown". An exposure whose exam has banded rules but whose age or weight cannot
place it in a band is in band "unknown": no rule applies to it, least of all an adult one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from agent.dose.bands import AgeBound, PatientAge, age_in_band, weight_in_band
from agent.dose.rules import (CumulativeThreshold, DeviationIndexBands, DoseRules, ExamCriteria, NotificationLevel,
                              PatientThreshold, TextPattern, compile_pattern)
from agent.payloads.dose import DoseAlert
from agent.payloads.exposure import DoseSummary, ExposureEvent

UNITS = {"dap_gy_m2": "Gy·m²", "entrance_dose_mgy": "mGy", "deviation_index": "1", "study_dap_gy_m2": "Gy·m²",
         "study_dose_rp_gy": "Gy", "study_fluoro_time_s": "s", "patient_dap_gy_m2": "Gy·m²",
         "patient_dose_rp_gy": "Gy", "patient_fluoro_time_s": "s"}
UNKNOWN_BAND = "unknown"
STEP_EPSILON = 1e-9  # relative: a total a rounding error past a step is at the step, not above it
ALERT_DI_LIMIT = {"excessive": "excessive_above", "over": "over_above", "under": "under_below",
                  "excessively-under": "excessively_under_below"}


@dataclass(frozen=True)
class Finding:
    """A value past a level, before it becomes a DoseAlert."""

    alert: str  # notification-level | deviation-index | cumulative | patient-cumulative
    rule: str
    description: str
    quantity: str
    value: float
    level: float
    ratio: float
    band: str | None = None
    plane: str | None = None  # cumulative per plane: "A" / "B"
    step: float | None = None  # a threshold with repeated steps: their size (the level is part of the identity)
    first: float | None = None  # and its first level


# ---- exam matching ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompiledRule:
    rule: ExamCriteria
    protocol: tuple[TextPattern, ...]
    body_part: tuple[TextPattern, ...]
    view: tuple[TextPattern, ...]
    modality: tuple[TextPattern, ...]
    banded: bool = False


@dataclass(frozen=True)
class MatchKey:
    """What exam matching looks at; hashable, so the matcher can remember answers for repeated protocols. Age and
    weight come from the object (agent.dicom.patient) whether or not they are published."""

    protocol: str | None
    body_part: str | None
    view: str | None
    modality: str | None
    irradiation_type: str | None
    age: PatientAge | None = None
    weight_kg: float | None = None

    @classmethod
    def of(cls, event: ExposureEvent, age: PatientAge | None = None, weight_kg: float | None = None) -> MatchKey:
        """The event's exam; without private facts, the published age (whole years) and weight stand in."""
        if age is None and event.patient_age_years is not None:
            age = PatientAge(months=event.patient_age_years * 12)
        if weight_kg is None:
            weight_kg = vars(event).get("patient_weight_kg")  # published weight, where the payload has the field
        return cls(event.protocol, event.body_part, event.view, event.modality, event.irradiation_type, age,
                   weight_kg)


def _texts_match(patterns: tuple[TextPattern, ...], value: str | None) -> bool:
    """No patterns: anything matches. Patterns: a missing value never matches."""
    if not patterns:
        return True
    if value is None:
        return False
    value = value.strip()
    return any(p.match(value) for p in patterns)


def in_age_band(age: int | None, age_min: int | None, age_max: int | None) -> bool:
    """Whole years [age_min, age_max) (the form of earlier rule files); an unknown age is never in a band."""
    low = None if age_min is None else AgeBound.parse(age_min)
    high = None if age_max is None else AgeBound.parse(age_max)
    return bool(age_in_band(None if age is None else PatientAge(months=age * 12), low, high))


def exam_matches(compiled: CompiledRule, key: MatchKey) -> bool:
    """The rule's exam criteria (texts, modality, irradiation type), bands aside."""
    rule = compiled.rule
    if rule.irradiation_type and key.irradiation_type not in rule.irradiation_type:
        return False
    return (_texts_match(compiled.protocol, key.protocol) and _texts_match(compiled.body_part, key.body_part)
            and _texts_match(compiled.view, key.view) and _texts_match(compiled.modality, key.modality))


def band_matches(rule: ExamCriteria, key: MatchKey) -> bool | None:
    """In the rule's age and weight band: True, False, or None when the object's values cannot decide."""
    age = age_in_band(key.age, *rule.age_band)
    weight = weight_in_band(key.weight_kg, rule.weight_min_kg, rule.weight_max_kg)
    if age is False or weight is False:
        return False
    return None if age is None or weight is None else True


def rule_matches(compiled: CompiledRule, key: MatchKey) -> bool:
    return exam_matches(compiled, key) and band_matches(compiled.rule, key) is True


class ExamMatcher:
    """First matching rule of a list, in file order, with compiled patterns and a bounded memory of answers."""

    def __init__(self, rules: Sequence[ExamCriteria], default_match: str):
        self.compiled = [CompiledRule(
            rule, *(tuple(compile_pattern(t, rule.match or default_match) for t in texts)
                    for texts in (rule.protocol, rule.body_part, rule.view, rule.modality)), rule.banded)
            for rule in rules]
        self.find = lru_cache(maxsize=1024)(self._find)

    def _find(self, key: MatchKey) -> tuple[ExamCriteria | None, str | None]:
        """(rule, its band name); (the exam's first rule, "unknown") when it needs an age or weight the object lacks;
        (None, None) when no rule covers the exam."""
        for c in self.compiled:
            if not exam_matches(c, key):
                continue
            if not c.banded:
                return c.rule, c.rule.band
            inside = band_matches(c.rule, key)
            if inside is None:
                return c.rule, UNKNOWN_BAND  # the exam's rule, not applicable: no age or weight to place it
            if inside:
                return c.rule, c.rule.band
        return None, None

    def first(self, key: MatchKey) -> ExamCriteria | None:
        """The rule that applies; None when none does, or when the exposure's band is unknown."""
        rule, band = self.find(key)
        return None if band == UNKNOWN_BAND else rule


class DrlMatcher(ExamMatcher):
    """The notification-level rules' matcher (the name of earlier versions)."""

    def __init__(self, rules: DoseRules):
        super().__init__(rules.notification_level, rules.match)


# ---- per-exposure findings ---------------------------------------------------------------------------------------
def above(value: float | None, level: float | None) -> bool:
    """Strictly above; a missing value or level is never above."""
    return value is not None and level is not None and value > level


def notification_findings(rule: NotificationLevel | None, dap_gy_m2: float | None, entrance_dose_mgy: float | None
                          ) -> list[Finding]:
    """DAP and entrance-dose findings of one exposure against its notification level (each quantity only where both
    exist)."""
    if rule is None:
        return []
    findings = []
    for quantity, value, level in (("dap_gy_m2", dap_gy_m2, rule.dap_gy_m2),
                                   ("entrance_dose_mgy", entrance_dose_mgy, rule.entrance_dose_mgy)):
        if above(value, level):
            findings.append(Finding("notification-level", rule.id, rule.description, quantity, value, level,
                                    value / level))
    return findings


def di_band(di: float | None, bands: DeviationIndexBands) -> str:
    """The DI band: excessive, over, normal, under, excessively-under; unknown when there is no DI."""
    if di is None:
        return "unknown"
    if di > bands.excessive_above:
        return "excessive"
    if di > bands.over_above:
        return "over"
    if di < bands.excessively_under_below:
        return "excessively-under"
    if di < bands.under_below:
        return "under"
    return "normal"


def di_finding(di: float | None, bands: DeviationIndexBands) -> Finding | None:
    """A finding when the DI falls in an alerting band; ratio is EI/EI_T = 10^(DI/10)."""
    band = di_band(di, bands)
    if band not in bands.alert:
        return None
    level = getattr(bands, ALERT_DI_LIMIT[band])
    return Finding("deviation-index", f"deviation-index:{band}", f"deviation index {band} (IEC 62494-1)",
                   "deviation_index", di, level, 10 ** (max(-3000.0, min(3000.0, di)) / 10), band)  # no overflow


drl_findings = notification_findings  # the name of earlier versions


def step_reached(value: float | None, first: float, every: float | None) -> float | None:
    """The highest level of the series first, first + every, first + 2·every ... that `value` is strictly above;
    None below the first. Without `every`, just `first`. Worked example (NCRP 168 Ka,r 3 Gy, then every 1 Gy):
    3.0 -> None, 3.2 -> 3, 4.0 -> 3, 4.01 -> 4, 6.5 -> 6."""
    if not above(value, first):
        return None
    if every is None:
        return first
    steps = math.floor((value - first) / every * (1 + STEP_EPSILON))
    level = first + steps * every
    if level >= value * (1 - STEP_EPSILON):  # exactly at a step is not above it
        steps -= 1
    return first + max(0, steps) * every


def crossed(totals: dict[str, float], thresholds: Sequence[CumulativeThreshold],
            planes: dict[str, dict[str, float]] | None = None) -> list[Finding]:
    """Cumulative findings: for every threshold, the highest step the study's totals (payload quantity -> value; per
    plane in `planes`, plane -> totals) are strictly above."""
    findings = []
    for t in thresholds:
        if t.plane == "total":
            sources = [(None, totals)]
        else:
            sources = sorted((p, v) for p, v in (planes or {}).items() if t.plane in ("each", p))
        for plane, values in sources:
            value = values.get(t.payload_quantity)
            level = step_reached(value, t.payload_level, t.payload_every)
            if level is not None:
                findings.append(Finding("cumulative", t.id, t.description, t.payload_quantity, value, level,
                                        value / level, plane=plane, step=t.payload_every, first=t.payload_level))
    return findings


def lower_steps(finding: Finding, limit: int = 50) -> list[Finding]:
    """The steps of a stepped finding below its level, highest first (at most `limit`: a total thousands of steps up
    is implausible and must not cost thousands of alerts' work)."""
    if finding.step is None or finding.first is None:
        return []
    out = []
    steps = round((finding.level - finding.first) / finding.step)
    for k in range(steps - 1, max(-1, steps - 1 - limit), -1):
        level = finding.first + k * finding.step
        out.append(dataclasses.replace(finding, level=level, ratio=finding.value / level))
    return out


def patient_crossed(before: dict[str, float], after: dict[str, float], threshold: PatientThreshold
                    ) -> Finding | None:
    """A patient threshold crossed by the study just counted: the window's total without it at or below the level,
    with it strictly above. `before`/`after`: payload quantity -> the patient's total over the window."""
    quantity = threshold.payload_quantity
    value, level = after.get(quantity), threshold.payload_level
    if not above(value, level) or above(before.get(quantity), level):
        return None
    return Finding("patient-cumulative", threshold.id, threshold.description, quantity, value, level, value / level)


# ---- findings to alerts ------------------------------------------------------------------------------------------
def alert_msg_id(anchor: str, finding: Finding) -> str:
    """Deterministic: the exposure's event_ref (the study_ref for cumulative alerts, patient_ref + study_ref for
    patient alerts) + rule + quantity (+ plane and step level where the rule has them), so the image and the RDSR
    view of one exposure, or an object received twice, raise the same alert once."""
    parts = ["dose-alert", anchor, finding.rule, finding.quantity]
    if finding.plane:
        parts.append(f"plane={finding.plane}")
    if finding.step is not None:
        parts.append(f"level={finding.level:.12g}")
    key = "\x1f".join(parts)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def to_alert(finding: Finding, source: ExposureEvent | DoseSummary, *, study_events: int | None = None,
             patient_ref: str | None = None, studies: Sequence[str] | None = None, window_days: int | None = None,
             target_ei_uniform: bool | None = None) -> DoseAlert:
    """The alert of a finding raised by an exposure event, or for cumulative findings by the last payload of the
    study in the object (an event, or a dose report's totals)."""
    event = source if isinstance(source, ExposureEvent) else None
    if finding.alert == "cumulative":
        anchor = source.study_ref
    elif finding.alert == "patient-cumulative":
        anchor = f"{patient_ref}\x1f{source.study_ref}"
    else:
        anchor = event.event_ref
    return DoseAlert(
        plane=finding.plane, patient_ref=patient_ref, studies=list(studies) if studies is not None else None,
        window_days=window_days, target_ei_uniform=target_ei_uniform,
        msg_id=alert_msg_id(anchor, finding), site=source.site, room=source.room, ts=source.ts,
        alert=finding.alert, rule=finding.rule, rule_description=finding.description or None,
        quantity=finding.quantity, unit=UNITS[finding.quantity], value=finding.value, level=finding.level,
        ratio=finding.ratio, band=finding.band, study_ref=source.study_ref, events_in_study=study_events,
        event_ref=event and event.event_ref, protocol=event and event.protocol, body_part=event and event.body_part,
        view=event and event.view, modality=source.modality, irradiation_type=event and event.irradiation_type,
        acquired_at=event.acquired_at if event else source.irradiation_ended_at, received_at=source.received_at)


NOT_LOOKED_UP = object()


def exposure_findings(event: ExposureEvent, rules: DoseRules, matcher: ExamMatcher | None, key: MatchKey | None = None,
                      rule: NotificationLevel | None | object = NOT_LOOKED_UP) -> list[Finding]:
    """Every per-exposure finding: the first matching notification level's levels, then the DI band. `key`: the
    exposure's exam with the object's private age and weight (default: what the event publishes); `rule`, when given
    (None included), the notification level looked up beforehand (matcher.first), e.g. outside a lock."""
    if rule is NOT_LOOKED_UP:
        rule = matcher.first(key or MatchKey.of(event))
    findings = notification_findings(rule, event.dap_gy_m2, event.entrance_dose_mgy)
    di = di_finding(event.deviation_index, rules.deviation_index)
    return findings + ([di] if di else [])


# ---- summary statistics ------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default method);
    None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    h = (len(ordered) - 1) * q / 100
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])
