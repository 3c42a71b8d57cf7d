"""The dose rules file: reference levels, deviation-index bands, cumulative study thresholds and the repeat window.

A TOML file kept apart from the room's agent config, because the medical physicist owns it and one file usually serves
every room of a site (config/dose-rules.example.toml is the shipped starting point). Without a file the built-in
defaults below apply: the IEC 62494-1 / AAPM TG-116 DI bands, the NCRP 168 notification and substantial radiation dose
levels, a 10 minute repeat window, and no DRLs (those are national or local and must come from a file).

Conventions: "above a level" is strict (a value exactly at the level raises nothing); age bands are whole years,
`age_min` inclusive and `age_max` exclusive; text matching is always case-insensitive.
"""

from __future__ import annotations

import fnmatch
import re
from functools import cached_property, lru_cache
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from agent.tomlfile import read_toml

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


class DrlRule(_Section):
    """One diagnostic reference level: which exposures it covers and their level(s)."""

    id: RuleId = Field(description="Rule id, published on the alert.")
    description: str = Field("", description="Free text published with the alert (e.g. the source of the level).")
    protocol: Texts = Field(default_factory=list, description="Protocol names or patterns; any of them matches.")
    body_part: Texts = Field(default_factory=list, description="Body parts (BodyPartExamined CS or code meaning).")
    view: Texts = Field(default_factory=list, description="Views (ViewPosition CS or code meaning).")
    modality: Texts = Field(default_factory=list, description="Modalities (DX, CR, SR ...); empty: any.")
    irradiation_type: list[Literal["acquisition", "fluoroscopy"]] = Field(
        default_factory=lambda: ["acquisition"], description="Irradiation types covered; empty: any, unknown too.")
    match: MatchMode | None = Field(None, description="How the texts above are compared; default: the file's match.")
    age_min: int | None = Field(None, ge=0, le=90, description="Youngest patient age covered, whole years, inclusive.")
    age_max: int | None = Field(None, ge=1, le=200, description="Age band end, whole years, exclusive.")
    dap_gy_cm2: Level | None = Field(None, description="DAP level per exposure, Gy·cm².")
    entrance_dose_mgy: Level | None = Field(None, description="Entrance dose level per exposure, mGy.")

    @model_validator(mode="after")
    def _usable(self) -> DrlRule:
        if not (self.protocol or self.body_part):
            raise ValueError(f"rule {self.id!r} needs protocol or body_part (otherwise it would match everything)")
        if self.dap_gy_cm2 is None and self.entrance_dose_mgy is None:
            raise ValueError(f"rule {self.id!r} needs a level: dap_gy_cm2 and/or entrance_dose_mgy")
        if self.age_min is not None and self.age_max is not None and self.age_max <= self.age_min:
            raise ValueError(f"rule {self.id!r}: age_max must be above age_min (the band is [age_min, age_max))")
        return self

    @cached_property
    def dap_gy_m2(self) -> float | None:
        """The DAP level in the payloads' unit."""
        return None if self.dap_gy_cm2 is None else gy_cm2_to_gy_m2(self.dap_gy_cm2)


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


class CumulativeThreshold(_Section):
    """A per-study total that raises one alert when first crossed."""

    id: RuleId
    description: str = ""
    quantity: Literal["dose_rp_gy", "dap_gy_cm2"] = Field(
        description="dose_rp_gy: reference-point air kerma (Ka,r) in Gy; dap_gy_cm2: DAP (KAP) in Gy·cm².")
    level: Level

    @property
    def payload_quantity(self) -> str:
        return "study_dose_rp_gy" if self.quantity == "dose_rp_gy" else "study_dap_gy_m2"

    @cached_property
    def payload_level(self) -> float:
        """The level in the payloads' unit (Gy, or Gy·m²)."""
        return self.level if self.quantity == "dose_rp_gy" else gy_cm2_to_gy_m2(self.level)


def default_cumulative() -> list[CumulativeThreshold]:
    """NCRP Report 168 (2010): first notification at Ka,r 3 Gy and KAP 300 Gy·cm², substantial radiation dose level
    (SRDL) at Ka,r 5 Gy and KAP 500 Gy·cm²."""
    return [
        CumulativeThreshold(id="ncrp168-notify-kar-3gy", quantity="dose_rp_gy", level=3.0,
                            description="NCRP 168 first notification: reference air kerma 3 Gy"),
        CumulativeThreshold(id="ncrp168-srdl-kar-5gy", quantity="dose_rp_gy", level=5.0,
                            description="NCRP 168 substantial radiation dose level: reference air kerma 5 Gy"),
        CumulativeThreshold(id="ncrp168-notify-kap-300", quantity="dap_gy_cm2", level=300.0,
                            description="NCRP 168 first notification: KAP 300 Gy·cm²"),
        CumulativeThreshold(id="ncrp168-srdl-kap-500", quantity="dap_gy_cm2", level=500.0,
                            description="NCRP 168 substantial radiation dose level: KAP 500 Gy·cm²"),
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
    match: MatchMode = Field("glob", description="Default text matching of DRL rules (case-insensitive).")
    drl: list[DrlRule] = Field(default_factory=list, description="Evaluated in order; the first match applies.")
    deviation_index: DeviationIndexBands = DeviationIndexBands()
    cumulative: list[CumulativeThreshold] = Field(default_factory=default_cumulative)
    repeats: RepeatRules = RepeatRules()

    @model_validator(mode="after")
    def _unique_and_compilable(self) -> DoseRules:
        seen: set[str] = set()
        for rule in [*self.drl, *self.cumulative]:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        for rule in self.drl:
            for text in [*rule.protocol, *rule.body_part, *rule.view, *rule.modality]:
                compile_pattern(text, rule.match or self.match)  # re.error -> ValueError naming the pattern
        return self


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
    try:
        return DoseRules.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ValueError(f"dose rules {path}: {problems}") from None
