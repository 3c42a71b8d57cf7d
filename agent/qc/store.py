"""QC sessions in SQLite (qc.db beside the outbox): sessions, their exposures and readings, recent DICOM events.

One connection, used under one lock by the reader threads, the DICOM association threads and the web threads: QC
produces a reading every few seconds at most, so serialising is cheaper than coordinating. Every write is one
transaction with synchronous=FULL, like the outbox: a reading recorded in a session survives a power cut.
JSON columns hold the payloads as published (readings), the set technique and the analysis result.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from agent import statedb
from agent.outbox import OutboxError
from agent.privacy.files import private_dir, private_sqlite

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    ref TEXT PRIMARY KEY,
    test_type TEXT NOT NULL,
    operator TEXT NOT NULL,
    instruments TEXT NOT NULL,          -- JSON list of instrument ids
    state TEXT NOT NULL,                -- open, finished, discarded
    started_at TEXT NOT NULL,
    ended_at TEXT,
    result TEXT,                        -- JSON TestResult after the latest change
    record TEXT,                        -- JSON qc/session payload, written when finished: the audit record
    published INTEGER NOT NULL DEFAULT 0,
    details TEXT,                       -- JSON: X-ray unit and instrument records at the start
    review TEXT                         -- JSON: the physicist's sign-off (name, date, comment)
);
CREATE INDEX IF NOT EXISTS sessions_state ON sessions (state, started_at);
CREATE TABLE IF NOT EXISTS exposures (
    session_ref TEXT NOT NULL REFERENCES sessions (ref),
    number INTEGER NOT NULL,
    measured_at TEXT NOT NULL,
    technique TEXT NOT NULL DEFAULT '{}',   -- JSON set technique (SetTechnique without source/confirmed/event_ref)
    source TEXT,                            -- dicom, manual, corrected; null: none yet
    confirmed INTEGER NOT NULL DEFAULT 0,
    event_ref TEXT,
    dicom_technique TEXT,                   -- JSON technique as the modality reported it (kept beside corrections)
    PRIMARY KEY (session_ref, number)
);
CREATE TABLE IF NOT EXISTS readings (
    msg_id TEXT PRIMARY KEY,                -- the qc/reading msg_id: recording a reading twice is a no-op
    session_ref TEXT NOT NULL REFERENCES sessions (ref),
    exposure INTEGER NOT NULL,
    instrument_id TEXT NOT NULL,
    measured_at TEXT NOT NULL,
    payload TEXT NOT NULL,                  -- the QcReading as published (session_ref set), raw frame included
    increments TEXT NOT NULL DEFAULT '{}',  -- JSON increase of accumulating quantities since the previous reading
    emitted INTEGER NOT NULL DEFAULT 0      -- 1 once the outbox holds it; 0 rows are re-emitted at start
);
CREATE INDEX IF NOT EXISTS readings_session ON readings (session_ref, exposure);
CREATE INDEX IF NOT EXISTS readings_pending ON readings (emitted) WHERE emitted = 0;
CREATE TABLE IF NOT EXISTS meter_totals (
    instrument_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (instrument_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    event_ref TEXT PRIMARY KEY,
    at TEXT NOT NULL,                       -- acquisition time, else reception time, UTC ISO
    technique TEXT NOT NULL,
    claimed_by TEXT,                        -- 'session_ref/number' of the exposure it filled
    stored_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
"""
JSON_COLUMNS = ("instruments", "result", "record", "technique", "payload", "increments", "dicom_technique",
                "details", "review", "device")
# Columns added after the first release: (table, column, declaration), added to an existing qc.db at open.
ADDED_COLUMNS = (("exposures", "dicom_technique", "TEXT"), ("sessions", "details", "TEXT"),
                 ("sessions", "review", "TEXT"), ("events", "device", "TEXT"), ("exposures", "device", "TEXT"))


class QcStoreError(OutboxError):
    """qc.db could not be read or written. An OutboxError: the instrument reader then holds the reading and retries,
    exactly as when the outbox refuses, so a reading is never published without its session record."""


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for key in JSON_COLUMNS:
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out


