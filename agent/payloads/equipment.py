"""Retained state of one piece of equipment the agent talks to, on `equipment/{device_id}`.

Published on every change of state and periodically; the outbox keeps only the newest undelivered sample per device.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.payloads.base import Envelope

Count = Annotated[int, Field(ge=0)]
DeviceType = Literal["serial-instrument", "dicom-listener", "modality", "broker-link", "state-file"]
State = Literal["ok", "degraded", "down"]


class EquipmentCounters(BaseModel):
    """What happened on the line since the agent started (counts, never reset while it runs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames_ok: Count = Field(0, description="Frames parsed successfully, count.")
    frames_bad: Count = Field(0, description="Frames dropped by checks (format, checksum, range), count.")
    bytes_discarded: Count = Field(0, description="Bytes of noise dropped before they formed a frame, count.")
    timeouts: Count = Field(0, description="Replies or pushed frames that did not come in time, count.")
    error_replies: Count = Field(0, description="Error codes reported by the instrument, count.")
    reconnects: Count = Field(0, description="Times the port was opened again after it was lost, count.")


class DicomCounters(BaseModel):
    """What the DICOM listener did since the agent started (counts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    received: Count = Field(0, description="Objects received (C-STORE and watched folder), count.")
    events_stored: Count = Field(0, description="Exposure/dose events stored in the outbox, count.")
    quarantined: Count = Field(0, description="Objects answered Cannot Understand and quarantined, count.")
    refused: Count = Field(0, description="Objects answered Out of Resources (outbox full or unwritable), count.")
    associations_rejected: Count = Field(0, description="Associations refused by the AE title or peer allow-lists, "
                                                        "count.")
    values_screened: Count = Field(0, description="Free-text values changed by privacy.free_text (identifiers, long "
                                                  "numbers or dates removed, or not in the catalog), count.")


class LinkCounters(BaseModel):
    """What the broker link did since the agent started."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connects: Count = Field(0, description="Connections made (the first one included), count.")
    published: Count = Field(0, description="Outbox messages handed to the connection, count.")
    acknowledged: Count = Field(0, description="Outbox messages the broker acknowledged (PUBACK), count.")
    rejected: Count = Field(0, description="Publishes the broker answered with a failure code, count.")
    last_outage_s: float | None = Field(None, ge=0, description="Length of the last outage that ended, s; null if "
                                                                "none since start.")


class EquipmentStatus(Envelope):
    """State of one device: ok, degraded (bad frames, timeouts, readings not storable) or down (port missing)."""

    KIND: ClassVar[str] = "equipment"
    schema_: Literal["xray.equipment/1"] = Field("xray.equipment/1", alias="schema",
                                                description="Payload schema/version.")

    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                           description="Device id from the agent's config; the last topic level.")
    device_type: DeviceType = Field(description="serial-instrument (QC meters, dosimeters), dicom-listener (the "
                                                "C-STORE SCP), modality (a sender, by calling AE title), broker-link or "
                                                "state-file (a state database: outbox, dose, qc, folder).")
    driver: str | None = Field(None, description="Driver name for serial instruments, else null.")
    state: State = Field(description="ok; degraded while frames are bad, replies time out or readings cannot be "
                                     "stored (instrument), objects are refused (listener), nothing was received "
                                     "for health.modality_quiet_s (modality) or publishes are rejected (broker "
                                     "link), a state file was rebuilt in the last hour or its last write failed "
                                     "(state file); down while the port is missing or cannot be opened, the listener is "
                                     "not bound, the broker is unreachable or a state file is damaged.")
    since: datetime = Field(description="When the state last changed, UTC.")
    port: str | None = Field(None, description="Device path the port selector resolved to last; null if never.")
    port_selector: str | None = Field(None, description="The port as configured (by-id path, usb:VID:PID...).")
    endpoint: str | None = Field(None, description="AE title and address of the listener (AE@host:port), calling AE "
                                                   "title of a modality, broker host:port of the link; else null.")
    last_reading_at: datetime | None = Field(None, description="When the last reading (instrument) or object "
                                                               "(listener, modality) was stored, or the broker last "
                                                               "acknowledged a message (link), UTC.")
    last_reading_age_s: float | None = Field(None, ge=0, description="Age of the last reading when this was sent, s.")
    counters: EquipmentCounters = Field(default_factory=EquipmentCounters,
                                        description="Line counters of an instrument; reconnects also for the link.")
    dicom: DicomCounters | None = Field(None, description="Listener counters; null for other devices.")
    link: LinkCounters | None = Field(None, description="Broker link counters; null for other devices.")
    last_error: str | None = Field(None, description="The latest problem in words, or null if none yet.")

    def topic_kind(self) -> str:
        """`equipment/{device_id}`."""
        return f"equipment/{self.device_id}"
