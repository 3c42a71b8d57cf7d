"""PTW DIAMENTOR dose-area-product meter (protocol as in pymeasure's ptwDIAMENTOR driver and its byte-level tests).

ASCII, CR-terminated, strict ping-pong, 9600 baud by default. `PTW` -> identity (`CRS 1.2.4`); `U` -> DAP unit
(`U1`..`U4`); `M` -> `M<dap>,<dap_rate>,<min>,<sec>,...` in the current unit. Errors are `E<n>`.
The unit is asked before every M: someone may change it on the front panel, and a stale unit would silently scale
DAP by a power of ten. The DAP rate is taken as the DAP unit per second (the meter's calibration factor is in
uGy*m2/s); unconfirmed. The trailing 5-digit field of M (believed to be a block check, algorithm unknown) is ignored.
"""

from __future__ import annotations

import re
import threading

from pydantic import Field

from drivers.base import PollingDriver, Transport
from drivers.framing import TerminatorFramer
from drivers.reading import ErrorReply, FrameError, Reading
from drivers.settings import PollSettings
from drivers.units import convert

CR = b"\r"
CMD_IDENTITY, CMD_UNIT, CMD_MEASURE = b"PTW\r", b"U\r", b"M\r"

ERRORS = {
    "E1": "syntax_error", "E4": "charge_overflow", "E5": "input_current_exceeded",
    "E6": "chamber_voltage_out_of_range", "E7": "write_protected", "E9": "out_of_range",
    "E23": "eeprom_error", "E24": "not_electrically_calibrated", "E25": "input_buffer_overrun",
    "E26": "firmware_fault",
}
DAP_UNITS = {"U1": "cGy*cm2", "U2": "Gy*cm2", "U3": "uGy*m2", "U4": "R*cm2"}

_ERROR = re.compile(r"^E\d{1,2}$")
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_MEASUREMENT = re.compile(rf"^M(?P<dap>{_NUMBER}),(?P<rate>{_NUMBER}),(?P<min>\d+),(?P<sec>\d+)(?:,|$)")


class DiamentorSettings(PollSettings):
    """9600 8N1, 2 s reply timeout (pymeasure uses 2000 ms)."""

    emit_unchanged: bool = Field(False, description="Yield every poll, not only when DAP or time changed.")


def reply_text(frame: bytes) -> str:
    """Decode a reply and raise ErrorReply for `E<n>` (named when the code is documented)."""
    text = frame.decode("ascii").strip()
    if _ERROR.match(text):
        raise ErrorReply(text, ERRORS.get(text, "unknown_error"))
    return text


def parse_identity(frame: bytes) -> str:
    """`PTW` reply, e.g. 'CRS 1.2.4'."""
    text = reply_text(frame)
    if not text:
        raise FrameError("empty identity")
    return text


def parse_unit(frame: bytes) -> str:
    """`U` reply -> unit string for drivers.units ('U2' -> 'Gy*cm2')."""
    text = reply_text(frame)
    if text not in DAP_UNITS:
        raise FrameError(f"unknown DAP unit reply {text!r}")
    return DAP_UNITS[text]


def parse_measurement(frame: bytes, unit: str) -> dict[str, float]:
    """`M` reply -> DAP (Gy*m2), DAP rate (Gy*m2/s) and exposure time (ms, from minutes and seconds)."""
    match = _MEASUREMENT.match(reply_text(frame))
    if not match:
        raise FrameError("expected M<dap>,<rate>,<min>,<sec>,...")
    seconds = 60 * int(match["min"]) + int(match["sec"])
    return {
        "dap_gy_m2": convert(float(match["dap"]), unit, "Gy*m2"),
        "dap_rate_gy_m2_s": convert(float(match["rate"]), f"{unit}/s", "Gy*m2/s"),
        "exposure_time_ms": convert(seconds, "s", "ms"),
    }


class PtwDiamentor(PollingDriver):
    """PTW at init; U then M every poll; a Reading when DAP or time changed (or every poll if emit_unchanged)."""

    name = "ptw_diamentor"
    Settings = DiamentorSettings
    settings: DiamentorSettings

    def __init__(self, settings: DiamentorSettings | None = None) -> None:
        super().__init__(settings)
        self.identity = ""
        self._last: dict[str, float] | None = None

    def initialize(self, transport: Transport, stop: threading.Event) -> bool:
        """Ask the identity: proves the meter answers at this baud rate."""
        frame = self._ask(transport, CMD_IDENTITY, stop)
        identity = None if frame is None else self.parse(parse_identity, frame)
        self.identity = identity or self.identity
        return identity is not None

    def poll(self, transport: Transport, stop: threading.Event) -> Reading | None:
        """U then M; None on a timeout, an error reply, a bad frame or an unchanged measurement."""
        frame = self._ask(transport, CMD_UNIT, stop)
        unit = None if frame is None else self.parse(parse_unit, frame)
        if unit is None:
            return None
        frame = self._ask(transport, CMD_MEASURE, stop)
        reading = None if frame is None else self.parse(lambda f: self._reading(f, unit), frame)
        if reading is None or (dict(reading.quantities) == self._last and not self.settings.emit_unchanged):
            return None
        self._last = dict(reading.quantities)
        return reading

    def _ask(self, transport: Transport, command: bytes, stop: threading.Event) -> bytes | None:
        return self.transact(transport, command, TerminatorFramer(CR), self.settings.reply_timeout_s, stop)

    def _reading(self, frame: bytes, unit: str) -> Reading:
        return self.reading(parse_measurement(frame, unit), frame)
