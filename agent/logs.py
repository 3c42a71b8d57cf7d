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
    # pynetdicom logs one error per broken connection or PDU: a peer reconnecting in a loop would flood the journal.
    handler.addFilter(RepeatFilter(REPEATS, ("pynetdicom",)))
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


REPEAT_WINDOW_S = 60.0
MAX_CAUSES = 1024  # distinct causes tracked at once; a cause is a kind of problem, never a per-message value


class RepeatLimiter:
    """Rate-limits log lines per cause: the first one in full, then one line per window with how many more came.

    A meter sending a bad frame 10,000 times a second, or a peer reconnecting in a loop, gives two lines a minute
    instead of flooding the journal (which rate-limits, and then drops, the lines that matter). `cause` is any hashable
    naming the kind of problem and its source (e.g. ("invalid reading", "area-1")); the message of the latest repeat
    goes into the count line, so a changing detail is still seen. `flush()` (each supervisor tick) reports windows
    that ended without a further repeat."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S, clock=None):
        import threading
        import time

        self.window_s = window_s
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        # cause -> [logger, level, window end, repeats in window, last message, last args]
        self._causes: dict[object, list] = {}

    def log(self, logger: logging.Logger, level: int, cause: object, msg: str, *args: object) -> bool:
        """Log now if this cause is new (returns True), else count it for the window's summary line."""
        if not self._count(cause, logger, level, msg, args):
            return False
        logger.log(level, msg + " (repeats are counted once a minute)", *args)
        return True

    def _count(self, cause: object, logger: logging.Logger, level: int, msg: str, args: tuple) -> bool:
        """True when `cause` starts a window (emit now), False when this one is counted in the current window. Once
        MAX_CAUSES are tracked, further new causes share one bucket, so many distinct causes cannot flood either."""
        now = self._clock()
        with self._lock:
            entry = self._causes.get(cause)
            if entry is not None and now >= entry[2]:
                self._report(cause, entry, now)
                entry = self._causes.get(cause)
            if entry is None and len(self._causes) >= MAX_CAUSES:
                self._expire(now)
                if len(self._causes) >= MAX_CAUSES:
                    cause = _OVERFLOW
                    entry = self._causes.get(cause)
            if entry is not None:
                entry[3] += 1
                entry[4], entry[5] = msg, args
                return False
            self._causes[cause] = [logger, level, now + self.window_s, 0, msg, args]
            return True

    def flush(self) -> None:
        """Report every window that has ended."""
        with self._lock:
            self._expire(self._clock())

    def _expire(self, now: float) -> None:
        for cause, entry in list(self._causes.items()):
            if now >= entry[2]:
                self._report(cause, entry, now)

    def _report(self, cause: object, entry: list, now: float) -> None:
        logger, level, _end, repeats, msg, args = entry
        if repeats == 0:
            del self._causes[cause]  # quiet for a whole window: the next one is logged in full
            return
        entry[2], entry[3] = now + self.window_s, 0
        logger.log(level, "%d more in the last %.0f s, latest: " + msg, repeats, self.window_s, *args,
                   extra={SUMMARY_MARK: True})

    def admit(self, record: logging.LogRecord) -> bool:
        """For a logging filter: True to emit the record now (new cause), False when it is counted instead. The cause
        is the record's logger, level and message template."""
        return self._count(("record", record.name, record.levelno, str(record.msg)), logging.getLogger(record.name),
                           record.levelno, str(record.msg), record.args or ())


_OVERFLOW = ("too many distinct causes",)
SUMMARY_MARK = "xray_agent_repeat_summary"


class RepeatFilter(logging.Filter):
    """Rate-limits records of the given logger names (and their children) through a RepeatLimiter, for libraries
    whose log calls the agent does not own."""

    def __init__(self, limiter: RepeatLimiter, names: tuple[str, ...]):
        super().__init__()
        self.limiter, self.names = limiter, names

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, SUMMARY_MARK, False) or not record.name.startswith(self.names):
            return True
        return self.limiter.admit(record)


REPEATS = RepeatLimiter()


def log_repeated(logger: logging.Logger, level: int, cause: object, msg: str, *args: object) -> bool:
    """Log through the process's RepeatLimiter (see there); True when the line went out now."""
    return REPEATS.log(logger, level, cause, msg, *args)
