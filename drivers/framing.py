"""Pure frame buffers: feed chunks of any size, get back only complete frames.

No I/O here. Each framer is bounded: bytes that cannot belong to a frame of at most `max_frame` bytes are discarded
and counted (`drain_discarded()`), so a stream of noise (wrong baud rate, a cable in the wrong port) costs at most
`max_frame` bytes of memory. A start marker, when the protocol has one, lets a framer drop leading garbage and restart
on an unclosed frame (the dsmr_parser approach).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol


class Framer(Protocol):
    """What drivers need from a frame buffer."""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the frames they complete (possibly none)."""

    def reset(self) -> None:
        """Forget any partial frame (counted as discarded)."""

    def drain_discarded(self) -> int:
        """Bytes discarded since the last call."""


class _Discards:
    """Counting of dropped bytes, shared by the framers."""

    def __init__(self, max_frame: int) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self.overflows = 0
        self._discarded = 0
        self._buf = bytearray()

    def _discard(self, n: int) -> None:
        self._discarded += n
        del self._buf[:n]

    def drain_discarded(self) -> int:
        """Bytes discarded since the last call."""
        n, self._discarded = self._discarded, 0
        return n

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame (bounded by max_frame after each feed)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial frame (counted as discarded unless it is only whitespace, e.g. the LF of a CRLF)."""
        if not self._buf.strip():
            self._buf.clear()
        self._discard(len(self._buf))

    def _check_overflow(self) -> None:
        # A partial frame already longer than any valid frame starts with noise. Keep only the last max_frame bytes:
        # they may hold the start of the next valid frame (formats without a start marker give no other clue).
        if len(self._buf) > self.max_frame:
            self.overflows += 1
            self._discard(len(self._buf) - self.max_frame)


class TerminatorFramer(_Discards):
    """Frames ended by a terminator (b'\\r', b'\\r\\n', b'\\n', b'\\x03'...), terminator not included.

    With `start`, bytes before a start marker are dropped and a new start marker restarts the frame.
    Empty frames (a bare terminator) are skipped unless keep_empty.
    """

    def __init__(self, terminator: bytes = b"\r\n", *, start: bytes = b"", max_frame: int = 4096,
                 keep_empty: bool = False) -> None:
        super().__init__(max_frame)
        if not terminator:
            raise ValueError("terminator must not be empty")
        self.terminator, self.start, self.keep_empty = terminator, start, keep_empty

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the frames they complete."""
        self._buf += chunk
        frames: list[bytes] = []
        while (frame := self._next_frame()) is not None:
            if frame or self.keep_empty:
                frames.append(frame)
        self._check_overflow()
        return frames

    def _next_frame(self) -> bytes | None:
        if self.start:
            self._sync_to_start()
        end = self._buf.find(self.terminator)
        if end < 0:
            return None
        frame = bytes(self._buf[:end])
        del self._buf[:end + len(self.terminator)]
        if len(frame) > self.max_frame:
            # Noise ran into a frame: hand on only the last max_frame bytes; the parser takes the frame from the
            # tail or rejects it as a bad frame, so noise is never read as a value.
            self.overflows += 1
            self._discarded += len(frame) - self.max_frame
            frame = frame[-self.max_frame:]
        return frame

    def _sync_to_start(self) -> None:
        # Drop bytes before the start marker. A later start marker before the terminator means the earlier frame
        # was never closed (unplug, torn write): restart from the later one. (So the marker must not occur inside
        # a frame, as with STX or NMEA's '$'.)
        while True:
            end = self._buf.find(self.terminator)
            limit = len(self._buf) if end < 0 else end
            last = self._buf.rfind(self.start, 0, limit)
            if last >= 0:
                self._discard(last)
                return
            if end < 0:  # no marker yet: keep only what may be the first bytes of a split marker
                self._discard(max(0, len(self._buf) - (len(self.start) - 1)))
                return
            self._discard(end + len(self.terminator))  # a terminated run with no marker: garbage


class FixedLengthFramer(_Discards):
    """Frames of exactly `length` bytes, optionally beginning with a start marker used to resynchronise."""

    def __init__(self, length: int, *, start: bytes = b"") -> None:
        super().__init__(max(length, 1))
        self.length, self.start = length, start

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the complete frames."""
        self._buf += chunk
        frames: list[bytes] = []
        while True:
            if self.start:
                at = self._buf.find(self.start)
                self._discard(at if at >= 0 else max(0, len(self._buf) - len(self.start) + 1))
            if len(self._buf) < self.length:
                return frames
            frames.append(bytes(self._buf[:self.length]))
            del self._buf[:self.length]


class MultiLineFramer:
    """Records of `lines` consecutive lines, returned joined by b'\\n' (terminators removed).

    With `first_line` (a bytes regex), a record starts only at a matching line: lines before it are dropped, and a
    matching line in the middle of a record restarts it (the earlier, incomplete record is discarded).
    """

    def __init__(self, lines: int, terminator: bytes = b"\r\n", *, first_line: bytes = b"",
                 max_frame: int = 4096) -> None:
        if lines < 1:
            raise ValueError("lines must be at least 1")
        self.lines = lines
        self.first_line = re.compile(first_line) if first_line else None
        self._lines = TerminatorFramer(terminator, max_frame=max_frame, keep_empty=True)
        self._record: list[bytes] = []
        self._discarded = 0

    @property
    def overflows(self) -> int:
        """Lines dropped for exceeding max_frame."""
        return self._lines.overflows

    @property
    def pending(self) -> int:
        """Bytes held: the partial line plus the lines of the partial record."""
        return self._lines.pending + sum(len(line) for line in self._record)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the complete records."""
        records = []
        for line in self._lines.feed(chunk):
            if self.first_line is not None and self.first_line.search(line):
                self._drop_record()
            elif self.first_line is not None and not self._record:
                self._discarded += len(line)
                continue
            self._record.append(line)
            if len(self._record) == self.lines:
                records.append(b"\n".join(self._record))
                self._record = []
        return records

    def _drop_record(self) -> None:
        self._discarded += sum(len(line) for line in self._record)
        self._record = []

    def reset(self) -> None:
        """Forget any partial record (counted as discarded)."""
        self._drop_record()
        self._lines.reset()

    def drain_discarded(self) -> int:
        """Bytes discarded since the last call."""
        n, self._discarded = self._discarded + self._lines.drain_discarded(), 0
        return n


class FunctionFramer(_Discards):
    """Frames whose end a pure function finds: `frame_end(buffer)` returns the frame's length, or None if incomplete.

    For replies whose length depends on their content (the Victoreen `D` reply announces its number of peaks).
    """

    def __init__(self, frame_end: Callable[[bytes], int | None], *, max_frame: int = 4096) -> None:
        super().__init__(max_frame)
        self.frame_end = frame_end

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the complete frames."""
        self._buf += chunk
        frames = []
        while self._buf and (end := self.frame_end(bytes(self._buf))):  # None (or 0): incomplete
            frames.append(bytes(self._buf[:end]))
            del self._buf[:end]
        self._check_overflow()
        return frames
