"""The `profile` driver: runs any instrument described by a Profile (drivers/profile.py), push or request/response."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from drivers.base import Driver, Transport, poll_loop, stream_loop
from drivers.framing import Framer
from drivers.profile import CommandSpec, Profile, checked_text, error_in, is_ignored, latin1, record, rx
from drivers.reading import FrameError, Reading


class ProfileDriver(Driver):
    """Init script once (again after a timeout); then the poll script every poll_interval_s, or framed push data."""

    name = "profile"
    style = "request_response|push"  # per profile: see self.settings.mode
    Settings = Profile
    settings: Profile

    def __init__(self, settings: Profile) -> None:
        """The profile is required (there is no sensible default instrument)."""
        super().__init__(settings)

    @property
    def instrument_id(self) -> str:
        """The configured id, or the profile name."""
        return self.settings.instrument_id or self.settings.name

    def readings(self, transport: Transport, stop: threading.Event) -> Iterator[Reading]:
        """Yield Readings until stop is set (poll_loop or stream_loop, by the profile's mode)."""
        loop = stream_loop if self.settings.mode == "push" else poll_loop
        return loop(self, transport, stop)

    def polled(self) -> bool:
        """Request/response unless the profile pushes."""
        return self.settings.mode != "push"

    def make_framer(self) -> Framer:
        """A fresh framer as the profile describes."""
        return self.settings.framing.make()

    def initialize(self, transport: Transport, stop: threading.Event) -> bool:
        """Run the init script; False if any command fails."""
        return all(self._command(transport, cmd, stop) is not None for cmd in self.settings.init)

    def poll(self, transport: Transport, stop: threading.Event) -> Reading | None:
        """Run the poll script; one Reading from the replies marked parse (checked and counted together)."""
        replies: list[tuple[CommandSpec, bytes]] = []
        for cmd in self.settings.poll:
            frame = self._command(transport, cmd, stop, check=not cmd.parse)
            if frame is None:
                return None
            if cmd.reply and cmd.parse:
                replies.append((cmd, frame))
        return self.parse(lambda raw: self._poll_reading(replies, raw), b"\n".join(f for _, f in replies))

    def parse_frame(self, frame: bytes) -> Reading | None:
        """Push: one frame -> Reading; None for an ignored frame (a header, a prompt)."""
        text = frame.decode("latin-1")
        if is_ignored(self.settings, text):
            return None
        error_in(self.settings, text)
        return self._reading(checked_text(self.settings.checksum, frame), frame)

    def _command(self, transport: Transport, cmd: CommandSpec, stop: threading.Event,
                 check: bool = True) -> bytes | None:
        """Send one command; its reply frame (b'' if it has none), None on failure (counted).

        check=False leaves checking to the caller: poll checks the replies it parses with the reading, so that
        one poll counts as one frame.
        """
        if not cmd.reply:
            transport.write(latin1(cmd.send))
            stop.wait(cmd.timeout_s or 0)
            return b""
        timeout_s = cmd.timeout_s or self.settings.reply_timeout_s
        frame = self.transact(transport, latin1(cmd.send), self.make_framer(), timeout_s, stop)
        if frame is None or not check:
            return frame
        return None if self.parse(lambda f: self._check_reply(cmd, f), frame) is None else frame

    def _check_reply(self, cmd: CommandSpec, frame: bytes) -> str:
        text = frame.decode("latin-1")
        error_in(self.settings, text)
        if cmd.parse:  # replies carrying fields carry the checksum too
            text = checked_text(self.settings.checksum, frame)
        if cmd.expect and not rx(cmd.expect).search(text):
            raise FrameError(f"reply to {cmd.send!r} does not match {cmd.expect!r}")
        return text

    def _poll_reading(self, replies: list[tuple[CommandSpec, bytes]], raw: bytes) -> Reading:
        text = "\n".join(self._check_reply(cmd, frame) for cmd, frame in replies)
        return self._reading(text, raw)

    def _reading(self, text: str, raw: bytes) -> Reading:
        quantities, flags = record(self.settings, text)
        return self.reading(quantities, raw, flags)
