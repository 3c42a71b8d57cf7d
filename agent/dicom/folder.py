"""Watched-folder intake, for modalities that export to a share instead of sending C-STORE.

A file is read once its size and modification time have not changed for `settle_s` (the modality may still be
writing it). Each file is handled once across restarts: a small SQLite table (sqlite-utils) remembers handled files by
path, size and mtime, so a crash between storing the events and removing the file neither loses nor repeats anything
(and the outbox drops repeated msg_ids anyway). A file refused for lack of outbox room stays and is tried again.

Exported file and folder names often carry the patient's name or record number, so they are neither logged nor
stored: a file is named in the log by a keyed hash of its path below the watched folder (`file_ref`, the same
for the same file across restarts, not reversible without the site secret) and the watched folder itself, and the
state table keys files by the same hash of the full path.

A settled file may still be incomplete: a copy that paused longer than settle_s, a writer that keeps the file open.
Such a file (open for writing by any process, or not complete to its end: completeness.py) is not read, published or
deleted: it is waited for, logged once, and handled when it completes. After `incomplete_wait_s` without completing it
is quarantined and counted as incomplete, and left in place; if it changes later it is handled afresh.

The state file is checked when the thread opens it and rebuilt from its readable rows if damaged (agent.statedb);
damage met while running stops the scanning (files stay where they are) until the thread has rebuilt it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

import sqlite_utils

from agent import statedb
from agent.config import FolderIntakeConfig
from agent.dicom.reading import read_file
from agent.dicom.intake import DicomIntake
from agent.dicom.reading import IncompleteObject, read_file
from agent.dicom.receive import ObjectTooLarge
from agent.dicom.statuses import CANNOT_UNDERSTAND, SUCCESS
from agent.privacy.files import private_dir, private_sqlite
from agent.pseudonym import make_ref
from agent.supervisor import ThreadService

log = logging.getLogger(__name__)
FILE_REF_CHARS = 12  # enough to tell a day's files apart in a log; the state table keeps the full ref
STATE_TABLE = "handled_files"
LEGACY_TABLE = "handled"  # earlier agents keyed it by the path in clear


def file_ref(secret: bytes, path: Path | str) -> str:
    """The keyed hash of a file path (as make_ref, domain "folder-file")."""
    return make_ref(secret, "folder-file", str(path))

INCOMPLETE = -1  # status recorded for a file quarantined as incomplete: kept in place, never deleted or moved


def open_for_writing(path: Path) -> bool:
    """True while any process has the file open for writing.

    A read lease (fcntl F_SETLEASE F_RDLCK, Linux) is refused with EAGAIN exactly then; it is released at once.
    Where leases are not permitted (a file of another user without CAP_LEASE, network file systems), /proc is
    searched for a writer among the processes this one may see (a file copied in over SMB/NFS shows neither: then
    the completeness walk is the guard)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            return True
        return _writer_in_proc(path)
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def _writer_in_proc(path: Path) -> bool:
    try:
        target = path.stat()
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                st = os.stat(f"/proc/{pid}/fd/{fd}")
                if (st.st_dev, st.st_ino) != (target.st_dev, target.st_ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = int(next(line for line in info if line.startswith("flags:")).split()[1], 8)
                if flags & (os.O_WRONLY | os.O_RDWR):
                    return True
        except (OSError, StopIteration, ValueError):
            continue
    return False



class FolderWatcher(ThreadService):
    """Polls a folder and feeds settled files to the intake."""

    thread_name = "dicom-folder"
    stop_timeout_s = 5.0

    def __init__(self, cfg: FolderIntakeConfig, intake: DicomIntake, state_path: Path,
                 max_object_bytes: int = 1024 * 1024 * 1024):
        super().__init__()
        self.cfg = cfg
        self.max_object_bytes = max_object_bytes  # dicom.max_object_bytes
        self.intake = intake
        self.state_path = Path(state_path)
        self._seen: dict[Path, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, first seen unchanged at)
        self._waiting: dict[Path, tuple[int, int, float]] = {}  # incomplete: path -> (size, mtime_ns, since)
        self.damage: str | None = None  # the state file is damaged: nothing is read until this thread rebuilt it
        self.recovery: statedb.Recovery | None = None
        self.on_damage = None  # the integrity watch's wake-up

    def state_spec(self) -> statedb.Spec:
        """How agent.statedb rebuilds the folder-intake state: one table, lost rows adopted."""
        return statedb.Spec("folder", self.state_path, lambda conn: _create_table(sqlite_utils.Database(conn)),
                            adopt=(STATE_TABLE,))

    def mark_damaged(self, detail: str) -> None:
        """Stop scanning until the thread has rebuilt the state file (files stay in the folder meanwhile)."""
        if self.damage is None:
            self.damage = detail
            log.error("folder-intake state %s is damaged (%s): no file is read until it is rebuilt",
                      self.state_path, detail)
            if self.on_damage is not None:
                self.on_damage(detail)

    def repair(self, detail: str) -> None:
        """Ask the folder thread (which owns the connection) to rebuild the file on its next pass."""
        self.mark_damaged(detail)

    def start(self) -> None:
        super().start()
        log.info("watching %s for DICOM files (settle %.1f s, then %s)", self.cfg.path, self.cfg.settle_s,
                 self.cfg.after)

    def _rebuild(self, db: sqlite_utils.Database) -> sqlite_utils.Database:
        try:
            self.recovery = statedb.recover_in_use(self.state_spec(), self.damage, db.close)
        except (OSError, sqlite3.Error) as exc:
            log.error("could not rebuild folder-intake state %s: %s; trying again", self.state_path, exc)
            self._stop.wait(30.0)
            return db  # closed; the next pass tries the rebuild again
        return self.open_state()

    def _run(self) -> None:
        db = self.open_state()
        missing_logged = False
        while not self._stop.wait(self.cfg.poll_s):
            if self.damage is not None:
                db = self._rebuild(db)
                continue
            try:
                self.scan(db)
                missing_logged = False
            except FileNotFoundError:
                if not missing_logged:
                    log.error("watched folder %s does not exist (dicom.folder.path); waiting for it", self.cfg.path)
                    missing_logged = True
            except sqlite3.DatabaseError as exc:
                if not statedb.is_damage(exc):
                    raise
                self.mark_damaged(str(exc))
        db.close()

    def open_state(self) -> sqlite_utils.Database:
        """The state file (0600), checked first (rebuilt if damaged: agent.statedb), its table keyed by path ref; a
        table of clear paths left by an earlier agent is carried over as refs and dropped, and the file vacuumed so
        the names leave its free pages too."""
        private_dir(self.state_path.parent)  # checked before the file is created: a missing file may be
        # one a crash left moved aside mid-rebuild (agent.statedb resumes it), never an empty new one
        self.recovery = statedb.ensure_sound(self.state_spec()) or self.recovery
        private_sqlite(self.state_path)  # 0600, and so its -wal/-shm
        self.damage = None
        db = sqlite_utils.Database(self.state_path)
        _create_table(db)
        if LEGACY_TABLE in db.table_names():
            rows = [{"path_ref": self._ref(Path(row["path"])), **{k: row[k] for k in ("size", "mtime_ns",
                     "handled_at", "status")}} for row in db[LEGACY_TABLE].rows]
            with db.conn:
                db[STATE_TABLE].upsert_all(rows, pk="path_ref")
                db[LEGACY_TABLE].drop()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.vacuum()
            log.info("folder-intake state: %d file record(s) now kept by hash, not by name", len(rows))
        return db

    def _ref(self, path: Path) -> str:
        return file_ref(self.intake.secret, path)

    def label(self, path: Path) -> str:
        """How a file is named in the log: a short keyed hash of its path below the watched folder, and the folder."""
        try:
            relative = path.relative_to(self.cfg.path)
        except ValueError:
            relative = path
        return f"file {file_ref(self.intake.secret, relative)[:FILE_REF_CHARS]} in {self.cfg.path}"

    def scan(self, db: sqlite_utils.Database) -> None:
        """One pass: process every settled file."""
        now = time.monotonic()
        present = set()
        for path in self._files():
            present.add(path)
            if self._settled(path, now):
                try:
                    self._handle(db, path)
                except OSError as exc:  # its message would name the file: say which by label, and go on
                    log.error("cannot handle %s: %s", self.label(path), exc.strerror or type(exc).__name__)
        self._seen = {p: v for p, v in self._seen.items() if p in present}
        self._waiting = {p: v for p, v in self._waiting.items() if p in present}

    def _files(self):
        # The agent's own folders inside the watched one (moved files, quarantine, retained copies) are never read:
        # the watcher would read its own copies back, quarantine them again and delete them, for ever.
        own = [self.cfg.move_to] + [getattr(getattr(self.intake, name, None), "folder", None)
                                    for name in ("quarantine", "retain_raw")]
        skip = {Path(folder).resolve() for folder in own if folder is not None}
        for root, dirs, files in os.walk(self.cfg.path):
            if not os.path.exists(self.cfg.path):
                raise FileNotFoundError(self.cfg.path)
            dirs[:] = [d for d in dirs if not d.startswith(".") and (Path(root) / d).resolve() not in skip]
            for name in files:
                if not name.startswith("."):  # partial files some exporters write as .name.tmp
                    yield Path(root) / name
        if not os.path.isdir(self.cfg.path):
            raise FileNotFoundError(self.cfg.path)

    def _settled(self, path: Path, now: float) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        previous = self._seen.get(path)
        if previous is None or previous[:2] != (st.st_size, st.st_mtime_ns):
            self._seen[path] = (st.st_size, st.st_mtime_ns, now)
            return self.cfg.settle_s == 0
        return now - previous[2] >= self.cfg.settle_s

    def _handle(self, db: sqlite_utils.Database, path: Path) -> None:
        st = path.stat()
        ref = self._ref(path)
        done = db.execute(f"SELECT status FROM {STATE_TABLE} WHERE path_ref = ? AND size = ? AND mtime_ns = ?",
                          [ref, st.st_size, st.st_mtime_ns]).fetchone()
        if not done:
            status = self._process(path, st)
            if status is None:
                return  # incomplete: waiting for it
            if status not in (SUCCESS, CANNOT_UNDERSTAND, INCOMPLETE):
                return  # Out of Resources: leave the file and try again on a later pass
            db[STATE_TABLE].upsert({"path_ref": ref, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                    "handled_at": time.time(), "status": status}, pk="path_ref")
            if status == INCOMPLETE:
                return  # quarantined, and left in place: it may still complete
        elif done[0] == INCOMPLETE:
            return  # quarantined as incomplete earlier and unchanged since
        self._after(path)

    def _process(self, path: Path, st: os.stat_result) -> int | None:
        """The status the object got, INCOMPLETE once the wait is over, None while waiting for it to complete."""
        origin = self.label(path)
        if open_for_writing(path):
            return self._wait(path, st, "still open by its writer", origin)
        raw = lambda: path  # noqa: E731 - a quarantine/retention copy is copied from the file, not read into memory
        try:
            # Checked complete, then headers only, within the listener's bounds (reading.py, receive.py).
            ds = read_file(path, self.max_object_bytes)
        except IncompleteObject as exc:
            return self._wait(path, st, exc.reason, origin, raw)
        except ObjectTooLarge as exc:
            return self.intake.handle_undecodable(raw, str(exc), origin)  # handled once: a retry cannot shrink it
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets a clear answer, not a crash
            return self.intake.handle_undecodable(raw, f"cannot read file: {type(exc).__name__}", origin)
        if self._waiting.pop(path, None) is not None:
            log.info("%s is complete now; handling it", origin)
        return self.intake.handle(ds, raw, origin)

    def _wait(self, path: Path, st: os.stat_result, why: str, origin: str, raw=None) -> int | None:
        """Wait for an incomplete file (bounded by incomplete_wait_s); INCOMPLETE once the wait is over."""
        now = time.monotonic()
        waiting = self._waiting.get(path)
        if waiting is None or waiting[:2] != (st.st_size, st.st_mtime_ns):
            if waiting is None:
                log.warning("%s is not complete (%s): not read, published or deleted; waiting up to %.0f s for it",
                            origin, why, self.cfg.incomplete_wait_s)
            self._waiting[path] = (st.st_size, st.st_mtime_ns, now)
            return None
        if now - waiting[2] < self.cfg.incomplete_wait_s:
            return None
        self._waiting.pop(path, None)
        log.warning("%s still not complete after %.0f s (%s): quarantining a copy, leaving the file in place",
                    origin, self.cfg.incomplete_wait_s, why)
        self.intake.handle_incomplete(raw or (lambda: path), why, origin)
        return INCOMPLETE

    def _after(self, path: Path) -> None:
        self._seen.pop(path, None)
        if self.cfg.after == "delete":
            path.unlink(missing_ok=True)
        elif self.cfg.after == "move":
            target = self.cfg.move_to / path.relative_to(self.cfg.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)


def _create_table(db: sqlite_utils.Database) -> None:
    """The state table (also how agent.statedb rebuilds a damaged file)."""
    db[STATE_TABLE].create({"path_ref": str, "size": int, "mtime_ns": int, "handled_at": float, "status": int},
                           pk="path_ref", if_not_exists=True)
