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


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record: keep only its format string
        message = str(record.msg)
    record.msg, record.args = redact(message), None
    if record.exc_info:  # an exception's text may quote the value too: keep its type only
        kind = record.exc_info[0]
        record.msg += f" ({kind.__name__}: {REDACTED})" if kind else ""
        record.exc_info, record.exc_text = None, None


def third_party(name: str) -> bool:
    return name.startswith(THIRD_PARTY_LOGGERS)


class ThirdPartyValues(logging.Filter):
    """A filter form of the redaction, for a handler that receives records made before install()."""

    def filter(self, record: logging.LogRecord) -> bool:
        if third_party(record.name):
            _redact_record(record)
        return True


def install() -> None:
    """Redact third-party records where they are made (a log record factory), so every handler (the journal, a
    test's capture, one added later) sees them redacted; route Python warnings through logging. Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if third_party(record.name):
            _redact_record(record)
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    factory.previous = previous  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    logging.captureWarnings(True)


def uninstall() -> None:
    """Undo install() (tests)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "redacting", False):
        logging.setLogRecordFactory(current.previous)
        logging.captureWarnings(False)
