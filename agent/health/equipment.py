"""Equipment states of the agent's own devices, on equipment/{id} beside the serial instruments' (same board, same
reporter): the DICOM listener (`dicom-listener`), each modality by calling AE title (`modality-{AE}`) and the broker
link (`broker-link`). Each tracker has the EquipmentTracker interface the reporter reads: device_id, known, state(),
status().
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from agent.payloads.equipment import DicomCounters, EquipmentCounters, EquipmentStatus, LinkCounters

PROBLEM_HOLD_S = 60.0  # refused objects or rejected publishes keep the state degraded this long


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def _age_s(ts: float | None) -> float | None:
    return None if ts is None else max(0.0, time.time() - ts)


class _Tracked:
    """State with the time it last changed, and a counter whose growth means trouble for a while."""

    device_id = ""
    known = True  # the reporter skips a device not known yet for a few seconds, rather than report a guessed "down"

    def __init__(self) -> None:
        self._state, self._since = "", datetime.now(timezone.utc)
        self._problems, self._problem_at = 0, float("-inf")

    def _troubled(self, problems: int) -> bool:
        if problems != self._problems:
            self._problems, self._problem_at = problems, time.monotonic()
        return time.monotonic() - self._problem_at < PROBLEM_HOLD_S

    def _moved(self, state: str) -> str:
        if state != self._state:
            self._state, self._since = state, datetime.now(timezone.utc)
        return state


class ListenerTracker(_Tracked):
    """The C-STORE SCP: down while not bound, degraded while objects are refused (outbox full or unwritable)."""

    device_id = "dicom-listener"

    def __init__(self, listener, intake, ae_title: str, address: str) -> None:
        """listener: StorageSCP (alive()); intake: DicomIntake (counters)."""
        super().__init__()
        self.listener, self.intake, self.endpoint = listener, intake, f"{ae_title}@{address}"
        self._bound = False

    @property
    def known(self) -> bool:
        """True once the listener has been bound (it starts after the reporter)."""
        self._bound = self._bound or self.listener.alive()
        return self._bound

    def state(self) -> str:
        """ok, degraded or down now."""
        if not self.listener.alive():
            return self._moved("down")
        return self._moved("degraded" if self._troubled(self.intake.counters.refused) else "ok")

    def status(self, site: str, room: str, msg_id: str) -> EquipmentStatus:
        """The payload describing the listener now."""
        state, c = self.state(), self.intake.counters
        last = max(dict(c.last_seen).values(), default=None)
        return EquipmentStatus(
            msg_id=msg_id, site=site, room=room, device_id=self.device_id, device_type="dicom-listener",
            state=state, since=self._since, endpoint=self.endpoint, last_reading_at=_utc(last),
            last_reading_age_s=_age_s(last),
            dicom=DicomCounters(received=c.received, events_stored=c.events_stored, quarantined=c.quarantined,
                                refused=c.refused, associations_rejected=c.associations_rejected,
                                values_screened=c.values_screened),
            last_error=None if state == "ok" else ("not bound" if state == "down" else "objects refused: outbox "
                                                   "full or not writable"))


def modality_device_id(ae_title: str) -> str:
    """`modality-{AE}` with characters a topic level must not carry replaced by '_'."""
    return "modality-" + (re.sub(r"[^A-Za-z0-9_.-]", "_", ae_title.strip()) or "_")[:55]


class ModalityTracker(_Tracked):
    """A sender as last seen by its calling AE title: ok, or degraded when silent for longer than quiet_s.

    Never "down": the agent cannot tell a switched-off modality from an idle one."""

    def __init__(self, ae_title: str, counters, quiet_s: float) -> None:
        super().__init__()
        self.ae_title, self.counters, self.quiet_s = ae_title, counters, quiet_s
        self.device_id = modality_device_id(ae_title)

    def _last_seen(self) -> float | None:
        return self.counters.last_seen.get(self.ae_title)

    def state(self) -> str:
        """ok while heard from within quiet_s."""
        age = _age_s(self._last_seen())
        return self._moved("ok" if age is not None and age < self.quiet_s else "degraded")

    def status(self, site: str, room: str, msg_id: str) -> EquipmentStatus:
        """The payload describing this modality now."""
        state, last = self.state(), self._last_seen()
        return EquipmentStatus(
            msg_id=msg_id, site=site, room=room, device_id=self.device_id, device_type="modality", state=state,
            since=self._since, endpoint=self.ae_title, last_reading_at=_utc(last), last_reading_age_s=_age_s(last),
            last_error=None if state == "ok" else f"nothing received for more than {self.quiet_s:.0f} s")


class BrokerLinkTracker(_Tracked):
    """The MQTT connection: down while disconnected, degraded while the broker rejects publishes, messages are parked
    or another client takes the session (same client id)."""

    device_id = "broker-link"

    def __init__(self, publisher, endpoint: str) -> None:
        """publisher: Publisher (its PublisherState is read)."""
        super().__init__()
        self.publisher, self.endpoint = publisher, endpoint

    @property
    def known(self) -> bool:
        """True once connected (the first sample then says "ok"; a broker never reached shows "down" after the
        reporter's grace)."""
        return self.publisher.state.connects > 0

    def state(self) -> str:
        """ok, degraded or down now."""
        s = self.publisher.state
        if not s.connected:
            return self._moved("down")
        return self._moved("degraded" if self._troubled(s.rejected_total + s.parked_total + s.takeovers) else "ok")

    def status(self, site: str, room: str, msg_id: str) -> EquipmentStatus:
        """The payload describing the link now."""
        state, s = self.state(), self.publisher.state
        return EquipmentStatus(
            msg_id=msg_id, site=site, room=room, device_id=self.device_id, device_type="broker-link", state=state,
            since=self._since, endpoint=self.endpoint, last_reading_at=_utc(s.last_puback_at),
            last_reading_age_s=_age_s(s.last_puback_at), counters=EquipmentCounters(reconnects=s.reconnects),
            link=LinkCounters(connects=s.connects, published=s.published_total, acknowledged=s.acked_total,
                              rejected=s.rejected_total, last_outage_s=s.last_outage_s),
            last_error=None if state == "ok" else (s.last_error or None))


class ModalityWatch:
    """Adds a ModalityTracker to the board for every calling AE title the listener has heard from (supervisor tick)."""

    def __init__(self, board, every_s: dict[str, float], counters, quiet_s: float, period_s: float) -> None:
        self.board, self.every_s, self.counters = board, every_s, counters
        self.quiet_s, self.period_s = quiet_s, period_s
        self._known: set[str] = set()

    def tick(self) -> None:
        """Track AE titles seen since the last tick."""
        for ae_title in dict(self.counters.last_seen).keys() - self._known:  # dict(): a copy, atomic under the GIL
            self._known.add(ae_title)
            tracker = ModalityTracker(ae_title, self.counters, self.quiet_s)
            self.every_s[tracker.device_id] = self.period_s
            self.board.add(tracker)
