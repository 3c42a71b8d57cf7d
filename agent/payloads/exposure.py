"""Exposure events and dose summaries extracted from DICOM image headers and Radiation Dose SRs.

Every optional field is null when the object does not carry it: values are converted, never guessed. No patient
identifier and no UID appears in clear: studies and events are keyed hashes (agent.pseudonym.make_ref).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.payloads.base import Envelope

Magnitude = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Signed = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
AgeYears = Annotated[int, Field(ge=0, le=90)]
Sex = Literal["M", "F", "O"]
Source = Literal["image", "rdsr"]
Laterality = Literal["L", "R", "B"]
Purpose = Literal["clinical", "qc"]
EntranceDoseQuantity = Literal["entrance_surface_dose", "incident_air_kerma", "incident_air_kerma_rp"]
Derivable = Literal["exposure_time_ms", "exposure_mas"]
PURPOSE_DOC = ('"clinical" (a patient exposure) or "qc" (quality control: a QC/phantom/flat-field object, a "not a '
               'patient" name, ID, description or protocol, or received while a QC session of the room was open). '
               "Dose monitoring, repeats and summaries count only clinical exposures.")


def _opt(description: str):
    return Field(None, description=description)


class FieldWarning(BaseModel):
    """A field whose published value is not the value as sent (null, or changed by the privacy policy), and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(description="Name of the payload field concerned, e.g. dap_gy_m2 or protocol.")
    reason: str = Field(description='Why: a value present but not usable, published as null ("unparseable", '
                                    '"placeholder zero", "unknown unit", "out of range"), or free text changed by '
                                    'privacy.free_text ("screened": identifiers, long numbers or dates removed; '
                                    '"not-in-catalog": published as "other").')
    raw: str | None = Field(None, description="The text as sent, only when number-like (never free text, never "
                                              "patient data).")


WARNINGS_DOC = ("Fields whose published value differs from the value as sent, one entry per field and reason; empty "
                "when none. Screened free text is listed without the removed text.")


