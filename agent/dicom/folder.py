"""Watched-folder intake, for modalities that export to a share instead of sending C-STORE.

A file is read once its size and modification time have not changed for `settle_s` (the modality may still be
writing it). Each file is handled once across restarts: a small SQLite table (sqlite-utils) remembers handled files by
path, size and mtime, so a crash between storing the events and removing the file neither loses nor repeats anything
(and the outbox drops repeated msg_ids anyway). A file refused for lack of outbox room stays and is tried again.

The state file is checked when the thread opens it and rebuilt from its readable rows if damaged (agent.statedb);
damage met while running stops the scanning (files stay where they are) until the thread has rebuilt it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

import sqlite_utils
from pydicom import dcmread

from agent import statedb
from agent.config import FolderIntakeConfig
from agent.dicom.intake import DicomIntake
from agent.dicom.statuses import CANNOT_UNDERSTAND, SUCCESS
from agent.supervisor import ThreadService

log = logging.getLogger(__name__)

STATE_TABLE = "handled"


class FolderWatcher(ThreadService):
    """Polls a folder and feeds settled files to the intake."""

    thread_name = "dicom-folder"
    stop_timeout_s = 5.0

    def __init__(self, cfg: FolderIntakeConfig, intake: DicomIntake, state_path: Path):
        super().__init__()
        self.cfg = cfg
        self.intake = intake
        self.state_path = Path(state_path)
        self._seen: dict[Path, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, first seen unchanged at)
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

    def open_state(self) -> sqlite_utils.Database:
        """The state file, checked first (rebuilt if damaged), its table created on first use."""
        self.recovery = statedb.ensure_sound(self.state_spec()) or self.recovery
        self.damage = None
        db = sqlite_utils.Database(self.state_path)
        _create_table(db)
        return db

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

    def scan(self, db: sqlite_utils.Database) -> None:
        """One pass: process every settled file."""
        now = time.monotonic()
        present = set()
        for path in self._files():
            present.add(path)
            if self._settled(path, now):
                self._handle(db, path)
        self._seen = {p: v for p, v in self._seen.items() if p in present}

    def _files(self):
        skip = self.cfg.move_to.resolve() if self.cfg.move_to else None
        for root, dirs, files in os.walk(self.cfg.path):
            if not os.path.exists(self.cfg.path):
                raise FileNotFoundError(self.cfg.path)
            dirs[:] = [d for d in dirs if not d.startswith(".") and (Path(root) / d).resolve() != skip]
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
        done = db.execute("SELECT 1 FROM handled WHERE path = ? AND size = ? AND mtime_ns = ?",
                          [str(path), st.st_size, st.st_mtime_ns]).fetchone()
        if not done:
            status = self._process(path)
            if status not in (SUCCESS, CANNOT_UNDERSTAND):
                return  # Out of Resources: leave the file and try again on a later pass
            db["handled"].upsert({"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                  "handled_at": time.time(), "status": status}, pk="path")
        self._after(path)

    def _process(self, path: Path) -> int:
        origin = f"folder {path.name}"
        raw = path.read_bytes
        try:
            ds = dcmread(path, force=True)
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


def _create_table(db: sqlite_utils.Database) -> None:
    """The state table (also how agent.statedb rebuilds a damaged file)."""
    db[STATE_TABLE].create({"path": str, "size": int, "mtime_ns": int, "handled_at": float, "status": int},
                           pk="path", if_not_exists=True)
