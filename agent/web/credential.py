"""The room token file (`xray-agent new-token`) and the local CLI credential: a random token the agent writes at
each start for `xray-agent qc ...` on the room PC.

It lets the CLI send `Authorization: Bearer` without anyone typing the room token. The file is next to the outbox
(the state folder, 0750 under the systemd unit), mode 0640: readable by the service user and the members of its group
(the biomeds who run the CLI), and by root. It changes at every start, and the agent accepts only the one it wrote.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from agent.config import Config
from agent.secretfile import SecretFileError, read_secret_text

FILE_NAME = "web-cli.token"
MODE = 0o640
KEY = "web CLI credential"


def cli_token_path(cfg: Config) -> Path:
    """Where the agent of this config writes the credential."""
    return cfg.outbox.path.parent / FILE_NAME


def write_cli_token(path: Path) -> str:
    """A new random credential, written atomically (temp file, fsync, rename) with MODE whatever the umask."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, MODE)
    try:
        os.fchmod(fd, MODE)
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    return token


def new_token_file(path: Path) -> None:
    """A new room token (web.token_file) at `path`, mode 0600; FileExistsError rather than overwrite one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")


def read_cli_token(cfg: Config) -> str | None:
    """The credential of the running agent, or None when there is none or this user may not read it."""
    try:
        return read_secret_text(KEY, cli_token_path(cfg)) or None
    except SecretFileError:
        return None
