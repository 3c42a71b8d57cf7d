"""QC limits as configuration: US federal values by default, any jurisdiction's values from a TOML table.

Source of the defaults: ../shared/reference/qc-limits.md, which cites 21 CFR 1020.30/1020.31. Every limit is inclusive
("shall be no greater than", "shall not differ by more than", "within ±"), so a value exactly at the limit passes.

Verification status of the citations (against public copies of the regulation text, not the live eCFR, which could
not be consulted from here): 1020.31(b) reproducibility (C <= 0.05, 10 consecutive exposures within 1 hour) and
1020.31(c) linearity (0.10 times the sum, consecutive stations, continuous selection within a factor of 2) as quoted
in the reference; the HVL table of 1020.30(m)(1) was compared with the state copies that reproduce it (Arizona
R9-7-605 Table I: both "other" columns and the dental intraoral column; Illinois 32 IAC 360 Table B: the pre-2006
column and its footnote "linear extrapolation or interpolation may be made ... e.g. at 20 kVp and 95 kVp the minimum
HVL would be 0.2 and 2.6 mm Al"). Not verified here: the post-2006 rows above 90 kV, the mammography rule (21 CFR
900.12(e)(5)(iii) / the ACR upper bound) and the IEC clause numbers named below; the code says so where it uses them.

Each criterion carries the `source` of its limit: federal (the regulation's own number), state, manufacturer (the
manufacturer's stated accuracy, which 1020.30(h)(3) requires and 1020.31(a)(4) defers to; IEC 60601-2-54 values are
what manufacturers state), or local (a site's tighter choice). A limit only counts as federal while it has the
federal value: `sources` saying "federal" for a changed limit is a config error.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Fraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
HvlRow = tuple[Annotated[float, Field(gt=0, allow_inf_nan=False)], Annotated[float, Field(ge=0, allow_inf_nan=False)]]

# 21 CFR 1020.30(m)(1) Table 1, "other X-ray systems", systems manufactured on or after 2006-06-10: (measured kV,
# minimum first HVL mm Al). The reference asks that the rows above 80 kV be re-checked against the current eCFR before
# a release relies on them; Arizona's R9-7-605 Table I, which copies the federal table, agrees on 30..80 kV.
HVL_MIN_CFR_2006: tuple[HvlRow, ...] = (
    (30, 0.3), (40, 0.4), (50, 0.5), (51, 1.3), (60, 1.5), (70, 1.8), (71, 2.5), (80, 2.9), (90, 3.2), (100, 3.6),
    (110, 3.9), (120, 4.3), (130, 4.7), (140, 5.0), (150, 5.4))
# Same table, systems manufactured before 2006-06-10. Below 51 kV the two columns are equal (0.3/0.4/0.5; the reference
# lists only 51 kV and up, the rows below are from the federal table as copied by the states).
HVL_MIN_CFR_PRE_2006: tuple[HvlRow, ...] = (
    (30, 0.3), (40, 0.4), (50, 0.5), (51, 1.2), (60, 1.3), (70, 1.5), (71, 2.1), (80, 2.3), (90, 2.5), (100, 2.7),
    (110, 3.0), (120, 3.2), (130, 3.5), (140, 3.8), (150, 4.1))
# Same table, "specified dental systems" (intraoral receptors, manufactured after 1980-12-01): 1.5 mm Al up to 70 kV,
# then as the pre-2006 column. As copied by Arizona R9-7-605 Table I and Illinois 32 IAC 360 Table B.
HVL_MIN_CFR_DENTAL_INTRAORAL: tuple[HvlRow, ...] = (
    (30, 1.5), (40, 1.5), (50, 1.5), (51, 1.5), (60, 1.5), (70, 1.5), (71, 2.1), (80, 2.3), (90, 2.5), (100, 2.7),
    (110, 3.0), (120, 3.2), (130, 3.5), (140, 3.8), (150, 4.1))
HVL_TABLES: dict[str, tuple[HvlRow, ...]] = {"cfr_2006": HVL_MIN_CFR_2006, "cfr_pre_2006": HVL_MIN_CFR_PRE_2006,
                                             "cfr_dental_intraoral": HVL_MIN_CFR_DENTAL_INTRAORAL}
# Mammography (21 CFR 900.12(e)(5)(iii), extending 1020.30(m)(1) to the mammographic range: HVL >= kVp/100 mm Al;
# unverified here). Optional upper bound HVL < kVp/100 + C by target/filter (ACR Mammography QC Manual; unverified).
MAMMO_UPPER_C_MM_AL: dict[str, float] = {"Mo/Mo": 0.12, "Mo/Rh": 0.19, "Rh/Rh": 0.22, "W/Rh": 0.30}

Source = Literal["federal", "state", "manufacturer", "local"]
# Criterion name -> (source, citation) of the default limit.
DEFAULT_SOURCES: dict[str, Source] = {
    "coefficient_of_variation": "federal", "range_fraction": "state", "linearity": "federal",
    "kvp_accuracy": "manufacturer", "timer_accuracy": "manufacturer", "hvl_minimum": "federal",
    "hvl_maximum": "local", "dap_agreement": "manufacturer", "reading_validity": "local",
}
CITATIONS: dict[str, str] = {
    "coefficient_of_variation": "21 CFR 1020.31(b)(1)-(2)",
    "range_fraction": "state rule, e.g. WAC 246-225-090, OAR 333-106-0315",
    "linearity": "21 CFR 1020.31(c)",
    "kvp_accuracy": "21 CFR 1020.31(a)(4) -> manufacturer's stated accuracy (1020.30(h)(3))",
    "timer_accuracy": "21 CFR 1020.31(a)(4) -> manufacturer's stated accuracy; IEC 60601-2-54 loading time "
                      "+-(10 % + 1 ms) (clause not verified here)",
    "hvl_minimum": "21 CFR 1020.30(m)(1) Table 1 (interpolation/extrapolation per its footnote)",
    "hvl_maximum": "ACR Mammography QC Manual upper bound (unverified here)",
    "dap_agreement": "displayed dose indication +-35 %: IEC 60601-2-54 203.6.4.5 (radiography) and 21 CFR "
                     "1020.32(k)(6) for fluoroscopic air kerma displays (clause numbers not verified here)",
    "reading_validity": "the meter's own validity flags",
}
# The federal value of each limit a "federal" source may claim.
FEDERAL_VALUES: dict[str, tuple[str, Any]] = {
    "coefficient_of_variation": ("reproducibility_max_cv", 0.05),
    "linearity": ("linearity_max_coefficient", 0.10),
}

DEFAULT_TABLE = "qc.limits"


class QcLimitsError(ValueError):
    """A limits table that cannot be used; the message names each bad key."""


class QcLimits(BaseModel):
    """Limits of the QC analyses. Defaults: US federal (21 CFR 1020.30/1020.31) and the reference's common defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has inf and nan

    jurisdiction: str = Field("US federal (21 CFR 1020.30, 1020.31)", description="Label shown with every result.")

    # 21 CFR 1020.31(b)(1): coefficient of variation of air kerma no greater than 0.05. (b)(2): compliance is based on
    # 10 consecutive measurements within 1 hour. States' shortcuts use the range instead: Washington WAC 246-225-090,
    # 4 exposures, Emax - Emin <= 0.10 mean; Oregon OAR 333-106-0315, mean >= 5 (Emax - Emin), i.e. range <= 0.20 mean.
    reproducibility_method: Literal["cv", "range"] = Field("cv", description="cv: s/mean; range: (max-min)/mean.")
    reproducibility_max_cv: Fraction = 0.05
    reproducibility_max_range_fraction: Fraction | None = Field(
        None, description="Limit of (max - min)/mean; required with reproducibility_method = 'range'.")
    reproducibility_min_exposures: int = Field(10, ge=2, le=100)
    reproducibility_max_span_s: float | None = Field(3600.0, gt=0, description="All exposures within this many "
                                                     "seconds when their times are known; null: not checked.")

    # 21 CFR 1020.31(c): |X1 - X2| <= 0.10 (X1 + X2), X = average mGy/mAs at two adjacent mA or mAs stations.
    linearity_max_coefficient: Fraction = 0.10
    linearity_min_exposures_per_station: int = Field(1, ge=1, le=100)
    # 1020.31(c)(1), (3): for continuous selection the two settings differ by no more than a factor of 2; a pair
    # farther apart is no linearity pair (incomplete). null: any adjacent stations (discrete selectors).
    linearity_max_station_ratio: float | None = Field(2.0, ge=1)
    linearity_max_span_s: float | None = Field(3600.0, gt=0, description="Both stations' exposures within this many "
                                               "seconds when their times are known (unverified for 1020.31(c): the "
                                               "1-hour window of 1020.31(b)(2) is used); null: not checked.")

    # 21 CFR 1020.31(a)(4) defers to the manufacturer's stated accuracy; the reference's common defaults: kVp ±5 % of
    # indicated, timer ±10 % of indicated for set times above 50 ms.
    kvp_tolerance_fraction: Fraction = 0.05
    kv_quantity: Literal["peak", "average", "practical_peak"] = Field(
        "peak", description="The kV quantity the kVp criterion judges; named in the criterion. The meter's `kvp` "
                            "reading is taken to be this quantity (Victoreen 4000M+: its effective kV).")
    # Exposure time: |measured - set| <= fraction x set + absolute part, so 2-30 ms digital exposures are judged
    # with a tolerance a timer can meet (IEC 60601-2-54 style +-(10 % + 1 ms); clause not verified here).
    timer_tolerance_fraction: Fraction = 0.10
    timer_tolerance_ms: float = Field(1.0, ge=0, description="Absolute part of the timer tolerance, ms.")
    timer_min_set_time_ms: float = Field(0.0, ge=0, description="The timer limit applies to set times above this "
                                         "(0: every exposure is judged).")

    # 21 CFR 1020.30(m)(1) Table 1; linear interpolation between rows. A name from HVL_TABLES or explicit [kV, mm] rows.
    hvl_min_table_mm_al: tuple[HvlRow, ...] = Field(HVL_MIN_CFR_2006, min_length=2)

    # Which rule an X-ray unit's beam quality is judged by: a 1020.30(m)(1) column, or mammography (kVp/100).
    hvl_rule: Literal["table", "mammography"] = "table"
    mammography_target_filter: str | None = Field(None, description="With hvl_rule = 'mammography': the anode/filter "
                                                  "(Mo/Mo, Mo/Rh, Rh/Rh, W/Rh) to also check the upper bound.")

    # Displayed/recorded dose indication (DAP, air kerma) of the modality against the measurement: +-35 % (see
    # CITATIONS["dap_agreement"]). A site's tighter limit is dap_local_tolerance_fraction (source "local").
    dap_tolerance_fraction: Fraction = 0.35
    dap_local_tolerance_fraction: Fraction | None = None

    sources: dict[str, Source] = Field(default_factory=dict, description="Criterion name -> source of its limit, "
                                       "overriding DEFAULT_SOURCES (e.g. a state's own limit: 'state').")

    @field_validator("hvl_min_table_mm_al", mode="before")
    @classmethod
    def _named_table(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in HVL_TABLES:
                raise ValueError(f"unknown HVL table {value!r}; use one of {sorted(HVL_TABLES)} or [kV, mm] rows")
            return HVL_TABLES[value]
        return value

    @field_validator("hvl_min_table_mm_al")
    @classmethod
    def _increasing_kv(cls, rows: tuple[HvlRow, ...]) -> tuple[HvlRow, ...]:
        kvs = [kv for kv, _ in rows]
        if any(b <= a for a, b in zip(kvs, kvs[1:])):
            raise ValueError("HVL table rows must be in strictly increasing kV order")
        return rows

    @model_validator(mode="after")
    def _range_limit_given(self) -> QcLimits:
        if self.reproducibility_method == "range" and self.reproducibility_max_range_fraction is None:
            raise ValueError("reproducibility_method = 'range' needs reproducibility_max_range_fraction")
        if self.mammography_target_filter and self.mammography_target_filter not in MAMMO_UPPER_C_MM_AL:
            raise ValueError(f"mammography_target_filter: one of {sorted(MAMMO_UPPER_C_MM_AL)}")
        unknown = sorted(set(self.sources) - set(DEFAULT_SOURCES))
        if unknown:
            raise ValueError(f"sources: unknown criterion {unknown}; one of {sorted(DEFAULT_SOURCES)}")
        for name, (key, federal) in FEDERAL_VALUES.items():
            if self.source_of(name) == "federal" and getattr(self, key) != federal:
                raise ValueError(f"sources.{name} = 'federal' but {key} = {getattr(self, key)} is not the federal "
                                 f"{federal}: say 'state' or 'local'")
        return self

    def source_of(self, criterion: str) -> Source | None:
        """Where the limit of `criterion` comes from (a changed federal limit defaults to 'local')."""
        if criterion in self.sources:
            return self.sources[criterion]
        default = DEFAULT_SOURCES.get(criterion)
        key, federal = FEDERAL_VALUES.get(criterion, (None, None))
        if default == "federal" and key is not None and getattr(self, key) != federal:
            return "local"
        if criterion == "dap_agreement" and self.dap_local_tolerance_fraction is not None:
            return "local"
        if criterion == "hvl_minimum" and self.hvl_rule == "table" and \
                self.hvl_min_table_mm_al not in HVL_TABLES.values():
            return "local"
        return default

    @property
    def dap_tolerance(self) -> float:
        """The DAP/air-kerma display tolerance in force: the local one when set, else the +-35 % default."""
        return self.dap_local_tolerance_fraction or self.dap_tolerance_fraction


def _format_errors(where: str, err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        key = ".".join([where, *(str(part) for part in item["loc"])])
        if item["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        else:
            lines.append(f"{key}: {item['msg'].removeprefix('Value error, ')} (got {item.get('input')!r})")
    return "\n".join(lines)


def limits_from_mapping(raw: Mapping[str, Any], where: str = DEFAULT_TABLE) -> QcLimits:
    """Validate a limits table (already parsed); raise QcLimitsError naming each bad key as `where.key`."""
    try:
        return QcLimits.model_validate(dict(raw))
    except ValidationError as exc:
        raise QcLimitsError(_format_errors(where, exc)) from None


def limits_from_toml(text: str, table: str = DEFAULT_TABLE) -> QcLimits:
    """Limits from the dotted `table` of a TOML document (e.g. `[qc.limits]`); defaults when the table is absent."""
    try:
        raw: Any = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise QcLimitsError(f"not valid TOML: {exc}") from None
    for part in table.split("."):
        raw = raw.get(part, {}) if isinstance(raw, dict) else None
    if not isinstance(raw, dict):
        raise QcLimitsError(f"{table}: must be a table")
    return limits_from_mapping(raw, table)
