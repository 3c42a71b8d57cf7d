"""A finished QC session: the test, who ran it with which instruments, every exposure (set technique, measured values
and the meter readings with their raw frames) and the verdict with each criterion's inputs, value and limit.

Published once on `qc/session` when the technologist finishes the session; the same document is the agent's local
audit record (agent/qc/store.py). Units are in the field names, as everywhere: kV, mA, mAs, ms, mm, cm², µGy, Gy·m².
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.payloads.base import Envelope
from agent.payloads.qc import Key, Value
from agent.qc.models import TestResult, TestType

Magnitude = Annotated[float, Field(ge=0, allow_inf_nan=False)]
TechniqueSource = Literal["dicom", "manual", "corrected"]


def _opt(description: str):
    return Field(None, description=description)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SetTechnique(_Part):
    """The technique set on the console for one exposure, from the modality's DICOM or typed in."""

    set_kvp: Magnitude | None = _opt("Set tube voltage, kV.")
    set_ma: Magnitude | None = _opt("Set tube current, mA.")
    set_mas: Magnitude | None = _opt("Set current-time product, mAs.")
    set_time_ms: Magnitude | None = _opt("Set exposure time, ms.")
    filtration_mm_al: Magnitude | None = _opt("Added/total filtration, mm Al (typed in; DICOM does not say).")
    sid_mm: Magnitude | None = _opt("Source to image distance, mm.")
    field_area_cm2: Magnitude | None = _opt("Field area at the measuring plane, cm² (typed in).")
    dicom_dap_gy_m2: Magnitude | None = _opt("Dose-area product the modality reported for this exposure, Gy·m².")
    high_level_control: Magnitude | None = _opt("Fluoroscopy: 1 while the high-level control was active, else 0.")
    displayed_air_kerma_rate_mgy_per_min: Magnitude | None = _opt("Fluoroscopy: air-kerma rate the unit displayed, "
                                                                  "mGy/min (typed in).")
    displayed_air_kerma_mgy: Magnitude | None = _opt("Fluoroscopy: cumulative air kerma the unit displayed, mGy "
                                                     "(typed in, or Dose (RP) of its dose report).")
    dicom_agd_mgy: Magnitude | None = _opt("Mammography: average glandular dose the modality reported, mGy.")
    dicom_hvl_mm_al: Magnitude | None = _opt("Mammography: HVL the modality reported, mm Al.")
    dicom_exposure_index: Magnitude | None = _opt("Exposure index EI of the image (IEC 62494-1).")
    compression_thickness_mm: Magnitude | None = _opt("Mammography: compressed thickness, mm.")
    phantom_thickness_mm: Magnitude | None = _opt("Phantom thickness in the beam (AEC tests), mm (typed in).")
    target_filter: str | None = _opt("Mammography: anode target / filter from the image's DICOM, e.g. 'Mo/Rh'.")
    source: TechniqueSource | None = _opt("dicom: from the modality's exposure event; manual: typed in; corrected: "
                                          "from DICOM, then changed by the technologist; null: none yet.")
    confirmed: bool = Field(False, description="The technologist confirmed or entered these values.")
    event_ref: str | None = _opt("event_ref of the exposure event (qc technique from DICOM), as on `exposure`.")
    dicom_reported: dict[Key, Value | str] = Field(default_factory=dict, description="The technique as the "
                                                   "modality reported it in DICOM (set_kvp, set_mas ..., "
                                                   "target_filter), kept beside confirmed or corrected values as a "
                                                   "cross-check.")


class SessionReading(_Part):
    """A meter reading of the session, as published on `qc/reading` (same msg_id), raw frame included."""

    msg_id: str
    instrument_id: str
    driver: str
    measured_at: datetime
    quantities: dict[Key, Value]
    increments: dict[Key, Value] = Field(default_factory=dict, description="For meters that accumulate (a DAP "
                                         "meter's total): the increase since the meter's previous reading, used as "
                                         "this exposure's value.")
    flags: list[str] = Field(default_factory=list)
    raw_frame: str = Field(description="As on qc/reading: escaped text of the frame(s) as received.")
    raw_frame_bytes: int = Field(ge=0)


