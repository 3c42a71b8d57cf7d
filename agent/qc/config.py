"""The `[qc]` section of the agent config (agent.config imports it): sessions, technique matching and the limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.qc.limits import QcLimits
from agent.qc.schedule import ScheduleEntry

DB_FILE = "qc.db"  # beside the outbox: the sessions and their audit records (agent/qc/store.py)


class QcConfig(BaseModel):
    """QC sessions: always on (readings with no open session are published as before); the limits are `[qc.limits]`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has inf and nan

    match_window_s: float = Field(10.0, gt=0, le=600, description="A DICOM exposure event fills the set technique "
                                  "of the meter reading nearest in time within ± this many seconds (the event's "
                                  "acquisition time, else when it was received), s.")
    pair_window_s: float = Field(5.0, gt=0, le=60, description="Readings of a session's different instruments this "
                                 "close in time are one exposure (e.g. a kVp meter and a DAP meter), s.")
    recent_sessions: int = Field(20, ge=1, le=500, description="Finished or discarded sessions listed on the page.")
    unit_id: str = Field("", max_length=80, description="Id of this room's X-ray unit (asset tag, registration "
                         "number); recorded with every session beside what the unit's DICOM says.")
    limits: QcLimits = Field(default_factory=QcLimits, description="Limits of the analyses; US federal by default.")
    schedule: tuple[ScheduleEntry, ...] = Field((), description="`[[qc.schedule]]`: the room's tests and their "
                                                "intervals; what is due shows on the page, `qc due`, the retained "
                                                "qc/due message and (overdue) the health sample.")

    @field_validator("schedule")
    @classmethod
    def _one_entry_per_test(cls, entries: tuple[ScheduleEntry, ...]) -> tuple[ScheduleEntry, ...]:
        tests = [e.test for e in entries]
        twice = sorted({t for t in tests if tests.count(t) > 1})
        if twice:
            raise ValueError(f"each test once; listed more than once: {', '.join(twice)}")
        return entries
