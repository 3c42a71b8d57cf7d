"""The QC schedule of a room: which tests are due, from the configured intervals and the finished sessions.

A test counts as done by its latest finished session that passed; a later failed session does not reset the clock
(the test is still to be done), it is shown beside it. Status per test: `overdue` (never passed, or its due date is
past), `due` (due within warn_days), else `ok`. Pure functions; agent/qc/sessions.py reads the sessions and
publishes the retained `qc/due` message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.qc.models import TestType

DueStatus = Literal["ok", "due", "overdue"]


class ScheduleEntry(BaseModel):
    """One `[[qc.schedule]]` entry: a test type and how often it must be done."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test: TestType = Field(description="QC test type, as `xray-agent qc start --test` names it.")
    interval_days: int = Field(ge=1, le=3660, description="Days between two passed sessions of the test (e.g. 30 "
                                                          "monthly, 365 annual).")
    warn_days: int = Field(14, ge=0, le=365, description="The test shows as due this many days before its date.")


class LastRuns(BaseModel):
    """What the sessions say about one test type: its latest passed and latest finished session."""

    model_config = ConfigDict(frozen=True)

    passed_at: datetime | None = None
    passed_ref: str | None = None
    finished_at: datetime | None = None
    finished_verdict: str | None = None


def due_list(schedule: Iterable[ScheduleEntry], last: Mapping[str, LastRuns], now: datetime) -> list[dict[str, Any]]:
    """Per scheduled test, in config order: {test_type, interval_days, status, due_at, days_left, last_passed_at,
    last_passed_ref, last_finished_at, last_verdict}; times are aware datetimes' ISO text, days_left negative when
    overdue (null when never passed)."""
    out = []
    for entry in schedule:
        runs = last.get(entry.test) or LastRuns()
        due_at = None if runs.passed_at is None else runs.passed_at + timedelta(days=entry.interval_days)
        if due_at is None or now > due_at:
            status: DueStatus = "overdue"
        elif now >= due_at - timedelta(days=entry.warn_days):
            status = "due"
        else:
            status = "ok"
        out.append({"test_type": entry.test, "interval_days": entry.interval_days, "status": status,
                    "due_at": None if due_at is None else due_at.isoformat(timespec="seconds"),
                    # Whole days to the due date, rounded down: -1 on the first day past it.
                    "days_left": None if due_at is None else math.floor((due_at - now).total_seconds() / 86400),
                    "last_passed_at": None if runs.passed_at is None else runs.passed_at.isoformat(timespec="seconds"),
                    "last_passed_ref": runs.passed_ref,
                    "last_finished_at": None if runs.finished_at is None
                    else runs.finished_at.isoformat(timespec="seconds"),
                    "last_verdict": runs.finished_verdict})
    return out


def last_runs(rows: Iterable[Mapping[str, Any]], zone: str) -> dict[str, LastRuns]:
    """Per test type, from finished sessions ({ref, test_type, ended_at (ISO), verdict}) in ended_at order: the
    latest pass and the latest finish, times in the site's zone."""
    last: dict[str, LastRuns] = {}
    for row in rows:
        ended = in_zone(datetime.fromisoformat(row["ended_at"]), zone)
        update: dict[str, Any] = {"finished_at": ended, "finished_verdict": row["verdict"]}
        if row["verdict"] == "pass":
            update.update(passed_at=ended, passed_ref=row["ref"])
        last[row["test_type"]] = (last.get(row["test_type"]) or LastRuns()).model_copy(update=update)
    return last


def in_zone(at: datetime, zone: str) -> datetime:
    """`at` in the site's zone (an unknown zone: UTC)."""
    try:
        return at.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        return at.astimezone(timezone.utc)


def overdue_tests(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """The test types of a due list that are overdue."""
    return [item["test_type"] for item in items if item["status"] == "overdue"]
