"""Topic layout `{prefix}/{site}/{room}/{kind}` and the delivery policy of each kind.

Kinds that describe the present state (status, health, equipment) are coalesced: while undelivered, only the newest
sample per topic is kept, and they are never refused when the outbox is full. Kinds that record something that happened
(exposures, dose alerts, QC) are kept until the broker acknowledges them, and refused rather than dropped when full.

Each kind belongs to an intake class (`share`) that may hold at most its share of the outbox (config [outbox.shares]):
dicom (exposures and what the dose programme derives from them), readings (serial meter readings), qc (QC session
records) and telemetry (status, health, equipment states).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KindPolicy:
    """How messages of one kind are delivered."""

    share: str
    retain: bool = False
    coalesce: bool = False


SHARES = ("dicom", "readings", "qc", "telemetry")  # the intake classes of [outbox.shares]

# Every kind the agent publishes. "equipment" stands for "equipment/{device_id}".
KINDS: dict[str, KindPolicy] = {
    "status": KindPolicy("telemetry", retain=True, coalesce=True),
    "health": KindPolicy("telemetry", coalesce=True),
    "equipment": KindPolicy("telemetry", retain=True, coalesce=True),
    "exposure": KindPolicy("dicom"),
    "dose-summary": KindPolicy("dicom"),
    "dose-alert": KindPolicy("dicom"),
    "qc/reading": KindPolicy("readings"),
    "qc/session": KindPolicy("qc"),
    "qc/due": KindPolicy("telemetry", retain=True, coalesce=True),  # the room's QC schedule state
    "summary": KindPolicy("dicom"),
    "drl-audit": KindPolicy("dicom"),
}


def policy_for(kind: str) -> KindPolicy:
    """The policy of a topic kind such as "exposure" or "equipment/dap-1"; unknown kinds are a programming error."""
    base = kind.split("/", 1)[0] if kind.startswith("equipment/") else kind
    try:
        return KINDS[base]
    except KeyError:
        raise ValueError(f"unknown topic kind {kind!r}; add it to agent.topics.KINDS") from None


@dataclass(frozen=True)
class Topics:
    """Builds full topic names for one agent."""

    prefix: str
    site: str
    room: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.room}"

    def topic(self, kind: str) -> str:
        """Full topic of a kind, e.g. xray/v1/stmarys/xr-03/exposure."""
        policy_for(kind)
        return f"{self.base}/{kind}"
