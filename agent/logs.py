"""Logging to stderr in a form journald and a terminal both read well."""

from __future__ import annotations

import logging
import os
import sys

from agent.privacy import redact


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr; under systemd (JOURNAL_STREAM set) leave timestamps to the journal."""
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journal else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    redact.install()  # pydicom's warnings (also as warnings.warn) quote the malformed value: a UID, a name
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> str:
    """Change the agent's log level at run time (the set-log-level command); returns the previous level."""
    root = logging.getLogger()
    previous = logging.getLevelName(root.level)
    root.setLevel(level)
    # paho and pynetdicom are chatty at INFO; their problems reach us as exceptions and return codes.
    for noisy in ("pynetdicom", "paho"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return previous
