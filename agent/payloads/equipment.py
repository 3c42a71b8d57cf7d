"""Retained state of one piece of equipment the agent talks to, on `equipment/{device_id}`.

Published on every change of state and periodically; the outbox keeps only the newest undelivered sample per device.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.payloads.base import Envelope

Count = Annotated[int, Field(ge=0)]
DeviceType = Literal["serial-instrument", "dicom-listener", "modality", "broker-link"]
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


class EquipmentStatus(Envelope):
    """State of one device: ok, degraded (bad frames, timeouts, readings not storable) or down (port missing)."""

    KIND: ClassVar[str] = "equipment"
    schema_: Literal["xray.equipment/1"] = Field("xray.equipment/1", alias="schema",
                                                description="Payload schema/version.")

    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                           description="Device id from the agent's config; the last topic level.")
    device_type: DeviceType = Field(description="serial-instrument for QC meters and dosimeters.")
    driver: str | None = Field(None, description="Driver name for serial instruments, else null.")
    state: State = Field(description="ok; degraded while frames are bad, replies time out or readings cannot be "
                                     "stored; down while the port is missing or cannot be opened.")
    since: datetime = Field(description="When the state last changed, UTC.")
    port: str | None = Field(None, description="Device path the port selector resolved to last; null if never.")
    port_selector: str | None = Field(None, description="The port as configured (by-id path, usb:VID:PID...).")
    last_reading_at: datetime | None = Field(None, description="When the last reading was stored, UTC.")
    last_reading_age_s: float | None = Field(None, ge=0, description="Age of the last reading when this was sent, s.")
    counters: EquipmentCounters = Field(default_factory=EquipmentCounters, description="Line counters, counts.")
    last_error: str | None = Field(None, description="The latest problem in words, or null if none yet.")

    def topic_kind(self) -> str:
        """`equipment/{device_id}`."""
        return f"equipment/{self.device_id}"
