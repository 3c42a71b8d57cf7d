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
from typing import Callable, NamedTuple
from zoneinfo import ZoneInfo

from agent import statedb
from agent.dose import history as h
from agent.dose.audit import month_start
from agent.dose.audit_schedule import LAST_AUDIT_KEY, MonthlyAudit
from agent.dose.evaluate import (UNKNOWN_BAND, ExamMatcher, Finding, MatchKey, crossed, di_band,
                                 alert_msg_id, exposure_findings, lower_steps, patient_crossed, to_alert)
from agent.dose.history import History, HistoryError, HistoryWriter
from agent.dose.patients import DAY_S, PatientState
from agent.dose.rules import PAYLOAD_QUANTITY, DoseRules
from agent.dose.state import StudyState, event_time, fluoro_time_s, report_totals
from agent.dose.summary import build_summary, period_end, period_start
from agent.dose.targets import UnitTargets, unit_key
from agent.outbox import OutboxError
from agent.payloads.base import Envelope, utc_now
from agent.payloads.dose import DoseAlert, RoomSummary
from agent.payloads.exposure import DoseSummary, ExposureEvent
from agent.sink import Sink

class ExamMatch(NamedTuple):
    """An exposure's exam as matched before the monitor's lock: its key (texts, private age and weight), the first
    notification-level rule that applies (or None) and the DRL audit's (rule, band)."""

    key: MatchKey
    rule: object
    audit: tuple


log = logging.getLogger(__name__)

LAST_DAILY_KEY = "last_daily_end"
PRUNE_EVERY = timedelta(hours=1)
RETRY_SUMMARY = timedelta(minutes=1)
FORGET_IDLE_STUDY_S = 48 * 3600  # memory only: the history file keeps the study, and reloads it when it is seen again
MAX_STUDIES_PER_PATIENT = 400  # more in one room's history is not one person: an ID like ANONYMOUS or a phantom's

Op = tuple[str, tuple]


def object_key(payloads: list[Envelope]) -> str:
    """Identifies one received object by the msg_ids extraction gave its payloads (stable across re-sends)."""
    return hashlib.sha256("\x1f".join(sorted(p.msg_id for p in payloads)).encode()).hexdigest()[:32]


