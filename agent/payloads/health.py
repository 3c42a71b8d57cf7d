"""Periodic host and agent health, on `health` (not retained; the outbox keeps only the newest undelivered sample)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from agent.payloads.base import Envelope

Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
ClockSync = Literal["synchronized", "unsynchronized", "unknown"]


class HealthSample(Envelope):
    """One sample of the room PC and the agent: resources, clock, outbox and broker link."""

    KIND: ClassVar[str] = "health"
    schema_: Literal["xray.health/1"] = Field("xray.health/1", alias="schema", description="Payload schema/version.")

    version: str = Field(description="Agent version.")
    boot_id: str = Field(description="Random id of this agent process run (as in the status).")
    config_hash: str = Field(description="First 16 hex digits of SHA-256 of the config file.")
    uptime_s: Seconds = Field(description="Time since the agent started, s.")
    host_uptime_s: Seconds = Field(description="Time since the room PC booted, s.")
    cpu_percent: Percent = Field(description="Host CPU busy since the previous sample, % of all cores.")
    agent_cpu_percent: float = Field(ge=0, description="Agent process CPU since the previous sample, % of one core.")
    memory_percent: Percent = Field(description="Host memory in use, %.")
    memory_available_bytes: Count = Field(description="Host memory available to new processes, bytes.")
    agent_rss_bytes: Count = Field(description="Resident memory of the agent process, bytes.")
    disk_free_bytes: Count = Field(description="Free space in the outbox's folder (the state directory), bytes.")
    disk_total_bytes: Count = Field(description="Size of the file system holding the outbox, bytes.")
    temperature_c: float | None = Field(None, description="Hottest temperature sensor the board reports, °C; "
                                                          "null when it reports none.")
    clock_sync: ClockSync = Field(description="Whether the system clock is synchronised (kernel NTP state via "
                                              "adjtimex, else timedatectl); unknown when neither answers.")
    clock_max_error_s: Seconds | None = Field(None, description="Kernel's maximum clock error estimate, s; null "
                                                                "when unknown.")
    outbox_depth: Count = Field(description="Undelivered messages, count.")
    outbox_oldest_age_s: Seconds | None = Field(None, description="Age of the oldest undelivered message, s; null "
                                                                  "when the outbox is empty.")
    outbox_bytes: Count = Field(description="Payload bytes held in the outbox, bytes.")
    outbox_max_bytes: Count = Field(description="outbox.max_bytes from the config, bytes.")
    outbox_refusing: bool = Field(description="True while messages of an intake class are refused (its share of the "
                                              "outbox, or the whole outbox, is full).")
    outbox_refused_total: Count = Field(description="Messages refused for lack of room, over the outbox file's "
                                                    "life, count.")
    outbox_dropped_total: Count = Field(description="Undelivered status/health/equipment samples dropped: replaced "
                                                    "by a newer one (coalesced) or expired, count.")
    outbox_parked: Count = Field(0, description="Messages parked now: refused by the broker or larger than its Maximum "
                                                "Packet Size; kept until `xray-agent outbox retry`, count.")
    broker_connected: bool = Field(description="True while the MQTT connection is up.")
    broker_reconnects_total: Count = Field(description="Connections made after the first one since start, count.")
    broker_rejected_total: Count = Field(description="Publishes the broker answered with a failure code, count.")
    last_puback_at: datetime | None = Field(None, description="When the broker last acknowledged a message from "
                                                              "the outbox, UTC; null if never since start.")
    qc_overdue_tests: list[str] = Field(default_factory=list, description="QC test types of the room's schedule "
                                        "([[qc.schedule]]) that are overdue (details on the retained qc/due).")
