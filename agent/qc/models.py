"""Input and result models of the QC analyses.

`QcExposure` is one exposure of a QC test: the technique set on the console (from the modality's DICOM or typed in)
paired with what the meter measured. `Criterion` and `TestResult` are what the analyses return; they are frozen,
forbid unknown keys and hold only JSON-friendly values, so a later `qc/session` payload can embed them as they are.
Units are in the field names, as in the payloads: µGy, Gy·m², mm, cm², ms, kV, mA, mAs.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Magnitude = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Number = Annotated[float, Field(allow_inf_nan=False)]
InputValue = int | Number | str | list[Number | None] | None

TestType = Literal["reproducibility", "linearity_ma", "linearity_mas", "kvp_accuracy", "timer_accuracy", "hvl",
                   "dap_agreement",
                   # Fluoroscopy (21 CFR 1020.32), mammography (21 CFR 900.12; ACR DM QC manual), AEC.
                   "fluoro_max_air_kerma_rate", "fluoro_display_accuracy", "fluoro_kvp", "fluoro_hvl",
                   "mammo_phantom_dose", "mammo_kvp", "mammo_hvl", "mammo_output_reproducibility",
                   "aec_reproducibility", "aec_thickness_tracking"]
TEST_TYPES: tuple[str, ...] = get_args(TestType)
Verdict = Literal["pass", "fail", "invalid", "incomplete"]
Comparison = Literal["<=", ">=", "abs<="]


def _opt(description: str):
    return Field(None, description=description)


class QcExposure(BaseModel):
    """One exposure of a QC test: set technique plus the meter's reading. Every value is optional because the
    technique may come partly from DICOM and partly by hand, and meters measure different things; an analysis that
    needs a missing value says which exposure lacks it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    set_kvp: Magnitude | None = _opt("Set (indicated) tube voltage, kV.")
    set_ma: Magnitude | None = _opt("Set tube current, mA.")
    set_mas: Magnitude | None = _opt("Set current-time product, mAs.")
    set_time_ms: Magnitude | None = _opt("Set exposure time, ms.")
    filtration_mm_al: Magnitude | None = _opt("Added/total filtration as set, mm Al.")
    sid_mm: Magnitude | None = _opt("Source to image (detector) distance, mm.")
    field_area_cm2: Magnitude | None = _opt(
        "Field area at the plane where air kerma was measured, cm² (for DAP = air kerma x area).")
    kvp: Magnitude | None = _opt("Measured peak tube voltage, kV.")
    air_kerma_ugy: Magnitude | None = _opt("Measured air kerma, µGy.")
    exposure_time_ms: Magnitude | None = _opt("Measured exposure time, ms.")
    hvl_mm_al: Magnitude | None = _opt("Measured half-value layer, mm Al.")
    dap_gy_m2: Magnitude | None = _opt("Dose-area product measured by a DAP meter, Gy·m².")
    dicom_dap_gy_m2: Magnitude | None = _opt("Dose-area product the modality reported in DICOM, Gy·m².")
    # Fluoroscopy: the meter's air-kerma rate (a rate meter's reading, else air kerma / integration time), and the
    # unit's own displays (typed in, or the dose report's values) for 21 CFR 1020.32(k).
    air_kerma_rate_mgy_per_min: Magnitude | None = _opt("Measured air-kerma rate, mGy/min.")
    high_level_control: Magnitude | None = _opt("1 while the fluoroscope's high-level control was active, else 0.")
    displayed_air_kerma_rate_mgy_per_min: Magnitude | None = _opt("Air-kerma rate the unit displayed, mGy/min.")
    displayed_air_kerma_mgy: Magnitude | None = _opt("Cumulative air kerma the unit displayed (or its dose report "
                                                     "gave) at the reference point, mGy.")
    # Mammography and AEC: what the modality's DICOM reports for the image.
    dicom_agd_mgy: Magnitude | None = _opt("Average glandular dose of the image as the modality reported it, mGy.")
    dicom_hvl_mm_al: Magnitude | None = _opt("HVL the modality reported for the image, mm Al.")
    dicom_exposure_index: Magnitude | None = _opt("Exposure index EI of the image (IEC 62494-1).")
    compression_thickness_mm: Magnitude | None = _opt("Compressed breast (phantom) thickness, mm.")
    phantom_thickness_mm: Magnitude | None = _opt("Phantom thickness in the beam (AEC tests), mm.")
    target_filter: str | None = _opt("Mammography anode/filter from the image's DICOM, e.g. 'Mo/Rh'.")
    measured_at: AwareDatetime | None = _opt("When the reading was taken, with its offset (for 1-hour windows).")
    technique_confirmed: bool = Field(True, description="False while the DICOM-proposed technique awaits the "
                                      "technologist's confirmation (its set values are then left out).")
    excluded: dict[str, list[str]] = Field(default_factory=dict, description="Measured quantities left out because "
                                           "the meter flagged the reading: quantity -> its flags.")

    @property
    def mas(self) -> float | None:
        """Set mAs: as set, else set mA x set time (a generator with independent mA and time selection)."""
        if self.set_mas is not None:
            return self.set_mas
        if self.set_ma is not None and self.set_time_ms is not None:
            return self.set_ma * self.set_time_ms / 1000.0
        return None


