"""Publishes each tracked device's EquipmentStatus on `equipment/{device_id}`: on a change of state and periodically.

The messages are retained and coalesced (agent.topics), so a subscriber that connects later sees the current state
and a backlog never holds more than the newest sample per device.
"""

from __future__ import annotations

import logging
import time

from agent.instruments.status import EquipmentBoard
from agent.outbox import OutboxError
from agent.payloads.base import new_msg_id
from agent.sink import Sink
from agent.supervisor import ThreadService

log = logging.getLogger(__name__)

TICK_S = 0.2  # how soon a change of state (an unplug) shows on the topic
UNKNOWN_GRACE_S = 5.0  # publish "down" for a device whose reader has not reported at all after this long


class EquipmentReporter(ThreadService):
    """Service (start/stop/alive): one thread watching every tracker of the board; stopping publishes the final
    states (readers stop first: "down", agent stopped) on the way out."""

    thread_name = "equipment-reporter"

    def __init__(self, board: EquipmentBoard, sink: Sink, every_s: dict[str, float]) -> None:
        """every_s: device id -> periodic re-publish interval, s."""
        super().__init__()
        self.board, self.sink, self.every_s = board, sink, every_s
        self._published: dict[str, tuple[str, float]] = {}  # device id -> (state, monotonic time published)
        self._started = time.monotonic()
        self._failing = False

    def start(self) -> None:
        """Start the reporter thread."""
        self._started = time.monotonic()
        super().start()

    def republish(self) -> None:
        """Publish every device's state on the next tick, changed or not (the republish-status command)."""
        self._published.clear()

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            self.publish_due()
        self.publish_due()

    def publish_due(self) -> None:
        """Publish every device whose state changed or whose periodic sample is due."""
        now = time.monotonic()
        for device_id, tracker in list(self.board.trackers.items()):  # devices may be added meanwhile (modalities)
            if not tracker.known and now - self._started < UNKNOWN_GRACE_S:
                continue
            last = self._published.get(device_id)
            if last and last[0] == tracker.state() and now - last[1] < self.every_s.get(device_id, 60.0):
                continue
            status = tracker.status(self.sink.site, self.sink.room, new_msg_id())
            try:
                self.sink.emit(status)
            except OutboxError as exc:  # equipment samples coalesce and are never refused for size: a disk problem
                if not self._failing:
                    log.error("cannot store equipment status (%s); retrying every %.1f s", exc, TICK_S)
                self._failing = True
                return
            self._failing = False
            self._published[device_id] = (status.state, now)
