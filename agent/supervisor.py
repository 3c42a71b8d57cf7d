"""One supervisor owns every thread: starts services in order, watches them, stops them in reverse order.

A service is anything with `name`, `start()`, `stop()` and `alive()`. SIGTERM and SIGINT only set the stop event; the
main thread then stops each service in reverse start order, each in its own try block so one failure cannot keep the
others running.

A service that dies is restarted with a growing delay. One that cannot be started, or an essential one (the outbox, the
publisher) that dies GIVE_UP_AFTER times without STABLE_S of life in between, stops the agent with exit status
EXIT_SERVICE_FAILED (logged, naming it): a half-working agent must not go on answering its senders as if it were
whole, and systemd's restart gives it a fresh start (which checks every state file first).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

log = logging.getLogger(__name__)

TICK_S = 0.5
RESTART_MAX_S = 60.0
GIVE_UP_AFTER = 5  # deaths in a row...
STABLE_S = 300.0  # ...without this much life between them
EXIT_SERVICE_FAILED = 3  # a service could not be kept running (systemd: Restart=on-failure restarts the agent)


class Service(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def alive(self) -> bool: ...


class ThreadService:
    """A service whose work runs in one daemon thread: subclasses implement `_run()`, which returns once `_stop` is
    set (every wait in it should be `self._stop.wait(...)`), and may set `thread_name` and `stop_timeout_s`."""

    thread_name = "service"
    stop_timeout_s = 2.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to finish and wait for it (at most stop_timeout_s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.stop_timeout_s if timeout is None else timeout)
            self._thread = None

    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        raise NotImplementedError


@dataclass
class _Entry:
    name: str
    service: Service
    failures: int = 0
    restart_at: float = 0.0
    started_at: float = 0.0
    essential: bool = False


@dataclass
class Supervisor:
    """Runs services until stopped; `periodic` callables run on every tick in the main thread."""

    stop_event: threading.Event = field(default_factory=threading.Event)
    last_tick: float = field(default_factory=time.monotonic)
    exit_status: int = 0  # EXIT_SERVICE_FAILED once the supervisor gave up on a service
    _entries: list[_Entry] = field(default_factory=list)
    _periodic: list[Callable[[], None]] = field(default_factory=list)

    def add(self, name: str, service: Service, essential: bool = False) -> None:
        """Add a service in start order; essential: the agent stops rather than run on without it."""
        self._entries.append(_Entry(name, service, essential=essential))

    def every_tick(self, fn: Callable[[], None]) -> None:
        self._periodic.append(fn)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT set the stop event; everything else happens in the main loop."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self._signalled(signum))

    def _signalled(self, signum: int) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.stop_event.set()

    def run(self) -> int:
        """Start every service, watch them until the stop event, then stop them in reverse order; returns the exit
        status (0, or EXIT_SERVICE_FAILED)."""
        started: list[_Entry] = []
        try:
            for entry in self._entries:
                try:
                    entry.service.start()
                except Exception as exc:  # noqa: BLE001 - named, then the agent stops with a distinct status
                    log.critical("could not start %s: %s; stopping the agent (exit status %d)", entry.name, exc,
                                 EXIT_SERVICE_FAILED, exc_info=True)
                    self.exit_status = EXIT_SERVICE_FAILED
                    return self.exit_status
                entry.started_at = time.monotonic()
                started.append(entry)
                log.debug("started %s", entry.name)
            while not self.stop_event.wait(TICK_S):
                self.last_tick = time.monotonic()
                self._watch(started)
                for fn in self._periodic:
                    _guarded(fn)
        finally:
            self._stop_all(started)
        return self.exit_status

    def _watch(self, entries: list[_Entry]) -> None:
        now = time.monotonic()
        for entry in entries:
            if entry.service.alive():
                if entry.failures and now - entry.started_at > STABLE_S:
                    entry.failures = 0
                continue
            if now < entry.restart_at:
                continue
            if entry.essential and entry.failures >= GIVE_UP_AFTER:
                log.critical("%s died %d times without running %.0f s in between; stopping the agent (exit "
                             "status %d)", entry.name, entry.failures + 1, STABLE_S, EXIT_SERVICE_FAILED)
                self.exit_status = EXIT_SERVICE_FAILED
                self.stop_event.set()
                return
            entry.failures += 1
            delay = min(RESTART_MAX_S, 2.0 ** entry.failures)
            entry.restart_at = now + delay
            log.error("%s stopped unexpectedly; restarting it (attempt %d, next in %.0f s if it dies again)",
                      entry.name, entry.failures, delay)
            _guarded(entry.service.stop)
            _guarded(entry.service.start)
            entry.started_at = time.monotonic()

    def _stop_all(self, started: list[_Entry]) -> None:
        for entry in reversed(started):
            t0 = time.monotonic()
            _guarded(entry.service.stop)
            log.debug("stopped %s in %.2f s", entry.name, time.monotonic() - t0)


def _guarded(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - the supervisor must outlive any one service's failure
        log.exception("error in %s", getattr(fn, "__qualname__", fn))
