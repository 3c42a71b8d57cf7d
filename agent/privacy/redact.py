"""Redaction of the values that library messages and exception texts quote, before they reach the journal.

pydicom warns about malformed values by quoting them ("Invalid value for VR UI: '1.2.840.xyz'", a person name, a
date), pynetdicom may name elements, and Python warnings (logging.captureWarnings routes them to "py.warnings")
carry the same texts. Such a value can be a UID or a patient's name, so in records of these loggers quoted text, UIDs,
long numbers and dates are replaced by "…"; the message's wording stays, so the problem is still recognisable.
The agent's own messages are written not to carry values and pass unchanged, but an exception logged with its
traceback (any logger) has its message lines (each exception of the chain: first line, continuation lines, notes)
redacted the same way: an OSError names the exported file, a parsing error quotes its input. The traceback's frames
and source lines stay.
"""

from __future__ import annotations

import logging
import re
import traceback

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


def redacted_traceback(exc_info) -> str:
    """The traceback of `exc_info` as logging formats it, with the exception message of each exception in the chain
    redacted: its first line, its continuation lines and notes, however they are indented (pydantic puts the input
    value on an indented line). Built from the traceback's structure, not by guessing which printed lines are frames,
    so a message cannot pass for a frame. Frames and source lines are kept."""
    chain, exc = [], traceback.TracebackException(*exc_info)
    while exc is not None:
        if exc.__cause__ is not None:
            chain.append((exc, "\nThe above exception was the direct cause of the following exception:\n\n"))
            exc = exc.__cause__
        elif exc.__context__ is not None and not exc.__suppress_context__:
            chain.append((exc, "\nDuring handling of the above exception, another exception occurred:\n\n"))
            exc = exc.__context__
        else:
            chain.append((exc, ""))
            exc = None
    out: list[str] = []
    for exc, joint in reversed(chain):  # the cause first; the joint sentence leads into the exception it belongs to
        out.append(joint)
        if exc.stack:
            out += ["Traceback (most recent call last):\n", *exc.stack.format()]
        out += [redact(line) for line in exc.format_exception_only()]
    return "".join(out).rstrip("\n")


def _redact_exception(record: logging.LogRecord) -> None:
    if record.exc_info and not record.exc_text:
        record.exc_text = redacted_traceback(record.exc_info)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record: keep only its format string
        message = str(record.msg)
    record.msg, record.args = redact(message), None


_FORMATTER = logging.Formatter()


def third_party(name: str) -> bool:
    return name.startswith(THIRD_PARTY_LOGGERS)


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
        _redact_exception(record)
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