def dumps(value: Any) -> str:
    """Compact JSON for a JSON column."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class QcStore:
    """The qc.db file; `transaction()` for writes, `query()`/`one()` for reads, all under one lock."""

    def __init__(self, path: Path) -> None:
        """No I/O here: open() creates or opens the file."""
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self.damage: str | None = None  # the file is damaged and not yet rebuilt (agent.statedb): readings are held
        self.recovery: statedb.Recovery | None = None
        self.on_damage: Callable[[str], None] | None = None  # the integrity watch's wake-up
        self._repairing = False

    def state_spec(self) -> statedb.Spec:
        """How agent.statedb rebuilds qc.db: its schema; lost rows adopted by column count (all distinct)."""
        return statedb.Spec("qc", self.path, lambda conn: conn.executescript(SCHEMA),
                            adopt=("sessions", "readings", "exposures", "events"))

    def open(self) -> None:
        """Check the file (rebuilding it if damaged), then open it (creating the file and tables on first use)."""
        with self._lock:
            if self._conn is not None:
                return
            try:
                private_dir(self.path.parent)  # checked before the file is created: a missing file may be
                # one a crash left moved aside mid-rebuild (agent.statedb resumes it), never an empty new one
                self.recovery = statedb.ensure_sound(self.state_spec()) or self.recovery
                private_sqlite(self.path)  # 0600, and so its -wal/-shm
                self.damage = None
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=BUSY_TIMEOUT_S)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")  # as the outbox: a recorded reading survives power loss
                conn.execute("PRAGMA foreign_keys = ON")
                conn.executescript(SCHEMA)
                for table, column, declaration in ADDED_COLUMNS:
                    have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                    if column not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            except (sqlite3.Error, OSError) as exc:
                raise QcStoreError(f"cannot open {self.path}: {exc}") from exc
            self._conn = conn

    def mark_damaged(self, detail: str) -> None:
        """Refuse every read and write until repair() (readings are held, as when the outbox refuses)."""
        if self.damage is None:
            self.damage = detail
            log.error("QC store %s is damaged (%s): readings are held until it is rebuilt", self.path, detail)
            if self.on_damage is not None:
                self.on_damage(detail)

    def repair(self, detail: str) -> None:
        """Rebuild qc.db from its readable rows and reopen it."""
        self.mark_damaged(detail)
        with self._lock:
            self._repairing = True
            try:
                self.recovery = statedb.recover_in_use(self.state_spec(), detail, self.close)
                self.open()
            finally:
                self._repairing = False

    def close(self) -> None:
        """Close the file; later calls raise QcStoreError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def is_open(self) -> bool:
        """True between open() and close(), and while the file is damaged (the integrity watch owns it until it is
        rebuilt: a restart of the QC service would not help)."""
        return self._conn is not None or self._repairing or self.damage is not None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One durable write transaction (BEGIN IMMEDIATE ... COMMIT); sqlite3 errors become QcStoreError."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    self._met(exc)
                    raise QcStoreError(f"{self.path}: {exc}") from exc
                raise

    def query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        """Rows as dicts, JSON columns decoded."""
        with self._lock:
            try:
                return [_row(r) for r in self._connection().execute(sql, params).fetchall()]
            except sqlite3.Error as exc:
                self._met(exc)
                raise QcStoreError(f"{self.path}: {exc}") from exc

    def _met(self, exc: sqlite3.Error) -> None:
        if statedb.is_damage(exc):
            self.mark_damaged(str(exc))

    def one(self, sql: str, params: tuple = ()) -> dict[str, Any] | None:
        """The first row as a dict, or None."""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def _connection(self) -> sqlite3.Connection:
        if self.damage is not None:
            raise QcStoreError(f"{self.path} is damaged and being rebuilt ({self.damage})")
        if self._conn is None:
            raise QcStoreError(f"{self.path} is not open (the QC service is stopped)")
        return self._conn
