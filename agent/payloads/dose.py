"""Dose monitoring messages: an alert the moment an exposure or a study passes a configured level, and the daily room
summary. Like exposure events they carry no patient identifier: studies and events are the same keyed-hash refs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.payloads.base import Envelope

Finite = Annotated[float, Field(allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
AlertType = Literal["notification-level", "deviation-index", "cumulative", "patient-cumulative"]
DiBand = Literal["excessive", "over", "normal", "under", "excessively-under", "unknown"]

QUANTITY_DOC = (
    "What was compared, unit in the suffix: dap_gy_m2 (DAP of the exposure, Gy·m²), entrance_dose_mgy (mGy), "
    "deviation_index (unitless), study_dap_gy_m2, study_dose_rp_gy and study_fluoro_time_s (cumulative over the "
    "study: DAP in Gy·m², reference air kerma in Gy, fluoroscopy time in s), patient_dap_gy_m2, patient_dose_rp_gy "
    "and patient_fluoro_time_s (over the patient's studies in the window).")
RATIO_DOC = (
    "How far past the level: value / level for notification-level and cumulative alerts; for deviation-index alerts "
    "the exposure relative to its target, EI / EI_T = 10^(DI/10).")
Quantity = Literal["dap_gy_m2", "entrance_dose_mgy", "deviation_index", "study_dap_gy_m2", "study_dose_rp_gy",
                   "study_fluoro_time_s", "patient_dap_gy_m2", "patient_dose_rp_gy", "patient_fluoro_time_s"]


class DoseAlert(Envelope):
    """An exposure above its local notification level, a deviation index in an alerting band, a study whose
    cumulative dose crossed a threshold (or its next step), or a patient whose total over a window did. Raised once:
    msg_id is a hash of the event's (study's, patient's) ref, the rule, and the step."""

    KIND: ClassVar[str] = "dose-alert"
    schema_: Literal["xray.dose-alert/1"] = Field("xray.dose-alert/1", alias="schema",
                                               description="Payload schema/version.")

    alert: AlertType = Field(description="notification-level: an exposure above its local notification level (not "
                                         "a DRL: DRLs apply to medians, see drl-audit); deviation-index: DI in an "
                                         "alerting band (IEC 62494-1); cumulative: a study's total crossed a "
                                         "threshold or its next step (NCRP 168); patient-cumulative: a patient's "
                                         "total over the window crossed a threshold.")
    rule: str = Field(description="Id of the rule that matched, from the dose rules file (for DI: deviation-index:"
                                  "<band>).")
    rule_description: str | None = Field(None, description="The rule's description from the rules file.")
    quantity: Quantity = Field(description=QUANTITY_DOC)
    unit: str = Field(description="Unit of value and level: Gy·m², mGy, Gy, s, or 1 for the deviation index.")
    value: Finite = Field(description="The value of the quantity, in unit.")
    level: Finite = Field(description="The rule's level in unit (for stepped thresholds: the highest step passed); "
                                      "the alert means value is strictly above it (below it for the under-exposure "
                                      "DI bands).")
    ratio: Finite = Field(description=RATIO_DOC)
    band: DiBand | None = Field(None, description="Deviation-index band of the exposure (deviation-index alerts).")
    target_ei_uniform: bool | None = Field(
        None, description="Deviation-index alerts: true when this unit has sent one and the same target exposure index "
                          "for every body part and view seen (a vendor default), so its DI bands say little.")
    plane: Literal["A", "B"] | None = Field(None, description="Cumulative alerts per plane of a biplane unit; null: "
                                                              "all planes together.")
    patient_ref: str | None = Field(None, description="Patient-cumulative alerts: the patient's keyed ref, as on "
                                                      "exposure events.")
    studies: list[str] | None = Field(None, description="Patient-cumulative alerts: the study refs counted, oldest "
                                                        "first.")
    window_days: Count | None = Field(None, description="Patient-cumulative alerts: the window, days.")
    study_ref: str | None = Field(None, description="Keyed hash of the Study Instance UID, as on exposure events.")
    event_ref: str | None = Field(None, description="The exposure that raised it (for cumulative alerts: the last "
                                                    "one counted), as on exposure events; null if none.")
    events_in_study: Count | None = Field(None, description="Cumulative alerts: distinct irradiation events counted "
                                                            "in the study total, count.")
    protocol: str | None = Field(None, description="Protocol of the exposure, as on the exposure event.")
    body_part: str | None = Field(None, description="Body part of the exposure, as on the exposure event.")
    view: str | None = Field(None, description="View of the exposure, as on the exposure event.")
    modality: str | None = Field(None, description="Modality of the object (DX, CR, XA, RF; SR for an RDSR).")
    irradiation_type: Literal["fluoroscopy", "acquisition"] | None = Field(None, description="Of the exposure.")
    acquired_at: datetime | None = Field(None, description="When the exposure was made, as on the exposure event.")
    received_at: datetime = Field(description="When the agent received the object that raised the alert, UTC.")


