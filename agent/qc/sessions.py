"""QC sessions: a technologist starts a test on some instruments, readings and DICOM techniques fill it, the verdict
follows each change, and a finished session is published on `qc/session` and kept as the audit record.

Ordering, so that a reading counted in a session is never lost and never counted twice: the session record first
(qc.db, committed with synchronous=FULL, keyed by the reading's msg_id), then the outbox (Sink.emit, also keyed by
msg_id), then `emitted = 1`. A crash between the first two leaves a recorded reading that the outbox lacks: start()
emits every reading still at `emitted = 0` again, and the outbox drops the ones it already had (same msg_id), so each
reading is published and counted exactly once. The other order could lose a published reading from its session.
Finishing follows the same pattern: the audit record and state in one transaction, then the outbox, then
`published = 1`; unpublished finished sessions are emitted again at start and on the supervisor's tick.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from typing import Any

from agent.outbox import OutboxError
from agent.payloads.base import Envelope, new_msg_id
from agent.payloads.exposure import ExposureEvent
from agent.payloads.qc import QcReading
from agent.payloads.qc_due import QcDue
from agent.payloads.qc_session import QcSession
from agent.qc.config import QcConfig
from agent.qc.matching import TECHNIQUE_KEYS, utc_iso
from agent.qc.models import TEST_TYPES
from agent.qc.quantities import measures as quantity_measures
from agent.qc.quantities import missing_quantities
from agent.qc.quantities import used as used_quantities
from agent.qc.models import TestResult
from agent.qc.record import analysed, exposure_views, session_payload, unit_identity
from agent.qc.recording import mark_emitted, record_events, record_reading
from agent.qc.schedule import due_list, in_zone, last_runs, overdue_tests
from agent.qc.store import QcStore, QcStoreError, dumps
from agent.sink import Sink

log = logging.getLogger(__name__)

DUE_REFRESH_S = 60.0  # the schedule's state changes by the day; a minute is plenty
OPERATOR_MAX = 32
REVIEWER_MAX = 80
COMMENT_MAX = 2000


class QcError(Exception):
    """A request that cannot be done; `status` is the HTTP status the web API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class QcSessions:
    """The QC session service of one agent (start/stop/alive for the supervisor; tick for retries)."""

    def __init__(self, cfg: QcConfig, store: QcStore, sink: Sink, instruments: Mapping[str, str],
                 measures: Mapping[str, frozenset[str]] | None = None,
                 accumulating: Mapping[str, frozenset[str]] | None = None,
                 records: Mapping[str, dict[str, Any]] | None = None, time_zone: str = "UTC") -> None:
        """instruments: configured instrument id -> driver name. measures: id -> the QC quantities it measures
        (default: its built-in driver's, agent/qc/quantities.py). accumulating: id -> the quantities it integrates
        (a running total: an exposure is their increase; default: the built-in driver's). records: id -> what a
        session records about the instrument (InstrumentConfig.record()). No I/O here."""
        self.cfg, self.store, self.sink = cfg, store, sink
        self.instruments = dict(instruments)
        measures = measures or {}
        self.measures = {i: measures.get(i, quantity_measures(d)) for i, d in self.instruments.items()}
        self.accumulating = dict(accumulating or {})
        self.records = {i: dict((records or {}).get(i) or {"id": i, "driver": d}) for i, d in self.instruments.items()}
        self.time_zone = time_zone
        self._due: list[dict[str, Any]] = []   # the schedule's state, refreshed on the tick and after a finish
        self._due_key: str | None = None       # digest of the qc/due state last stored in the outbox
        self._due_next = 0.0

    # ---- service -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open qc.db and emit what a crash may have left out of the outbox."""
        try:
            self.store.open()
            self.reconcile()
            self.refresh_due()
        except (QcStoreError, OutboxError) as exc:
            # Readings are still published (without a session) meanwhile; the supervisor retries with backoff.
            log.error("QC sessions unavailable: %s", exc)
            self.store.close()

    def stop(self) -> None:
        """Close qc.db."""
        self.store.close()

    def alive(self) -> bool:
        """True while qc.db is open."""
        return self.store.is_open

    def reconcile(self) -> None:
        """Re-emit readings recorded but maybe not in the outbox, publish finished sessions not yet published, and
        analyse the open sessions again (the limits may have changed since)."""
        for row in self.store.query("SELECT msg_id, payload FROM readings WHERE emitted = 0 ORDER BY measured_at"):
            self.sink.emit(QcReading.model_validate(row["payload"]))
            mark_emitted(self.store, row["msg_id"])
        self.publish_pending()
        for row in self.store.query("SELECT ref FROM sessions WHERE state = 'open'"):
            self._analyse(row["ref"])

    def tick(self) -> None:
        """Retry publishing finished sessions the outbox refused (called by the supervisor)."""
        if self.store.is_open:
            try:
                self.publish_pending()
            except (QcStoreError, OutboxError) as exc:
                log.debug("finished QC session still not published: %s", exc)
            if time.monotonic() >= self._due_next:
                self.refresh_due()

    # ---- the schedule --------------------------------------------------------------------------------------------
    def due(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """The schedule's state now (agent/qc/schedule.py), times in the site's zone; [] without a schedule."""
        if not self.cfg.schedule:
            return []
        rows = self._query("SELECT ref, test_type, ended_at, json_extract(result, '$.verdict') AS verdict FROM "
                           "sessions WHERE state = 'finished' ORDER BY ended_at", ())
        return due_list(self.cfg.schedule, last_runs(rows, self.time_zone), in_zone(now or _now(), self.time_zone))

    def overdue(self) -> list[str]:
        """The overdue test types as of the last refresh (for the health sample: no query on its thread)."""
        return overdue_tests(self._due)

    def refresh_due(self) -> None:
        """Recompute the schedule's state and store a retained qc/due when it changed (again within a minute when
        the outbox refused it)."""
        self._due_next = time.monotonic() + DUE_REFRESH_S
        if not self.cfg.schedule or not self.store.is_open:
            return
        try:
            self._due = self.due()
            key = hashlib.sha256(json.dumps(self._due, sort_keys=True).encode()).hexdigest()
            if key != self._due_key:
                # A fresh msg_id per change: a state that comes back (a schedule edited and edited back) must
                # replace the retained one, not be dropped by the outbox as a re-send of the earlier message.
                self.sink.emit(QcDue(msg_id=new_msg_id(), site=self.sink.site, room=self.sink.room, as_of=_now(),
                                     tests=self._due, overdue=overdue_tests(self._due)))
                self._due_key = key
        except (QcStoreError, OutboxError, QcError) as exc:
            log.warning("QC schedule state not stored yet: %s", exc)

    def publish_pending(self) -> None:
        """Emit every finished session whose record is not yet in the outbox."""
        for row in self.store.query("SELECT ref, record FROM sessions WHERE state = 'finished' AND published = 0"):
            self.sink.emit(QcSession.model_validate(row["record"]))
            with self.store.transaction() as conn:
                conn.execute("UPDATE sessions SET published = 1 WHERE ref = ?", (row["ref"],))
            log.info("QC session %s published on qc/session", row["ref"])

    # ---- hooks -------------------------------------------------------------------------------------------------
    def recorder(self, emit: Callable[[QcReading], Any]) -> Callable[[QcReading], Any]:
        """Wrap an instrument reader's emit: session record first, then the outbox (see the module docstring).
        QcStoreError is an OutboxError, so the reader holds the reading and retries as when the outbox refuses."""
        def store_reading(payload: QcReading) -> Any:
            if not self.store.is_open:
                return emit(payload)  # QC unavailable: the reading is still published, with no session
            payload = record_reading(self.store, payload, self.cfg.pair_window_s, self.cfg.match_window_s,
                                     self.accumulating.get(payload.instrument_id))
            result = emit(payload)
            if payload.session_ref is not None:
                mark_emitted(self.store, payload.msg_id)
                self._analyse(payload.session_ref)
            return result
        return store_reading

    def observe(self, payloads: list[Envelope]) -> None:
        """DICOM intake observer: exposure events (stored in the outbox already) fill the technique of exposures."""
        events = [p for p in payloads if isinstance(p, ExposureEvent)]
        if events and self.store.is_open:
            for ref in record_events(self.store, events, self.cfg.match_window_s):
                self._analyse(ref)

    # ---- the technologist's actions -------------------------------------------------------------------------------
    def open_session(self, test_type: str, instruments: list[str], operator: str) -> dict[str, Any]:
        """Start a test; each instrument may be in one open session at a time."""
        self._check_new(test_type, instruments, operator)
        ref = f"qc-{secrets.token_hex(4)}"
        with self._store() as conn:
            for instrument in instruments:
                busy = conn.execute("SELECT ref FROM sessions WHERE state = 'open' AND EXISTS (SELECT 1 FROM "
                                    "json_each(sessions.instruments) WHERE value = ?)", (instrument,)).fetchone()
                if busy is not None:
                    raise QcError(409, f"instrument {instrument} is in open session {busy['ref']}: finish or "
                                       "discard that one first")
            details = {"unit_id": self.cfg.unit_id or None, "time_zone": self.time_zone,
                       "instruments": [with_calibration_status(self.records[i], _now()) for i in instruments]}
            conn.execute("INSERT INTO sessions (ref, test_type, operator, instruments, state, started_at, details) "
                         "VALUES (?, ?, ?, ?, 'open', ?, ?)", (ref, test_type, operator.strip(), dumps(instruments),
                                                               utc_iso(_now()), dumps(details)))
        log.info("QC session %s started: %s on %s by %s", ref, test_type, ", ".join(instruments), operator.strip())
        self._analyse(ref)
        return self.session(ref)

    def _check_new(self, test_type: str, instruments: list[str], operator: str) -> None:
        if test_type not in TEST_TYPES:
            raise QcError(400, f"unknown test type {test_type!r}; one of {', '.join(TEST_TYPES)}")
        if not instruments or not isinstance(instruments, list) or not all(isinstance(i, str) for i in instruments):
            raise QcError(400, "choose at least one instrument")
        unknown = [i for i in instruments if i not in self.instruments]
        if unknown:
            known = ", ".join(self.instruments) or "none configured"
            raise QcError(400, f"unknown instrument {', '.join(map(str, unknown))}; configured: {known}")
        missing = missing_quantities(test_type, set().union(*(self.measures[i] for i in instruments)))
        if missing:
            have = "; ".join(f"{i} ({self.instruments[i]}) measures "
                             f"{', '.join(sorted(self.measures[i])) or 'no exposure quantity'}" for i in instruments)
            raise QcError(400, f"{test_type} needs {' and '.join(missing)}, which the chosen instruments do not "
                               f"measure: {have}")
        idle = [i for i in instruments if not self.measures[i] & used_quantities(test_type)]
        if idle:
            # Its readings would become exposures of their own (an area monitor's background every 2 s).
            raise QcError(400, f"{', '.join(idle)} measure{'s' if len(idle) == 1 else ''} nothing {test_type} uses: "
                               f"leave {'it' if len(idle) == 1 else 'them'} out of the session")
        name = operator.strip() if isinstance(operator, str) else ""
        if not name or len(name) > OPERATOR_MAX or not name.isprintable():
            raise QcError(400, f"operator: your initials or staff id (1-{OPERATOR_MAX} characters)")

    def set_technique(self, ref: str, number: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Confirm (no values) or correct/enter the set technique of one exposure; a value of null clears it."""
        clean = _technique_values(values)
        with self._store() as conn:
            self._open(ref)
            row = conn.execute("SELECT technique, source FROM exposures WHERE session_ref = ? AND number = ?",
                               (ref, number)).fetchone()
            if row is None:
                raise QcError(404, f"session {ref} has no exposure {number}")
            old = _loads(row["technique"])
            new = {k: v for k, v in {**old, **clean}.items() if v is not None}
            source = row["source"] if new == old else ("corrected" if row["source"] in ("dicom", "corrected")
                                                       else "manual")
            # Confirming an exposure that has no technique yet confirms nothing: DICOM may still fill it.
            conn.execute("UPDATE exposures SET technique = ?, source = ?, confirmed = ? WHERE session_ref = ? AND "
                         "number = ?", (dumps(new), source if new else None, int(bool(new)), ref, number))
        self._analyse(ref)
        return self.session(ref)

    def confirm_all(self, ref: str) -> dict[str, Any]:
        """Confirm, in one action, every DICOM-proposed technique not yet confirmed (corrections stay as they are)."""
        with self._store() as conn:
            self._open(ref)
            done = conn.execute("UPDATE exposures SET confirmed = 1 WHERE session_ref = ? AND source = 'dicom' AND "
                                "confirmed = 0", (ref,)).rowcount
        log.info("QC session %s: %d DICOM technique(s) confirmed", ref, done)
        self._analyse(ref)
        return self.session(ref)

    def finish(self, ref: str) -> dict[str, Any]:
        """Close the session with its verdict, keep the audit record and publish it on qc/session."""
        with self._store() as conn:
            session = self._open(ref)
            views = exposure_views(self.store, session)
            result = analysed(session["test_type"], views, self.cfg.limits)
            ended = utc_iso(_now())
            record = session_payload(session, views, result, site=self.sink.site, room=self.sink.room,
                                     finished_at=ended, match_window_s=self.cfg.match_window_s)
            conn.execute("UPDATE sessions SET state = 'finished', ended_at = ?, result = ?, record = ? WHERE ref = ?",
                         (ended, result.model_dump_json(), record.model_dump_json(by_alias=True), ref))
        log.info("QC session %s finished: %s (%d exposures)", ref, result.verdict, len(views))
        try:
            self.publish_pending()
        except OutboxError as exc:
            log.warning("QC session %s finished but not yet published (%s); retrying", ref, exc)
        self.refresh_due()
        return self.session(ref)

    def review(self, ref: str, reviewed_by: Any, comment: Any = "") -> dict[str, Any]:
        """A physicist signs a finished session off: the review is stored and the record published again as its
        next revision (a new msg_id, so subscribers get the update and the first record stays as it was)."""
        name = reviewed_by.strip() if isinstance(reviewed_by, str) else ""
        if not name or len(name) > REVIEWER_MAX or not name.isprintable():
            raise QcError(400, f"reviewed_by: the reviewer's name (1-{REVIEWER_MAX} characters)")
        if not isinstance(comment, str) or len(comment) > COMMENT_MAX:
            raise QcError(400, f"comment: text of at most {COMMENT_MAX} characters")
        with self._store() as conn:
            session = self._row(ref)
            if session is None:
                raise QcError(404, f"no QC session {ref}")
            if session["state"] != "finished":
                raise QcError(409, f"session {ref} is {session['state']}: only a finished session can be reviewed")
            revision = int((session.get("review") or {}).get("revision", 0)) + 1
            review = {"reviewed_by": name, "reviewed_at": local_iso(_now(), self.time_zone),
                      "comment": comment.strip(), "revision": revision}
            session["review"] = review
            views = exposure_views(self.store, session)
            result = TestResult.model_validate(session["result"])
            record = session_payload(session, views, result, site=self.sink.site, room=self.sink.room,
                                     finished_at=session["ended_at"], match_window_s=self.cfg.match_window_s)
            conn.execute("UPDATE sessions SET review = ?, record = ?, published = 0 WHERE ref = ?",
                         (dumps(review), record.model_dump_json(by_alias=True), ref))
        log.info("QC session %s reviewed by %s (revision %d)", ref, name, revision)
        try:
            self.publish_pending()
        except OutboxError as exc:
            log.warning("QC session %s review not yet published (%s); retrying", ref, exc)
        return self.session(ref)

    def discard(self, ref: str) -> dict[str, Any]:
        """Abandon the session: kept locally, not published (its readings went out on qc/reading already)."""
        with self._store() as conn:
            self._open(ref)
            conn.execute("UPDATE sessions SET state = 'discarded', ended_at = ? WHERE ref = ?", (utc_iso(_now()), ref))
        log.info("QC session %s discarded", ref)
        return self.session(ref)

    # ---- views -------------------------------------------------------------------------------------------------
    def session(self, ref: str) -> dict[str, Any]:
        """One session with its exposures and verdict, JSON-ready."""
        session = self._row(ref)
        if session is None:
            raise QcError(404, f"no QC session {ref}")
        session.pop("record", None)
        views = exposure_views(self.store, session)
        details = session.get("details") or {}
        return {**session, "published": bool(session["published"]), "exposures": views,
                "match_window_s": self.cfg.match_window_s, "unit": unit_identity(details.get("unit_id"), views),
                "instrument_records": details.get("instruments", []), "time_zone": details.get("time_zone")}

    def session_open(self) -> bool:
        """True while a QC session of this room is open: the DICOM intake marks exposures received then as QC."""
        if not self.store.is_open:
            return False  # no session can be open without qc.db (its failure is logged where it happens)
        return bool(self.store.query("SELECT 1 FROM sessions WHERE state = 'open' LIMIT ?", (1,)))

    def sessions(self, state: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Summaries, newest first: open ones, or the recent finished/discarded ones, or all."""
        where = {"open": "state = 'open'", "closed": "state != 'open'"}.get(state or "", "1")
        rows = self._query(f"SELECT s.ref, s.test_type, s.operator, s.instruments, s.state, s.started_at, "
                           f"s.ended_at, s.published, json_extract(s.result, '$.verdict') AS verdict, (SELECT "
                           f"count(*) FROM exposures e WHERE e.session_ref = s.ref) AS n_exposures FROM sessions s "
                           f"WHERE {where} ORDER BY s.started_at DESC LIMIT ?", (limit or self.cfg.recent_sessions,))
        return [{**row, "published": bool(row["published"])} for row in rows]

    def record(self, ref: str) -> dict[str, Any] | None:
        """The published audit record (qc/session payload) of a finished session."""
        row = self._row(ref)
        return None if row is None else row["record"]

    # ---- internals -------------------------------------------------------------------------------------------------
    def _analyse(self, ref: str) -> None:
        # Read, analyse and write under one transaction: a verdict computed from fewer exposures by another thread
        # must not overwrite a newer one.
        with self.store.transaction() as conn:
            session = self._row(ref)
            if session is None or session["state"] != "open":
                return
            result = analysed(session["test_type"], exposure_views(self.store, session), self.cfg.limits)
            conn.execute("UPDATE sessions SET result = ? WHERE ref = ? AND state = 'open'",
                         (result.model_dump_json(), ref))

    def _open(self, ref: str) -> dict[str, Any]:
        session = self._row(ref)
        if session is None:
            raise QcError(404, f"no QC session {ref}")
        if session["state"] != "open":
            raise QcError(409, f"session {ref} is {session['state']} already")
        return session

    def _row(self, ref: str) -> dict[str, Any] | None:
        return self.store.one("SELECT * FROM sessions WHERE ref = ?", (ref,)) if self.store.is_open else \
            self._unavailable()

    def _query(self, sql: str, params: tuple) -> list[dict[str, Any]]:
        return self.store.query(sql, params) if self.store.is_open else self._unavailable()

    def _store(self):
        if not self.store.is_open:
            self._unavailable()
        return self.store.transaction()

    def _unavailable(self):
        raise QcError(503, f"QC sessions are unavailable: {self.store.path} could not be opened (see the agent's log)")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def local_iso(at: datetime, zone: str) -> str:
    """ISO 8601 in the site's time zone, with its offset (an unknown zone: UTC)."""
    try:
        return at.astimezone(ZoneInfo(zone)).isoformat(timespec="seconds")
    except (ZoneInfoNotFoundError, ValueError):
        return at.astimezone(timezone.utc).isoformat(timespec="seconds")


def with_calibration_status(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The instrument record with calibration_status at `now`: overdue after calibration_due, valid before, else
    unknown."""
    due = record.get("calibration_due")
    status = "unknown" if not due else ("overdue" if date.fromisoformat(due) < now.date() else "valid")
    return {**record, "calibration_status": status}


def _loads(text: str) -> dict[str, Any]:
    return json.loads(text) if text else {}


def _technique_values(values: Mapping[str, Any]) -> dict[str, float | None]:
    """Validate typed-in technique values: known keys, numbers >= 0 or null."""
    out: dict[str, float | None] = {}
    for key, value in values.items():
        if key not in TECHNIQUE_KEYS:
            raise QcError(400, f"unknown technique value {key!r}; use {', '.join(TECHNIQUE_KEYS)}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
                                  or value != value or value == float("inf")):
            raise QcError(400, f"{key}: a number >= 0 (or null to clear), got {value!r}")
        out[key] = None if value is None else float(value)
    return out
