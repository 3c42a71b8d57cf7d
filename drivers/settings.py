"""Settings models: serial parameters and timing as validated data, one subclass per driver with its defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.ports import parse_port_selector

SERIAL_FIELDS = ("port", "baudrate", "bytesize", "parity", "stopbits", "rtscts", "read_timeout_s", "write_timeout_s")


class DriverSettings(BaseModel):
    """Serial parameters shared by every driver. Unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has inf and nan

    instrument_id: str = Field("", description="Id put on every Reading; defaults to the driver name.")
    port: str = Field("", description="/dev/serial/by-id/... path or usb:VID:PID[:SERIAL]; empty = not set.")
    baudrate: int = Field(9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 1.5, 2] = 1
    rtscts: bool = False
    # One read() blocks at most this long, which bounds how fast the reading loop notices its stop event.
    read_timeout_s: float = Field(0.1, gt=0, le=2)
    write_timeout_s: float = Field(2.0, gt=0)
    retry_interval_s: float = Field(5.0, ge=0, description="Wait after a failed init before trying again.")

    @field_validator("port")
    @classmethod
    def _valid_port(cls, value: str) -> str:
        if value:
            parse_port_selector(value)
        return value

    def serial_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for serial.Serial(device, **kwargs) (the port itself is resolved separately)."""
        return {
            "baudrate": self.baudrate, "bytesize": self.bytesize, "parity": self.parity,
            "stopbits": self.stopbits, "rtscts": self.rtscts, "xonxoff": False,
            "timeout": self.read_timeout_s, "write_timeout": self.write_timeout_s,
        }


class PollSettings(DriverSettings):
    """Request/response instruments: how long to wait for a reply, how often to poll."""

    reply_timeout_s: float = Field(2.0, gt=0)
    poll_interval_s: float = Field(1.0, ge=0)


class StreamSettings(DriverSettings):
    """Push instruments: how long a silence may last before it counts as a timeout."""

    silence_timeout_s: float = Field(10.0, gt=0)
