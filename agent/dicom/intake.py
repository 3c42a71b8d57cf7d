"""From a received DICOM object to durable events and a DIMSE status: shared by the C-STORE SCP and the folder watch.

The status contract: Success only after every event extracted from the object is committed to the outbox;
Out of Resources when the outbox is full or cannot be written (the sender keeps the object and retries);
Cannot Understand for an object that cannot be interpreted (a copy goes to the quarantine folder).

Privacy: free text is screened in extraction (ExtractContext.free_text); the values screened are counted and logged
by field name only. Published times are coarsened to privacy.time_resolution after the dose monitor has used the
exact ones (repeat windows), so the outbox and the broker see only the coarse times; observers (QC sessions, which
match meter readings to exposures by time) get the exact ones.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from pydicom import Dataset

from agent.dicom.extract import ExtractContext, ExtractionError, extract
from agent.dicom.identities import IdentityLedger
from agent.dicom.purpose import DEFAULT_NOT_A_PATIENT
from agent.dicom.quarantine import BoundedFolder
from agent.dicom.statuses import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS
from agent.logs import log_repeated
from agent.outbox import OutboxError, OutboxFull
from agent.payloads.base import Envelope, utc_now
from agent.payloads.exposure import DoseSummary, ExposureEvent
from agent.privacy.policy import NOT_IN_CATALOG, SCREENED, TextPolicy, TimeResolution, coarsen_times
from agent.sink import Sink

log = logging.getLogger(__name__)
TEXT_REASONS = frozenset({SCREENED, NOT_IN_CATALOG})


@dataclass
class IntakeCounters:
    """Counts for status and health; updated from several association threads."""

    received: int = 0
    events_stored: int = 0
    events_duplicate: int = 0
    no_exposure: int = 0  # valid objects that record no projection exposure (CT, presentation states...)
    not_for_room: int = 0  # dose reports of another kind of unit (CT, radiopharmaceutical): acknowledged, not published
    quarantined: int = 0
    incomplete: int = 0  # objects cut part-way (also counted in quarantined): answered Cannot Understand
    value_warnings: int = 0  # values present but unusable (one per field per event), published in `warnings`
    identity_corrections: int = 0  # an object re-sent with different content: published with `supersedes`
    identity_conflicts: int = 0  # exposures sharing one identity key with different content: published apart
    refused: int = 0  # answered Out of Resources
    associations_rejected: int = 0
    values_screened: int = 0  # free-text values changed by privacy.free_text (screened or not in the catalog)
    last_seen: dict[str, float] = field(default_factory=dict)  # calling AE title -> time.time() of its last object
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def seen(self, calling_aet: str) -> None:
        with self._lock:
            self.last_seen[calling_aet] = time.time()


MAX_SENDERS = 256  # remembered senders (AE titles); the oldest is forgotten first


def sender_of(origin: str) -> str:
    """The sender part of an origin: the calling AE title of "AE@address", else "folder"."""
    return origin.split("@", 1)[0] if "@" in origin else origin.split(" ", 1)[0]


class DicomIntake:
    """Turns objects into stored events and answers with a status; never raises for bad input."""

    def __init__(self, sink: Sink, secret: bytes, *, timezone: str = "UTC", include_age_sex: bool = True,
                 quarantine: BoundedFolder | None = None, retain_raw: BoundedFolder | None = None,
                 derive: Callable[..., list[Envelope]] | None = None,
                 free_text: TextPolicy = TextPolicy(), time_resolution: TimeResolution = "exact",
                 not_a_patient: tuple[str, ...] = DEFAULT_NOT_A_PATIENT):
        self.sink = sink
        self.secret = secret
        self.timezone = timezone
        self.include_age_sex = include_age_sex
        self.quarantine = quarantine
        self.retain_raw = retain_raw
        self.free_text = free_text
        self.time_resolution = time_resolution
        self.derive = derive  # adds messages that follow from the events (dose alerts); stored in the same commit
        # Called with the stored payloads after each successful store (QC sessions take the set technique from them);
        # an observer's failure is logged and never changes the answer to the sender.
        self.observers: list[Callable[[list[Envelope]], None]] = []
        # True while a QC session of this room is open (agent/qc): exposures received then are marked purpose "qc".
        self.qc_session_open: Callable[[], bool] | None = None
        self.not_a_patient = tuple(not_a_patient)
        self.counters = IntakeCounters()
        self.identities = IdentityLedger()
        self._refusing = False
        self._sender_modality: dict[str, str] = {}  # sender -> modality of its last image (for its dose reports)
        self._senders_lock = threading.Lock()

    def context(self, sender: str | None = None) -> ExtractContext:
        """The extraction context for an object received now from `sender`."""
        return ExtractContext(site=self.sink.site, room=self.sink.room, secret=self.secret, timezone=self.timezone,
                              include_age_sex=self.include_age_sex, received_at=utc_now(),
                              free_text=self.free_text, sender_modality=self._sender_modality.get(sender or ""),
                              not_a_patient=self.not_a_patient)

    def handle(self, ds: Dataset, raw: Callable[[], bytes], origin: str) -> int:
        """Extract, store durably, answer. `raw` gives the object's bytes (for quarantine); `origin` names the sender."""
        self.counters.add(received=1)
        sender = sender_of(origin)
        try:
            extraction = extract(ds, self.context(sender))
        except ExtractionError as exc:
            return self._reject(raw, exc.reason, origin)
        self._remember_sender(sender, extraction.events)
        payloads = self._mark_qc_session(list(extraction.payloads()))
        payloads, corrections, conflicts = self.identities.review(payloads, extraction.identities)
        self._count_screened(payloads, origin)
        if payloads and self.derive is not None:
            # After the identity review, so the dose monitor sees `supersedes`; every alert it adds names an event
            # of this same commit (an exposure dropped as already known has the msg_id, hence the content, of one
            # stored before, and so has its alert).
            payloads = self.derive(payloads, extraction.patient)  # private facts: evaluated, never stored
        if payloads:
            try:
                inserted = self.sink.emit(*(coarsen_times(p, self.time_resolution) for p in payloads))
            except OutboxError as exc:
                return self._refuse(exc, origin)
            self.identities.remember(payloads, extraction.identities)
            new = sum(inserted)
            self.counters.add(events_stored=new, events_duplicate=len(inserted) - new,
                              identity_corrections=corrections, identity_conflicts=conflicts)
            log.info("stored %d new event(s) (%d already known) from %s", new, len(inserted) - new, origin)
            self._log_warnings(payloads, origin)
            self._notify(payloads)  # exact times: QC matches meter readings to exposures by time
        elif extraction.not_for_room:
            self.counters.add(not_for_room=1)
            log.info("object from %s acknowledged, nothing published: %s", origin, extraction.not_for_room)
        else:
            self.counters.add(no_exposure=1)
            log.debug("object from %s records no projection exposure; acknowledged", origin)
        self._recovered()
        if self.retain_raw is not None:
            self.retain_raw.put(raw(), "received")
        return SUCCESS

    def _count_screened(self, payloads: list[Envelope], origin: str) -> None:
        """Count and log the free-text values the privacy policy changed: field names only, never the text."""
        screened = [w.field for p in payloads for w in getattr(p, "warnings", ()) if w.reason in TEXT_REASONS]
        fields, changed = sorted(set(screened)), len(screened)
        if changed:
            self.counters.add(values_screened=changed)
            log.info("free text screened in %d value(s) of %s from %s (privacy.free_text)", changed,
                     ", ".join(fields), origin)

    def _remember_sender(self, sender: str, events: tuple[ExposureEvent, ...]) -> None:
        modality = next((event.modality for event in events if event.source == "image" and event.modality), None)
        if modality:
            with self._senders_lock:  # several association threads
                if sender not in self._sender_modality and len(self._sender_modality) >= MAX_SENDERS:
                    self._sender_modality.pop(next(iter(self._sender_modality)))
                self._sender_modality[sender] = modality

    def _mark_qc_session(self, payloads: list[Envelope]) -> list[Envelope]:
        """Exposures received while a QC session of the room is open are QC exposures."""
        if not payloads or self.qc_session_open is None:
            return payloads
        try:
            session_open = self.qc_session_open()
        except Exception:  # noqa: BLE001 - the purpose flag must not fail the store
            log.exception("could not tell whether a QC session is open; exposures keep their own purpose")
            return payloads
        if not session_open:
            return payloads
        return [p.model_copy(update={"purpose": "qc"}) if isinstance(p, (ExposureEvent, DoseSummary)) else p
                for p in payloads]

    def _notify(self, payloads: list[Envelope]) -> None:
        for observer in self.observers:
            try:
                observer(payloads)
            except Exception:  # noqa: BLE001 - the events are stored: an observer must not fail the C-STORE
                log.exception("intake observer %s failed", getattr(observer, "__qualname__", observer))

    def _log_warnings(self, payloads: list[Envelope], origin: str) -> None:
        """One log line per object naming the fields whose values could not be used (no values: those may be
        identifying; the payload's `warnings` carry number-like raw text only)."""
        fields = [f"{w.field} ({w.reason})" for p in payloads if isinstance(p, ExposureEvent)
                  for w in p.warnings or () if w.reason not in TEXT_REASONS]  # screened text: _count_screened
        if fields:
            self.counters.add(value_warnings=len(fields))
            log.warning("object from %s: %d value(s) present but not usable, published as null with warnings: %s",
                        origin, len(fields), ", ".join(sorted(set(fields))))

    def handle_incomplete(self, raw: Callable[[], bytes], reason: str, origin: str) -> int:
        """An object cut part-way, or structurally malformed (completeness.py): nothing from it is interpreted or
        remembered, so a complete re-send is accepted and published; count, quarantine, answer Cannot Understand."""
        self.counters.add(received=1, incomplete=int(reason.startswith("incomplete")))  # else malformed structure
        return self._reject(raw, reason, origin)

    def handle_undecodable(self, raw: Callable[[], bytes], reason: str, origin: str) -> int:
        """An object whose bytes could not even be decoded: count, quarantine, answer Cannot Understand."""
        self.counters.add(received=1)
        return self._reject(raw, reason, origin)

    def _reject(self, raw: Callable[[], bytes], reason: str, origin: str) -> int:
        self.counters.add(quarantined=1)
        where = None
        if self.quarantine is not None:
            try:
                where = self.quarantine.put(raw(), reason, note=f"from {origin}: {reason}")
            except Exception as exc:  # noqa: BLE001 - a failed copy must not change the answer to the sender
                log.error("could not write quarantine copy: %s", exc)
        log_repeated(log, logging.WARNING, ("cannot interpret", origin),
                     "cannot interpret object from %s: %s; answered Cannot Understand%s", origin, reason,
                     f", kept as {where}" if where else "")
        return CANNOT_UNDERSTAND

    def _refuse(self, exc: OutboxError, origin: str) -> int:
        self.counters.add(refused=1)
        if not self._refusing:
            self._refusing = True
            kind = "full" if isinstance(exc, OutboxFull) else "not writable"
            log.error("outbox %s (%s): answering Out of Resources to %s so the modality keeps its objects and "
                      "retries (logged once until it recovers)", kind, exc, origin)
        return OUT_OF_RESOURCES

    def _recovered(self) -> None:
        if self._refusing:
            self._refusing = False
            log.warning("outbox accepts objects again")
