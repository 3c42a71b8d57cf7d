"""A logging filter that drops the values third-party libraries put into their messages.

pydicom warns about malformed values by quoting them ("Invalid value for VR UI: '1.2.840.xyz'", a person name, a
date), pynetdicom may name elements, and Python warnings (logging.captureWarnings routes them to "py.warnings")
carry the same texts. Such a value can be a UID or a patient's name, so in records of these loggers quoted text, UIDs,
long numbers and dates are replaced by "…"; the message's wording stays, so the problem is still recognisable.
The agent's own messages are written not to carry values and pass unchanged.
"""

from __future__ import annotations

import logging
import re

THIRD_PARTY_LOGGERS = ("pydicom", "pynetdicom", "py.warnings")
REDACTED = "…"
VALUES = re.compile(
    r"'[^'\n]*'|\"[^\"\n]*\"|`[^`\n]*`"  # quoted values
    r"|\b\d+(?:\.\d+){2,}\b"  # UIDs (and dotted numbers)
    r"|\b\d{4}[-/.]?\d{2}[-/.]?\d{2}\b"  # dates
    r"|\d{5,}")  # record numbers


def redact(text: str) -> str:
    """`text` with quoted values, UIDs, dates and long numbers replaced by REDACTED."""
    return VALUES.sub(REDACTED, text)


class ThirdPartyValues(logging.Filter):
    """Rewrites records of THIRD_PARTY_LOGGERS (and their children) with their values redacted; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(THIRD_PARTY_LOGGERS):
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record: keep only its format string
                message = str(record.msg)
            record.msg, record.args = redact(message), None
            if record.exc_info:  # an exception's text may quote the value too: keep its type only
                record.exc_text = f"{record.exc_info[0].__name__}: {REDACTED}" if record.exc_info[0] else None
                record.exc_info = None
        return True
