"""Test fixtures for drivers: a byte-exact fake port, a reading collector, and recorded frames.

`expected_protocol(pairs)` (after pymeasure's helper of the same name) gives a fake transport that FAILS the test if
the driver writes anything but the next expected request, and, on leaving the `with` block, if any request/response
pair (or stream chunk) was not used. Replies may be a list of chunks, delivered one per read() call, to test frames
split across reads. `stream` chunks are delivered after the pairs (push instruments); once they are all read, the
fake sets `stop` so the driver's loop ends.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

Reply = bytes | Sequence[bytes]


class FakePort:
    """A transport with pyserial's read/write/in_waiting, scripted by (request, reply) pairs and stream chunks."""

    def __init__(self, pairs: Iterable[tuple[bytes, Reply]] = (), stream: Iterable[bytes] = (),
                 stop: threading.Event | None = None) -> None:
        self.pairs = [(req, [rep] if isinstance(rep, bytes) else list(rep)) for req, rep in pairs]
        self.stream = deque(stream)
        self.stop = stop
        self.used = 0
        self.writes: list[bytes] = []
        self._pending_write = b""
        self._rx: deque[bytes] = deque()

    @property
    def in_waiting(self) -> int:
        """Bytes of the chunk that has 'arrived'."""
        return len(self._rx[0]) if self._rx else 0

    def write(self, data: bytes) -> int:
        """Accept only the next expected request, byte for byte."""
        self.writes.append(data)
        self._pending_write += data
        if self.used >= len(self.pairs):
            raise AssertionError(f"unexpected write {data!r}: all {len(self.pairs)} request/response pairs used")
        request, reply = self.pairs[self.used]
        if not request.startswith(self._pending_write):
            raise AssertionError(f"driver sent {self._pending_write!r}, expected {request!r} (pair {self.used})")
        if self._pending_write == request:
            self._pending_write = b""
            self.used += 1
            self._rx.extend(chunk for chunk in reply if chunk)
        return len(data)

    def read(self, size: int = 1) -> bytes:
        """Up to size bytes of the current chunk; b'' (after a short pause, like a port timeout) if none."""
        if not self._rx and self.used == len(self.pairs) and self.stream:
            self._rx.append(self.stream.popleft())
        if not self._rx:
            if self.stop is not None and self.used == len(self.pairs):
                self.stop.set()
            time.sleep(0.001)
            return b""
        chunk = self._rx.popleft()
        if len(chunk) > size:
            self._rx.appendleft(chunk[size:])
        return chunk[:size]

    def check_done(self) -> None:
        """Fail if a pair or stream chunk was left unused."""
        unused = [req for req, _ in self.pairs[self.used:]]
        assert not unused, f"request/response pairs left unused: {unused}"
        assert not self._pending_write, f"incomplete request {self._pending_write!r}"
        assert not self.stream and not self._rx, "stream chunks left unread"


@contextmanager
def expected_protocol(pairs: Iterable[tuple[bytes, Reply]] = (), stream: Iterable[bytes] = (),
                      stop: threading.Event | None = None) -> Iterator[FakePort]:
    """A FakePort that must be used exactly: every pair, every chunk, and nothing else."""
    port = FakePort(pairs, stream, stop)
    yield port
    port.check_done()


def collect(readings: Iterator, stop: threading.Event, limit: int | None = None, timeout_s: float = 5.0) -> list:
    """Readings until `limit` of them, or until stop is set; a safety timer sets stop after timeout_s."""
    timer = threading.Timer(timeout_s, stop.set)
    timer.start()
    out = []
    try:
        for reading in readings:
            out.append(reading)
            if limit is not None and len(out) >= limit:
                break
    finally:
        timer.cancel()
    return out


def chunks_of(data: bytes, size: int) -> list[bytes]:
    """Split data into chunks of `size` bytes."""
    return [data[i:i + size] for i in range(0, len(data), size)]


# Recorded / documented frames (meters.md), shared by the tests so they do not drift apart.
DIAMENTOR_M = b"M9999.99,8888.88,222,33,eeee.ee,ffff.ff,mmm,ss,34567\r"
VICTOREEN_D = b"+8.034E+01 +7.950E+01 +1.000E+02 +1.000E-01 3\r\n+8.100E+01 +8.000E+01 +7.900E+01\r\n"
LUDLUM_375 = b"0642.1010000\r\n"  # 642.1, high alarm on, no error
UNIDOS_MV = b"MV;RES;2.6;E-3;m;Gy;5.6;E-09;n;Gy;min;3000.0;ms;300.0;V;0x0\r\n"
LUDLUM_2363_RR = b"000003 002305 012456\r\n"
