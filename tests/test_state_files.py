"""The other state databases (dose.db, qc.db, the folder-intake state): damaged at start or while running, each is
moved aside intact and rebuilt with every row still readable, by the same mechanism as the outbox (agent.statedb),
and its owner goes on. Real SQLite files, real owners; the damage is done to the bytes on disk, after SQLite's dbstat
table named the pages of the table to hit (an interior page: every row stays readable, on leaf pages no walk reaches).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from agent.config import FolderIntakeConfig
from agent.dicom.folder import FolderWatcher
from agent.dicom.intake import DicomIntake
from agent.dose.monitor import DoseMonitor
from agent.dose.rules import DoseRules
from agent.qc.store import QcStore, QcStoreError, dumps
from agent.statedb.watch import IntegrityWatch
from tests.realparts import wait_for
from tests.test_state_corruption import damage, pages_of, quick_check, settle

ROWS = 400


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def hit_interior(path: Path, table: str) -> str:
    """Damage every interior page of `table`; returns the damaged file's digest."""
    settle(path)
    interior = pages_of(path, table).get("internal")
    assert interior, f"{table} needs more than one level of pages for this test"
    damage(path, interior)
    assert quick_check(path) != "ok"
    return digest(path)


def kept_copy(path: Path) -> Path:
    copies = [p for p in path.parent.glob(f"{path.name}.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(copies) == 1, copies
    return copies[0]


# ---- dose.db ---------------------------------------------------------------------------------------------------------
def fill_history(path: Path, sink) -> None:
    monitor = DoseMonitor(DoseRules(), path, sink)
    monitor.start()
    from agent.dose import history as h
    monitor.writer.put(*((h.UPSERT_EXPOSURE, (f"ev-{i:04d}", f"st-{i // 4}", 1.7e9 + i, 1.7e9 + i, "CHEST PA",
                                              "CHEST", "PA", "DX", "projection", 0.01 * i, None, 0.1, "ok", None,
                                              "image", f"pt-{i // 8}", None, "CHEST PA", None, "any", None, None))
                         for i in range(ROWS)))
    assert monitor.writer.flush()
    monitor.stop()


def test_damaged_dose_history_at_start_is_rebuilt_with_every_exposure(tmp_path, sink):
    path = tmp_path / "dose.db"
    fill_history(path, sink)
    damaged = hit_interior(path, "exposures")

    monitor = DoseMonitor(DoseRules(), path, sink)
    monitor.start()
    try:
        assert monitor.recovery is not None and monitor.history is not None
        assert monitor.history.count("exposures") == ROWS
        assert "st-7" in monitor._known_studies  # the monitor's memory is loaded from the rebuilt file
        assert digest(kept_copy(path)) == damaged
    finally:
        monitor.stop()


def test_dose_history_damaged_while_running_is_rebuilt_by_the_watch(tmp_path, sink):
    path = tmp_path / "dose.db"
    fill_history(path, sink)
    monitor = DoseMonitor(DoseRules(), path, sink)
    monitor.start()
    watch = IntegrityWatch(every_s=0.5)
    watch.add("dose", path, monitor)
    watch.start()
    try:
        hit_interior(path, "exposures")
        wait_for(lambda: monitor.recovery is not None and monitor.damage is None, 15, "the watch's check and rebuild")
        assert monitor.alive()
        assert monitor.history.count("exposures") == ROWS
        from agent.dose import history as h
        monitor.writer.put((h.SET_META, ("after", "rebuild")))
        assert monitor.writer.flush() and monitor.history.get_meta("after") == "rebuild"
    finally:
        watch.stop()
        monitor.stop()


# ---- qc.db -----------------------------------------------------------------------------------------------------------
def fill_qc(store: QcStore) -> None:
    with store.transaction() as conn:
        conn.execute("INSERT INTO sessions (ref, test_type, operator, instruments, state, started_at) "
                     "VALUES ('s1', 'kvp_accuracy', 'op', '[\"kvp-1\"]', 'open', '2024-01-01T00:00:00Z')")
        for i in range(ROWS):
            conn.execute("INSERT INTO readings (msg_id, session_ref, exposure, instrument_id, measured_at, payload) "
                         "VALUES (?, 's1', ?, 'kvp-1', '2024-01-01T00:00:00Z', ?)",
                         (f"r-{i:04d}", i, dumps({"kvp": 80 + i % 5, "pad": "x" * 200})))


def test_damaged_qc_store_at_start_is_rebuilt_with_every_reading(tmp_path):
    path = tmp_path / "qc.db"
    store = QcStore(path)
    store.open()
    fill_qc(store)
    store.close()
    damaged = hit_interior(path, "readings")

    store = QcStore(path)
    store.open()
    try:
        assert store.recovery is not None
        assert store.one("SELECT count(*) AS n FROM readings")["n"] == ROWS
        assert store.one("SELECT payload FROM readings WHERE msg_id = 'r-0123'")["payload"]["kvp"] == 83
        assert digest(kept_copy(path)) == damaged
    finally:
        store.close()


def test_qc_store_damaged_while_running_holds_readings_then_is_rebuilt(tmp_path):
    """The watch's check finds the damage; until the rebuild (held back here by a directory where the new file must
    be written) every read and write raises QcStoreError, an OutboxError: instrument readers hold their readings."""
    path = tmp_path / "qc.db"
    store = QcStore(path)
    store.open()
    fill_qc(store)
    blocker = path.with_name("qc.db.rebuilding")
    blocker.mkdir()
    watch = IntegrityWatch(every_s=0.3)
    watch.add("qc", path, store)
    watch.start()
    try:
        hit_interior(path, "readings")
        wait_for(lambda: store.damage is not None, 10, "the watch's check")
        with pytest.raises(QcStoreError, match="damaged"):
            with store.transaction():
                pass
        with pytest.raises(QcStoreError, match="damaged"):
            store.query("SELECT msg_id FROM readings")
        assert store.is_open  # the QC service is not restarted over it: the watch owns the rebuild
        blocker.rmdir()
        wait_for(lambda: store.recovery is not None and store.damage is None, 15, "the rebuild")
        assert store.one("SELECT count(*) AS n FROM readings")["n"] == ROWS
    finally:
        watch.stop()
        store.close()


# ---- folder-intake state ---------------------------------------------------------------------------------------------
def fill_folder_state(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS [handled_files] ([path_ref] TEXT PRIMARY KEY, [size] INTEGER, "
                 "[mtime_ns] INTEGER, [handled_at] FLOAT, [status] INTEGER)")
    conn.executemany("INSERT INTO handled_files VALUES (?, ?, ?, ?, 0)",
                     [(f"{i:05d}{'d' * 27}", 1000 + i, 10**18 + i, 1.7e9) for i in range(ROWS)])
    conn.commit()
    conn.close()


def test_damaged_folder_state_is_rebuilt_by_the_folder_thread(tmp_path, sink):
    export = tmp_path / "export"
    export.mkdir()
    path = tmp_path / "folder-intake.db"
    fill_folder_state(path)
    damaged = hit_interior(path, "handled_files")
    watcher = FolderWatcher(FolderIntakeConfig(path=export, settle_s=0, poll_s=0.05, after="keep"),
                            DicomIntake(sink, b"k" * 32), path)
    watcher.start()
    watch = IntegrityWatch(every_s=0.3)
    watch.add("folder", path, watcher)
    watch.start()
    try:
        wait_for(lambda: watcher.recovery is not None, 10, "rebuild at open")
        assert count(path, "handled_files") == ROWS and digest(kept_copy(path)) == damaged

        # damaged again while it runs: the watch's check finds it, the folder thread (which owns the connection)
        # stops reading files and rebuilds
        time.sleep(0.2)
        first = watcher.recovery
        hit_interior(path, "handled_files")
        wait_for(lambda: watcher.recovery is not first and watcher.damage is None, 15, "rebuild while running")
        assert watcher.alive() and count(path, "handled_files") == ROWS
    finally:
        watch.stop()
        watcher.stop()


# ---- a rebuild interrupted by a crash --------------------------------------------------------------------------------
def test_a_rebuild_interrupted_after_the_move_is_finished_at_the_next_start(tmp_path):
    """The crash came after the damaged file was moved aside and before the new one was in place: the next start
    must rebuild from the moved file, never start from an empty one."""
    from datetime import datetime, timezone

    from agent import statedb
    from agent.statedb.guard import move_aside

    path = tmp_path / "qc.db"
    store = QcStore(path)
    store.open()
    fill_qc(store)
    store.close()
    path.chmod(0o600)
    hit_interior(path, "readings")
    moved = move_aside(path, datetime.now(timezone.utc))  # ... and the process died here
    assert not path.exists() and moved.exists()

    store = QcStore(path)
    store.open()
    try:
        assert store.recovery is not None and store.recovery.damaged_copy == moved
        assert store.one("SELECT count(*) AS n FROM readings")["n"] == ROWS
        assert path.stat().st_mode & 0o777 == 0o600, "the rebuilt file keeps the state file's permissions"
        assert not path.with_name("qc.db.recovering").exists()
        assert statedb.check(path) is None
    finally:
        store.close()


def test_a_move_interrupted_before_the_database_file_moved_gives_back_its_wal(tmp_path):
    """The crash came after the WAL was renamed and before the database file was: the next start puts the WAL back
    (its rows are committed data), finds the file sound and leaves it alone."""
    from datetime import datetime, timezone

    from agent.statedb.guard import _mark, aside_name, ensure_sound

    path = tmp_path / "qc.db"
    store = QcStore(path)
    store.open()
    fill_qc(store)  # committed in the WAL; the store stays open so the WAL is not folded into the file
    target = aside_name(path, datetime.now(timezone.utc))
    _mark(path, "moving", target)
    Path(f"{path}-wal").rename(f"{target}-wal")
    dead, store._conn = store._conn, None  # the process "died" here: no close, no checkpoint

    assert ensure_sound(QcStore(path).state_spec()) is None
    assert Path(f"{path}-wal").exists() and not Path(f"{target}-wal").exists()
    assert count(path, "readings") == ROWS
    dead.close()
