"""One reader for every secret file the config names (site secret, broker password, TLS key, web token).

A secret file must be a regular file of at most MAX_SECRET_BYTES: a path pointed at /dev/zero, a FIFO or a
multi-gigabyte file is a config error naming the key, found before a single byte is read (the file is opened
non-blocking, so a FIFO does not hang the agent, and checked with fstat on the open descriptor, so what is read is
what was checked).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_SECRET_BYTES = 4096


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message names the config key and the file. `denied`: this user may not
    read it (the file itself may be fine for the service user)."""

    def __init__(self, message: str, denied: bool = False) -> None:
        super().__init__(message)
        self.denied = denied


def read_secret_bytes(key: str, path: Path | str) -> bytes:
    """The file's bytes; SecretFileError naming `key` when it is missing, unreadable, not a regular file or larger
    than MAX_SECRET_BYTES."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SecretFileError(f"{key}: {path} does not exist") from None
    except PermissionError as exc:
        raise SecretFileError(f"{key}: cannot read {path}: {exc.strerror}", denied=True) from None
    except OSError as exc:
        raise SecretFileError(f"{key}: cannot read {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError(f"{key}: {path} is not a regular file ({_kind(info.st_mode)}); point it at a file "
                                  "holding the secret")
        if info.st_size > MAX_SECRET_BYTES:
            raise SecretFileError(f"{key}: {path} is {info.st_size} bytes, more than a secret file may hold "
                                  f"({MAX_SECRET_BYTES} bytes)")
        data = os.read(fd, MAX_SECRET_BYTES + 1)  # a file growing after fstat is still read no further
    except OSError as exc:
        raise SecretFileError(f"{key}: cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise SecretFileError(f"{key}: {path} is larger than {MAX_SECRET_BYTES} bytes")
    return data


def check_secret_file(key: str, path: Path | str) -> os.stat_result:
    """The file's stat (symlinks followed) when it may hold a secret, without reading it (for a checker that may not
    be allowed to read it); SecretFileError naming `key` otherwise."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SecretFileError(f"{key}: {path} does not exist") from None
    except OSError as exc:
        raise SecretFileError(f"{key}: cannot inspect {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretFileError(f"{key}: {path} is not a regular file ({_kind(info.st_mode)}); point it at a file "
                              "holding the secret")
    if info.st_size > MAX_SECRET_BYTES:
        raise SecretFileError(f"{key}: {path} is {info.st_size} bytes, more than a secret file may hold "
                              f"({MAX_SECRET_BYTES} bytes)")
    return info


def read_secret_text(key: str, path: Path | str) -> str:
    """The file's text (UTF-8) without surrounding whitespace; SecretFileError as read_secret_bytes, or when it is
    not UTF-8."""
    try:
        return read_secret_bytes(key, path).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(f"{key}: {path} is not UTF-8 text") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"
