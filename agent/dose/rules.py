"""The dose rules file: notification levels per exposure, diagnostic reference levels for the DRL audit,
deviation-index bands, cumulative study and patient thresholds, and the repeat window.

A TOML file kept apart from the room's agent config, because the medical physicist owns it and one file usually serves
every room of a site (config/dose-rules.example.toml is the shipped starting point). Without a file the built-in
defaults below apply: the IEC 62494-1 / AAPM TG-116 DI bands, the NCRP 168 notification and substantial radiation dose
levels, a 10 minute repeat window, and no notification or reference levels (national or local: they come from a file).

A DRL (ICRP Publication 135, 2017) is compared with the median of a group of examinations, never with one exposure:
a single exposure is checked against a local notification level ([[notification_level]], the old [[drl]] key is
still read, with a warning), and the medians go to the DRL audit ([[diagnostic_reference_level]], agent.dose.audit).

Conventions: "above a level" is strict (a value exactly at the level raises nothing); bands are [min, max) in age
(days, months, years: agent.dose.bands) or weight; text matching is always case-insensitive.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from functools import cached_property, lru_cache
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from agent.dose.bands import AgeBound, band_label
from agent.tomlfile import read_toml

log = logging.getLogger(__name__)

GY_CM2_IN_GY_M2 = Decimal("0.0001")  # 1 Gy·cm² = 1e-4 Gy·m²
RuleId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
MatchMode = Literal["exact", "glob", "regex"]
Band = Literal["excessive", "over", "normal", "under", "excessively-under"]
Level = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def gy_cm2_to_gy_m2(value: float) -> float:
    """Exact in decimal, then rounded once, as extraction converts DAP: a level written 0.3 Gy·cm² equals a DAP sent
    as 3 dGy·cm² (a plain 0.3 * 1e-4 would be 2.9999999999999997e-05, and "exactly at the level" would alert)."""
    return float(Decimal(repr(value)) * GY_CM2_IN_GY_M2)


def _as_list(value: object) -> object:
    """A single string in the file stands for a one-item list."""
    return [value] if isinstance(value, str) else value


Texts = Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(_as_list)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has inf and nan


class ExamCriteria(_Section):
    """Which exposures a rule covers: exam texts, modality, irradiation type, and an age and/or weight band."""

    protocol: Texts = Field(default_factory=list, description="Protocol names or patterns; any of them matches.")
    body_part: Texts = Field(default_factory=list, description="Body parts (BodyPartExamined CS or code meaning).")
    view: Texts = Field(default_factory=list, description="Views (ViewPosition CS or code meaning).")
    modality: Texts = Field(default_factory=list, description="Modalities (DX, CR, SR ...); empty: any.")
    irradiation_type: list[Literal["acquisition", "fluoroscopy"]] = Field(
        default_factory=lambda: ["acquisition"], description="Irradiation types covered; empty: any, unknown too.")
    match: MatchMode | None = Field(None, description="How the texts above are compared; default: the file's match.")
    age_min: int | str | None = Field(None, description='Youngest age covered, inclusive: 6 (years), "6y", "3m" '
                                                        'or "14d" (days: under one month only).')
    age_max: int | str | None = Field(None, description="Age band end, exclusive, same forms as age_min.")
    weight_min_kg: Level | None = Field(None, description="Lightest patient covered, kg, inclusive.")
    weight_max_kg: Level | None = Field(None, description="Weight band end, kg, exclusive.")

    @model_validator(mode="after")
    def _criteria(self):
        if not (self.protocol or self.body_part):
            raise ValueError(f"rule {self.id!r} needs protocol or body_part (otherwise it would match everything)")
        for name in ("age_min", "age_max"):
            value = getattr(self, name)
            if value is not None:
                try:
                    AgeBound.parse(value)
                except ValueError as exc:
                    raise ValueError(f"rule {self.id!r}: {name}: {exc}") from None
        low, high = self.age_band
        if low is not None and high is not None and high.in_days() <= low.in_days():
            raise ValueError(f"rule {self.id!r}: age_max must be above age_min (the band is [age_min, age_max))")
        if (self.weight_min_kg is not None and self.weight_max_kg is not None
                and self.weight_max_kg <= self.weight_min_kg):
            raise ValueError(f"rule {self.id!r}: weight_max_kg must be above weight_min_kg")
        return self

    @cached_property
    def age_band(self) -> tuple[AgeBound | None, AgeBound | None]:
        return tuple(None if v is None else AgeBound.parse(v) for v in (self.age_min, self.age_max))

    @property
    def banded(self) -> bool:
        return any(v is not None for v in (self.age_min, self.age_max, self.weight_min_kg, self.weight_max_kg))

    @cached_property
    def band(self) -> str:
        """The band's readable name ("3m-<1y", "5-<15kg"; "any" when the rule has none)."""
        return band_label(*self.age_band, self.weight_min_kg, self.weight_max_kg)


