"""Pseudonymous references: keyed hashes of identifiers that must not leave the room.

A study or event UID is replaced by HMAC-SHA256(site secret, domain + value). The same UID always maps to the same
reference within a site (so subscribers can join events of one study), but without the per-site secret the UID cannot
be recovered or confirmed by guessing, which a plain hash of a UID would allow.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from agent.secretfile import read_secret_bytes

REF_HEX_CHARS = 32  # 128 bits: collision-free for any realistic number of studies, short enough to read.
SECRET_MIN_BYTES = 16


def make_ref(secret: bytes, domain: str, value: str) -> str:
    """Return the pseudonymous reference of `value` in `domain` (e.g. "study", "event") under the site secret."""
    if len(secret) < SECRET_MIN_BYTES:
        raise ValueError(f"site secret too short: {len(secret)} bytes, need at least {SECRET_MIN_BYTES}")
    mac = hmac.new(secret, f"{domain}\x1f{value}".encode(), hashlib.sha256)
    return mac.hexdigest()[:REF_HEX_CHARS]


def load_secret(path: Path, key: str = "site.secret_key_file") -> bytes:
    """Read a site secret file (raw bytes; surrounding whitespace of a text key is ignored); SecretFileError (a
    ValueError naming `key`) for a file that is not a small regular file."""
    data = read_secret_bytes(key, path).strip()
    if len(data) < SECRET_MIN_BYTES:
        raise ValueError(f"{path}: site secret too short ({len(data)} bytes, need at least {SECRET_MIN_BYTES})")
    return data


def new_secret_file(path: Path) -> None:
    """Create a new random site secret at `path` with mode 0600; refuses to overwrite an existing file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(32).hex() + "\n")


def throwaway_secret() -> bytes:
    """A random secret for one-off tools run without a config (refs are then not stable across runs)."""
    return os.urandom(32)