class ProtocolSummary(BaseModel):
    """One protocol's figures in a room summary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: str | None = Field(description="Protocol name as on the exposure events (screened); null for "
                                            "exposures without one.")
    exposures: Count = Field(description="Distinct exposures (irradiation events) in the period, count.")
    with_dap: Count = Field(description="Of those, exposures that reported a DAP, count.")
    dap_median_gy_m2: Finite | None = Field(description="Median DAP of the exposures with a DAP, Gy·m²; null if none.")
    dap_p75_gy_m2: Finite | None = Field(description="75th percentile DAP per exposure (linear interpolation "
                                                     "between closest ranks, as numpy's default), Gy·m²; null if "
                                                     "none. For the spread only: DRLs are compared in drl-audit.")
    repeats: Count = Field(description="Possible repeats: exposures of the same view seen again in the repeat window "
                                       "(repeat_of set), count. Not a reject rate: rejected images never reach the "
                                       "agent.")
    repeat_rate: Share = Field(description="Possible repeats / exposures.")
    deviation_index_bands: dict[DiBand, Share] = Field(description="Share of the exposures in each deviation-index "
                                                                   "band (unknown: no DI); shares sum to 1.")
    alerts: dict[AlertType, Count] = Field(description="Dose alerts raised by this protocol's exposures, by type.")


class RoomSummary(Envelope):
    """A room's exposures over one period: once a day at the configured local time, and on request."""

    KIND: ClassVar[str] = "summary"
    schema_: Literal["xray.summary/1"] = Field("xray.summary/1", alias="schema", description="Payload schema/version.")

    trigger: Literal["daily", "request"] = Field(description="daily: the scheduled summary of the last day; request: "
                                                             "the day so far, asked for.")
    period_start: datetime = Field(description="Start of the period (inclusive), local time with offset.")
    period_end: datetime = Field(description="End of the period (exclusive), local time with offset.")
    timezone: str = Field(description="The site's zone (IANA name) the period is counted in.")
    exposures: Count = Field(description="Distinct exposures in the period (by acquisition time, else receipt), count.")
    repeats: Count = Field(description="Possible repeats: exposures of a view seen again in the same study within the "
                                       "repeat window, count. Not a reject rate: rejected images never reach the "
                                       "agent.")
    repeat_rate: Share = Field(description="Possible repeats / exposures; 0 when there were none.")
    deviation_index_bands: dict[DiBand, Share] = Field(description="Share of all exposures in each deviation-index "
                                                                   "band; shares sum to 1 (empty when no exposures).")
    alerts: dict[AlertType, Count] = Field(description="Dose alerts raised by exposures of the period, by type.")
    protocols: list[ProtocolSummary] = Field(description="Per protocol, sorted by protocol name (null last).")
    units_with_uniform_target_ei: list[str] = Field(
        default_factory=list, description="Units (manufacturer / model / serial) that sent one and the same target "
                                          "exposure index for every body part and view seen: a vendor default, so "
                                          "their deviation-index bands say little (AAPM TG-116 section 5).")
