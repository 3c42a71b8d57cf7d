"""The `[health]`, `[web]` and `[commands]` sections of the agent config (agent.config imports them)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    # As agent.config's Section (agent.config imports this module, so it cannot import that from there).
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthConfig(_Section):
    interval_s: float = Field(60, ge=1, le=3600, description="Period of the health sample on `health`, s.")
    equipment_every_s: float = Field(60, ge=1, le=3600, description="Re-publish period of the DICOM listener, "
                                     "modality and broker-link states on equipment/{id} (also sent on change), s.")
    modality_quiet_s: float = Field(86400, gt=0, description="A modality (calling AE title) not heard from for "
                                    "this long shows as degraded, s.")
    disk_floor_mib: int = Field(512, ge=0, description="/readyz fails when the outbox's folder has less free space, "
                                "MiB.")
    broker_grace_s: float = Field(300, ge=0, description="/readyz stays 200 during a broker outage shorter than "
                                  "this, s.")


class WebConfig(_Section):
    enabled: bool = Field(True, description="Serve /livez, /readyz and /metrics (and later the QC page).")
    bind: str = Field("127.0.0.1", description="Address to listen on; loopback by default.")
    port: int = Field(8080, ge=1, le=65535)
    token_file: Path | None = Field(None, description="File holding this room's access token; when set, requests "
                                    "from other hosts need 'Authorization: Bearer TOKEN'.")

    @field_validator("bind")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("expected an IP address such as 127.0.0.1 or 0.0.0.0") from None
        return value

    @property
    def loopback_only(self) -> bool:
        """True when only this machine can reach the server."""
        return ipaddress.ip_address(self.bind).is_loopback


class CommandsConfig(_Section):
    enabled: bool = Field(True, description="Answer remote checks on {prefix}/{site}/{room}/cmd (MQTT 5 only).")
    max_age_s: float = Field(60, gt=0, description="A command whose `ts` is older than this is not run (stale), s.")
    session_expiry_s: int = Field(300, ge=0, le=86400, description="How long the broker keeps the agent's MQTT 5 "
                                  "session while it is offline, so commands sent meanwhile wait for it (each until "
                                  "its own message expiry); 0: clean sessions, such commands are dropped, s.")
