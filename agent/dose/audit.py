"""The DRL audit of a period: per examination and patient band, the number of examinations, their median DAP and
interquartile range, and the median against the DRL. Pure.

ICRP Publication 135 (2017), sections 2.3 and 2.6: a DRL is compared with the MEDIAN of the dose of a sample of
examinations of standard-size patients (at least 20 recommended per examination, ICRP 135 para. 2.6), not with one
exposure. Here:
- an examination is one study's exposures of one exam (the exposures an exam rule covers, or else sharing a
  protocol name, else body part and view): the DAP of its views summed, so a PA + lateral chest is one examination;
- possible repeats (repeat_of set) are left out, QC exposures never reach the history, rejected images never reach
  the agent; an examination with a view that sent no DAP is left out (its sum would be too low);
- the examination belongs to the period its first exposure falls in;
- flags: "few-examinations" when fewer than the minimum, "median-above-drl" when the median is strictly above it.

Worked example (DRL 0.10 Gy·cm² = 1e-5 Gy·m² per chest examination): examinations of 0.06, 0.08, 0.09, 0.12 and
0.20 Gy·cm² have median 0.09 (q1 0.08, q3 0.12, IQR 0.04), median/DRL 0.9, flagged few-examinations (5 < 20).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from datetime import datetime, time
from typing import Sequence
from zoneinfo import ZoneInfo

from agent.dose.evaluate import percentile
from agent.dose.history import AuditRow
from agent.dose.rules import DoseRules
from agent.payloads.drl_audit import DrlAudit, ExamAudit

GroupKey = tuple[str, str, str | None]  # exam, band, rule id


def examinations(rows: Sequence[AuditRow]) -> dict[GroupKey, list[float]]:
    """(exam, band, rule) -> the DAP of each examination (one per study), Gy·m²."""
    views: dict[tuple[str, GroupKey], list[float | None]] = defaultdict(list)
    for row in rows:
        if row.repeat or row.exam is None or row.study_ref is None:
            continue
        views[(row.study_ref, (row.exam, row.band or "any", row.exam_rule))].append(row.dap_gy_m2)
    out: dict[GroupKey, list[float]] = defaultdict(list)
    for (_, key), daps in views.items():
        if all(d is not None for d in daps):
            out[key].append(math.fsum(daps))
    return out


def exam_audit(key: GroupKey, values: Sequence[float], drl_gy_m2: float | None, min_examinations: int) -> ExamAudit:
    exam, band, rule = key
    median, q1, q3 = percentile(values, 50), percentile(values, 25), percentile(values, 75)
    ratio = median / drl_gy_m2 if median is not None and drl_gy_m2 else None
    flags = []
    if len(values) < min_examinations:
        flags.append("few-examinations")
    if median is not None and drl_gy_m2 is not None and median > drl_gy_m2:
        flags.append("median-above-drl")
    return ExamAudit(exam=exam, rule=rule, band=band, examinations=len(values), median_dap_gy_m2=median,
                     q1_dap_gy_m2=q1, q3_dap_gy_m2=q3, iqr_dap_gy_m2=None if q1 is None else q3 - q1,
                     drl_dap_gy_m2=drl_gy_m2, median_to_drl=ratio, flags=flags)


def audit_msg_id(site: str, room: str, trigger: str, start: datetime, end: datetime) -> str:
    key = "\x1f".join(["drl-audit", site, room, trigger, start.isoformat(), end.isoformat()])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def build_audit(rows: Sequence[AuditRow], rules: DoseRules, *, site: str, room: str, trigger: str, start: datetime,
                end: datetime, zone: str, ts: datetime) -> DrlAudit:
    """The audit of the examinations that began in [start, end), against the rules' DRLs in force."""
    drls = {r.id: r.dap_gy_m2 for r in rules.diagnostic_reference_level}
    groups = examinations(rows)
    exams = [exam_audit(key, groups[key], drls.get(key[2]) if key[2] else None, rules.audit.min_examinations)
             for key in sorted(groups, key=lambda k: (k[0].lower(), k[1], k[2] or ""))]
    return DrlAudit(msg_id=audit_msg_id(site, room, trigger, start, end), site=site, room=room, ts=ts,
                    trigger=trigger, period_start=start, period_end=end, timezone=zone,
                    min_examinations=rules.audit.min_examinations, exams=exams)


def month_start(now: datetime, zone: ZoneInfo) -> datetime:
    """Midnight starting the calendar month `now` is in, in the site's zone."""
    local = now.astimezone(zone)
    return datetime.combine(local.date().replace(day=1), time(0, 0), tzinfo=zone)


def previous_month(start: datetime, zone: ZoneInfo) -> datetime:
    """Midnight starting the month before the one starting at `start`."""
    day = start.astimezone(zone).date()
    year, month = (day.year - 1, 12) if day.month == 1 else (day.year, day.month - 1)
    return datetime.combine(day.replace(year=year, month=month, day=1), time(0, 0), tzinfo=zone)


def next_month(start: datetime, zone: ZoneInfo) -> datetime:
    """Midnight starting the month after the one starting at `start`."""
    day = start.astimezone(zone).date()
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return datetime.combine(day.replace(year=year, month=month, day=1), time(0, 0), tzinfo=zone)


def audit_rows_to_history(audit: DrlAudit, computed_at: float) -> list[tuple]:
    """The parameters of history.UPSERT_AUDIT for each exam of the audit (the figures are kept in the history)."""
    return [(audit.period_start.isoformat(), audit.period_end.isoformat(), audit.trigger, e.exam, e.band, e.rule,
             e.examinations, e.median_dap_gy_m2, e.q1_dap_gy_m2, e.q3_dap_gy_m2, e.drl_dap_gy_m2, e.median_to_drl,
             ",".join(e.flags), computed_at) for e in audit.exams]
