"""The dose monitor: evaluates every object's exposures the moment they arrive, keeps the local history, and publishes
the room summary daily and on request.

Wiring: `derive` is the DICOM intake's hook (agent.dicom.intake): it gets the payloads of one object and returns them
(an exposure event may gain `repeat_of`) plus the dose alerts they raise, and the intake stores all of it in one outbox
commit before the modality hears Success. Several association threads call it at once; one lock guards the memory it
decides from (the recent studies, the alert ledger). It makes no SQLite call for a study it has in memory or has never
seen: the rows go to the history file's writer thread (agent.dose.history), and a study is read from the file only
when it comes back after a restart or two idle days.

Idempotency: alert msg_ids are hashes of the exposure's event_ref (the study_ref for cumulative alerts), the rule and
the quantity. The alert ledger raises each once; the same object received again repeats the alerts it raised (in case
the outbox refused them the first time) and the outbox drops those it already has. The ledger and the study totals
live in the history file, so a restart neither forgets a crossed threshold nor raises it again.

If the history file cannot be opened, evaluation runs from memory (logged): every alert still goes out, but repeats
and study totals start afresh and no summary is published.

On request: `DoseMonitor.request_summary()` publishes the day so far; the command topic can call it. Outside the
agent, `python -m agent.dose summary --config FILE` does the same from the history file.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time as clock_time
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

from agent.dose import history as h
from agent.dose.evaluate import DrlMatcher, crossed, di_band, exposure_findings, to_alert
from agent.dose.history import History, HistoryError, HistoryWriter
from agent.dose.rules import DoseRules
from agent.dose.state import StudyState, event_time
from agent.dose.summary import build_summary, period_end, period_start
from agent.outbox import OutboxError
from agent.payloads.base import Envelope, utc_now
from agent.payloads.dose import DoseAlert, RoomSummary
from agent.payloads.exposure import DoseSummary, ExposureEvent
from agent.sink import Sink

log = logging.getLogger(__name__)

LAST_DAILY_KEY = "last_daily_end"
PRUNE_EVERY = timedelta(hours=1)
RETRY_SUMMARY = timedelta(minutes=1)
FORGET_IDLE_STUDY_S = 48 * 3600  # memory only: the history file keeps the study, and reloads it when it is seen again

Op = tuple[str, tuple]


def object_key(payloads: list[Envelope]) -> str:
    """Identifies one received object by the msg_ids extraction gave its payloads (stable across re-sends)."""
    return hashlib.sha256("\x1f".join(sorted(p.msg_id for p in payloads)).encode()).hexdigest()[:32]


class DoseMonitor:
    """A supervised service: start() loads the history, tick() runs the daily summary and pruning."""

    def __init__(self, rules: DoseRules, history_path: Path, sink: Sink, *, timezone: str = "UTC",
                 summary_at: time = time(0, 0), history_days: int = 90, clock: Callable[[], datetime] = utc_now):
        self.rules = rules
        self.matcher = DrlMatcher(rules)
        self.repeat_modalities = frozenset(m.strip().upper() for m in rules.repeats.modalities)
        self.history_path = Path(history_path)
        self.sink = sink
        self.zone_name, self.zone = timezone, ZoneInfo(timezone)
        self.summary_at = summary_at
        self.history_days = history_days
        self.clock = clock
        self.history: History | None = None
        self.writer: HistoryWriter | None = None
        self._lock = threading.Lock()
        self._running = False
        self._studies: dict[str, StudyState] = {}  # in memory, recently seen
        self._known_studies: set[str] = set()  # every study the history file has
        self._ledger: dict[str, tuple[str, float]] = {}  # alert msg_id -> (object key that raised it, its time)
        self._last_daily_end: datetime | None = None
        self._summary_retry_at: datetime | None = None
        self._prune_at: datetime | None = None

    # ---- service -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the history and load what evaluation needs; without a usable file, run from memory (logged)."""
        stored = None
        try:
            self.history = History(self.history_path)
            self._known_studies, self._ledger = self.history.study_refs(), self.history.alert_ledger()
            stored = self.history.get_meta(LAST_DAILY_KEY)
        except (sqlite3.Error, HistoryError, OSError) as exc:
            log.error("dose history %s unusable (%s): evaluating from memory only; repeats and study totals start "
                      "afresh and no summaries are published until it is fixed", self.history_path, exc)
            if self.history is not None:
                self.history.close()
            self.history = None
        if self.history is not None:
            self.writer = HistoryWriter(self.history)
            self.writer.start()
            if stored is None:  # the first start ever: the current day is the first period
                stored = period_end(self.clock(), self.summary_at, self.zone).isoformat()
                self.writer.put((h.SET_META, (LAST_DAILY_KEY, stored)))
            self._last_daily_end = datetime.fromisoformat(stored)
        self._running = True

    def stop(self) -> None:
        self._running = False
        if self.writer is not None:
            self.writer.stop()
            self.writer = None
        if self.history is not None:
            self.history.close()
            self.history = None

    def alive(self) -> bool:
        return self._running

    # ---- the intake hook -----------------------------------------------------------------------------------------
    def derive(self, payloads: list[Envelope]) -> list[Envelope]:
        """The object's payloads (exposures with repeat_of where it applies) followed by the alerts they raise."""
        if not any(isinstance(p, (ExposureEvent, DoseSummary)) for p in payloads):
            return payloads
        ops: list[Op] = []
        try:
            with self._lock:
                derived = self._evaluate(payloads, object_key(payloads), ops)
                if self.writer is not None:
                    self.writer.put(*ops)  # in decision order: the file's row order is the order received
        except Exception:  # noqa: BLE001 - a bug here must not stop the room's exposures from being stored
            log.exception("dose evaluation failed; the object's events are stored without dose alerts")
            return payloads
        return derived

    def _evaluate(self, payloads: list[Envelope], key: str, ops: list[Op]) -> list[Envelope]:
        out: list[Envelope] = []
        alerts: list[DoseAlert] = []
        triggers: dict[str, ExposureEvent | DoseSummary] = {}
        for payload in payloads:
            if getattr(payload, "purpose", None) == "qc":
                out.append(payload)  # a QC/phantom exposure is not a patient's: no repeats, alerts or totals
                continue
            if isinstance(payload, ExposureEvent):
                payload = self._record_exposure(payload, ops)
                alerts += [to_alert(f, payload) for f in exposure_findings(payload, self.rules, self.matcher)]
                if payload.study_ref:
                    triggers[payload.study_ref] = payload  # the study's last event here raises its cumulative alerts
            elif isinstance(payload, DoseSummary) and payload.study_ref:
                self._study(payload.study_ref).report(payload.dap_total_gy_m2, payload.dose_rp_total_gy)
                ops.append((h.UPSERT_REPORT, (payload.study_ref, payload.dap_total_gy_m2, payload.dose_rp_total_gy,
                                              payload.received_at.timestamp())))
                triggers.setdefault(payload.study_ref, payload)  # a report of totals only
            out.append(payload)
        for study_ref, trigger in triggers.items():
            count, totals = self._studies[study_ref].totals()
            alerts += [to_alert(f, trigger, study_events=count) for f in crossed(totals, self.rules.cumulative)]
        return out + [a for a in alerts if self._claim(a, key, ops)]

    def _record_exposure(self, event: ExposureEvent, ops: list[Op]) -> ExposureEvent:
        """Remember the exposure; a repeat gains repeat_of (an exposure seen before keeps the decision made then)."""
        repeat_of = None
        if event.study_ref:
            study = self._study(event.study_ref)
            known = study.exposures.get(event.event_ref)
            if known is not None:
                repeat_of = known.repeat_of
            elif event.irradiation_type != "fluoroscopy" and (event.modality or "").upper() in self.repeat_modalities:
                repeat_of = study.repeated(event, self.rules.repeats.key, self.rules.repeats.window_s)
            study.add(event, repeat_of)
        ops.append((h.UPSERT_EXPOSURE, (
            event.event_ref, event.study_ref, event_time(event), event.received_at.timestamp(), event.protocol,
            event.body_part, event.view, event.modality, event.irradiation_type, event.dap_gy_m2, event.dose_rp_gy,
            event.deviation_index, di_band(event.deviation_index, self.rules.deviation_index), repeat_of)))
        return event.model_copy(update={"repeat_of": repeat_of}) if repeat_of != event.repeat_of else event

    def _study(self, study_ref: str) -> StudyState:
        """The study's state: in memory, else loaded from the history file (once), else new."""
        state = self._studies.get(study_ref)
        if state is None:
            state = StudyState()
            if study_ref in self._known_studies and self.history is not None:
                try:
                    state = StudyState.loaded(*self.history.load_study(study_ref))
                except sqlite3.Error as exc:
                    log.error("could not read study %s from the dose history: %s", study_ref, exc)
            self._studies[study_ref] = state
            self._known_studies.add(study_ref)
        state.touched = clock_time.monotonic()
        return state

    def _claim(self, alert: DoseAlert, key: str, ops: list[Op]) -> bool:
        """True if the alert goes out: first raised now, or raised before by this same object (a retry after the
        outbox refused it; the outbox drops it if it was stored after all)."""
        entry = self._ledger.get(alert.msg_id)
        if entry is not None:
            return entry[0] == key
        at = (alert.acquired_at or alert.received_at).timestamp()  # counted in the period of its exposure
        self._ledger[alert.msg_id] = (key, at)
        ops.append((h.INSERT_ALERT, (alert.msg_id, alert.alert, alert.rule, alert.protocol, alert.study_ref, at, key)))
        return True

    # ---- summaries -----------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Every supervisor tick: publish the daily summary once its time has come; prune hourly."""
        if self.writer is None:
            return
        now = self.clock()
        if self._prune_at is None or now >= self._prune_at:
            self._prune_at = now + PRUNE_EVERY
            self._prune(now)
        end = period_end(now, self.summary_at, self.zone)
        if end <= self._last_daily_end or (self._summary_retry_at is not None and now < self._summary_retry_at):
            return
        try:
            self.publish_summary("daily", period_start(end, self.summary_at, self.zone), end)
        except (OutboxError, HistoryError, sqlite3.Error) as exc:
            self._summary_retry_at = now + RETRY_SUMMARY
            log.error("daily dose summary not stored (%s); retrying every minute", exc)
            return
        self._summary_retry_at = None
        self._last_daily_end = end
        self.writer.put((h.SET_META, (LAST_DAILY_KEY, end.isoformat())))

    def request_summary(self) -> RoomSummary:
        """Publish the summary of the day so far (since the last scheduled summary time); for the command topic.
        Raises OutboxError when the outbox cannot take it, HistoryError without a history."""
        now = self.clock().astimezone(self.zone)
        return self.publish_summary("request", period_end(now, self.summary_at, self.zone), now)

    def publish_summary(self, trigger: str, start: datetime, end: datetime) -> RoomSummary:
        """Compute the summary of [start, end) from the history and store it in the outbox."""
        summary = self.compute_summary(trigger, start, end)
        self.sink.emit(summary)
        log.info("published %s dose summary %s .. %s: %d exposure(s)", trigger, start.isoformat(), end.isoformat(),
                 summary.exposures)
        return summary

    def compute_summary(self, trigger: str, start: datetime, end: datetime) -> RoomSummary:
        """The summary of [start, end), once everything evaluated so far is in the history file."""
        if self.writer is None or not self.writer.flush():
            raise HistoryError("the dose history is not available")
        rows = self.history.exposures_between(start.timestamp(), end.timestamp())
        alerts = self.history.alerts_between(start.timestamp(), end.timestamp())
        return build_summary(rows, alerts, site=self.sink.site, room=self.sink.room, trigger=trigger, start=start,
                             end=end, zone=self.zone_name, ts=self.clock())

    def _prune(self, now: datetime) -> None:
        """Drop history older than history_days, and from memory the studies not seen for two days."""
        before = (now - timedelta(days=self.history_days)).timestamp()
        self.writer.put(*((statement, (before,)) for statement in h.PRUNE))
        idle = clock_time.monotonic() - FORGET_IDLE_STUDY_S
        with self._lock:
            for study_ref in [s for s, state in self._studies.items() if state.touched < idle]:
                del self._studies[study_ref]
            self._ledger = {k: v for k, v in self._ledger.items() if v[1] >= before}
        if self.writer.flush():
            try:
                known = self.history.study_refs()
            except sqlite3.Error as exc:
                log.error("could not read the dose history's studies: %s", exc)
                return
            with self._lock:
                self._known_studies = known | self._studies.keys()


def dose_monitor(cfg, sink: Sink) -> DoseMonitor | None:
    """The monitor the config asks for (cfg: agent.config.Config), or None when dose monitoring is off."""
    d = cfg.dose
    if not d.enabled:
        return None
    return DoseMonitor(d.rules(), d.state_file(cfg.outbox.path), sink, timezone=cfg.site.timezone,
                       summary_at=d.summary_at, history_days=d.history_days)


__all__ = ["DoseMonitor", "dose_monitor", "object_key"]
