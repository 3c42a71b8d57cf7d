"""Profile emulator: replays the example frames of a profile's [emulator] section."""

from __future__ import annotations

import time
from itertools import cycle
from typing import Any

from drivers.emulators.base import Emulator
from drivers.profile import Profile, latin1

MAX_COMMAND = 256


class ProfileEmulator(Emulator):
    """Request/response: answers each known command with its next frame (cycled). Push: sends the push frames."""

    name = "profile"

    def __init__(self, *, profile: Profile, every_s: float | None = None, **kwargs: Any) -> None:
        """every_s: push period (default: the profile's emulator.push_interval_s)."""
        super().__init__(**kwargs)
        if profile.emulator is None:
            raise ValueError(f"profile {profile.name} has no [emulator] section")
        self.spec = profile.emulator
        self.every_s = every_s or self.spec.push_interval_s
        self.replies = {latin1(r.command): cycle([latin1(f) for f in r.frames]) for r in self.spec.replies}
        self.pushes = [latin1(f) for f in self.spec.push]
        self._push_cycle = cycle(self.pushes) if self.pushes else None
        self._buf = b""
        self._next = time.monotonic()

    def on_bytes(self, data: bytes) -> None:
        """Reply when the input ends with a known command."""
        self._buf = (self._buf + data)[-MAX_COMMAND:]
        for command, frames in self.replies.items():
            if self._buf.endswith(command):
                self._buf = b""
                self.reply(next(frames))
                return

    def tick(self, now: float) -> None:
        """Push the next frame when due (random choice in random mode)."""
        if self._push_cycle is None or now < self._next:
            return
        self._next = now + self.every_s
        frame = self.rng.choice(self.pushes) if self.random_mode else next(self._push_cycle)
        self.reply(frame)

    def error_frame(self) -> bytes:
        """The profile's example error frame."""
        return latin1(self.spec.error_frame)
