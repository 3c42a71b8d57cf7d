"""Watched-folder intake, for modalities that export to a share instead of sending C-STORE.

A file is read once its size and modification time have not changed for `settle_s` (the modality may still be
writing it). Each file is handled once across restarts: a small SQLite table (sqlite-utils) remembers handled files by
path, size and mtime, so a crash between storing the events and removing the file neither loses nor repeats anything
(and the outbox drops repeated msg_ids anyway). A file refused for lack of outbox room stays and is tried again.

Exported file and folder names often carry the patient's name or record number, so they are neither logged nor
stored: a file is named in the log by a keyed hash of its path below the watched folder (`file_ref`, the same
for the same file across restarts, not reversible without the site secret) and the watched folder itself, and the
state table keys files by the same hash of the full path.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import sqlite_utils

from agent.config import FolderIntakeConfig
from agent.dicom.intake import DicomIntake
from agent.dicom.receive import ObjectTooLarge, read_file_headers
from agent.dicom.statuses import CANNOT_UNDERSTAND, SUCCESS
from agent.privacy.files import private_sqlite
from agent.pseudonym import make_ref
from agent.supervisor import ThreadService

log = logging.getLogger(__name__)
FILE_REF_CHARS = 12  # enough to tell a day's files apart in a log; the state table keeps the full ref
STATE_TABLE = "handled_files"
LEGACY_TABLE = "handled"  # earlier agents keyed it by the path in clear


def file_ref(secret: bytes, path: Path | str) -> str:
    """The keyed hash of a file path (as make_ref, domain "folder-file")."""
    return make_ref(secret, "folder-file", str(path))


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

    def start(self) -> None:
        super().start()
        log.info("watching %s for DICOM files (settle %.1f s, then %s)", self.cfg.path, self.cfg.settle_s,
                 self.cfg.after)

    def _run(self) -> None:
        db = self.open_state()
        missing_logged = False
        while not self._stop.wait(self.cfg.poll_s):
            try:
                self.scan(db)
                missing_logged = False
            except FileNotFoundError:
                if not missing_logged:
                    log.error("watched folder %s does not exist (dicom.folder.path); waiting for it", self.cfg.path)
                    missing_logged = True
        db.close()

    def open_state(self) -> sqlite_utils.Database:
        """The state file (0600), its table keyed by path ref; a table of clear paths left by an earlier agent is
        carried over as refs and dropped, and the file vacuumed so the names leave its free pages too."""
        db = sqlite_utils.Database(private_sqlite(self.state_path))
        db[STATE_TABLE].create({"path_ref": str, "size": int, "mtime_ns": int, "handled_at": float, "status": int},
                               pk="path_ref", if_not_exists=True)
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
        done = db.execute(f"SELECT 1 FROM {STATE_TABLE} WHERE path_ref = ? AND size = ? AND mtime_ns = ?",
                          [ref, st.st_size, st.st_mtime_ns]).fetchone()
        if not done:
            status = self._process(path)
            if status not in (SUCCESS, CANNOT_UNDERSTAND):
                return  # Out of Resources: leave the file and try again on a later pass
            db[STATE_TABLE].upsert({"path_ref": ref, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                    "handled_at": time.time(), "status": status}, pk="path_ref")
        self._after(path)

    def _process(self, path: Path) -> int:
        origin = self.label(path)
        raw = lambda: path  # noqa: E731 - a quarantine/retention copy is copied from the file, not read into memory
        try:
            # Headers only, within the listener's bounds (agent/dicom/receive.py): size, inflated size, nesting.
            ds = read_file_headers(path, self.max_object_bytes)
        except ObjectTooLarge as exc:
            return self.intake.handle_undecodable(raw, str(exc), origin)  # handled once: a retry cannot shrink it
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets a clear answer, not a crash
            return self.intake.handle_undecodable(raw, f"cannot read file: {type(exc).__name__}", origin)
        return self.intake.handle(ds, raw, origin)

    def _after(self, path: Path) -> None:
        self._seen.pop(path, None)
        if self.cfg.after == "delete":
            path.unlink(missing_ok=True)
        elif self.cfg.after == "move":
            target = self.cfg.move_to / path.relative_to(self.cfg.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
