"""Ludlum 375 emulator: a 14-byte frame every every_s (2 s on the real monitor)."""

from __future__ import annotations

import time
from typing import Any

from drivers.emulators.base import Emulator
from drivers.ludlum import STATUS_FLAGS


def format_frame_375(reading: float, error: str = "0", **status: bool) -> bytes:
    """6-character reading, five '0'/'1' status bytes (audio, high_alarm, low_alarm, over_range, monitor),
    error code, CR LF."""
    text = f"{reading:06.1f}"
    if len(text) > 6:
        text = f"{reading:6.0f}"[:6]
    bits = "".join("1" if status.get(name) else "0" for name in STATUS_FLAGS)
    return f"{text}{bits}{error}\r\n".encode("ascii")


class Ludlum375Emulator(Emulator):
    """Pushes the next scripted values each period, else repeats the last (random in random mode)."""

    name = "ludlum_375"

    def __init__(self, *, every_s: float = 2.0, **kwargs: Any) -> None:
        """every_s: push period."""
        super().__init__(**kwargs)
        self.every_s = every_s
        self.current: dict[str, Any] = {"reading": 0.0}
        self._next = time.monotonic()

    def tick(self, now: float) -> None:
        """Push a frame when due."""
        if now < self._next:
            return
        self._next = now + self.every_s
        values = self.next_values()
        if values is not None:
            self.current = values
        self.reply(format_frame_375(**self.current))

    def error_frame(self) -> bytes:
        """Same reading, error code 1."""
        return format_frame_375(**{**self.current, "error": "1"})

    def random_values(self) -> dict[str, Any]:
        """A background-ish rate, sometimes above the alarm level."""
        reading = round(self.rng.uniform(0.1, 60), 1)
        return {"reading": reading, "high_alarm": reading > 50, "audio": reading > 50}