class DoseMonitor(MonthlyAudit):
    """A supervised service: start() loads the history, tick() runs the daily summary, the monthly DRL audit and
    pruning."""

    def __init__(self, rules: DoseRules, history_path: Path, sink: Sink, *, timezone: str = "UTC",
                 summary_at: time = time(0, 0), history_days: int = 90, clock: Callable[[], datetime] = utc_now):
        self.rules = rules
        self.matcher = ExamMatcher(rules.notification_level, rules.match)
        self.audit_matcher = ExamMatcher(rules.diagnostic_reference_level, rules.match)
        self.patient_window_days = max((t.window_days for t in rules.patient_cumulative), default=0)
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
        self._patients: dict[str, PatientState] = {}  # patient_ref -> studies, loaded when first seen
        self._known_patients: set[str] = set()
        self._targets = UnitTargets()
        self._last_daily_end: datetime | None = None
        self._last_audit_end: datetime | None = None
        self._summary_retry_at: datetime | None = None
        self._prune_at: datetime | None = None
        self.damage: str | None = None  # the history file is damaged and not yet rebuilt (agent.statedb)
        self.recovery: statedb.Recovery | None = None
        self.on_damage: Callable[[str], None] | None = None  # the integrity watch's wake-up

    # ---- service -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the history and load what evaluation needs; without a usable file, run from memory (logged)."""
        stored = None
        try:
            self.recovery = statedb.ensure_sound(self.state_spec()) or self.recovery
            self.history = History(self.history_path)
            self._known_studies, self._ledger = self.history.study_refs(), self.history.alert_ledger()
            self._known_patients = self.history.patient_refs()
            for unit, body_part, view, target in self.history.unit_targets():
                self._targets.add(unit, body_part, view, target)
            stored = self.history.get_meta(LAST_DAILY_KEY)
            stored_audit = self.history.get_meta(LAST_AUDIT_KEY)
        except (sqlite3.Error, HistoryError, OSError) as exc:
            log.error("dose history %s unusable (%s): evaluating from memory only; repeats and study totals start "
                      "afresh and no summaries are published until it is fixed", self.history_path, exc)
            if self.history is not None:
                self.history.close()
            self.history = None
        if self.history is not None:
            self.writer = HistoryWriter(self.history, self.mark_damaged)
            self.writer.start()
            if stored is None:  # the first start ever: the current day is the first period
                stored = period_end(self.clock(), self.summary_at, self.zone).isoformat()
                self.writer.put((h.SET_META, (LAST_DAILY_KEY, stored)))
            self._last_daily_end = datetime.fromisoformat(stored)
            if stored_audit is None:  # the month in progress is the first audited
                stored_audit = month_start(self.clock(), self.zone).isoformat()
                self.writer.put((h.SET_META, (LAST_AUDIT_KEY, stored_audit)))
            self._last_audit_end = datetime.fromisoformat(stored_audit)
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
        """Running, and its history writer (when it has one) has not died."""
        writer = self.writer
        return self._running and (writer is None or writer.alive())

    # ---- a damaged history file ----------------------------------------------------------------------------------
    def state_spec(self) -> statedb.Spec:
        """How agent.statedb rebuilds dose.db: its schema; lost exposure rows adopted by column count."""
        return statedb.Spec("dose", self.history_path, lambda conn: h.create_schema(conn, self.history_path),
                            adopt=("exposures",))

    def mark_damaged(self, detail: str) -> None:
        """The history file is damaged: say so, wake the integrity watch (evaluation goes on from memory)."""
        if self.damage is None:
            self.damage = detail
            log.error("dose history %s is damaged (%s); rebuilding it from its readable rows", self.history_path,
                      detail)
            if self.on_damage is not None:
                self.on_damage(detail)

    def repair(self, detail: str) -> None:
        """Rebuild dose.db from its readable rows and reopen it; the monitor's memory is kept."""
        self.mark_damaged(detail)

        def close_all() -> None:
            with self._lock:
                writer, history, self.writer, self.history = self.writer, self.history, None, None
            if writer is not None:
                writer.stop()
            if history is not None:
                history.close()

        self.recovery = statedb.recover_in_use(self.state_spec(), detail, close_all)
        history = History(self.history_path)
        writer = HistoryWriter(history, self.mark_damaged)
        writer.start()
        with self._lock:
            self.history, self.writer = history, writer
            self._known_studies |= history.study_refs()
            for msg_id, entry in history.alert_ledger().items():
                self._ledger.setdefault(msg_id, entry)
        self.damage = None

    # ---- the intake hook -----------------------------------------------------------------------------------------
    def derive(self, payloads: list[Envelope], patient=None) -> list[Envelope]:
        """The object's payloads (exposures with repeat_of where it applies) followed by the alerts they raise.
        `patient`: the object's private facts (agent.dicom.patient.PatientFacts: age, weight, patient ref), for
        banded rules whatever is published; used here and never stored or published."""
        if not any(isinstance(p, (ExposureEvent, DoseSummary)) for p in payloads):
            return payloads
        ops: list[Op] = []
        try:
            # Exam matching reads only the event's own texts and the object's private age and weight: done before the
            # lock, so one slow match (a long protocol name) never holds every other association's objects waiting.
            matched = self._match(payloads, patient)
            with self._lock:
                derived = self._evaluate(payloads, object_key(payloads), ops, matched, patient)
                if self.writer is not None:
                    self.writer.put(*ops)  # in decision order: the file's row order is the order received
        except Exception:  # noqa: BLE001 - a bug here must not stop the room's exposures from being stored
            log.exception("dose evaluation failed; the object's events are stored without dose alerts")
            return payloads
        return derived

    def _match(self, payloads: list[Envelope], patient) -> dict[int, ExamMatch]:
        """Each exposure's exam key with its notification-level rule and its DRL-audit rule and band (by id())."""
        age, weight = getattr(patient, "age", None), getattr(patient, "weight_kg", None)
        matched = {}
        for payload in payloads:
            if isinstance(payload, ExposureEvent):
                key = MatchKey.of(payload, age, weight)
                matched[id(payload)] = ExamMatch(key, self.matcher.first(key), self.audit_matcher.find(key))
        return matched

    def _evaluate(self, payloads: list[Envelope], key: str, ops: list[Op], matched: dict[int, ExamMatch],
                  patient=None) -> list[Envelope]:
        out: list[Envelope] = []
        alerts: list[DoseAlert] = []
        triggers: dict[str, ExposureEvent | DoseSummary] = {}
        for payload in payloads:
            if vars(payload).get("purpose") == "qc":  # a field of newer payloads (vars: no slow missing-attr path)
                out.append(payload)  # a QC/phantom exposure is not a patient's: no repeats, alerts or totals
                continue
            if isinstance(payload, ExposureEvent):
                match = matched[id(payload)]
                payload = self._record_exposure(payload, ops, match)
                uniform = self._targets.uniform(unit_key(payload.manufacturer, payload.model,
                                                         payload.device_serial, payload.station_name))
                alerts += [to_alert(f, payload, target_ei_uniform=uniform if f.alert == "deviation-index" else None)
                           for f in exposure_findings(payload, self.rules, self.matcher, match.key, match.rule)]
                if payload.study_ref:
                    triggers[payload.study_ref] = payload  # the study's last event here raises its cumulative alerts
            elif isinstance(payload, DoseSummary) and payload.study_ref:
                study = self._study(payload.study_ref)
                study.report(*report_totals(payload))
                ops.append((h.UPSERT_REPORT, (payload.study_ref, *study.report_row()[:2],
                                              payload.received_at.timestamp(), *study.report_row()[2:])))
                triggers.setdefault(payload.study_ref, payload)  # a report of totals only
            out.append(payload)
        for study_ref, trigger in triggers.items():
            study = self._studies[study_ref]
            count, totals = study.totals()
            for finding in crossed(totals, self.rules.cumulative, study.planes):
                alerts += self._step_alerts(finding, trigger, count, key)
            patient_ref = trigger.patient_ref or getattr(patient, "patient_ref", None)
            if patient_ref:
                alerts += self._patient_alerts(patient_ref, study_ref, study, totals, trigger, ops)
        return out + [a for a in alerts if self._claim(a, key, ops)]

    def _step_alerts(self, finding: Finding, trigger: ExposureEvent | DoseSummary, count: int, key: str
                     ) -> list[DoseAlert]:
        """The highest step a study total passed, plus the lower steps this same object raised before (a retry);
        lower steps never raised (a total that jumped past several in one report) stay silent: one alert, the
        highest step, and nothing lower later."""
        alerts = [to_alert(finding, trigger, study_events=count)]
        for lower in lower_steps(finding):
            entry = self._ledger.get(alert_msg_id(trigger.study_ref, lower))
            if entry is not None and entry[0] == key:
                alerts.append(to_alert(lower, trigger, study_events=count))
        return alerts

    def _patient_alerts(self, patient_ref: str, study_ref: str, study: StudyState, totals: dict[str, float],
                        trigger: ExposureEvent | DoseSummary, ops: list[Op]) -> list[DoseAlert]:
        """Keep the study's totals under the patient; alerts for each patient threshold this study crossed."""
        at = study.first_at() or trigger.received_at.timestamp()
        ops.append((h.UPSERT_PATIENT_STUDY, (patient_ref, study_ref, at, totals["study_dap_gy_m2"],
                                             totals["study_dose_rp_gy"], totals["study_fluoro_time_s"])))
        if not self.rules.patient_cumulative:
            return []
        state = self._patient(patient_ref)
        state.update(study_ref, at, totals)
        if len(state.studies) > MAX_STUDIES_PER_PATIENT:
            if not state.shared:
                state.shared = True
                log.warning("one Patient ID has more than %d studies in this room's history (a placeholder or "
                            "phantom ID?): no patient-level sums for it, they would add up different people",
                            MAX_STUDIES_PER_PATIENT)
            return []
        alerts = []
        for threshold in self.rules.patient_cumulative:
            quantity = PAYLOAD_QUANTITY[threshold.quantity]
            if not totals.get(quantity):
                continue  # a study that adds nothing to the quantity cannot cross its level
            refs = state.in_window(at, threshold.window_days)  # the studies of the window ending with this one
            finding = patient_crossed(state.window_totals(refs, quantity, without=study_ref),
                                      state.window_totals(refs, quantity), threshold)
            if finding is not None:
                alerts.append(to_alert(finding, trigger, patient_ref=patient_ref, studies=refs,
                                       window_days=threshold.window_days))
        return alerts

    def _patient(self, patient_ref: str) -> PatientState:
        state = self._patients.get(patient_ref)
        if state is None:
            state = PatientState()
            if patient_ref in self._known_patients and self.history is not None:
                try:
                    state = PatientState.loaded(self.history.load_patient(patient_ref))
                except sqlite3.Error as exc:
                    log.error("could not read a patient's studies from the dose history: %s", exc)
            self._patients[patient_ref] = state
            self._known_patients.add(patient_ref)
        return state

    @staticmethod
    def _unit(event: ExposureEvent) -> str | None:
        return unit_key(event.manufacturer, event.model, event.device_serial, event.station_name)

    def _record_exposure(self, event: ExposureEvent, ops: list[Op], match: ExamMatch | None = None) -> ExposureEvent:
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
        audit = match.audit if match is not None else self.audit_matcher.find(MatchKey.of(event))
        exam, exam_rule, band = self._exam(event, audit)
        unit = self._unit(event)
        self._targets.add(unit, event.body_part, event.view, event.target_exposure_index)
        ops.append((h.UPSERT_EXPOSURE, (
            event.event_ref, event.study_ref, event_time(event), event.received_at.timestamp(), event.protocol,
            event.body_part, event.view, event.modality, event.irradiation_type, event.dap_gy_m2, event.dose_rp_gy,
            event.deviation_index, di_band(event.deviation_index, self.rules.deviation_index), repeat_of,
            event.source, event.patient_ref, fluoro_time_s(event), exam, exam_rule, band, unit,
            event.target_exposure_index)))
        return event.model_copy(update={"repeat_of": repeat_of}) if repeat_of != event.repeat_of else event

    @staticmethod
    def _exam(event: ExposureEvent, audit: tuple) -> tuple[str | None, str | None, str | None]:
        """(exam name, reference-level rule id, band) for the DRL audit from the audit matcher's (rule, band): the
        rule's exam; without a rule, the protocol, else body part and view (acquisitions only)."""
        rule, band = audit
        if rule is not None:
            return rule.exam_name, (None if band == UNKNOWN_BAND else rule.id), band
        if event.irradiation_type == "fluoroscopy":
            return None, None, None
        name = event.protocol or " ".join(p for p in (event.body_part, event.view) if p) or None
        return name, None, "any"

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
        ops.append((h.INSERT_ALERT, (alert.msg_id, alert.alert, alert.rule, alert.protocol, alert.study_ref, at, key,
                                     alert.patient_ref, alert.quantity, alert.value, alert.level)))
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
        self._monthly_audit(now)
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
                             end=end, zone=self.zone_name, ts=self.clock(),
                             uniform_target_units=self._targets.uniform_units())

    def _prune(self, now: datetime) -> None:
        """Drop history older than history_days, and from memory the studies not seen for two days."""
        before = (now - timedelta(days=self.history_days)).timestamp()
        self.writer.put(*((statement, (before,)) for statement in h.PRUNE))
        keep_patients_s = max(self.history_days, self.patient_window_days) * DAY_S
        self.writer.put((h.PRUNE_PATIENTS, (now.timestamp() - keep_patients_s,)))
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