class SessionExposure(_Part):
    """One exposure: the set technique paired with what the meter(s) measured."""

    number: int = Field(ge=1, description="Order in the session, from 1.")
    measured_at: datetime = Field(description="When the first reading of this exposure was completed, UTC.")
    technique: SetTechnique
    measured: dict[Key, Value] = Field(description="Measured values the analysis used: kvp, air_kerma_ugy, "
                                                   "exposure_time_ms, hvl_mm_al, dap_gy_m2 (per exposure).")
    excluded: dict[Key, list[str]] = Field(default_factory=dict, description="Quantities left out of the analysis "
                                           "because the meter flagged the reading: quantity -> the flags.")
    flags: list[str] = Field(default_factory=list, description="Every flag of this exposure's readings, sorted.")
    readings: list[SessionReading]


class XrayUnit(_Part):
    """The X-ray unit under test: the configured id of the room's unit and what its DICOM says."""

    unit_id: str | None = _opt("The room's X-ray unit as configured (qc.unit_id).")
    manufacturer: str | None = _opt("Manufacturer (0008,0070) of the session's exposures.")
    model: str | None = _opt("Manufacturer's Model Name (0008,1090).")
    serial_number: str | None = _opt("Device Serial Number (0018,1000).")
    station_name: str | None = _opt("Station Name (0008,1010).")
    conflicts: list[str] = Field(default_factory=list, description="Values that differ between the session's "
                                 "exposures (e.g. 'model: A, B'): the exposures may come from more than one unit.")


class InstrumentRecord(_Part):
    """An instrument of the session as configured when the session started, calibration included."""

    id: str
    driver: str
    model: str | None = None
    serial_number: str | None = None
    detector: str | None = None
    calibration_date: str | None = Field(None, description="YYYY-MM-DD.")
    calibration_due: str | None = Field(None, description="YYYY-MM-DD.")
    calibration_status: Literal["valid", "overdue", "unknown"] = Field(
        "unknown", description="At the session's start: overdue when calibration_due had passed.")
    calibration_factor: float | None = None
    calibration_factor_unit: str | None = None
    air_density_correction: str | None = Field(None, description="applied_by_meter, not_applied or not_needed.")
    temperature_c: float | None = None
    pressure_hpa: float | None = None


class Review(_Part):
    """A physicist's review and sign-off of a finished session."""

    reviewed_by: str = Field(description="Name of the reviewer as typed in.")
    reviewed_at: datetime = Field(description="When the sign-off was given, with its offset.")
    comment: str = Field("", description="The reviewer's comment.")


class QcSession(Envelope):
    """A finished QC session and its verdict."""

    KIND: ClassVar[str] = "qc/session"
    schema_: Literal["xray.qc-session/1"] = Field("xray.qc-session/1", alias="schema",
                                                 description="Payload schema/version.")

    session_ref: str = Field(description="Random id of the session; qc/reading messages of the session carry it.")
    test_type: TestType
    operator: str = Field(description="Who ran the test: initials or staff id as typed in.")
    instruments: list[str] = Field(description="Instrument ids from the agent's config.")
    started_at: datetime
    finished_at: datetime
    match_window_s: float = Field(description="Window used to pair readings with DICOM exposure events, s.")
    exposures: list[SessionExposure]
    result: TestResult = Field(description="The verdict, each criterion with its inputs, value, limit and outcome.")
    unit: XrayUnit | None = _opt("The X-ray unit under test.")
    instrument_records: list[InstrumentRecord] = Field(default_factory=list, description="The instruments' "
                                                       "models, serial numbers and calibration at the start.")
    time_zone: str | None = _opt("The site's time zone (IANA name); reports show times in it with the offset.")
    review: Review | None = _opt("The physicist's sign-off; null until reviewed.")
    revision: int = Field(0, ge=0, description="0 when finished; +1 with each review published as an update of "
                                               "this record (msg_id qcs-<ref>-r<n>).")
