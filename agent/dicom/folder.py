"""Watched-folder intake, for modalities that export to a share instead of sending C-STORE.

A file is read once its size and modification time have not changed for `settle_s` (the modality may still be
writing it). Each file is handled once across restarts: a small SQLite table (sqlite-utils) remembers handled files by
path, size and mtime, so a crash between storing the events and removing the file neither loses nor repeats anything
(and the outbox drops repeated msg_ids anyway). A file refused for lack of outbox room stays and is tried again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import sqlite_utils

from agent.config import FolderIntakeConfig
from agent.dicom.reading import read_file
from agent.dicom.intake import DicomIntake
from agent.dicom.statuses import CANNOT_UNDERSTAND, SUCCESS
from agent.supervisor import ThreadService

log = logging.getLogger(__name__)


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

    def start(self) -> None:
        super().start()
        log.info("watching %s for DICOM files (settle %.1f s, then %s)", self.cfg.path, self.cfg.settle_s,
                 self.cfg.after)

    def _run(self) -> None:
        db = sqlite_utils.Database(self.state_path)
        db["handled"].create({"path": str, "size": int, "mtime_ns": int, "handled_at": float, "status": int},
                             pk="path", if_not_exists=True)
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
            ds = read_file(path)
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