class ExposureEvent(Envelope):
    """One irradiation event: one image's exposure, or one RDSR irradiation event (TID 10003)."""

    KIND: ClassVar[str] = "exposure"
    schema_: Literal["xray.exposure/1"] = Field("xray.exposure/1", alias="schema",
                                              description="Payload schema/version.")

    source: Source = Field(description='Where the values come from: "image" header or "rdsr" irradiation event.')
    modality: str | None = _opt(
        "DICOM Modality (0008,0060) of the image, e.g. DX, CR, MG, XA, RF. For an RDSR event the kind of unit the "
        "report came from (DX, RF, XA or MG; never SR): from the images it references, the mammography template, "
        "the acquisition device type, fluoroscopy events, else the modality of the same sender's images.")
    manufacturer: str | None = _opt("Manufacturer (0008,0070); RDSR: else Device Observer Manufacturer (121014).")
    model: str | None = _opt("Manufacturer's Model Name (0008,1090); RDSR: else Device Observer Model Name (121015).")
    station_name: str | None = _opt("Station Name (0008,1010); RDSR: else Device Observer Name (121013); screened (privacy.free_text).")
    device_serial: str | None = _opt("Device Serial Number (0018,1000); RDSR: else Device Observer Serial Number "
                                     "(121016).")
    acquired_at: datetime | None = _opt(
        "When the exposure was made, ISO 8601 with the offset of the object (Timezone Offset From UTC) or of the "
        "site's zone; null when the object has no acquisition date and time.")
    received_at: datetime = Field(description="When the agent received the object, UTC.")
    body_part: str | None = _opt("Body Part Examined (CS) or anatomic region / target region code meaning, screened "
                                  "(privacy.free_text).")
    view: str | None = _opt("View Position (CS, e.g. PA, LL, CC, MLO) or view code meaning, screened.")
    protocol: str | None = _opt("Protocol Name, series description or acquisition protocol, screened (or the "
                                 "site's catalog name, or \"other\": privacy.free_text).")
    kvp: Magnitude | None = _opt("Peak tube voltage, kV (mean over pulses when given per pulse).")
    tube_current_ma: Magnitude | None = _opt("Tube current, mA (mean over pulses when given per pulse).")
    exposure_time_ms: Magnitude | None = _opt("Exposure time, ms (sum over pulses when given per pulse).")
    exposure_mas: Magnitude | None = _opt("Tube current-time product, mAs (from µAs when present).")
    dap_gy_m2: Magnitude | None = _opt("Dose-area product (KAP), Gy·m².")
    entrance_dose_mgy: Magnitude | None = _opt("Entrance dose / entrance exposure at the reference point, mGy.")
    entrance_dose_quantity: EntranceDoseQuantity | None = _opt(
        "Which quantity entrance_dose_mgy is (they differ by the backscatter factor): entrance_surface_dose (image "
        "Entrance Dose, at the patient's surface), incident_air_kerma (image, Entrance Dose Derivation IAK), "
        "incident_air_kerma_rp (RDSR Entrance Exposure at RP, 111636).")
    dose_rp_gy: Magnitude | None = _opt("Air kerma at the patient entrance reference point, Dose (RP), Gy.")
    exposure_index: Magnitude | None = _opt("Exposure index EI (IEC 62494-1), unitless.")
    target_exposure_index: Magnitude | None = _opt("Target exposure index EI_T (IEC 62494-1), unitless.")
    deviation_index: Signed | None = _opt(
        "Deviation index DI (IEC 62494-1), unitless: as sent, else computed as 10·log10(EI/EI_T) when both are "
        "present (rounded to 0.01).")
    sid_mm: Magnitude | None = _opt("Source to detector distance, mm (values sent in dm are converted).")
    pulses: Count | None = _opt("Number of pulses of the irradiation event (RDSR), count.")
    derived: list[Derivable] | None = _opt(
        "Fields the report did not state and the agent computed (RDSR): exposure_time_ms from Number of Pulses "
        "(113768) x Pulse Width (113793), or the sum of per-pulse widths, else Irradiation Duration (113742); "
        "exposure_mas from that time x tube current. Null when nothing was derived.")
    average_glandular_dose_mgy: Magnitude | None = _opt(
        "Mammography: average glandular dose, mGy (image Organ Dose (0040,0316) in dGy; RDSR 111631).")
    compression_thickness_mm: Magnitude | None = _opt(
        "Mammography: compressed breast thickness, mm (image Body Part Thickness (0018,11A0); RDSR 111633).")
    compression_force_n: Magnitude | None = _opt(
        "Mammography: compression force, N (image Compression Force (0018,11A2); RDSR 111647).")
    anode_target_material: str | None = _opt(
        "Anode target material as a DICOM defined term, upper case (MOLYBDENUM, RHODIUM, TUNGSTEN, ...): Anode Target "
        "Material (0018,1191) or the report's coded value (111632).")
    filter_material: str | None = _opt(
        "Filter material(s) as DICOM defined terms, upper case, \\-separated (MOLYBDENUM, RHODIUM, SILVER, ALUMINUM, "
        "COPPER, ...): Filter Material (0018,7050) or the report's coded X-Ray Filter Material (113757).")
    hvl_mm_al: Magnitude | None = _opt("Half value layer, mm Al (image (0040,0314); RDSR 111634).")
    laterality: Laterality | None = _opt(
        "L, R or B: Image Laterality (0020,0062), else Laterality (0020,0060), else the report's coded laterality.")
    purpose: Purpose | None = _opt(PURPOSE_DOC)
    irradiation_type: Literal["fluoroscopy", "acquisition"] | None = _opt(
        "Kind of irradiation: RDSR Irradiation Event Type, or Radiation Setting (SC/GR) of XA/RF images; "
        "radiographs are acquisitions.")
    study_ref: str | None = _opt("Keyed hash of the Study Instance UID (joins events of one study), not the UID.")
    patient_ref: str | None = _opt(
        "Keyed hash of the Patient ID (with its issuer) under the site secret, not the ID: joins one patient's studies "
        "for patient-level cumulative dose; recomputable only on the room PC (xray-agent lookup).")
    event_ref: str = Field(description="Keyed hash of the irradiation event's identity (Irradiation Event UID when "
                                       "present), equal for the image and RDSR views of one event.")
    patient_age_years: AgeYears | None = _opt("Patient age in whole years, capped at 90; null if unknown or disabled.")
    patient_sex: Sex | None = _opt("Patient sex M, F or O; null if unknown or disabled.")
    patient_weight_kg: Magnitude | None = _opt(
        "Patient's Weight (0010,1030), kg; null if unknown, 0, or disabled (published with age and sex only).")
    patient_size_m: Magnitude | None = _opt(
        "Patient's Size (0010,1020), m; null if unknown, 0, over 3 m, or disabled (published with age and sex only).")
    repeat_of: str | None = _opt(
        "Dose monitoring: event_ref of the earlier exposure this one repeats (same study, and same body part and view "
        "as the dose rules' repeat key says, acquired within their repeat window); null if not a repeat, or if dose "
        "monitoring is off.")
    supersedes: str | None = _opt(
        "event_ref of the event this one corrects: the same object (same SOP instance, same place in it) was "
        "received before with different recorded content; null otherwise.")
    warnings: list[FieldWarning] = Field(default_factory=list, description=WARNINGS_DOC)


