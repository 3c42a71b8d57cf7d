"""State files and folders readable by the agent's user only (0600 / 0700), whatever the process umask.

The outbox, the dose history, the QC store and the folder-intake state hold pseudonymous but still personal data
(ages, refs, times), and the quarantine and retained folders hold whole DICOM objects with the patient's name. Files
are created with an explicit mode and chmod-ed to it, because os.open / mkdir only ever narrow by the umask (an
umask of 0 would otherwise give 0644 files). SQLite creates a database's -wal and -shm files with the database
file's own permissions (os_unix.c, findCreateFileMode), so creating the database file 0600 first covers them.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path | str) -> Path:
    """Create `path` (and missing parents) with mode 0700; an existing folder is left as it is (the installer or
    systemd's StateDirectoryMode chose its mode)."""
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by another thread
        os.chmod(folder, DIR_MODE)
    return path


def owned_private_dir(path: Path | str) -> Path:
    """private_dir for a folder only the agent writes (quarantine, retained objects): an existing one of ours that
    others can read is narrowed to 0700."""
    path = private_dir(path)
    _narrow(path, DIR_MODE)
    return path


def _narrow(path: Path, mode: int) -> None:
    try:
        st = path.stat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~mode:
            os.chmod(path, mode)
    except OSError:
        pass  # not ours or gone: the agent reports what it cannot open where it opens it


def private_file(path: Path | str) -> Path:
    """Make sure the file `path` exists with mode 0600 (created empty if missing; an existing file of ours that others
    can read is narrowed). Its folder is created 0700 if missing."""
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        _narrow(path, FILE_MODE)
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def private_sqlite(path: Path | str) -> Path:
    """Prepare a SQLite database file before connecting: the file 0600 (so SQLite gives its -wal and -shm the same
    mode), and side files an older agent left readable narrowed."""
    path = private_file(path)
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            _narrow(side, FILE_MODE)
    return path


def write_private(path: Path | str, data: bytes | Path) -> Path:
    """Write `data` (bytes, or the contents of the file at a Path, copied in chunks) to a new or replaced file with
    mode 0600."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb", closefd=False) as out:
            if isinstance(data, Path):
                with open(data, "rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
            else:
                out.write(data)
    finally:
        os.close(fd)
    return path


def append_private(path: Path | str, text: str) -> None:
    """Append `text` to a file kept at mode 0600 (created if missing)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
