"""A bounded folder of objects the agent keeps (quarantined or retained), for a biomed to inspect. The objects carry
the patient's name: the folder is 0700 and every file 0600.

Trimming deletes only what this folder wrote: a name in its own pattern that is also in its index file. A folder
that also holds other files (a mistaken path such as the modality's export folder) keeps them: only the agent's own
copies count against the bounds and are ever deleted.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path

from agent.privacy.files import append_private, owned_private_dir, write_private

log = logging.getLogger(__name__)

INDEX_NAME = ".xray-agent-index"  # one file name per line: the copies this folder wrote, oldest first
OWN_NAME = re.compile(r"^\d{8}T\d{6}-\d+-\d{5,}-[A-Za-z0-9-]{1,40}\.dcm$")


class BoundedFolder:
    """Writes files into a folder and deletes its own oldest ones beyond `max_files` or `max_bytes`."""

    def __init__(self, folder: Path, max_bytes: int, max_files: int):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._lock = threading.Lock()
        self._seq = 0

    def put(self, data: bytes | Path, label: str, note: str = "") -> Path | None:
        """Store `data` (bytes, or a file to copy without reading it into memory) and a `.txt` note beside it;
        returns the path, or None when the bounds allow nothing."""
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        if self.max_files == 0 or size > self.max_bytes:
            return None
        with self._lock:
            self._seq += 1
            stem = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{self._seq:05d}-{_slug(label)}"
            owned_private_dir(self.folder)
            path = write_private(self.folder / f"{stem}.dcm", data)
            if note:
                write_private(path.with_suffix(".txt"), (note + "\n").encode())
            append_private(self.folder / INDEX_NAME, path.name + "\n")
            self._trim()
            return path

    def own_files(self) -> list[Path]:
        """The copies this folder wrote and still holds, oldest first (index order)."""
        try:
            names = (self.folder / INDEX_NAME).read_text().split()
        except FileNotFoundError:
            return []
        return [self.folder / name for name in dict.fromkeys(names)
                if OWN_NAME.match(name) and (self.folder / name).is_file()]

    def _trim(self) -> None:
        files = self.own_files()
        sizes = {p: p.stat().st_size for p in files}
        total = sum(sizes.values())
        while files and (len(files) > self.max_files or total > self.max_bytes):
            oldest = files.pop(0)
            total -= sizes[oldest]
            oldest.unlink(missing_ok=True)
            oldest.with_suffix(".txt").unlink(missing_ok=True)
        index = self.folder / INDEX_NAME
        tmp = index.with_name(INDEX_NAME + ".tmp")
        write_private(tmp, "".join(p.name + "\n" for p in files).encode())
        os.replace(tmp, index)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "object"
