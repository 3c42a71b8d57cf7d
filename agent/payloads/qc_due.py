"""The room's QC schedule, retained on `qc/due`: which tests are due or overdue (agent/qc/schedule.py).

Published when what it says changes (a session passed, a test became due or overdue) and at start; the outbox keeps
only the newest undelivered one, and the broker retains the last, so the centre sees each room's state on
subscribing."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.payloads.base import Envelope
from agent.qc.models import TestType


class DueTest(BaseModel):
    """One scheduled test and its state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test_type: TestType
    interval_days: int = Field(ge=1, description="Configured interval between passed sessions, days.")
    status: Literal["ok", "due", "overdue"] = Field(description="overdue: never passed or past its date; due: "
                                                                "within its warn_days of the date.")
    due_at: datetime | None = Field(description="Last pass + interval, with offset; null if never passed.")
    days_left: int | None = Field(description="Whole days to due_at, negative when overdue; null if never passed.")
    last_passed_at: datetime | None = Field(description="When its latest passed session finished.")
    last_passed_ref: str | None = Field(description="session_ref of that session (as on qc/session).")
    last_finished_at: datetime | None = Field(description="When its latest finished session (any verdict) ended.")
    last_verdict: str | None = Field(description="Verdict of that session: pass, fail, invalid or incomplete.")


class QcDue(Envelope):
    """What QC is due in this room, retained."""

    KIND: ClassVar[str] = "qc/due"
    schema_: Literal["xray.qc-due/1"] = Field("xray.qc-due/1", alias="schema", description="Payload schema/version.")

    as_of: datetime = Field(description="When the states were computed, UTC.")
    tests: list[DueTest] = Field(description="The configured schedule, in config order.")
    overdue: list[TestType] = Field(description="The test types that are overdue.")
