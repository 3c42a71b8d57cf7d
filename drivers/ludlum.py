"""Ludlum Model 375 area monitor: push-only, one 14-byte frame every 2 s.

Frame: a 6-character reading, five status bytes ('1' = on) for audio / high alarm / low alarm / over-range /
monitor, a one-character error code, CR LF. The display unit depends on the detector and is not in the frame,
so it is a setting. Lines in the printer format (`0642.1 04/21/95 16:56:24 ALARM`) are accepted as well.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from drivers.base import StreamDriver
from drivers.framing import TerminatorFramer
from drivers.reading import FrameError, Reading
from drivers.settings import StreamSettings
from drivers.units import to_canonical

FRAME_BODY = 12  # 14 bytes minus CR LF
STATUS_FLAGS = ("audio", "high_alarm", "low_alarm", "over_range", "monitor")
NO_ERROR = "0"
# display unit -> canonical quantity
READING_QUANTITY = {
    "mR/h": "dose_rate_ugy_s", "uR/h": "dose_rate_ugy_s", "uGy/h": "dose_rate_ugy_s",
    "uSv/h": "dose_rate_usv_h", "mrem/h": "dose_rate_usv_h", "cpm": "count_rate_cpm",
}

_FRAME = re.compile(r"^(?P<value>[ 0-9.+\-E]{6})(?P<status>[01]{5})(?P<error>[0-9A-Z])$")
_PRINTER = re.compile(r"^(?P<value>\d+(?:\.\d+)?) \d\d/\d\d/\d\d \d\d:\d\d:\d\d(?P<alarm> ALARM)?$")


class Ludlum375Settings(StreamSettings):
    """Frames every 2 s: three missing frames (6 s) count as a timeout."""

    silence_timeout_s: float = Field(6.0, gt=0)
    reading_unit: Literal["mR/h", "uR/h", "uGy/h", "uSv/h", "mrem/h", "cpm"] = "mR/h"


def parse_frame_375(frame: bytes, unit: str) -> tuple[dict[str, float], set[str], int]:
    """Frame (terminator removed) -> (quantities, flags, bytes of leading noise dropped). Raises FrameError.

    A frame longer than 12 bytes is reduced to its last 12: after noise or a torn frame with no CR LF in between,
    the valid frame is the tail (the format has no start marker).
    """
    text = frame.decode("latin-1")
    printed = _PRINTER.match(text)
    if printed:
        return _quantities(printed["value"], unit), {"alarm"} if printed["alarm"] else set(), 0
    match = _FRAME.match(text[-FRAME_BODY:])
    if not match:
        raise FrameError(f"expected 6-char reading, 5 status bits, error code; got {text[-FRAME_BODY:]!r}")
    flags = {name for name, bit in zip(STATUS_FLAGS, match["status"]) if bit == "1"}
    if match["error"] != NO_ERROR:
        flags.add(f"error_{match['error']}")
    return _quantities(match["value"], unit), flags, max(0, len(text) - FRAME_BODY)


def _quantities(value: str, unit: str) -> dict[str, float]:
    quantity = READING_QUANTITY[unit]
    return {quantity: to_canonical(quantity, float(value), unit)}


class Ludlum375(StreamDriver):
    """One Reading per frame; alarm bits and error codes become flags."""

    name = "ludlum_375"
    Settings = Ludlum375Settings
    settings: Ludlum375Settings

    def make_framer(self) -> TerminatorFramer:
        """CR LF terminated; anything much longer than a frame is noise."""
        return TerminatorFramer(b"\r\n", max_frame=256)

    def parse_frame(self, frame: bytes) -> Reading:
        """Frame -> Reading; an error code is kept as a flag and counted (not logged per frame)."""
        quantities, flags, noise = parse_frame_375(frame, self.settings.reading_unit)
        self.discarded(noise)
        if any(flag.startswith("error_") for flag in flags):
            self.counters.error_replies += 1
            self.counters.last_error = ",".join(sorted(flags))
        return self.reading(quantities, frame[noise:], flags)
