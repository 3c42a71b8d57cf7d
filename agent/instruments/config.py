"""`[[instruments]]` config entries: which driver reads which port, validated against the driver's own settings model.

A typo anywhere is a config error that names its key path (`instruments.0.settings.baudrat`), raised at load time, so
`xray-agent check-config` catches it before a room goes live.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

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

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has inf and nan

    id: TopicId = Field(description="Instrument id, used as device_id in equipment/{id} and on every reading.")
    driver: str = Field(description="Driver name, a key of drivers.registry.DRIVERS.")
    port: str = Field(description="/dev/serial/by-id/... path, usb:VID:PID[:SERIAL], or a pyserial URL.")
    profile: Path | None = Field(None, description="Profile TOML for driver = 'profile' (relative to the config).")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="Driver setting overrides, checked by the driver's settings model.")
    status_every_s: float = Field(60.0, ge=1, le=3600, description="Re-publish equipment status this often, s.")
    reconnect_max_s: float = Field(5.0, gt=0, le=60, description="Cap of the reconnect backoff, s.")
    # What a QC record must name about the instrument (all optional; recorded with each QC session).
    model: str | None = Field(None, max_length=80, description="Manufacturer and model, e.g. 'PTW UNIDOS webline'.")
    serial_number: str | None = Field(None, max_length=64, description="The instrument's serial number.")
    detector: str | None = Field(None, max_length=120, description="Chamber/detector model and serial, if separate.")
    calibration_date: date | None = Field(None, description="Date of the last calibration (YYYY-MM-DD).")
    calibration_due: date | None = Field(None, description="Date the calibration expires; check-config warns after.")
    calibration_factor: float | None = Field(None, gt=0, allow_inf_nan=False,
                                             description="Calibration factor applied (e.g. N_K of the chamber).")
    calibration_factor_unit: str | None = Field(None, max_length=32, description="Unit of calibration_factor.")
    air_density_correction: Literal["applied_by_meter", "not_applied", "not_needed"] | None = Field(
        None, description="Temperature/pressure correction of a vented chamber: applied by the meter (with "
                          "temperature_c/pressure_hpa as set on it), not applied, or not needed (sealed detector).")
    temperature_c: float | None = Field(None, ge=-20, le=60, description="Air temperature set on the meter, °C.")
    pressure_hpa: float | None = Field(None, ge=500, le=1100, description="Air pressure set on the meter, hPa.")

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
    def _calibration_dates_in_order(self) -> InstrumentConfig:
        if self.calibration_date and self.calibration_due and self.calibration_due < self.calibration_date:
            raise ValueError("calibration_due is before calibration_date")
        return self

    def record(self) -> dict[str, Any]:
        """What a QC session records about this instrument (JSON-ready; dates as YYYY-MM-DD)."""
        keys = ("model", "serial_number", "detector", "calibration_date", "calibration_due", "calibration_factor",
                "calibration_factor_unit", "air_density_correction", "temperature_c", "pressure_hpa")
        out: dict[str, Any] = {"id": self.id, "driver": self.driver}
        for key in keys:
            value = getattr(self, key)
            out[key] = value.isoformat() if isinstance(value, date) else value
        return out

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


def calibration_warnings(instruments: list[InstrumentConfig], today: date | None = None) -> list[str]:
    """One line per instrument whose calibration is overdue (calibration_due before today)."""
    today = today or date.today()
    return [f"instruments.{i}.calibration_due: {inst.id}'s calibration expired on {inst.calibration_due} "
            f"({(today - inst.calibration_due).days} days ago); QC sessions record it as overdue"
            for i, inst in enumerate(instruments) if inst.calibration_due is not None and inst.calibration_due < today]
