"""The room summary: its periods (local days ending at the configured time) and its figures, from history rows. Pure.

The daily summary covers [the summary time yesterday, the summary time today) in the site's zone, so with the default
00:00 it is exactly the previous calendar day, across daylight-saving changes too. A summary on request covers the
day in progress: from the last scheduled summary time until now.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from datetime import datetime, time, timedelta
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from agent.dose.evaluate import percentile
from agent.dose.history import ExposureRow
from agent.payloads.dose import ProtocolSummary, RoomSummary

BANDS = ("excessive", "over", "normal", "under", "excessively-under", "unknown")
ALERT_TYPES = ("notification-level", "deviation-index", "cumulative", "patient-cumulative")


def period_end(now: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The latest scheduled summary time at or before `now` (aware), as a local aware datetime."""
    local = now.astimezone(zone)
    end = datetime.combine(local.date(), at, tzinfo=zone)
    return end if end <= local else datetime.combine(local.date() - timedelta(days=1), at, tzinfo=zone)


def period_start(end: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The scheduled time the day before `end` (a local day, 23 or 25 hours across a DST change)."""
    return datetime.combine(end.astimezone(zone).date() - timedelta(days=1), at, tzinfo=zone)


def _shares(counts: Counter, total: int) -> dict[str, float]:
    return {band: counts.get(band, 0) / total for band in BANDS} if total else {}


def _alert_counts(kinds: Iterable[str]) -> dict[str, int]:
    counts = Counter(kinds)
    return {kind: counts.get(kind, 0) for kind in ALERT_TYPES}


def protocol_summary(protocol: str | None, rows: Sequence[ExposureRow], alert_kinds: Sequence[str]
                     ) -> ProtocolSummary:
    """One protocol's count, DAP median and 75th percentile, repeat rate, DI band shares and alert counts."""
    daps = [r.dap_gy_m2 for r in rows if r.dap_gy_m2 is not None]
    repeats = sum(r.repeat for r in rows)
    return ProtocolSummary(
        protocol=protocol, exposures=len(rows), with_dap=len(daps), dap_median_gy_m2=percentile(daps, 50),
        dap_p75_gy_m2=percentile(daps, 75), repeats=repeats, repeat_rate=repeats / len(rows) if rows else 0.0,
        deviation_index_bands=_shares(Counter(r.di_band for r in rows), len(rows)), alerts=_alert_counts(alert_kinds))


def summary_msg_id(site: str, room: str, trigger: str, start: datetime, end: datetime) -> str:
    """The same period summarised twice (a restart) repeats its msg_id, so the outbox keeps one."""
    key = "\x1f".join(["summary", site, room, trigger, start.isoformat(), end.isoformat()])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def build_summary(rows: Sequence[ExposureRow], alerts: Sequence[tuple[str | None, str]], *, site: str, room: str,
                  trigger: str, start: datetime, end: datetime, zone: str, ts: datetime,
                  uniform_target_units: Sequence[str] = ()) -> RoomSummary:
    """The summary of the exposures and alerts of one period."""
    by_protocol: dict[str | None, list[ExposureRow]] = defaultdict(list)
    for row in rows:
        by_protocol[row.protocol].append(row)
    alerts_by_protocol: dict[str | None, list[str]] = defaultdict(list)
    for protocol, kind in alerts:
        alerts_by_protocol[protocol].append(kind)
    names = sorted(set(by_protocol) | set(alerts_by_protocol), key=lambda p: (p is None, p or ""))
    repeats = sum(r.repeat for r in rows)
    return RoomSummary(
        msg_id=summary_msg_id(site, room, trigger, start, end), site=site, room=room, ts=ts, trigger=trigger,
        period_start=start, period_end=end, timezone=zone, exposures=len(rows), repeats=repeats,
        repeat_rate=repeats / len(rows) if rows else 0.0,
        deviation_index_bands=_shares(Counter(r.di_band for r in rows), len(rows)),
        alerts=_alert_counts(kind for _, kind in alerts), units_with_uniform_target_ei=list(uniform_target_units),
        protocols=[protocol_summary(p, by_protocol.get(p, []), alerts_by_protocol.get(p, [])) for p in names])
