"""The driver interface: a driver turns bytes from a transport into Readings.

Usage from the thread that owns the port (the agent's serial intake service):

    driver = DRIVERS[name](settings)                 # no I/O
    with serial.Serial(device, exclusive=True, **settings.serial_kwargs()) as port:
        for reading in driver.readings(port, stop):  # blocks; returns when `stop` is set
            outbox.put(reading)                      # the next poll waits until this returns

A generator keeps this simple: the caller stores each reading before the driver sends its next command, and bad input
is handled (counted, logged once per episode) inside the loop. Only transport failures leave it: a vanished
device raises serial.SerialException (an OSError), and the caller closes, backs off and re-finds the port.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import ClassVar, Protocol, TypeVar

from serial import SerialException

from drivers.framing import Framer
from drivers.reading import Counters, ErrorReply, FrameError, Reading, make_reading
from drivers.settings import DriverSettings, PollSettings, StreamSettings

T = TypeVar("T")

# A polled meter with no valid reply for this many poll cycles is "not responding" (equipment state degraded).
NOT_RESPONDING_POLLS = 3

__all__ = ["Counters", "Driver", "ErrorReply", "FrameError", "PollingDriver", "Reading", "StreamDriver", "Transport"]


class Transport(Protocol):
    """What a driver needs from a port: pyserial's Serial has it, and so do the test fakes."""

    @property
    def in_waiting(self) -> int:
        """Bytes that can be read without blocking."""

    def read(self, size: int = 1) -> bytes:
        """Up to `size` bytes; b'' after the port's read timeout."""

    def write(self, data: bytes) -> int | None:
        """Send bytes."""


def waiting(transport: Transport) -> int:
    """transport.in_waiting; a vanished device raises SerialException, as read() and write() do."""
    try:
        return transport.in_waiting
    except SerialException:
        raise
    except OSError as exc:  # a hung-up pty/USB adapter fails the ioctl with a bare OSError (EIO)
        raise SerialException(f"port gone: {exc}") from exc


def read_chunk(transport: Transport) -> bytes:
    """Whatever is waiting, or wait (up to the port timeout) for one byte."""
    size = max(1, waiting(transport))
    return transport.read(size)


class EpisodeLog:
    """Log bad input once per episode; the episode ends at the next good frame (then one 'recovered' line)."""

    def __init__(self, log: logging.Logger, who: str) -> None:
        self.log, self.who = log, who
        self.active = False
        self.repeats = 0

    def problem(self, message: str) -> None:
        """Report a problem: a warning if it starts an episode, debug otherwise."""
        if self.active:
            self.repeats += 1
            self.log.debug("%s: %s", self.who, message)
            return
        self.active, self.repeats = True, 0
        self.log.warning("%s: %s (further problems logged at debug level until a good frame)", self.who, message)

    def ok(self) -> None:
        """A good frame arrived: close the episode, if any."""
        if self.active:
            self.log.info("%s: good frame again after %d further problem(s)", self.who, self.repeats)
            self.active = False


