"""The durable writes behind the two hooks: a meter reading joins the open session of its instrument, and a DICOM
exposure event fills the set technique of the exposure nearest in time. Each call is one qc.db transaction.

Readings are keyed by their qc/reading msg_id (fixed per reading, agent/instruments/mapping.py): recording the same
reading again (the reader retrying after the outbox refused it, or after a crash) finds the first record and returns
the same payload, so a reading is never counted twice.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

from agent.payloads.exposure import ExposureEvent
from agent.payloads.qc import QcReading
from agent.qc.matching import event_device, event_technique, event_time, increments, nearest, parse_time, utc_iso
from agent.qc.store import QcStore, dumps

EVENTS_KEPT = timedelta(days=1)  # events are only wanted for a few seconds; a day is plenty for late senders
OPEN_SESSION_OF = ("SELECT ref FROM sessions WHERE state = 'open' AND EXISTS "
                   "(SELECT 1 FROM json_each(sessions.instruments) WHERE value = ?)")


def record_reading(store: QcStore, payload: QcReading, pair_window_s: float, match_window_s: float,
                   accumulating: frozenset[str] | None = None) -> QcReading:
    """Record the reading in the open session of its instrument and return it with that session_ref; without an
    open session (or for a DAP meter whose total did not grow) it is returned as it came, session_ref null."""
    with store.transaction() as conn:
        known = conn.execute("SELECT payload FROM readings WHERE msg_id = ?", (payload.msg_id,)).fetchone()
        if known is not None:
            return QcReading.model_validate_json(known["payload"])
        grown, is_exposure = _meter_totals(conn, payload, accumulating)
        session = conn.execute(OPEN_SESSION_OF, (payload.instrument_id,)).fetchone()
        if session is None or not is_exposure:
            return payload
        payload = payload.model_copy(update={"session_ref": session["ref"]})
        number, new = _exposure_for(conn, session["ref"], payload, pair_window_s)
        conn.execute("INSERT INTO readings (msg_id, session_ref, exposure, instrument_id, measured_at, payload, "
                     "increments) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (payload.msg_id, session["ref"], number, payload.instrument_id, utc_iso(payload.measured_at),
                      payload.model_dump_json(by_alias=True), dumps(grown)))
        if new:
            _claim_nearest_event(conn, session["ref"], number, payload.measured_at, match_window_s)
    return payload


def mark_emitted(store: QcStore, msg_id: str) -> None:
    """The outbox holds the reading: no need to emit it again at the next start."""
    with store.transaction() as conn:
        conn.execute("UPDATE readings SET emitted = 1 WHERE msg_id = ?", (msg_id,))


def _meter_totals(conn: sqlite3.Connection, payload: QcReading,
                  accumulating: frozenset[str] | None) -> tuple[dict[str, float], bool]:
    """Increase of an accumulating meter since its previous reading (any session or none), and whether this reading
    is an exposure; the new totals are saved in the same transaction as the reading."""
    rows = conn.execute("SELECT key, value FROM meter_totals WHERE instrument_id = ?", (payload.instrument_id,))
    grown, totals, is_exposure = increments(payload.driver, payload.quantities, {r["key"]: r["value"] for r in rows},
                                            accumulating, payload.flags)
    conn.executemany("INSERT OR REPLACE INTO meter_totals (instrument_id, key, value) VALUES (?, ?, ?)",
                     [(payload.instrument_id, key, value) for key, value in totals.items() if value is not None])
    conn.executemany("DELETE FROM meter_totals WHERE instrument_id = ? AND key = ?",  # flagged: baseline unknown
                     [(payload.instrument_id, key) for key, value in totals.items() if value is None])
    return grown, is_exposure


def _exposure_for(conn: sqlite3.Connection, ref: str, payload: QcReading, pair_window_s: float) -> tuple[int, bool]:
    """(exposure number, new?): the latest exposure when another instrument of the session measured it within
    pair_window_s and this one has not; otherwise a new exposure."""
    last = conn.execute("SELECT number, measured_at FROM exposures WHERE session_ref = ? ORDER BY number DESC "
                        "LIMIT 1", (ref,)).fetchone()
    if last is not None:
        gap = abs((payload.measured_at - parse_time(last["measured_at"])).total_seconds())
        mine = conn.execute("SELECT 1 FROM readings WHERE session_ref = ? AND exposure = ? AND instrument_id = ?",
                            (ref, last["number"], payload.instrument_id)).fetchone()
        if gap <= pair_window_s and mine is None:
            return last["number"], False
    number = (last["number"] if last is not None else 0) + 1
    conn.execute("INSERT INTO exposures (session_ref, number, measured_at) VALUES (?, ?, ?)",
                 (ref, number, utc_iso(payload.measured_at)))
    return number, True


def _claim_nearest_event(conn: sqlite3.Connection, ref: str, number: int, at: datetime, window_s: float) -> None:
    """A new exposure takes the set technique of the unclaimed DICOM event nearest in time, if one is in the window
    (the modality may have sent its image before the meter's reading arrived)."""
    rows = conn.execute("SELECT event_ref, at FROM events WHERE claimed_by IS NULL AND at BETWEEN ? AND ?",
                        (utc_iso(at - timedelta(seconds=window_s)), utc_iso(at + timedelta(seconds=window_s))))
    event_ref = nearest(at, ((r["event_ref"], parse_time(r["at"])) for r in rows), window_s)
    if event_ref is not None:
        _fill(conn, ref, number, event_ref)


def _fill(conn: sqlite3.Connection, ref: str, number: int, event_ref: str) -> None:
    conn.execute("UPDATE exposures SET technique = (SELECT technique FROM events WHERE event_ref = ?), "
                 "dicom_technique = (SELECT technique FROM events WHERE event_ref = ?), "
                 "device = (SELECT device FROM events WHERE event_ref = ?), "
                 "source = 'dicom', event_ref = ? WHERE session_ref = ? AND number = ?",
                 (event_ref, event_ref, event_ref, event_ref, ref, number))
    conn.execute("UPDATE events SET claimed_by = ? WHERE event_ref = ?", (f"{ref}/{number}", event_ref))


def record_events(store: QcStore, events: list[ExposureEvent], window_s: float) -> set[str]:
    """While a session is open, keep the events for matching and fill the nearest exposure still lacking a technique
    in an open session; returns the refs of the sessions changed."""
    touched: set[str] = set()
    if store.one("SELECT 1 AS open FROM sessions WHERE state = 'open' LIMIT 1") is None:
        # Only exposures of open sessions take a technique, and their readings come after the start: outside QC
        # the DICOM intake pays no write (and no fsync) for this hook.
        return touched
    now = datetime.now(timezone.utc)
    with store.transaction() as conn:
        for event in events:
            technique = event_technique(event)
            if not technique:
                continue  # nothing to fill (an RDSR event without technique values)
            at = event_time(event)
            added = conn.execute("INSERT OR IGNORE INTO events (event_ref, at, technique, stored_at, device) "
                                 "VALUES (?, ?, ?, ?, ?)", (event.event_ref, utc_iso(at), dumps(technique),
                                                            utc_iso(now), dumps(event_device(event))))
            if added.rowcount == 0:
                continue  # the same exposure again (its image and its dose report share the event_ref)
            target = _nearest_exposure(conn, at, window_s)
            if target is not None:
                _fill(conn, target[0], target[1], event.event_ref)
                touched.add(target[0])
        conn.execute("DELETE FROM events WHERE stored_at < ?", (utc_iso(now - EVENTS_KEPT),))
    return touched


def _nearest_exposure(conn: sqlite3.Connection, at: datetime, window_s: float) -> tuple[str, int] | None:
    rows = conn.execute(
        "SELECT e.session_ref, e.number, e.measured_at FROM exposures e JOIN sessions s ON s.ref = e.session_ref "
        "WHERE s.state = 'open' AND e.source IS NULL AND e.measured_at BETWEEN ? AND ?",
        (utc_iso(at - timedelta(seconds=window_s)), utc_iso(at + timedelta(seconds=window_s))))
    return nearest(at, (((r["session_ref"], r["number"]), parse_time(r["measured_at"])) for r in rows), window_s)
