"""Liveness, readiness and pipeline progress as named checks: /livez, /readyz, the systemd watchdog and STATUS line.

- live: the supervisor loop ticks (it also runs every periodic job, the watchdog feed among them).
- ready: outbox sound, its last write succeeded and accepting, disk above health.disk_floor_mib, broker connected or
  down for less than health.broker_grace_s, the DICOM listener and the web server bound, no state file damaged.
- progress (watchdog): the outbox writer and the publisher's feeder threads are alive and not stuck.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

from agent.health.host import existing_parent
from agent.health.view import AgentView

LIVE_S = 10.0  # the supervisor ticks every 0.5 s; this much silence means the main loop is stuck
STUCK_S = 60.0  # a commit or a feeder pass taking longer than this is a stuck thread, not a slow one
MIB = 1024 * 1024


@dataclass(frozen=True)
class Check:
    """One named check: ok, and what was found (in words)."""

    name: str
    ok: bool
    detail: str


def liveness(view: AgentView) -> Check:
    """The supervisor loop ticked recently."""
    age = time.monotonic() - view.supervisor.last_tick
    return Check("supervisor", age < LIVE_S, f"last tick {age:.1f} s ago")


def outbox_check(view: AgentView) -> Check:
    """The outbox writer runs, is not stuck in a commit, its folder is writable and it is not refusing."""
    box = view.outbox
    busy = box.busy_since
    if box.damage is not None:
        return Check("outbox", False, f"outbox file damaged, refusing until rebuilt: {box.damage}")
    if not box.alive():
        return Check("outbox", False, "outbox writer is not running")
    if box.write_error is not None:  # the last write's outcome, not the folder's permissions, says whether it writes
        return Check("outbox", False, f"last write failed: {box.write_error}")
    if busy is not None and time.monotonic() - busy > STUCK_S:
        return Check("outbox", False, f"a commit has been running for {time.monotonic() - busy:.0f} s (disk stalled?)")
    if not os.access(existing_parent(box.path.parent), os.W_OK):
        return Check("outbox", False, f"{box.path.parent} is not writable")
    if box.refusing:
        return Check("outbox", False, "outbox full: exposure-class messages are refused until the broker drains it")
    return Check("outbox", True, f"writable, {box.depth()} undelivered")


def disk_check(view: AgentView) -> Check:
    """Free space in the outbox's folder is above the configured floor."""
    floor = view.cfg.health.disk_floor_mib * MIB
    free = shutil.disk_usage(existing_parent(view.outbox.path.parent)).free
    return Check("disk", free >= floor, f"{free // MIB} MiB free (floor {floor // MIB} MiB)")


def broker_check(view: AgentView) -> Check:
    """Connected, or disconnected for less than the grace period."""
    state, grace = view.publisher.state, view.cfg.health.broker_grace_s
    if state.connected:
        return Check("broker", True, "connected")
    down_s = time.monotonic() - (state.down_since or time.monotonic())
    reason = f": {state.last_error}" if state.last_error else ""
    return Check("broker", down_s < grace, f"down for {down_s:.0f} s (grace {grace:.0f} s){reason}")


def listeners_check(view: AgentView) -> Check:
    """The DICOM listener (when enabled) and the web server (when enabled) hold their sockets."""
    missing = []
    if view.cfg.dicom.enabled and not (view.listener is not None and view.listener.alive()):
        missing.append(f"DICOM listener on port {view.cfg.dicom.port}")
    if view.cfg.web.enabled and not (view.web is not None and view.web.alive()):
        missing.append(f"web server on port {view.cfg.web.port}")
    if missing:
        return Check("listeners", False, "not bound: " + ", ".join(missing))
    return Check("listeners", True, "bound")


def state_files_check(view: AgentView) -> Check:
    """No state database (dose history, QC store, folder-intake state; the outbox has its own check) is damaged."""
    damaged = [f"{t.name} ({t.owner.damage})" for t in view.state_files if t.owner.damage is not None]
    if damaged:
        return Check("state-files", False, "damaged, being rebuilt: " + ", ".join(damaged))
    rebuilt = [t.name for t in view.state_files if t.owner.recovery is not None]
    return Check("state-files", True, "sound" + (f"; rebuilt since start: {', '.join(rebuilt)}" if rebuilt else ""))


def readiness(view: AgentView) -> list[Check]:
    """Every readiness check, in a fixed order."""
    return [outbox_check(view), disk_check(view), broker_check(view), listeners_check(view),
            state_files_check(view)]


def progress(view: AgentView) -> list[Check]:
    """Checks the watchdog feed depends on (besides the tick that runs them): the core threads make progress."""
    now, box, state = time.monotonic(), view.outbox, view.publisher.state
    busy = box.busy_since
    writer_ok = box.alive() and (busy is None or now - busy <= STUCK_S)
    feeder_ok = view.publisher.alive() and not state.stuck(now, STUCK_S)
    return [Check("outbox-writer", writer_ok, "alive" if writer_ok else "dead or stuck in a commit"),
            Check("publisher", feeder_ok, "alive" if feeder_ok else "dead or stuck")]


def summary_line(view: AgentView) -> str:
    """One line for systemd's STATUS= (and logs): broker, outbox, equipment."""
    state = view.publisher.state
    broker = "broker connected" if state.connected else "broker DOWN"
    depth = view.outbox.depth()
    devices = view.board.snapshot()
    ok = sum(1 for d in devices if d.state == "ok")
    failing = [c.name for c in readiness(view) if not c.ok]
    head = "ready" if not failing else "NOT READY (" + ", ".join(failing) + ")"
    return f"{head}; {broker}; outbox {depth} queued; equipment {ok}/{len(devices)} ok"
