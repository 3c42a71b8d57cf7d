"""The local dose history (SQLite, next to the outbox): one row per distinct exposure, the totals dose reports gave per
study, the ledger of alerts raised, and a little state (when the last daily summary went out).

Nothing here identifies a patient: studies, exposures and patients are the pseudonymous refs of the exposure events
(keyed hashes under the site secret); no age, weight, sex, name, ID or UID is stored. Rows older than the configured
number of days are pruned; a patient's study totals are kept for the longest patient window of the rules.

Writes are behind: the monitor decides from its memory and hands the rows to HistoryWriter, whose thread commits them
about once a second (WAL, synchronous=NORMAL). So an object's evaluation makes no SQLite call: every call releases the GIL,
and behind a busy thread each retake can wait a whole switch interval (5 ms). What a crash can take is the last
moments of history, which only lowers a summary's counts slightly: cumulative reports are re-sent whole, alert
msg_ids are deterministic, and the outbox drops an alert it has seen. An acknowledged object itself is in the outbox.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agent.statedb import is_damage

from agent.privacy.files import private_sqlite

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
MAX_OPS_PER_COMMIT = 1000
COMMIT_EVERY_S = 1.0

MIGRATIONS: list[str] = [
    """
    CREATE TABLE exposures (
        event_ref TEXT PRIMARY KEY,
        study_ref TEXT,
        at REAL NOT NULL,               -- acquisition time, else receipt; epoch seconds
        received_at REAL NOT NULL,
        protocol TEXT, body_part TEXT, view TEXT, modality TEXT, irradiation_type TEXT,
        dap_gy_m2 REAL, dose_rp_gy REAL, deviation_index REAL,
        di_band TEXT NOT NULL,
        repeat_of TEXT
    );
    CREATE INDEX exposures_at ON exposures (at);
    CREATE INDEX exposures_study ON exposures (study_ref, at);
    CREATE TABLE study_reports (
        study_ref TEXT PRIMARY KEY, dap_total_gy_m2 REAL, dose_rp_total_gy REAL, updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE alerts (
        msg_id TEXT PRIMARY KEY, alert TEXT NOT NULL, rule TEXT NOT NULL, protocol TEXT, study_ref TEXT,
        at REAL NOT NULL, object_key TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX alerts_at ON alerts (at);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    """,
    """
    ALTER TABLE exposures ADD COLUMN source TEXT;
    ALTER TABLE exposures ADD COLUMN patient_ref TEXT;
    ALTER TABLE exposures ADD COLUMN fluoro_time_s REAL;
    ALTER TABLE exposures ADD COLUMN exam TEXT;          -- DRL audit: the exam name, its rule and patient band
    ALTER TABLE exposures ADD COLUMN exam_rule TEXT;
    ALTER TABLE exposures ADD COLUMN band TEXT;
    ALTER TABLE exposures ADD COLUMN unit TEXT;          -- manufacturer, model, serial: the unit's target EI
    ALTER TABLE exposures ADD COLUMN target_ei REAL;
    CREATE INDEX exposures_patient ON exposures (patient_ref);
    ALTER TABLE study_reports ADD COLUMN fluoro_time_total_s REAL;
    ALTER TABLE study_reports ADD COLUMN planes TEXT;    -- JSON {"A": {"study_dose_rp_gy": ...}, "B": ...}
    ALTER TABLE alerts ADD COLUMN patient_ref TEXT;
    ALTER TABLE alerts ADD COLUMN quantity TEXT;
    ALTER TABLE alerts ADD COLUMN value REAL;
    ALTER TABLE alerts ADD COLUMN level REAL;
    CREATE INDEX alerts_patient ON alerts (patient_ref);
    CREATE TABLE patient_studies (
        patient_ref TEXT NOT NULL, study_ref TEXT NOT NULL,
        at REAL NOT NULL,               -- the study's first exposure; epoch seconds
        dap_gy_m2 REAL, dose_rp_gy REAL, fluoro_time_s REAL,
        PRIMARY KEY (patient_ref, study_ref)
    ) WITHOUT ROWID;
    CREATE INDEX patient_studies_at ON patient_studies (at);
    CREATE TABLE drl_audits (
        period_start TEXT NOT NULL, period_end TEXT NOT NULL, trigger TEXT NOT NULL,
        exam TEXT NOT NULL, band TEXT NOT NULL, rule TEXT, examinations INTEGER NOT NULL,
        median_dap_gy_m2 REAL, q1_dap_gy_m2 REAL, q3_dap_gy_m2 REAL, drl_dap_gy_m2 REAL, median_to_drl REAL,
        flags TEXT NOT NULL, computed_at REAL NOT NULL,
        PRIMARY KEY (period_start, period_end, exam, band)
    ) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# The write operations, as (statement, parameters); the monitor builds the parameters.
UPSERT_EXPOSURE = (
    "INSERT INTO exposures (event_ref, study_ref, at, received_at, protocol, body_part, view, modality, "
    "irradiation_type, dap_gy_m2, dose_rp_gy, deviation_index, di_band, repeat_of, source, patient_ref, "
    "fluoro_time_s, exam, exam_rule, band, unit, target_ei) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_ref) DO UPDATE SET "
    "dap_gy_m2 = coalesce(dap_gy_m2, excluded.dap_gy_m2), "  # a second view of the exposure (image and RDSR) fills
    "dose_rp_gy = coalesce(dose_rp_gy, excluded.dose_rp_gy), "  # what was missing
    "fluoro_time_s = coalesce(fluoro_time_s, excluded.fluoro_time_s), "
    "patient_ref = coalesce(patient_ref, excluded.patient_ref), "
    "target_ei = coalesce(target_ei, excluded.target_ei), "
    "source = CASE excluded.source WHEN 'rdsr' THEN 'rdsr' ELSE source END, "
    "deviation_index = coalesce(deviation_index, excluded.deviation_index), "
    "di_band = CASE di_band WHEN 'unknown' THEN excluded.di_band ELSE di_band END")
UPSERT_REPORT = (
    "INSERT INTO study_reports (study_ref, dap_total_gy_m2, dose_rp_total_gy, updated_at, fluoro_time_total_s, "
    "planes) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (study_ref) DO UPDATE SET "  # a cumulative report only grows: the monitor sends the largest totals
    "dap_total_gy_m2 = excluded.dap_total_gy_m2, dose_rp_total_gy = excluded.dose_rp_total_gy, "
    "fluoro_time_total_s = excluded.fluoro_time_total_s, planes = excluded.planes, updated_at = excluded.updated_at")
UPSERT_PATIENT_STUDY = (
    "INSERT INTO patient_studies (patient_ref, study_ref, at, dap_gy_m2, dose_rp_gy, fluoro_time_s) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (patient_ref, study_ref) DO UPDATE SET at = min(at, excluded.at), "
    "dap_gy_m2 = excluded.dap_gy_m2, dose_rp_gy = excluded.dose_rp_gy, fluoro_time_s = excluded.fluoro_time_s")
INSERT_ALERT = ("INSERT OR IGNORE INTO alerts (msg_id, alert, rule, protocol, study_ref, at, object_key, patient_ref, "
                "quantity, value, level) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
UPSERT_AUDIT = (
    "INSERT OR REPLACE INTO drl_audits (period_start, period_end, trigger, exam, band, rule, examinations, "
    "median_dap_gy_m2, q1_dap_gy_m2, q3_dap_gy_m2, drl_dap_gy_m2, median_to_drl, flags, computed_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
SET_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
PRUNE = ("DELETE FROM exposures WHERE at < ?1", "DELETE FROM alerts WHERE at < ?1",
         "DELETE FROM study_reports WHERE updated_at < ?1")
PRUNE_PATIENTS = "DELETE FROM patient_studies WHERE at < ?1"  # kept for the longest patient window


def create_schema(conn: sqlite3.Connection, path: Path | None = None) -> None:
    """Create or upgrade the history schema on `conn` (also how agent.statedb rebuilds a damaged file)."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise HistoryError(f"dose history {path} has schema {found}, newer than this agent's "
                           f"{SCHEMA_VERSION}; upgrade the agent or move the file aside")
    for version in range(found, SCHEMA_VERSION):
        conn.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[version]}; PRAGMA user_version = {version + 1}; COMMIT;")


class HistoryError(Exception):
    """The history file cannot be used (newer schema, unreadable)."""


@dataclass(frozen=True)
class ExposureRow:
    """What a summary needs of one exposure."""

    protocol: str | None
    dap_gy_m2: float | None
    di_band: str
    repeat: bool


@dataclass
class StoredExposure:
    """What the monitor keeps in memory of one exposure of a study."""

    event_ref: str
    at: float
    body_part: str | None
    view: str | None
    protocol: str | None
    modality: str | None
    irradiation_type: str | None
    dap_gy_m2: float | None
    dose_rp_gy: float | None
    repeat_of: str | None
    source: str | None = None
    fluoro_time_s: float | None = None


@dataclass(frozen=True)
class AuditRow:
    """What the DRL audit needs of one exposure."""

    study_ref: str | None
    at: float
    exam: str | None
    exam_rule: str | None
    band: str | None
    dap_gy_m2: float | None
    repeat: bool


class History:
    """The history file: loads for the monitor's memory, batched writes, and summary queries. Thread-safe."""

    def __init__(self, path: Path):
        self.path = Path(path)
        private_sqlite(self.path)  # 0600, and so its -wal/-shm
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                    timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except BaseException:
            self.conn.close()
            raise

    def _migrate(self) -> None:
        create_schema(self.conn, self.path)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def write(self, ops: list[tuple[str, tuple]]) -> None:
        """Apply (statement, parameters) pairs in one transaction."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for statement, params in ops:
                    self.conn.execute(statement, params)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    # ---- loads for the monitor's memory ------------------------------------------------------------------------
    def study_refs(self) -> set[str]:
        """Every study the history knows (so a new study needs no query)."""
        return {row[0] for row in self._query("SELECT DISTINCT study_ref FROM exposures WHERE study_ref IS NOT NULL "
                                              "UNION SELECT study_ref FROM study_reports")}

    def load_study(self, study_ref: str) -> tuple[list[StoredExposure], float, float]:
        """A study's exposures in the order received, and the largest DAP and Dose (RP) totals its reports gave."""
        rows = self._query("SELECT event_ref, at, body_part, view, protocol, modality, irradiation_type, dap_gy_m2, "
                           "dose_rp_gy, repeat_of, source, fluoro_time_s FROM exposures WHERE study_ref = ? "
                           "ORDER BY rowid", (study_ref,))
        report = self._query("SELECT dap_total_gy_m2, dose_rp_total_gy, fluoro_time_total_s, planes FROM "
                             "study_reports WHERE study_ref = ?", (study_ref,))
        return [StoredExposure(*row) for row in rows], (report[0] if report else None)

    def patient_refs(self) -> set[str]:
        return {row[0] for row in self._query("SELECT DISTINCT patient_ref FROM patient_studies")}

    def load_patient(self, patient_ref: str) -> list[tuple[str, float, float | None, float | None, float | None]]:
        """(study_ref, at, dap_gy_m2, dose_rp_gy, fluoro_time_s) of the patient's studies."""
        return self._query("SELECT study_ref, at, dap_gy_m2, dose_rp_gy, fluoro_time_s FROM patient_studies "
                           "WHERE patient_ref = ?", (patient_ref,))

    def unit_targets(self) -> list[tuple[str, str | None, str | None, float]]:
        """(unit, body_part, view, target EI) of every exposure that had a target EI."""
        return self._query("SELECT DISTINCT unit, body_part, view, target_ei FROM exposures "
                           "WHERE unit IS NOT NULL AND target_ei IS NOT NULL")

    def audit_rows(self, start: float, end: float) -> list[AuditRow]:
        """The exposures of studies that began in [start, end) (an examination belongs to the period it began in)."""
        rows = self._query(
            "SELECT e.study_ref, e.at, e.exam, e.exam_rule, e.band, e.dap_gy_m2, e.repeat_of IS NOT NULL "
            "FROM exposures e JOIN (SELECT study_ref, min(at) AS first FROM exposures WHERE study_ref IS NOT NULL "
            "GROUP BY study_ref) s ON s.study_ref = e.study_ref WHERE s.first >= ? AND s.first < ?", (start, end))
        return [AuditRow(*row[:6], bool(row[6])) for row in rows]

    def alert_ledger(self) -> dict[str, tuple[str, float]]:
        """msg_id -> (object_key that raised it, its time) of every alert kept."""
        return {msg_id: (key, at) for msg_id, key, at in self._query("SELECT msg_id, object_key, at FROM alerts")}

    # ---- summaries and state -----------------------------------------------------------------------------------
    def exposures_between(self, start: float, end: float) -> list[ExposureRow]:
        rows = self._query("SELECT protocol, dap_gy_m2, di_band, repeat_of IS NOT NULL FROM exposures "
                           "WHERE at >= ? AND at < ?", (start, end))
        return [ExposureRow(p, dap, band, bool(repeat)) for p, dap, band, repeat in rows]

    def alerts_between(self, start: float, end: float) -> list[tuple[str | None, str]]:
        """(protocol, alert type) of the alerts raised by exposures of the period."""
        return self._query("SELECT protocol, alert FROM alerts WHERE at >= ? AND at < ?", (start, end))

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def count(self, table: str) -> int:
        return self._query(f"SELECT count(*) FROM {table}")[0][0]


class HistoryWriter:
    """The thread that commits the monitor's rows, many objects per transaction."""

    def __init__(self, history: History, on_damage: Callable[[str], None] | None = None):
        self.history = history
        self.on_damage = on_damage  # called when a commit meets a damaged file (agent.statedb)
        self._ops: queue.Queue[tuple[str, tuple] | threading.Event | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dose-history", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Commit what is queued, then stop."""
        if self._thread is not None:
            self._ops.put(None)
            self._thread.join(timeout)
            self._thread = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def put(self, *ops: tuple[str, tuple]) -> None:
        for op in ops:
            self._ops.put(op)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (or failed); False on timeout."""
        done = threading.Event()
        self._ops.put(done)
        return done.wait(timeout) if self._thread is not None else False

    def _run(self) -> None:
        while True:
            batch, marks, stopping = self._collect()
            self._commit(batch)
            for mark in marks:
                mark.set()
            if stopping:
                return

    def _collect(self) -> tuple[list[tuple[str, tuple]], list[threading.Event], bool]:
        """The rows of up to COMMIT_EVERY_S (one commit a second, not one per object: fewer syscalls and GIL
        hand-overs beside the intake's own commits), cut short by a flush or stop."""
        batch: list[tuple[str, tuple]] = []
        item = self._ops.get()
        deadline = time.monotonic() + COMMIT_EVERY_S
        while True:
            if item is None:
                return batch, [], True
            if isinstance(item, threading.Event):
                return batch, [item], False
            batch.append(item)
            if len(batch) >= MAX_OPS_PER_COMMIT:
                return batch, [], False
            try:
                item = self._ops.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return batch, [], False

    def _commit(self, batch: list[tuple[str, tuple]]) -> None:
        if not batch:
            return
        try:
            self.history.write(batch)
        except sqlite3.Error as exc:
            if not self._failing:
                log.error("dose history %s not written (%s): summaries will miss these exposures "
                          "(logged once until it recovers)", self.history.path, exc)
            self._failing = True
            if self.on_damage is not None and is_damage(exc):
                self.on_damage(str(exc))
            return
        if self._failing:
            self._failing = False
            log.warning("dose history written again")
