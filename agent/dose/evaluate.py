"""Pure rule evaluation: which DRL rule covers an exposure, whether a value is above its level, the deviation-index
band, the cumulative thresholds a study total has crossed, and the alerts these findings become. No I/O, no clock.

"Above" is strict everywhere: a value exactly at a level raises nothing (DRL, cumulative), and DI limits are strict
too (DI = +3.00 is "over", not "excessive"; DI = -1.00 is "normal"). A missing value raises nothing: no DAP, no DAP
alert; no DI and no EI_T, band "unknown".
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from agent.dose.rules import CumulativeThreshold, DeviationIndexBands, DoseRules, DrlRule, TextPattern, compile_pattern
from agent.payloads.dose import DoseAlert
from agent.payloads.exposure import DoseSummary, ExposureEvent

UNITS = {"dap_gy_m2": "Gy·m²", "entrance_dose_mgy": "mGy", "deviation_index": "1", "study_dap_gy_m2": "Gy·m²",
         "study_dose_rp_gy": "Gy"}
ALERT_DI_LIMIT = {"excessive": "excessive_above", "over": "over_above", "under": "under_below",
                  "excessively-under": "excessively_under_below"}


@dataclass(frozen=True)
class Finding:
    """A value past a level, before it becomes a DoseAlert."""

    alert: str  # drl | deviation-index | cumulative
    rule: str
    description: str
    quantity: str
    value: float
    level: float
    ratio: float
    band: str | None = None


# ---- DRL matching ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompiledRule:
    rule: DrlRule
    protocol: tuple[TextPattern, ...]
    body_part: tuple[TextPattern, ...]
    view: tuple[TextPattern, ...]
    modality: tuple[TextPattern, ...]


@dataclass(frozen=True)
class MatchKey:
    """What DRL matching looks at; hashable, so the matcher can remember answers for repeated protocols."""

    protocol: str | None
    body_part: str | None
    view: str | None
    modality: str | None
    irradiation_type: str | None
    age: int | None

    @classmethod
    def of(cls, event: ExposureEvent) -> MatchKey:
        return cls(event.protocol, event.body_part, event.view, event.modality, event.irradiation_type,
                   event.patient_age_years)


def _texts_match(patterns: tuple[TextPattern, ...], value: str | None) -> bool:
    """No patterns: anything matches. Patterns: a missing value never matches."""
    if not patterns:
        return True
    if value is None:
        return False
    value = value.strip()
    return any(p.match(value) for p in patterns)


def in_age_band(age: int | None, age_min: int | None, age_max: int | None) -> bool:
    """[age_min, age_max) in whole years; a rule without a band covers every age, known or not; a banded rule never
    covers an unknown age."""
    if age_min is None and age_max is None:
        return True
    if age is None:
        return False
    return (age_min is None or age >= age_min) and (age_max is None or age < age_max)


def rule_matches(compiled: CompiledRule, key: MatchKey) -> bool:
    rule = compiled.rule
    if rule.irradiation_type and key.irradiation_type not in rule.irradiation_type:
        return False
    return (in_age_band(key.age, rule.age_min, rule.age_max)
            and _texts_match(compiled.protocol, key.protocol) and _texts_match(compiled.body_part, key.body_part)
            and _texts_match(compiled.view, key.view) and _texts_match(compiled.modality, key.modality))


class DrlMatcher:
    """First matching rule, in file order, with compiled patterns and a bounded memory of answers."""

    def __init__(self, rules: DoseRules):
        self.compiled = [CompiledRule(
            rule, *(tuple(compile_pattern(t, rule.match or rules.match) for t in texts)
                    for texts in (rule.protocol, rule.body_part, rule.view, rule.modality)))
            for rule in rules.drl]
        self.first = lru_cache(maxsize=1024)(self._first)

    def _first(self, key: MatchKey) -> DrlRule | None:
        return next((c.rule for c in self.compiled if rule_matches(c, key)), None)


# ---- per-exposure findings ---------------------------------------------------------------------------------------
def above(value: float | None, level: float | None) -> bool:
    """Strictly above; a missing value or level is never above."""
    return value is not None and level is not None and value > level


def drl_findings(rule: DrlRule | None, dap_gy_m2: float | None, entrance_dose_mgy: float | None) -> list[Finding]:
    """DAP and entrance-dose findings of one exposure against its rule (each quantity only where both exist)."""
    if rule is None:
        return []
    findings = []
    for quantity, value, level in (("dap_gy_m2", dap_gy_m2, rule.dap_gy_m2),
                                   ("entrance_dose_mgy", entrance_dose_mgy, rule.entrance_dose_mgy)):
        if above(value, level):
            findings.append(Finding("drl", rule.id, rule.description, quantity, value, level, value / level))
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


def crossed(totals: dict[str, float], thresholds: Sequence[CumulativeThreshold]) -> list[Finding]:
    """Cumulative findings for every threshold a study's totals (payload quantity -> value) are strictly above."""
    findings = []
    for t in thresholds:
        value = totals.get(t.payload_quantity)
        if above(value, t.payload_level):
            findings.append(Finding("cumulative", t.id, t.description, t.payload_quantity, value, t.payload_level,
                                    value / t.payload_level))
    return findings


# ---- findings to alerts ------------------------------------------------------------------------------------------
def alert_msg_id(anchor: str, finding: Finding) -> str:
    """Deterministic: the exposure's event_ref (or the study_ref for cumulative alerts) + rule + quantity, so the
    image and the RDSR view of one exposure, or an object received twice, raise the same alert once."""
    key = "\x1f".join(["dose-alert", anchor, finding.rule, finding.quantity])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def to_alert(finding: Finding, source: ExposureEvent | DoseSummary, *, study_events: int | None = None
             ) -> DoseAlert:
    """The alert of a finding raised by an exposure event, or for cumulative findings by the last payload of the
    study in the object (an event, or a dose report's totals)."""
    event = source if isinstance(source, ExposureEvent) else None
    anchor = source.study_ref if finding.alert == "cumulative" else event.event_ref
    return DoseAlert(
        msg_id=alert_msg_id(anchor, finding), site=source.site, room=source.room, ts=source.ts,
        alert=finding.alert, rule=finding.rule, rule_description=finding.description or None,
        quantity=finding.quantity, unit=UNITS[finding.quantity], value=finding.value, level=finding.level,
        ratio=finding.ratio, band=finding.band, study_ref=source.study_ref, events_in_study=study_events,
        event_ref=event and event.event_ref, protocol=event and event.protocol, body_part=event and event.body_part,
        view=event and event.view, modality=source.modality, irradiation_type=event and event.irradiation_type,
        acquired_at=event.acquired_at if event else source.irradiation_ended_at, received_at=source.received_at)


NOT_LOOKED_UP = object()


def exposure_findings(event: ExposureEvent, rules: DoseRules, matcher: DrlMatcher | None,
                      drl_rule: DrlRule | None | object = NOT_LOOKED_UP) -> list[Finding]:
    """Every per-exposure finding: the first matching DRL rule's levels, then the DI band. `drl_rule`, when given
    (None included), is that rule looked up beforehand (matcher.first), e.g. outside a lock."""
    if drl_rule is NOT_LOOKED_UP:
        drl_rule = matcher.first(MatchKey.of(event))
    findings = drl_findings(drl_rule, event.dap_gy_m2, event.entrance_dose_mgy)
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