class NotificationLevel(ExamCriteria):
    """A local notification (investigation) level for ONE exposure, typically a multiple of the DRL of its exam.
    A DRL itself applies to the median of a group of examinations (ICRP 135 section 2.3): see ReferenceLevel."""

    id: RuleId = Field(description="Rule id, published on the alert.")
    description: str = Field("", description="Free text published with the alert (e.g. how the level was set).")
    dap_gy_cm2: Level | None = Field(None, description="DAP level per exposure, Gy·cm².")
    entrance_dose_mgy: Level | None = Field(None, description="Entrance dose level per exposure, mGy.")

    @model_validator(mode="after")
    def _usable(self) -> NotificationLevel:
        if self.dap_gy_cm2 is None and self.entrance_dose_mgy is None:
            raise ValueError(f"rule {self.id!r} needs a level: dap_gy_cm2 and/or entrance_dose_mgy")
        return self

    @cached_property
    def dap_gy_m2(self) -> float | None:
        """The DAP level in the payloads' unit."""
        return None if self.dap_gy_cm2 is None else gy_cm2_to_gy_m2(self.dap_gy_cm2)


DrlRule = NotificationLevel  # the name of earlier versions


class ReferenceLevel(ExamCriteria):
    """A diagnostic reference level of one examination (ICRP 135): compared in the DRL audit with the MEDIAN, over a
    period, of the examinations' DAP (one examination: every view of the exam in one study, summed)."""

    id: RuleId = Field(description="Rule id; the audit names the exam by `exam`, else by this id.")
    exam: str | None = Field(None, description="Standard examination name, e.g. \"Chest PA\" or \"Abdomen AP\".")
    description: str = Field("", description="Free text (the source of the DRL).")
    dap_gy_cm2: Level = Field(description="The DRL: median DAP per examination, Gy·cm².")

    @cached_property
    def dap_gy_m2(self) -> float:
        return gy_cm2_to_gy_m2(self.dap_gy_cm2)

    @property
    def exam_name(self) -> str:
        return self.exam or self.id


class AuditSettings(_Section):
    """The DRL audit: how often, and the smallest sample whose median means something."""

    period: Literal["monthly", "off"] = Field("monthly", description="monthly: each calendar month (site zone) is "
                                                                     "audited when it ends; off: on request only.")
    min_examinations: int = Field(20, ge=1, le=100000, description="Fewer examinations than this are flagged "
                                                                   "(ICRP 135 suggests at least 20 per exam).")


class DeviationIndexBands(_Section):
    """DI action bands (IEC 62494-1, AAPM TG-116), all limits strict: DI > +3 excessive, +1 < DI <= +3 over,
    -1 <= DI <= +1 normal, -3 <= DI < -1 under, DI < -3 excessively under."""

    excessive_above: float = Field(3.0, allow_inf_nan=False)
    over_above: float = Field(1.0, allow_inf_nan=False)
    under_below: float = Field(-1.0, allow_inf_nan=False)
    excessively_under_below: float = Field(-3.0, allow_inf_nan=False)
    alert: list[Band] = Field(default_factory=lambda: ["excessive", "excessively-under"],
                              description="Bands that raise a dose-alert; every band is counted in the summary.")

    @model_validator(mode="after")
    def _ordered(self) -> DeviationIndexBands:
        if not (self.excessively_under_below <= self.under_below < self.over_above <= self.excessive_above):
            raise ValueError("need excessively_under_below <= under_below < over_above <= excessive_above")
        if "normal" in self.alert:
            raise ValueError("the normal band cannot raise alerts")
        return self


CumulativeQuantity = Literal["dose_rp_gy", "dap_gy_cm2", "fluoro_time_min"]
PAYLOAD_QUANTITY = {"dose_rp_gy": "study_dose_rp_gy", "dap_gy_cm2": "study_dap_gy_m2",
                    "fluoro_time_min": "study_fluoro_time_s"}


def to_payload_unit(quantity: str, value: float) -> float:
    """A level in the rules file's unit in the payloads' unit (Gy; Gy·m²; s)."""
    if quantity == "dap_gy_cm2":
        return gy_cm2_to_gy_m2(value)
    return value * 60 if quantity == "fluoro_time_min" else value


