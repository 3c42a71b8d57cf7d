"""Published payload models (pydantic). Every model here has a JSON Schema in agent/schemas/."""

from agent.payloads.base import Envelope
from agent.payloads.command import CommandReply
from agent.payloads.dose import DoseAlert, RoomSummary
from agent.payloads.drl_audit import DrlAudit
from agent.payloads.equipment import EquipmentStatus
from agent.payloads.exposure import DoseSummary, ExposureEvent
from agent.payloads.health import HealthSample
from agent.payloads.qc import QcReading
from agent.payloads.qc_due import QcDue
from agent.payloads.qc_session import QcSession
from agent.payloads.status import AgentStatus

# Every payload model, for `xray-agent schema` and the stale-schema test. Add new models here.
MODELS: list[type[Envelope]] = [AgentStatus, ExposureEvent, DoseSummary, QcReading, EquipmentStatus, DoseAlert,
                                RoomSummary, HealthSample, CommandReply, QcSession, DrlAudit, QcDue]

__all__ = ["Envelope", "AgentStatus", "ExposureEvent", "DoseSummary", "QcReading", "EquipmentStatus", "DoseAlert",
           "RoomSummary", "HealthSample", "CommandReply", "QcSession", "DrlAudit", "QcDue", "MODELS"]
