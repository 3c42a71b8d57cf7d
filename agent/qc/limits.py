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
Also not verified here (the search tool returned the 2001/2008 GPO pages of 1020.32 but not the paragraphs): the
fluoroscopy numbers and paragraph letters of 1020.32(d), (e) and (k)(6) (88/176 mGy/min, +-35 % from 6 mGy/min and
100 mGy), the 21 CFR 900.12(e)(5) paragraphs for mammography and the ACR DM phantom's 2.0 mGy; CITATIONS says so.

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
    "fluoro_air_kerma_rate": "federal", "fluoro_display_accuracy": "federal", "mammo_phantom_dose": "federal",
    "mammo_kvp_accuracy": "manufacturer", "mammo_kvp_reproducibility": "local", "mammo_output_reproducibility": "local",
    "aec_reproducibility": "local", "aec_thickness_tracking": "local",
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
    # Fluoroscopy, as recalled from the 2005 final rule (70 FR 33998) text of 21 CFR 1020.32; not verified against
    # the live eCFR here: (e)(1) AKR <= 88 mGy/min in normal mode (systems made on or after 1995-05-19), (e)(2)
    # <= 176 mGy/min with the optional high-level control active; measured at the points of (d) (source below the
    # table: 1 cm above the tabletop; above the table: 30 cm above it; C-arm: 30 cm from the image receptor's input
    # surface); image recording excepted. (k)(6): displayed AKR and cumulative air kerma within +-35 % of actual
    # over 6 mGy/min and 100 mGy up to the maximum indication, irradiation time > 3 s.
    "fluoro_air_kerma_rate": "21 CFR 1020.32(e)(1)-(2), measured per 1020.32(d) (paragraph letters unverified here)",
    "fluoro_display_accuracy": "21 CFR 1020.32(k)(6) (paragraph letters unverified here)",
    "mammo_phantom_dose": "21 CFR 900.12(e)(5)(vi): AGD of a 4.2 cm 50/50 compressed breast <= 3.0 mGy; ACR "
                          "Digital Mammography QC Manual (2018): ACR DM phantom <= 2.0 mGy (unverified here)",
    "mammo_kvp_accuracy": "21 CFR 900.12(e)(5)(ii): kVp accurate within +-5 % of indicated (unverified here)",
    "mammo_kvp_reproducibility": "21 CFR 900.12(e)(5)(ii): kVp coefficient of variation <= 0.02 (unverified here)",
    "mammo_output_reproducibility": "21 CFR 900.12(e)(5)(iv)/(e)(5)(vii) air kerma reproducibility, CV <= 0.05 "
                                    "(unverified here)",
    "aec_reproducibility": "AEC reproducibility: CV <= 0.05, as 21 CFR 1020.31(b) for manual technique (local "
                           "choice: no federal limit is set for AEC)",
    "aec_thickness_tracking": "AEC thickness tracking: within +-tolerance of the mean (AAPM Report 74 / state "
                              "practice; a local limit)",
}
# The federal value of each limit a "federal" source may claim.
FEDERAL_VALUES: dict[str, tuple[str, Any]] = {
    "coefficient_of_variation": ("reproducibility_max_cv", 0.05),
    "linearity": ("linearity_max_coefficient", 0.10),
    "fluoro_display_accuracy": ("fluoro_display_tolerance_fraction", 0.35),
    "mammo_phantom_dose": ("mammo_phantom_dose_limit_mgy", 3.0),
}
# Named phantom-dose limits: MQSA's 3.0 mGy (federal), the ACR digital mammography phantom's 2.0 mGy.
MAMMO_PHANTOM_DOSE_LIMITS_MGY: dict[str, float] = {"mqsa": 3.0, "acr_dm_phantom": 2.0}
ConversionRow = tuple[Annotated[float, Field(gt=0, allow_inf_nan=False)],
                      Annotated[float, Field(gt=0, allow_inf_nan=False)]]

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

    # Fluoroscopy (see CITATIONS["fluoro_air_kerma_rate"]). The rate of a run of continuous fluoroscopy is the mean
    # of its samples after the settle time (the automatic brightness control settles), once they agree within
    # fluoro_stability_fraction; samples farther apart than fluoro_run_gap_s are separate runs.
    fluoro_max_air_kerma_rate_mgy_per_min: float = Field(88.0, gt=0, description="Normal mode, mGy/min.")
    fluoro_max_air_kerma_rate_high_level_mgy_per_min: float = Field(176.0, gt=0, description="High-level control "
                                                                    "active, mGy/min.")
    fluoro_measurement_point: str = Field("", max_length=200, description="The geometry used (e.g. 'C-arm, 30 cm "
                                          "from the input surface'), recorded with the criterion.")
    fluoro_settle_s: float = Field(3.0, ge=0, le=60, description="Samples of a run within this many seconds of its "
                                   "first sample are not the measurement.")
    fluoro_run_gap_s: float = Field(3.0, gt=0, le=60, description="A longer gap between samples starts a new run, s.")
    fluoro_stability_fraction: Fraction = Field(0.05, description="(max - min) / mean of a run's settled samples.")
    fluoro_min_settled_samples: int = Field(2, ge=1, le=100)
    fluoro_display_tolerance_fraction: Fraction = 0.35
    fluoro_display_min_rate_mgy_per_min: float = Field(6.0, ge=0, description="1020.32(k)(6) range starts here.")
    fluoro_display_min_air_kerma_mgy: float = Field(100.0, ge=0, description="1020.32(k)(6) range starts here.")

    # Mammography. Phantom dose: a number (mGy) or a named limit of MAMMO_PHANTOM_DOSE_LIMITS_MGY.
    mammo_phantom_dose_limit_mgy: float = Field(3.0, gt=0)
    # Conversion from entrance air kerma (no backscatter) to the phantom's AGD by HVL: [HVL mm Al, mGy/mGy] rows,
    # linear interpolation, no extrapolation. No default is shipped: take the factors for your phantom from a
    # published table (Dance et al. 2000, Phys Med Biol 45:3225, g x c x s; or the ACR DM QC manual's table) and
    # name it in mammo_agd_conversion_source.
    mammo_agd_conversion: tuple[ConversionRow, ...] | None = None
    mammo_agd_conversion_source: str = Field("", max_length=200)
    mammo_kvp_tolerance_fraction: Fraction = 0.05
    mammo_kvp_max_cv: Fraction = 0.02
    mammo_output_max_cv: Fraction = 0.05
    mammo_min_exposures: int = Field(4, ge=2, le=100)

    # AEC. quantity: detector-side air kerma, the images' exposure index, or auto (air kerma when every exposure
    # has it, else EI).
    aec_quantity: Literal["auto", "air_kerma", "exposure_index"] = "auto"
    aec_max_cv: Fraction = 0.05
    aec_min_exposures: int = Field(4, ge=2, le=100)
    aec_tracking_tolerance_fraction: Fraction = 0.10

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

    @field_validator("mammo_phantom_dose_limit_mgy", mode="before")
    @classmethod
    def _named_dose_limit(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in MAMMO_PHANTOM_DOSE_LIMITS_MGY:
                raise ValueError(f"unknown named limit {value!r}; a number (mGy) or one of "
                                 f"{sorted(MAMMO_PHANTOM_DOSE_LIMITS_MGY)}")
            return MAMMO_PHANTOM_DOSE_LIMITS_MGY[value]
        return value

    @field_validator("mammo_agd_conversion")
    @classmethod
    def _increasing_hvl(cls, rows: tuple | None) -> tuple | None:
        if rows is not None and (len(rows) < 2 or any(b[0] <= a[0] for a, b in zip(rows, rows[1:]))):
            raise ValueError("at least two [HVL mm Al, factor] rows in strictly increasing HVL order")
        return rows

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
        if self.fluoro_max_air_kerma_rate_high_level_mgy_per_min < self.fluoro_max_air_kerma_rate_mgy_per_min:
            raise ValueError("fluoro_max_air_kerma_rate_high_level_mgy_per_min is below the normal-mode limit")
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
        rates = (self.fluoro_max_air_kerma_rate_mgy_per_min, self.fluoro_max_air_kerma_rate_high_level_mgy_per_min)
        if criterion == "fluoro_air_kerma_rate" and rates != (88.0, 176.0):
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