class PlaneTotals(BaseModel):
    """One plane's accumulated totals (one Accumulated X-Ray Dose Data container, 113702), same units as the sums."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dap_total_gy_m2: Magnitude | None = _opt("Dose-area product total, Gy·m².")
    fluoro_dap_total_gy_m2: Magnitude | None = _opt("Fluoroscopy dose-area product total, Gy·m².")
    acquisition_dap_total_gy_m2: Magnitude | None = _opt("Acquisition dose-area product total, Gy·m².")
    dose_rp_total_gy: Magnitude | None = _opt("Dose (RP) total, Gy.")
    fluoro_dose_rp_total_gy: Magnitude | None = _opt("Fluoroscopy Dose (RP) total, Gy.")
    acquisition_dose_rp_total_gy: Magnitude | None = _opt("Acquisition Dose (RP) total, Gy.")
    fluoro_time_total_s: Magnitude | None = _opt("Total fluoroscopy time, s.")
    acquisition_time_total_s: Magnitude | None = _opt("Total acquisition time, s.")
    radiographic_frames_total: Count | None = _opt("Total number of radiographic frames, count.")


class DoseSummary(Envelope):
    """Accumulated totals of one RDSR (TID 10002/10007), summed over planes; re-sent when the report grows."""

    KIND: ClassVar[str] = "dose-summary"
    schema_: Literal["xray.dose-summary/1"] = Field("xray.dose-summary/1", alias="schema",
                                                 description="Payload schema/version.")

    source: Literal["rdsr"] = Field("rdsr", description="Always rdsr: totals come from dose reports only.")
    modality: str | None = _opt("The kind of unit the report came from: DX, RF, XA or MG (as on its events).")
    manufacturer: str | None = _opt("Manufacturer (0008,0070).")
    model: str | None = _opt("Manufacturer's Model Name (0008,1090).")
    station_name: str | None = _opt("Station Name (0008,1010), screened (privacy.free_text).")
    device_serial: str | None = _opt("Device Serial Number (0018,1000).")
    irradiation_started_at: datetime | None = _opt("Start of X-Ray Irradiation (113809), ISO 8601 with offset.")
    irradiation_ended_at: datetime | None = _opt("End of X-Ray Irradiation (113810), ISO 8601 with offset.")
    received_at: datetime = Field(description="When the agent received the report, UTC.")
    study_ref: str | None = _opt("Keyed hash of the Study Instance UID, not the UID.")
    patient_ref: str | None = _opt("Keyed hash of the Patient ID under the site secret, as on exposure events.")
    events_count: Count = Field(description="Number of irradiation events in this report, count.")
    dap_total_gy_m2: Magnitude | None = _opt("Dose-area product total, Gy·m².")
    fluoro_dap_total_gy_m2: Magnitude | None = _opt("Fluoroscopy dose-area product total, Gy·m².")
    acquisition_dap_total_gy_m2: Magnitude | None = _opt("Acquisition dose-area product total, Gy·m².")
    dose_rp_total_gy: Magnitude | None = _opt("Dose (RP) total, Gy.")
    fluoro_dose_rp_total_gy: Magnitude | None = _opt("Fluoroscopy Dose (RP) total, Gy.")
    acquisition_dose_rp_total_gy: Magnitude | None = _opt("Acquisition Dose (RP) total, Gy.")
    fluoro_time_total_s: Magnitude | None = _opt("Total fluoroscopy time, s.")
    acquisition_time_total_s: Magnitude | None = _opt("Total acquisition time, s.")
    radiographic_frames_total: Count | None = _opt("Total number of radiographic frames, count.")
    by_plane: dict[str, PlaneTotals] | None = _opt(
        'Biplane systems: each plane\'s own totals, keyed "A" / "B" (CID 10003 Plane A / Plane B); null for a '
        "single plane. The *_total fields above are their sums.")
    average_glandular_dose_mgy_by_laterality: dict[Laterality, Magnitude] | None = _opt(
        "Mammography: Accumulated Average Glandular Dose per breast (111637, TID 10005), mGy, keyed L / R (B when "
        "reported for both).")
    purpose: Purpose | None = _opt(PURPOSE_DOC + " A report is qc when it is, or when all its events are.")
    patient_age_years: AgeYears | None = _opt("Patient age in whole years, capped at 90; null if unknown or disabled.")
    patient_sex: Sex | None = _opt("Patient sex M, F or O; null if unknown or disabled.")
    warnings: list[FieldWarning] = Field(default_factory=list, description=WARNINGS_DOC)
    patient_weight_kg: Magnitude | None = _opt("Patient's Weight (0010,1030), kg; as on exposure events.")
    patient_size_m: Magnitude | None = _opt("Patient's Size (0010,1020), m; as on exposure events.")