class CumulativeThreshold(_Section):
    """A study total that raises an alert when first crossed, and again at every `every` above it (NCRP 168
    notification levels); per plane ("A", "B", or "each" plane of a biplane report) or over all planes ("total")."""

    id: RuleId
    description: str = ""
    quantity: CumulativeQuantity = Field(
        description="dose_rp_gy: reference air kerma (Ka,r) in Gy; dap_gy_cm2: KAP in Gy·cm²; fluoro_time_min: "
                    "fluoroscopy time, minutes.")
    level: Level = Field(description="The first level, in the quantity's unit.")
    every: Level | None = Field(None, description="Then an alert at each further step of this size; none: once.")
    plane: Literal["total", "each", "A", "B"] = Field(
        "total", description="total: summed over planes; each: every plane of a biplane report on its own.")

    @property
    def payload_quantity(self) -> str:
        return PAYLOAD_QUANTITY[self.quantity]

    @cached_property
    def payload_level(self) -> float:
        """The level in the payloads' unit (Gy, Gy·m², s)."""
        return to_payload_unit(self.quantity, self.level)

    @cached_property
    def payload_every(self) -> float | None:
        return None if self.every is None else to_payload_unit(self.quantity, self.every)


class PatientThreshold(_Section):
    """A patient's total over every study of a sliding window (the room's history), e.g. Ka,r over 12 months."""

    id: RuleId
    description: str = ""
    quantity: CumulativeQuantity
    level: Level
    window_days: int = Field(365, ge=1, le=3650, description="How far back studies count, days.")

    @property
    def payload_quantity(self) -> str:
        return "patient_" + PAYLOAD_QUANTITY[self.quantity].removeprefix("study_")

    @cached_property
    def payload_level(self) -> float:
        return to_payload_unit(self.quantity, self.level)


def _ncrp168(id_: str, quantity: str, level: float, every: float | None, plane: str, what: str) -> CumulativeThreshold:
    return CumulativeThreshold(id=id_, quantity=quantity, level=level, every=every, plane=plane, description=what)


def default_cumulative() -> list[CumulativeThreshold]:
    """NCRP Report No. 168 (2010), Section 5 and Table 5.2 (suggested notification levels and substantial radiation
    dose levels, SRDL): first notification at reference air kerma 3 Gy, then every 1 Gy; KAP 300 Gy·cm² (for a
    100 cm² field at the skin), then every 100; fluoroscopy time 30 min, then every 15 min; SRDL at Ka,r 5 Gy, KAP
    500 Gy·cm², fluoroscopy time 60 min. Ka,r is checked per plane as well as in total (a biplane run's skin dose is
    per field). These numbers are as quoted in the literature on NCRP 168 (e.g. the SIR/CIRSE dose guidelines); they
    could not be checked against the report's own text here."""
    return [
        _ncrp168("ncrp168-notify-kar", "dose_rp_gy", 3.0, 1.0, "total",
                 "NCRP 168 notification: reference air kerma 3 Gy, then every 1 Gy"),
        _ncrp168("ncrp168-notify-kar-plane", "dose_rp_gy", 3.0, 1.0, "each",
                 "NCRP 168 notification, one plane: reference air kerma 3 Gy, then every 1 Gy"),
        _ncrp168("ncrp168-srdl-kar", "dose_rp_gy", 5.0, None, "total",
                 "NCRP 168 substantial radiation dose level: reference air kerma 5 Gy (follow up the patient)"),
        _ncrp168("ncrp168-srdl-kar-plane", "dose_rp_gy", 5.0, None, "each",
                 "NCRP 168 substantial radiation dose level, one plane: reference air kerma 5 Gy"),
        _ncrp168("ncrp168-notify-kap", "dap_gy_cm2", 300.0, 100.0, "total",
                 "NCRP 168 notification: KAP 300 Gy·cm², then every 100 Gy·cm²"),
        _ncrp168("ncrp168-srdl-kap", "dap_gy_cm2", 500.0, None, "total",
                 "NCRP 168 substantial radiation dose level: KAP 500 Gy·cm²"),
        _ncrp168("ncrp168-notify-fluoro-time", "fluoro_time_min", 30.0, 15.0, "total",
                 "NCRP 168 notification: fluoroscopy time 30 min, then every 15 min"),
        _ncrp168("ncrp168-srdl-fluoro-time", "fluoro_time_min", 60.0, None, "total",
                 "NCRP 168 substantial radiation dose level: fluoroscopy time 60 min"),
    ]


class RepeatRules(_Section):
    """An exposure repeats an earlier one of the same study with the same key fields acquired within window_s."""

    window_s: float = Field(600, gt=0, le=86400, description="How far back an earlier exposure counts, s.")
    modalities: Texts = Field(default_factory=lambda: ["CR", "DX"],
                              description="Modalities whose exposures are checked (fluoroscopy never is).")
    key: list[Literal["body_part", "view", "protocol"]] = Field(
        default_factory=lambda: ["body_part", "view"], min_length=1,
        description="Fields that must be equal; add protocol where lateralities share a view (e.g. hands, MG).")