class Criterion(BaseModel):
    """One check: the values it used, what was computed, the limit, how they compare, and the outcome."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Criterion id, e.g. coefficient_of_variation, linearity, kvp_accuracy.")
    subject: str = Field(description="What it is about: 'all exposures', '80 kV', '10 mAs vs 20 mAs', 'exposure 3'.")
    inputs: dict[str, InputValue] = Field(description="Values used, the unit in each key's suffix "
                                                      "(_ugy, _kv, _mas, _ms, _mm_al, _gy_m2, _mgy_per_mas).")
    value: Number | None = Field(description="Computed value; null when it cannot be computed.")
    limit: Number | None = Field(description="Limit the value is compared with; null when it cannot be computed.")
    comparison: Comparison = Field(description="How: value <= limit, value >= limit, or |value| <= limit.")
    unit: str = Field(description="Unit of value and limit; '1' for ratios and fractions.")
    rule: str = Field(description="The formula and limit in words, e.g. 'C = s / mean <= 0.05'.")
    passed: bool | None = Field(description="null when it cannot be decided yet; see reason.")
    applies: bool = Field(True, description="False when the limit does not apply (e.g. timer at <= 50 ms); "
                                            "such a criterion does not count towards the verdict.")
    reason: str | None = Field(None, description="Why passed is null or applies is false.")
    source: Literal["federal", "state", "manufacturer", "local"] | None = Field(
        None, description="Where the limit comes from; 'federal' only when the limit is the regulation's own value.")
    citation: str | None = Field(None, description="The regulation or standard paragraph the limit comes from.")
    invalid: bool = Field(False, description="True when a reading this criterion needs was flagged by its meter "
                                             "(out of range, error, fault): not a measurement, so no verdict.")


class TestResult(BaseModel):
    """The verdict of one QC test over the exposures so far."""

    __test__: ClassVar[bool] = False  # not a pytest test class despite the name

    model_config = ConfigDict(extra="forbid", frozen=True)

    test_type: TestType
    verdict: Verdict = Field(description="fail if any applicable criterion failed; else invalid if a needed reading "
                                         "was flagged by its meter; else incomplete if any cannot be decided (or "
                                         "none exists yet); else pass.")
    reason: str | None = Field(None, description="Why the verdict is incomplete, in words for the technologist.")
    criteria: tuple[Criterion, ...] = ()
    n_exposures: int = Field(ge=0)
    jurisdiction: str = Field(description="Label of the limits applied (QcLimits.jurisdiction).")
