"""The `[health]`, `[web]` and `[commands]` sections of the agent config (agent.config imports them)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    # As agent.config's Section (agent.config imports this module, so it cannot import that from there).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has inf and nan


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


MIN_WEB_TOKEN_CHARS = 32  # xray-agent new-token writes 43 (32 random bytes, URL-safe base64)
REPLY_TOPICS_DEFAULT = ("{prefix}/{site}/{room}/cmd/reply/#", "replies/#")


class WebConfig(_Section):
    enabled: bool = Field(True, description="Serve /livez, /readyz and /metrics (and later the QC page).")
    bind: str = Field("127.0.0.1", description="Address to listen on; loopback by default.")
    port: int = Field(8080, ge=1, le=65535)
    token_file: Path | None = Field(None, description="File holding this room's access token (at least 32 "
                                    "characters; xray-agent new-token PATH makes one). Other hosts sign in with it "
                                    "on the page, or send 'Authorization: Bearer TOKEN'.")
    public_names: list[str] = Field(default_factory=list, description="Host names and addresses other hosts use to "
                                    "reach the server (e.g. [\"xr-03.hospital.lan\", \"10.1.2.3\"]; a specific "
                                    "bind address counts too); requests naming any other host than these or "
                                    "loopback are refused (421).")
    max_connections: int = Field(64, ge=4, le=1000, description="Open connections at most; past it the oldest idle "
                                 "or unfinished one is closed so a new one (a probe) still gets in.")
    request_timeout_s: int = Field(10, ge=1, le=300, description="A request must arrive complete within this, and "
                                   "an idle connection is closed after it, s.")
    max_body_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024, description="Largest request body accepted, "
                                "bytes (413 beyond).")

    @field_validator("bind")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("expected an IP address such as 127.0.0.1 or 0.0.0.0") from None
        return value

    @field_validator("public_names")
    @classmethod
    def _host_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[?[0-9A-Fa-f:.]+\]?", value):
                raise ValueError(f"{value!r} is not a host name or IP address (no scheme, port or path)")
        return [v.lower().strip("[]").rstrip(".") for v in values]

    @property
    def reachable_names(self) -> list[str]:
        """public_names, plus the bind address when it is one specific address (an address cannot be re-pointed by
        DNS rebinding)."""
        ip = ipaddress.ip_address(self.bind)
        extra = [] if ip.is_unspecified or ip.is_loopback or str(ip) in self.public_names else [str(ip)]
        return [*self.public_names, *extra]

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
    reply_topics: list[str] = Field(list(REPLY_TOPICS_DEFAULT), min_length=1, description="MQTT topic filters a "
                                    "command's ResponseTopic must match ({prefix}, {site}, {room} filled in); a "
                                    "command asking for a reply elsewhere is not run.")

    @field_validator("reply_topics")
    @classmethod
    def _topic_filters(cls, values: list[str]) -> list[str]:
        for value in values:
            levels = value.split("/")
            if not value or any(("#" in lv and (lv != "#" or i != len(levels) - 1)) or ("+" in lv and lv != "+")
                                for i, lv in enumerate(levels)):
                raise ValueError(f"{value!r} is not an MQTT topic filter ('+' a whole level, '#' the whole last one)")
            try:
                value.format(prefix="p", site="s", room="r")
            except (KeyError, IndexError, ValueError):
                raise ValueError(f"{value!r}: only {{prefix}}, {{site}} and {{room}} may be filled in") from None
        return values
