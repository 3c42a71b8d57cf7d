"""What the intake remembers of exposure identities, to tell a correction from two exposures sharing one identity.

"Already known" is decided by the outbox (a repeated msg_id, and msg_id hashes identity key + recorded content,
extract.py). This ledger only notices when an identity key comes back with different content:
- from the same place (same SOP instance, same position in it): the object was re-sent corrected. The new event is
  published with `supersedes` = the earlier event's event_ref;
- from another place: two exposures share one identity key (a vendor's UID generator repeated, an anonymiser
  rewrote UIDs). Each is published as its own event.
Either way a warning is logged once per identity key and counted. Memory only and bounded (LRU): after a restart, or
for an identity older than MAX_ENTRIES others, a correction is published as its own event without `supersedes`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from agent.payloads.base import Envelope
from agent.payloads.exposure import ExposureEvent

log = logging.getLogger(__name__)

MAX_ENTRIES = 50_000  # ~10 MB at most; a busy room makes a few hundred exposures a day


@dataclass(frozen=True)
class Seen:
    msg_id: str
    event_ref: str
    place: str


class IdentityLedger:
    """Thread-safe: association threads call `review` before storing and `remember` once stored."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[str, str], Seen] = OrderedDict()  # (source, identity hash) -> last seen
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def review(self, payloads: list[Envelope], identities: tuple[tuple[str, str], ...]
               ) -> tuple[list[Envelope], int, int]:
        """The payloads with `supersedes` set on corrections; also (corrections, conflicts) counted."""
        events = [p for p in payloads if isinstance(p, ExposureEvent)]
        corrections = conflicts = 0
        replaced: dict[int, Envelope] = {}
        with self._lock:
            for event, (identity, place) in zip(events, identities):
                key = (event.source, identity)
                earlier = self._seen.get(key)
                if earlier is None or earlier.msg_id == event.msg_id:
                    continue
                if earlier.place == place:
                    corrections += 1
                    replaced[id(event)] = event.model_copy(update={"supersedes": earlier.event_ref})
                    what = "re-sent with different recorded content: published as a correction (supersedes)"
                else:
                    conflicts += 1
                    what = ("shared by exposures that record different content: each is published as its own "
                            "event")
                if key not in self._warned:
                    self._warned.add(key)
                    log.warning("exposure identity %s… (%s) %s; logged once per identity", identity[:8],
                                event.source, what)
        return [replaced.get(id(p), p) for p in payloads], corrections, conflicts

    def remember(self, payloads: list[Envelope], identities: tuple[tuple[str, str], ...]) -> None:
        """Record the stored events' identities (call after the outbox commit)."""
        events = [p for p in payloads if isinstance(p, ExposureEvent)]
        with self._lock:
            for event, (identity, place) in zip(events, identities):
                key = (event.source, identity)
                self._seen[key] = Seen(event.msg_id, event.event_ref, place)
                self._seen.move_to_end(key)
            while len(self._seen) > self.max_entries:
                old, _ = self._seen.popitem(last=False)
                self._warned.discard(old)
