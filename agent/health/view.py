"""One read-only view of the running agent's parts, for health samples, checks, the web endpoints and commands."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from agent.config import Config
from agent.instruments.status import EquipmentBoard
from agent.outbox import Outbox
from agent.publisher import Publisher
from agent.supervisor import Supervisor


@dataclass
class AgentView:
    """What the health and remote-check code may look at. `listener`/`intake` are the DICOM listener and its intake
    (None when disabled); `web` is the web service once built (its bound socket counts as a listener)."""

    cfg: Config
    outbox: Outbox
    publisher: Publisher
    supervisor: Supervisor
    board: EquipmentBoard
    listener: Any = None
    intake: Any = None
    web: Any = None
    state_files: list = field(default_factory=list)  # agent.health.statefiles.StateFileTracker, one per state file
    qc: Any = None  # the QC session service (its schedule's overdue tests go in the health sample)
    started_mono: float = field(default_factory=time.monotonic)

    @property
    def boot_id(self) -> str:
        """Random id of this process run (the publisher's, as in the status)."""
        return self.publisher.boot_id

    def uptime_s(self) -> float:
        """Seconds since the agent was built."""
        return time.monotonic() - self.started_mono
