"""The integrity watch: one thread that checks every state database now and then, repairs the damaged ones, and, after
the outbox's writes failed (disk full), probes until one succeeds so readiness follows the disk.

Owners (Outbox, DoseMonitor, QcStore, FolderWatcher) each check their file when they open it; the watch adds the
periodic `quick_check` (off the intake's path: a read-only connection in this thread) and the repair of damage found
while running, by the watch or by the owner itself (`mark_damaged` wakes the watch). An owner has:

- `damage`: what is wrong with its file now (None when sound), `recovery`: the last statedb.Recovery (or None);
- `repair(detail)`: rebuild the file and go on (raises when it cannot; the watch tries again after RETRY_S).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from agent.statedb.guard import check
from agent.supervisor import ThreadService

log = logging.getLogger(__name__)

PROBE_EVERY_S = 2.0  # while the outbox's last write failed
RETRY_S = 30.0  # a repair that failed (disk full) is tried again this long after (or check_every_s if shorter)


@dataclass
class Watched:
    """One state file: its short name, where it is, and who owns it."""

    name: str
    path: Path
    owner: Any
    retry_at: float = 0.0


class IntegrityWatch(ThreadService):
    """Periodic checks, repairs and write probes; `changed` callbacks run after any damage or repair (status)."""

    thread_name = "state-integrity"
    stop_timeout_s = 5.0

    def __init__(self, every_s: float, outbox=None) -> None:
        super().__init__()
        self.every_s = every_s
        self.outbox = outbox
        self.files: list[Watched] = []
        self.changed: list[Callable[[], None]] = []
        self._wake = threading.Event()
        self._next_check = time.monotonic() + every_s

    def add(self, name: str, path: Path, owner: Any) -> None:
        """Watch `path`, owned by `owner`; the owner's mark_damaged (if any) wakes the watch."""
        self.files.append(Watched(name, Path(path), owner))
        if hasattr(owner, "on_damage"):
            owner.on_damage = self.suspect

    def suspect(self, _detail: str = "") -> None:
        """Damage was met while running: repair now (called from any thread)."""
        self._notify()
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        self._wake.set()
        super().stop(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(PROBE_EVERY_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._probe()
            self.run_once(periodic=time.monotonic() >= self._next_check)

    def run_once(self, periodic: bool = True) -> None:
        """Repair what is known to be damaged; with periodic, check every file first."""
        if periodic:
            self._next_check = time.monotonic() + self.every_s
        for item in self.files:
            detail = getattr(item.owner, "damage", None)
            if detail is None and periodic:
                detail = check(item.path)
                if detail is not None:
                    log.error("%s state file %s failed its integrity check: %s", item.name, item.path, detail)
                    if hasattr(item.owner, "mark_damaged"):
                        item.owner.mark_damaged(detail)
                    self._notify()
            if detail is None or time.monotonic() < item.retry_at:
                continue
            try:
                item.owner.repair(detail)
            except Exception as exc:  # noqa: BLE001 - a repair that fails (disk full) is retried, never fatal
                retry_s = min(RETRY_S, self.every_s)
                item.retry_at = time.monotonic() + retry_s
                log.error("could not rebuild %s state file %s: %s; still refusing, trying again in %.0f s",
                          item.name, item.path, exc, retry_s)
            else:
                item.retry_at = 0.0
            self._notify()

    def _probe(self) -> None:
        box = self.outbox
        if box is None or box.write_error is None or box.damage is not None:
            return
        try:
            box.probe()
        except Exception:  # noqa: BLE001 - still failing: readiness keeps saying so
            return
        self._notify()

    def _notify(self) -> None:
        for fn in self.changed:
            try:
                fn()
            except Exception:  # noqa: BLE001 - reporting must not stop the watch
                log.exception("state change callback failed")
