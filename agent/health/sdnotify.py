"""systemd notification (Type=notify) without a dependency: READY=1 once the listeners are bound, a one-line
STATUS=, WATCHDOG=1 only while the pipeline makes progress, STOPPING=1 on the way out.

The protocol is one datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET; a name starting with '@' is
in the abstract namespace (a leading NUL byte). The watchdog is fed from the supervisor's tick, and only when the
progress checks pass: if the main loop stops ticking, or the outbox writer or the publisher is dead or stuck,
systemd stops hearing from us and restarts the service after WatchdogSec.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

from agent.health.checks import Check, listeners_check, progress, summary_line
from agent.health.view import AgentView

log = logging.getLogger(__name__)

STATUS_EVERY_S = 10.0


class Notifier:
    """Sends messages to systemd's notification socket; does nothing when not started by systemd."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is meant for; a child that inherited the variables is not it.
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when $NOTIFY_SOCKET is set."""
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """Send one datagram of newline-separated assignments; False (logged at debug) when it cannot be sent."""
        if not self.enabled:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True


class SystemdReporter:
    """Supervisor tick job: READY once the listeners are bound, STATUS on change (at most every STATUS_EVERY_S),
    WATCHDOG while the pipeline progresses; STOPPING when stopped."""

    def __init__(self, view: AgentView, notifier: Notifier, clock: Callable[[], float] = time.monotonic) -> None:
        self.view, self.notifier, self._clock = view, notifier, clock
        self.ready = False
        self._status, self._status_at = "", float("-inf")
        self._fed_at = float("-inf")
        self._starving: list[Check] = []

    def tick(self) -> None:
        """Called on every supervisor tick (which is itself proof that the main loop runs)."""
        now = self._clock()
        if not self.ready and self._listeners_bound():
            self.ready = True
            self.notifier.send("READY=1", f"STATUS={summary_line(self.view)}")
            self._status_at = now
        if self.ready and now - self._status_at >= STATUS_EVERY_S:
            self._status_at = now
            self._send_status(summary_line(self.view))
        self._feed(now)

    def _listeners_bound(self) -> bool:
        return listeners_check(self.view).ok

    def _send_status(self, line: str) -> None:
        if line != self._status:
            self._status = line
            self.notifier.send(f"STATUS={line}")

    def _feed(self, now: float) -> None:
        if self.notifier.watchdog_s is None or now - self._fed_at < self.notifier.watchdog_s / 4:
            return
        failing = [c for c in progress(self.view) if not c.ok]
        if failing:
            if failing != self._starving:
                log.error("not feeding the systemd watchdog: %s; systemd restarts the agent if this lasts %.0f s",
                          ", ".join(f"{c.name} {c.detail}" for c in failing), self.notifier.watchdog_s)
            self._starving = failing
            return
        self._starving = []
        self._fed_at = now
        self.notifier.send("WATCHDOG=1")

    # As a service added last (so stopped first), it tells systemd that a stop has begun.
    def start(self) -> None:
        """Nothing to start: tick() does the work."""

    def stop(self) -> None:
        """Tell systemd the stop is deliberate."""
        self.notifier.send("STOPPING=1", "STATUS=stopping")

    def alive(self) -> bool:
        """Always alive (no thread of its own)."""
        return True
