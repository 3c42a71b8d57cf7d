"""The DRL audit as the monitor runs it: once each calendar month when it ends, and on request; the audit is built
from the history (agent.dose.audit), stored in the outbox for `drl-audit` and its figures kept in the history.
A mix-in of DoseMonitor, which owns the history, its writer, the sink, the rules, the zone and the clock.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime

from agent.dose import history as h
from agent.dose.audit import audit_rows_to_history, build_audit, month_start, previous_month
from agent.dose.history import HistoryError
from agent.outbox import OutboxError
from agent.payloads.drl_audit import DrlAudit

log = logging.getLogger(__name__)

LAST_AUDIT_KEY = "last_audit_end"


class MonthlyAudit:
    def _monthly_audit(self, now: datetime) -> None:
        """The DRL audit of the calendar month just ended, once (retried on the next tick if it cannot be stored)."""
        end = month_start(now, self.zone)
        if self.rules.audit.period == "off" or end <= self._last_audit_end:
            return
        try:
            self.publish_audit("monthly", previous_month(end, self.zone), end)
        except (OutboxError, HistoryError, sqlite3.Error) as exc:
            log.error("monthly DRL audit not stored (%s); retrying", exc)
            return
        self._last_audit_end = end
        self.writer.put((h.SET_META, (LAST_AUDIT_KEY, end.isoformat())))

    def request_audit(self, start: datetime | None = None, end: datetime | None = None) -> DrlAudit:
        """Publish the DRL audit of [start, end) (default: the month so far), and keep its figures in the history.
        Raises OutboxError when the outbox cannot take it, HistoryError without a history."""
        now = self.clock().astimezone(self.zone)
        return self.publish_audit("request", start or month_start(now, self.zone), end or now)

    def publish_audit(self, trigger: str, start: datetime, end: datetime) -> DrlAudit:
        audit = self.compute_audit(trigger, start, end)
        self.sink.emit(audit)
        self.writer.put(*((h.UPSERT_AUDIT, row) for row in audit_rows_to_history(audit, self.clock().timestamp())))
        log.info("published %s DRL audit %s .. %s: %d exam group(s)", trigger, start.isoformat(), end.isoformat(),
                 len(audit.exams))
        return audit

    def compute_audit(self, trigger: str, start: datetime, end: datetime) -> DrlAudit:
        if self.writer is None or not self.writer.flush():
            raise HistoryError("the dose history is not available")
        rows = self.history.audit_rows(start.timestamp(), end.timestamp())
        return build_audit(rows, self.rules, site=self.sink.site, room=self.sink.room, trigger=trigger, start=start,
                           end=end, zone=self.zone_name, ts=self.clock())
