"""A bounded folder of objects the agent could not interpret, kept for a biomed to inspect (also the retained copies
of received objects). The objects carry the patient's name: the folder is 0700 and every file 0600."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path

from agent.privacy.files import owned_private_dir, write_private

log = logging.getLogger(__name__)


class BoundedFolder:
    """Writes files into a folder and deletes the oldest ones beyond `max_files` or `max_bytes`."""

    def __init__(self, folder: Path, max_bytes: int, max_files: int):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._lock = threading.Lock()
        self._seq = 0

    def put(self, data: bytes, label: str, note: str = "") -> Path | None:
        """Store `data` (and a `.txt` note beside it); returns the path, or None when the bounds allow nothing."""
        if self.max_files == 0 or len(data) > self.max_bytes:
            return None
        with self._lock:
            self._seq += 1
            stem = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{self._seq:05d}-{_slug(label)}"
            owned_private_dir(self.folder)
            path = write_private(self.folder / f"{stem}.dcm", data)
            if note:
                write_private(path.with_suffix(".txt"), (note + "\n").encode())
            self._trim()
            return path

    def _trim(self) -> None:
        files = sorted((p for p in self.folder.glob("*.dcm")), key=lambda p: p.stat().st_mtime_ns)
        total = sum(p.stat().st_size for p in files)
        while files and (len(files) > self.max_files or total > self.max_bytes):
            oldest = files.pop(0)
            total -= oldest.stat().st_size
            oldest.unlink(missing_ok=True)
            oldest.with_suffix(".txt").unlink(missing_ok=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "object"
