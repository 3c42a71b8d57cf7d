"""The agent's retained status: its birth message, last will and clean-shutdown message."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from agent.payloads.base import Envelope


class AgentStatus(Envelope):
    """Retained on `status`: whether the agent is online, and which build and config it runs."""

    KIND: ClassVar[str] = "status"
    schema_: Literal["xray.status/1"] = Field("xray.status/1", alias="schema")
    online: bool = Field(description="False in the last will and on clean shutdown.")
    version: str = Field(description="Agent version.")
    boot_id: str = Field(description="Random id of this agent process run; changes on every start.")
    config_hash: str = Field(description="First 16 hex digits of SHA-256 of the config file.")
    reason: Literal["birth", "update", "shutdown", "lost"] = Field(
        description="birth on connect, update on a condition change, shutdown on clean stop, lost from the last will.")
    outbox_full: bool = Field(False, description="True while messages of an intake class are being refused: its share "
                                                 "of the outbox ([outbox.shares]) or the whole outbox is full.")
    outbox_damaged: bool = Field(False, description="True while the outbox file is damaged and being rebuilt: nothing "
                                                    "is acknowledged (DICOM 0xA700, readings held) until it is.")
    outbox_refused_total: int = Field(0, ge=0, description="Messages refused because the outbox was full, over the outbox file's life.")
    outbox_parked: int = Field(0, ge=0, description="Messages parked now: refused by the broker (MQTT 5 PUBACK >= 0x80) "
                                                    "or larger than its Maximum Packet Size; kept in the outbox until "
                                                    "`xray-agent outbox retry`.")