class DoseRules(_Section):
    """The whole rules file."""

    version: Literal[1] = 1
    match: MatchMode = Field("glob", description="Default text matching of exam rules (case-insensitive).")
    notification_level: list[NotificationLevel] = Field(
        default_factory=list, description="Per-exposure notification levels; in order, the first match applies.")
    diagnostic_reference_level: list[ReferenceLevel] = Field(
        default_factory=list, description="DRLs of examinations for the DRL audit; in order, the first match applies.")
    audit: AuditSettings = AuditSettings()
    deviation_index: DeviationIndexBands = DeviationIndexBands()
    cumulative: list[CumulativeThreshold] = Field(default_factory=default_cumulative)
    patient_cumulative: list[PatientThreshold] = Field(default_factory=list)
    repeats: RepeatRules = RepeatRules()

    @model_validator(mode="before")
    @classmethod
    def _old_drl_key(cls, data: object) -> object:
        """Earlier versions called the per-exposure levels [[drl]]: read them as [[notification_level]]."""
        if isinstance(data, dict) and "drl" in data:
            if "notification_level" in data:
                raise ValueError("drl: give [[notification_level]] only ([[drl]] is its old name)")
            data = {("notification_level" if k == "drl" else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _unique_and_compilable(self) -> DoseRules:
        seen: set[str] = set()
        for rule in [*self.notification_level, *self.diagnostic_reference_level, *self.cumulative,
                     *self.patient_cumulative]:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        for rule in [*self.notification_level, *self.diagnostic_reference_level]:
            for text in [*rule.protocol, *rule.body_part, *rule.view, *rule.modality]:
                compile_pattern(text, rule.match or self.match)  # re.error -> ValueError naming the pattern
        return self

    @property
    def drl(self) -> list[NotificationLevel]:
        """The old name of notification_level."""
        return self.notification_level


class TextPattern(Protocol):
    """A compiled rule text: `match(value)` is truthy when the whole value matches."""

    def match(self, value: str) -> object: ...


def compile_pattern(text: str, mode: MatchMode) -> TextPattern:
    """One rule text as an anchored, case-insensitive pattern; ValueError naming the text when it cannot be compiled.

    `regex` texts are compiled by RE2 (google-re2), whose matching time is linear in the text's length whatever the
    pattern: the protocol name comes from the modality, and a pattern such as (a+)+b against a long name would hold
    Python's backtracking engine for minutes, stalling every C-STORE behind it. RE2 has no backreferences or
    lookaround; a text using them is refused at load with RE2's reason. `exact` and `glob` are translated into
    Python patterns without nested repetition (fnmatch emulates atomic groups), so they cannot backtrack badly."""
    if mode == "regex":
        import re2  # only a rules file with regex texts needs it (its native library costs memory at idle)

        try:
            return re2.compile(rf"(?:{text})\z", _re2_options())
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise ValueError(f"bad pattern {text!r}: {reason} (regex rules use RE2 syntax: no backreferences or "
                             "lookaround)") from None
    source = re.escape(text.strip()) if mode == "exact" else fnmatch.translate(text.strip())
    try:
        return re.compile(rf"(?:{source})\Z", re.IGNORECASE | re.DOTALL)
    except re.error as exc:
        raise ValueError(f"bad pattern {text!r}: {exc}") from None


@lru_cache(maxsize=1)
def _re2_options():
    import re2

    options = re2.Options()
    options.case_sensitive = False
    options.dot_nl = True  # as re.DOTALL for glob: a protocol name never spans lines, but agree with the other modes
    options.log_errors = False  # RE2 would print its parse errors to stderr; the ValueError carries them
    return options


def load_rules(path: Path | None) -> DoseRules:
    """The rules from a TOML file, or the built-in defaults when path is None; ValueError naming file and key."""
    if path is None:
        return DoseRules()
    data = read_toml(path, "dose rules")
    if isinstance(data, dict) and "drl" in data:
        log.warning("dose rules %s: [[drl]] is deprecated, read as [[notification_level]] (per-exposure levels are "
                    "notification levels; DRLs go in [[diagnostic_reference_level]] for the DRL audit): rename it",
                    path)
    try:
        return DoseRules.model_validate(data)
    except ValidationError as exc:
        old_key = isinstance(data, dict) and "drl" in data and "notification_level" not in data
        problems = "; ".join(f"{_loc(e['loc'], old_key) or '(top level)'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ValueError(f"dose rules {path}: {problems}") from None


def _loc(loc: tuple, old_key: bool) -> str:
    """A validation error's key path, under the name the file used ([[drl]] in files of earlier versions)."""
    parts = [str(p) for p in loc]
    if old_key and parts and parts[0] == "notification_level":
        parts[0] = "drl"
    return ".".join(parts)
