"""Live equipment state of each instrument, shared between its reader thread and whoever reports or shows it.

The reader thread tells its tracker what happens to the port (connected, lost, readings stored, storage refused);
the driver's counters and problem episode are read from the driver itself. `EquipmentBoard` holds every tracker;
the equipment reporter publishes from it, and later the web page and health endpoints read `board.snapshot()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from agent.payloads.equipment import EquipmentCounters, EquipmentStatus
from drivers.base import Driver
from drivers.reading import Reading

DEVICE_TYPE = "serial-instrument"
# A burst of noise or a missed reply keeps the state "degraded" at least this long, so a burst shorter than the
# reporter's tick still shows on the equipment topic (with its counters).
DEGRADED_HOLD_S = 3.0


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class EquipmentTracker:
    """One instrument's state: down (no open port), degraded (line problems, a polled meter not responding, or
    storage refused) or ok."""

    def __init__(self, device_id: str, driver: Driver, port_selector: str,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        """Starts down: nothing is known until the port has been opened."""
        self.device_id, self.driver, self.port_selector = device_id, driver, port_selector
        self._clock = clock
        self._lock = threading.Lock()
        self._connected = False
        self._opened_before = False
        self._storage_error: str | None = None
        self._port: str | None = None
        self._error: str | None = None  # the latest port or storage problem (driver problems live in its counters)
        self._reconnects = 0
        self._last_reading_at: datetime | None = None
        self._state = "down"
        self._since = clock()
        self._problems_seen = 0  # sum of the driver's problem counters at the last evaluation
        self._problem_at = float("-inf")  # monotonic time that sum last grew
        self.known = False  # set by the first connect or failure: before that "down" would only be a guess

    def connected(self, device: str) -> None:
        """The port is open; count a reconnect if it had been open before."""
        with self._lock:
            self._reconnects += int(self._opened_before)
            self._connected, self._opened_before, self._port = True, True, device
            self.known = True

    def disconnected(self, error: str) -> None:
        """The port is gone, could not be opened, or the reader stopped."""
        with self._lock:
            self._connected, self.known = False, True
            self._error = error

    def reading_stored(self, reading: Reading) -> None:
        """A reading is in the outbox."""
        with self._lock:
            self._last_reading_at = reading.wall_utc

    def storage_refused(self, error: str | None) -> None:
        """The outbox refused a reading (None: it took it again)."""
        with self._lock:
            self._storage_error = error
            if error:
                self._error = f"reading not stored yet: {error}"

    def state(self) -> str:
        """The current state; `since` moves when it differs from the last one seen."""
        with self._lock:
            if not self._connected:
                state = "down"
            elif self._storage_error or self._line_troubled() or self.driver.not_responding():
                state = "degraded"
            else:
                state = "ok"
            if state != self._state:
                self._state, self._since = state, self._clock()
            return state

    def _line_troubled(self) -> bool:
        """Bad frames, noise, timeouts or error replies now (the driver's episode lasts until the next good frame)
        or within DEGRADED_HOLD_S."""
        c = self.driver.counters
        problems = c.frames_bad + c.bytes_discarded + c.timeouts + c.error_replies
        now = time.monotonic()
        if problems != self._problems_seen:
            self._problems_seen, self._problem_at = problems, now
        return self.driver.episode.active or now - self._problem_at < DEGRADED_HOLD_S

    def status(self, site: str, room: str, msg_id: str) -> EquipmentStatus:
        """The payload describing this instrument now."""
        self.state()
        counters = self.driver.counters.snapshot()
        with self._lock:
            now = self._clock()
            age = None if self._last_reading_at is None else max(0.0, (now - self._last_reading_at).total_seconds())
            return EquipmentStatus(
                msg_id=msg_id, site=site, room=room, device_id=self.device_id, device_type=DEVICE_TYPE,
                driver=self.driver.name, state=self._state, since=self._since, port=self._port,
                port_selector=self.port_selector, last_reading_at=self._last_reading_at, last_reading_age_s=age,
                counters=EquipmentCounters(
                    frames_ok=counters.frames_ok, frames_bad=counters.frames_bad,
                    bytes_discarded=counters.bytes_discarded, timeouts=counters.timeouts,
                    error_replies=counters.error_replies, reconnects=self._reconnects),
                last_error=self._latest_error(counters.last_error), ts=now)

    def _latest_error(self, driver_error: str) -> str | None:
        # While down or refused, the port/storage problem is the current one; then a silent polled meter; otherwise
        # the line's latest problem.
        if not self._connected or self._storage_error:
            return self._error
        return self.driver.not_responding() or driver_error or self._error


@dataclass
class EquipmentBoard:
    """Every tracked device by id: the agent's live view of its equipment."""

    trackers: dict[str, EquipmentTracker] = field(default_factory=dict)

    def add(self, tracker: EquipmentTracker) -> EquipmentTracker:
        """Track one more device."""
        self.trackers[tracker.device_id] = tracker
        return tracker

    def snapshot(self, site: str = "", room: str = "") -> list[EquipmentStatus]:
        """Current status of every device (msg_ids are placeholders: this is for display, not publishing)."""
        return [t.status(site, room, f"snapshot-{t.device_id}") for t in list(self.trackers.values())]