class Driver(ABC):
    """Base of all drivers: settings, counters, episode logging and the bookkeeping helpers."""

    name: ClassVar[str] = ""
    style: ClassVar[str] = ""  # "request_response" or "push"
    Settings: ClassVar[type[DriverSettings]] = DriverSettings

    def __init__(self, settings: DriverSettings | None = None) -> None:
        """Store settings; no I/O (the transport comes with each readings() call)."""
        self.settings = settings if settings is not None else self.Settings()
        self.counters = Counters()
        self.ready = False  # request/response: init sequence done
        self.opened_at = time.monotonic()  # when the current transport was handed over (reset())
        self.last_reply_at: float | None = None  # monotonic time of the last good frame on the current transport
        self.episode = EpisodeLog(logging.getLogger(f"drivers.{self.name}"), self.instrument_id)

    @property
    def instrument_id(self) -> str:
        """The configured id, or the driver name."""
        return self.settings.instrument_id or self.name

    @abstractmethod
    def readings(self, transport: Transport, stop: threading.Event) -> Iterator[Reading]:
        """Yield Readings until `stop` is set; bad input never raises, a failed transport does."""

    def initialize(self, transport: Transport, stop: threading.Event) -> bool:
        """Run the init sequence; False means 'try again after retry_interval_s'. Default: nothing to do."""
        return True

    def reset(self) -> None:
        """Forget the protocol state: a new transport (a reconnect, a power-cycled meter) starts from nothing known.

        Called by poll_loop/stream_loop before the first byte on each transport. Subclasses that keep protocol state
        (armed, selected unit, pending command) extend it; the next poll re-learns the meter's state by asking.
        """
        self.ready = False
        self.opened_at = time.monotonic()
        self.last_reply_at = None

    def polled(self) -> bool:
        """Request/response (the meter answers polls) rather than push."""
        return self.style == "request_response"

    def awaiting_reply(self) -> bool:
        """Whether silence from the meter is a problem now. A meter armed for an exposure is silent by design."""
        return True

    def not_responding(self, now: float | None = None) -> str | None:
        """'not responding for N s' when a polled meter gave no valid reply within NOT_RESPONDING_POLLS poll cycles
        (poll interval + reply timeout each) on the current transport; None otherwise (and always for push meters,
        whose silence stream_loop counts as timeouts)."""
        if not self.polled() or not self.awaiting_reply():
            return None
        settings = self.settings
        cycle_s = getattr(settings, "poll_interval_s", 0.0) + getattr(settings, "reply_timeout_s", 0.0)
        silent_s = (time.monotonic() if now is None else now) - max(self.last_reply_at or 0.0, self.opened_at)
        if silent_s <= NOT_RESPONDING_POLLS * cycle_s:
            return None
        return f"not responding: no valid reply for {silent_s:.0f} s"

    def reading(self, quantities: dict[str, float], raw: bytes, flags: Iterable[str] = (),
                series: Mapping[str, Iterable[float]] | None = None) -> Reading:
        """A Reading of this instrument, stamped now."""
        return make_reading(self.instrument_id, quantities, raw, flags, series)

    def transact(self, transport: Transport, command: bytes, framer: Framer, timeout_s: float,
                 stop: threading.Event, *, count_timeout: bool = True) -> bytes | None:
        """Strict ping-pong: drop stale input, send one command, return the first complete reply frame or None."""
        stale = waiting(transport)
        if stale:  # late replies or noise from before: never let them pass as this command's answer
            data = transport.read(stale)
            self.discarded(len(data) if data.strip() else 0)
        framer.reset()
        self.discarded(framer.drain_discarded())
        transport.write(command)
        deadline = time.monotonic() + timeout_s
        while not stop.is_set() and time.monotonic() < deadline:
            frames = self.feed(framer, read_chunk(transport))
            if frames:
                self.discarded(sum(len(f) for f in frames[1:]))
                return frames[0]
        if count_timeout and not stop.is_set():
            self.timeout(f"no reply to {command!r} within {timeout_s:g} s")
        return None

    def feed(self, framer: Framer, chunk: bytes) -> list[bytes]:
        """framer.feed, counting the bytes it dropped."""
        frames = framer.feed(chunk)
        self.discarded(framer.drain_discarded())
        return frames

    def parse(self, parse: Callable[[bytes], T], frame: bytes) -> T | None:
        """Run a parser on a frame, turning FrameError/ErrorReply/ValueError into counts (None); else count it ok."""
        try:
            result = parse(frame)
        except ErrorReply as err:
            self.error_reply(err)
            return None
        except (ValueError, ArithmeticError) as exc:  # FrameError; float()/int()/10**x on a mangled field
            self.bad(f"bad frame {frame[:80]!r}: {exc}")
            return None
        self.good()
        return result

    def good(self) -> None:
        """Count a good frame; ends a problem episode."""
        self.counters.frames_ok += 1
        self.last_reply_at = time.monotonic()
        self.episode.ok()

    def bad(self, message: str) -> None:
        """Count a bad frame."""
        self.counters.frames_bad += 1
        self._problem(message)

    def error_reply(self, err: ErrorReply) -> None:
        """Count an error reply from the instrument."""
        self.counters.error_replies += 1
        self._problem(f"instrument error {err.code}: {err.name}")

    def timeout(self, message: str) -> None:
        """Count a timeout. A silent instrument may have been power-cycled: poll_loop re-runs the init sequence."""
        self.counters.timeouts += 1
        self.ready = False
        self._problem(message)

    def discarded(self, n: int) -> None:
        """Count bytes dropped before they could form a frame."""
        if n:
            self.counters.bytes_discarded += n
            self._problem(f"discarded {n} byte(s) of noise")

    def _problem(self, message: str) -> None:
        self.counters.last_error = message
        self.episode.problem(message)


def poll_loop(driver: Driver, transport: Transport, stop: threading.Event) -> Iterator[Reading]:
    """Request/response: from a reset protocol state, run the init sequence (again after any timeout), then poll
    every poll_interval_s."""
    driver.reset()
    while not stop.is_set():
        if not driver.ready:
            driver.ready = driver.initialize(transport, stop)
            if not driver.ready:
                stop.wait(driver.settings.retry_interval_s)
                continue
        reading = driver.poll(transport, stop)
        if reading is not None:
            yield reading
        stop.wait(driver.settings.poll_interval_s)


def stream_loop(driver: Driver, transport: Transport, stop: threading.Event) -> Iterator[Reading]:
    """Push: from a reset protocol state, initialize once, then frame what arrives; a silence of silence_timeout_s
    counts one timeout."""
    driver.reset()
    while not stop.is_set() and not driver.initialize(transport, stop):
        stop.wait(driver.settings.retry_interval_s)
    framer = driver.make_framer()
    last_byte = time.monotonic()
    while not stop.is_set():
        chunk = read_chunk(transport)
        now = time.monotonic()
        if chunk:
            last_byte = now
        elif now - last_byte > driver.settings.silence_timeout_s:
            driver.timeout(f"no data for {driver.settings.silence_timeout_s:g} s")
            last_byte = now
        for frame in driver.feed(framer, chunk):
            reading = driver.parse(driver.parse_frame, frame)
            if reading is not None:
                yield reading


class PollingDriver(Driver):
    """Request/response instruments: subclasses implement poll() and, if needed, initialize()."""

    style = "request_response"
    Settings = PollSettings
    settings: PollSettings

    def readings(self, transport: Transport, stop: threading.Event) -> Iterator[Reading]:
        """Yield a Reading whenever a poll produces one (see poll_loop)."""
        return poll_loop(self, transport, stop)

    @abstractmethod
    def poll(self, transport: Transport, stop: threading.Event) -> Reading | None:
        """One command sequence; a Reading if it produced one."""


class StreamDriver(Driver):
    """Push instruments: subclasses give a framer and a frame parser."""

    style = "push"
    Settings = StreamSettings
    settings: StreamSettings

    def readings(self, transport: Transport, stop: threading.Event) -> Iterator[Reading]:
        """Yield a Reading per good frame (see stream_loop)."""
        return stream_loop(self, transport, stop)

    @abstractmethod
    def make_framer(self) -> Framer:
        """A fresh frame buffer for this instrument."""

    @abstractmethod
    def parse_frame(self, frame: bytes) -> Reading | None:
        """One frame -> Reading (None: a well-formed frame that carries no reading); raises FrameError/ErrorReply."""
