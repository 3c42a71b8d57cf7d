"""`[[instruments]]` config entries: which driver reads which port, validated against the driver's own settings model.

A typo anywhere is a config error that names its key path (`instruments.0.settings.baudrat`), raised at load time, so
`xray-agent check-config` catches it before a room goes live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from agent.tomlfile import read_toml
from drivers.ports import parse_port_selector
from drivers.profile import Profile
from drivers.registry import DRIVERS
from drivers.settings import DriverSettings

# As agent.config's TopicId and Section (agent.config imports this module, so it cannot import them from there).
TopicId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
PROFILE_DRIVER = "profile"
# Set at the instrument level, never inside `settings`: one place per fact.
INSTRUMENT_LEVEL_KEYS = ("port", "instrument_id")


class InstrumentConfig(BaseModel):
    """One serial instrument: `id` (the equipment device_id), `driver`, `port` and optional driver settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: TopicId = Field(description="Instrument id, used as device_id in equipment/{id} and on every reading.")
    driver: str = Field(description="Driver name, a key of drivers.registry.DRIVERS.")
    port: str = Field(description="/dev/serial/by-id/... path, usb:VID:PID[:SERIAL], or a pyserial URL.")
    profile: Path | None = Field(None, description="Profile TOML for driver = 'profile' (relative to the config).")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="Driver setting overrides, checked by the driver's settings model.")
    status_every_s: float = Field(60.0, ge=1, le=3600, description="Re-publish equipment status this often, s.")
    reconnect_max_s: float = Field(5.0, gt=0, le=60, description="Cap of the reconnect backoff, s.")

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value not in DRIVERS:
            raise ValueError(f"unknown driver {value!r}; known drivers: {', '.join(sorted(DRIVERS))}")
        return value

    @field_validator("port")
    @classmethod
    def _valid_port(cls, value: str) -> str:
        parse_port_selector(value)  # ValueError names the accepted forms
        return value

    @field_validator("profile")
    @classmethod
    def _valid_profile(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_profile(value)
        return value

    @field_validator("settings")
    @classmethod
    def _valid_settings(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        for key in INSTRUMENT_LEVEL_KEYS:
            if key in value:
                raise ValueError(f"{key} belongs to the instrument entry itself, not to its settings")
        driver = info.data.get("driver")
        if driver is None or (driver == PROFILE_DRIVER and info.data.get("profile") is None):
            return value  # the driver or profile error is reported on its own key
        # A ValidationError raised here is nested under this field: a typo reads instruments.N.settings.<key>.
        settings_model(driver).model_validate({**base_settings(driver, info.data.get("profile")), **value})
        return value

    @model_validator(mode="after")
    def _profile_iff_profile_driver(self) -> InstrumentConfig:
        if self.driver == PROFILE_DRIVER and self.profile is None:
            raise ValueError("driver 'profile' needs profile = \"path/to/profile.toml\"")
        if self.driver != PROFILE_DRIVER and self.profile is not None:
            raise ValueError(f"profile is only used with driver = 'profile', not {self.driver!r}")
        return self

    def driver_settings(self) -> DriverSettings:
        """The driver's settings model: profile file (if any), then overrides, then this entry's id and port."""
        data = {**base_settings(self.driver, self.profile), **self.settings,
                "instrument_id": self.id, "port": self.port}
        return settings_model(self.driver).model_validate(data)


def settings_model(driver: str) -> type[DriverSettings]:
    """The pydantic settings class of a registered driver."""
    return DRIVERS[driver].Settings


def base_settings(driver: str, profile: Path | None) -> dict[str, Any]:
    """What the overrides apply to: the profile file's contents for the profile driver, else nothing."""
    return read_profile(profile) if driver == PROFILE_DRIVER and profile is not None else {}


def read_profile(path: Path) -> dict[str, Any]:
    """A profile file's TOML as a dict; ValueError naming the file and the bad key inside it."""
    data = read_toml(path, "profile")
    try:
        Profile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"profile {path}: {problems}") from None
    return data


def _unique(instruments: list[InstrumentConfig]) -> list[InstrumentConfig]:
    """Ids name equipment topics and ports are opened exclusively: neither may repeat."""
    for key in ("id", "port"):
        seen: dict[str, int] = {}
        for index, inst in enumerate(instruments):
            value = getattr(inst, key)
            if value in seen:
                raise ValueError(f"instruments {seen[value]} and {index} have the same {key} {value!r}")
            seen[value] = index
    return instruments


InstrumentList = Annotated[list[InstrumentConfig], AfterValidator(_unique)]
