"""The state databases as equipment (`equipment/state-{name}`: state-outbox, state-dose, state-qc, state-folder) and as
a readiness check: down while a file is damaged and not yet rebuilt, degraded for RECOVERED_HOLD_S after a rebuild
(with what was recovered and where the damaged file was kept) and, for the outbox, while its last write failed.
"""

from __future__ import annotations

import time

from agent.health.equipment import _Tracked
from agent.payloads.equipment import EquipmentStatus

RECOVERED_HOLD_S = 3600.0  # a rebuild keeps the file's state "degraded" this long, so it is seen, not only logged


class StateFileTracker(_Tracked):
    """One state file's owner (Outbox, DoseMonitor, QcStore, FolderWatcher): damage, recovery, write_error."""

    def __init__(self, name: str, path, owner) -> None:
        super().__init__()
        self.name, self.path, self.owner = name, path, owner
        self.device_id = f"state-{name}"

    def problem(self) -> tuple[str, str | None]:
        """(state, last_error) now."""
        damage = getattr(self.owner, "damage", None)
        if damage is not None:
            return "down", f"damaged, refusing until rebuilt: {damage}"
        write_error = getattr(self.owner, "write_error", None)
        if write_error is not None:
            return "degraded", f"last write failed: {write_error}"
        recovery = getattr(self.owner, "recovery", None)
        if recovery is not None and time.time() - recovery.at.timestamp() < RECOVERED_HOLD_S:
            return "degraded", recovery.summary()
        return "ok", None

    def state(self) -> str:
        """ok, degraded or down now."""
        return self._moved(self.problem()[0])

    def status(self, site: str, room: str, msg_id: str) -> EquipmentStatus:
        """The payload describing the file now (`since`: when it was found damaged, or rebuilt)."""
        state, error = self.problem()
        self._moved(state)
        return EquipmentStatus(
            msg_id=msg_id, site=site, room=room, device_id=self.device_id, device_type="state-file", state=state,
            since=self._since, endpoint=str(self.path), last_error=error)


def add_state_watch(cfg, supervisor, outbox, publisher, view, reporter, owners: list[tuple[str, object]]) -> None:
    """Watch the outbox and every other state file (owners: (name, owner with state_spec()/damage/recovery/repair)):
    periodic checks and repairs (agent.statedb.watch), an equipment state per file, the readiness check, and the
    retained status re-published whenever a file is found damaged or rebuilt."""
    from agent.statedb.watch import IntegrityWatch

    watch = IntegrityWatch(cfg.outbox.check_every_s, outbox)
    for name, owner in [("outbox", outbox), *owners]:
        path = owner.state_spec().path
        watch.add(name, path, owner)
        tracker = StateFileTracker(name, path, owner)
        view.board.add(tracker)
        reporter.every_s[tracker.device_id] = cfg.health.equipment_every_s
        if name != "outbox":  # the outbox has its own readiness check
            view.state_files.append(tracker)
    watch.changed.append(publisher.request_status)
    supervisor.add("state-integrity", watch)
