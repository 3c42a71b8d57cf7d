"""The dose monitor in process, with a real outbox and history file: alerts once, repeats, cumulative study
thresholds across restarts, the daily summary's schedule, degraded mode, concurrency and privacy of the history."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.dicom.extract import extract
from agent.dose.monitor import DoseMonitor
from agent.dose.rules import DoseRules, DrlRule, load_rules
from agent.outbox import Outbox
from agent.payloads.dose import DoseAlert
from agent.payloads.exposure import ExposureEvent
from agent.sink import Sink
from agent.topics import Topics
from tests import dicom_factory as factory
from tests.realparts import REPO

RULES = DoseRules(drl=[DrlRule(id="chest-pa", body_part="CHEST", view="PA", dap_gy_cm2=0.1)])
T0 = datetime(2024, 1, 5, 9, 20, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.db", max_bytes=64 * 1024 * 1024)
    box.start()
    yield box
    box.stop()


@pytest.fixture
def make_monitor(tmp_path, outbox):
    started: list[DoseMonitor] = []

    def make(rules: DoseRules = RULES, clock: Clock | None = None, **kwargs) -> DoseMonitor:
        sink = Sink(outbox, Topics("xray/v1", "site-1", "room-3"))
        monitor = DoseMonitor(rules, tmp_path / "dose.db", sink, clock=clock or Clock(T0), **kwargs)
        monitor.start()
        started.append(monitor)
        return monitor

    yield make
    for monitor in started:
        monitor.stop()


def payloads(ds, received_at: datetime = T0) -> list:
    return list(extract(factory.roundtrip(ds), factory.make_context(received_at=received_at)).payloads())


def alerts(out: list) -> list[DoseAlert]:
    return [p for p in out if isinstance(p, DoseAlert)]


def exposures(out: list) -> list[ExposureEvent]:
    return [p for p in out if isinstance(p, ExposureEvent)]


def stored(outbox: Outbox, kind: str) -> list[dict]:
    with sqlite3.connect(outbox.path) as conn:
        rows = conn.execute("SELECT payload FROM messages WHERE topic LIKE ? ORDER BY seq", (f"%/{kind}",)).fetchall()
    return [json.loads(row[0]) for row in rows]


def rows(monitor: DoseMonitor, table: str) -> int:
    assert monitor.writer.flush()
    return monitor.history.count(table)


def dt(minutes: float) -> str:
    """A DICOM DT minutes after 10:00 on the test day."""
    return (datetime(2024, 1, 5, 10, 0) + timedelta(minutes=minutes)).strftime("%Y%m%d%H%M%S")


# ---- alerts, once ------------------------------------------------------------------------------------------------
def test_an_excursion_alerts_once_even_when_the_object_comes_again(make_monitor, outbox):
    monitor = make_monitor()
    sink = monitor.sink
    high = payloads(factory.make_dx(dap_dgy_cm2="2.5", exposure_index="1200", target_exposure_index="250",
                                    deviation_index=None))
    first = monitor.derive(high)
    assert [(a.alert, a.rule) for a in alerts(first)] == [("notification-level", "chest-pa"), ("deviation-index",
                                                                                "deviation-index:excessive")]
    drl = alerts(first)[0]
    assert drl.value == pytest.approx(2.5e-5) and drl.level == pytest.approx(1e-5) and drl.ratio == pytest.approx(2.5)
    assert drl.event_ref == high[0].event_ref and drl.study_ref == high[0].study_ref
    assert sink.emit(*first) == [True, True, True]
    # The same object again (a modality re-sending, or retrying after Out of Resources): the same alerts go to the
    # outbox again and it drops them; nothing new is published.
    again = monitor.derive(high)
    assert [a.msg_id for a in alerts(again)] == [a.msg_id for a in alerts(first)]
    assert sink.emit(*again) == [False, False, False]
    assert len(stored(outbox, "dose-alert")) == 2


def test_image_and_dose_report_views_of_one_exposure_alert_once(make_monitor):
    monitor = make_monitor(DoseRules(drl=[DrlRule(id="xa", body_part="HEART", dap_gy_cm2=0.5, modality=["XA", "SR"])]))
    event_uid = "1.2.826.0.1.3680043.8.498.1"
    study = "1.2.826.0.1.3680043.8.498.2"
    image = factory.make_xa(frames=1, dap_dgy_cm2="12.3", study_uid=study, irradiation_event_uid=event_uid)
    report = factory.make_rdsr([factory.acquisition_event(uid=event_uid, target_region=("80891009", "SCT", "Heart"),
                                                          dap=("0.000123", "Gy.m2"))], study_uid=study)
    assert [a.rule for a in alerts(monitor.derive(payloads(image)))] == ["xa"]
    from_report = monitor.derive(payloads(report))
    assert exposures(from_report)[0].event_ref == payloads(image)[0].event_ref
    assert alerts(from_report) == []  # same event_ref, same rule: already raised


# ---- repeats -----------------------------------------------------------------------------------------------------
def test_repeats_within_the_window(make_monitor):
    monitor = make_monitor()
    study = "1.2.826.0.1.3680043.8.498.10"
    first = monitor.derive(payloads(factory.make_dx(study_uid=study, acquisition_dt=dt(0))))
    lateral = monitor.derive(payloads(factory.make_dx(study_uid=study, view="LL", acquisition_dt=dt(1))))
    repeat_ds = factory.make_dx(study_uid=study, acquisition_dt=dt(3))
    repeat = monitor.derive(payloads(repeat_ds))
    late = monitor.derive(payloads(factory.make_dx(study_uid=study, acquisition_dt=dt(3 + 11))))  # > 600 s
    other_study = monitor.derive(payloads(factory.make_dx(acquisition_dt=dt(4))))
    assert exposures(first)[0].repeat_of is None and exposures(lateral)[0].repeat_of is None
    assert exposures(repeat)[0].repeat_of == exposures(first)[0].event_ref
    assert exposures(late)[0].repeat_of is None
    assert exposures(other_study)[0].repeat_of is None
    # the object again, and its other view (For-Processing image of the same exposure): the decision stands
    assert exposures(monitor.derive(payloads(repeat_ds)))[0].repeat_of == exposures(first)[0].event_ref


def test_the_same_exposure_is_not_its_own_repeat_and_fluoroscopy_never_repeats(make_monitor):
    monitor = make_monitor()
    processing, presentation = factory.make_dx_pair()
    assert exposures(monitor.derive(payloads(processing)))[0].repeat_of is None
    assert exposures(monitor.derive(payloads(presentation)))[0].repeat_of is None
    study = "1.2.826.0.1.3680043.8.498.11"
    for minute in (0, 1):
        rf = factory.make_rf(study_uid=study, acquisition_dt=dt(minute))
        assert exposures(monitor.derive(payloads(rf)))[0].repeat_of is None
    for minute in (0, 1):  # MG is not in the default repeat modalities (left and right CC share a view)
        mg = factory.make_mg(study_uid=study, acquisition_dt=dt(minute))
        assert exposures(monitor.derive(payloads(mg)))[0].repeat_of is None


def test_repeat_key_can_include_the_protocol(make_monitor):
    rules = DoseRules(repeats={"key": ["body_part", "view", "protocol"], "modalities": ["MG"]})
    monitor = make_monitor(rules)
    study = "1.2.826.0.1.3680043.8.498.12"
    left = exposures(monitor.derive(payloads(factory.make_mg(study_uid=study, protocol="L CC", acquisition_dt=dt(0)))))
    right = monitor.derive(payloads(factory.make_mg(study_uid=study, protocol="R CC", acquisition_dt=dt(1))))
    left_again = monitor.derive(payloads(factory.make_mg(study_uid=study, protocol="l cc", acquisition_dt=dt(2))))
    assert exposures(right)[0].repeat_of is None
    assert exposures(left_again)[0].repeat_of == left[0].event_ref


# ---- cumulative study thresholds ---------------------------------------------------------------------------------
def fluoro_reports(study: str, counts=(2, 4, 6, 8)):
    events = [factory.fluoro_event(dose_rp=("0.8", "Gy"), dap=("0.008", "Gy.m2")) for _ in range(max(counts))]
    return factory.make_cumulative_rdsrs(events, counts=counts, study_uid=study)


def srdl_study_ref(report) -> str:
    return payloads(report)[-1].study_ref


def test_cumulative_thresholds_alert_once_as_crossed_and_survive_a_restart(make_monitor, outbox):
    reports = fluoro_reports("1.2.826.0.1.3680043.8.498.20")
    monitor = make_monitor(load_rules(REPO / "config" / "dose-rules.example.toml"))
    crossed = []
    for report in reports[:3]:  # 1.6, 3.2, 4.8 Gy; 160, 320, 480 Gy·cm²
        out = monitor.derive(payloads(report))
        monitor.sink.emit(*out)
        crossed.append(sorted(a.rule for a in alerts(out)))
    assert crossed == [[], ["ncrp168-notify-kap", "ncrp168-notify-kar"], ["ncrp168-notify-kap", "ncrp168-notify-kar"]]
    first_alert = alerts(monitor.derive(payloads(reports[1])))  # the crossing object again: the same alerts
    assert sorted((a.rule, a.level) for a in first_alert) == [("ncrp168-notify-kap", pytest.approx(0.03)),
                                                              ("ncrp168-notify-kar", 3.0)]
    assert monitor.sink.emit(*first_alert) == [False, False]
    monitor.stop()

    restarted = make_monitor(load_rules(REPO / "config" / "dose-rules.example.toml"))
    last = restarted.derive(payloads(reports[3]))  # 6.4 Gy, 640 Gy·cm²
    # steps: Ka,r 6 Gy (after 3, 4), KAP 600 Gy·cm² (after 300, 400); and both SRDLs
    assert sorted((a.rule, round(a.level, 6)) for a in alerts(last) if a.alert == "cumulative") == [
        ("ncrp168-notify-kap", 0.06), ("ncrp168-notify-kar", 6.0), ("ncrp168-srdl-kap", 0.05),
        ("ncrp168-srdl-kar", 5.0)]
    patient = [a for a in alerts(last) if a.alert == "patient-cumulative"]  # the example's 5 Gy over 12 months
    assert [(a.rule, a.value, a.studies) for a in patient] == [
        ("patient-kar-5gy-12-months", pytest.approx(6.4), [srdl_study_ref(reports[3])])]
    srdl = next(a for a in alerts(last) if a.rule == "ncrp168-srdl-kar")
    assert srdl.alert == "cumulative" and srdl.quantity == "study_dose_rp_gy" and srdl.unit == "Gy"
    assert srdl.value == pytest.approx(6.4) and srdl.level == 5.0 and srdl.events_in_study == 8
    # an older report again: only what that very object raised comes back, and the outbox already has it
    older = alerts(restarted.derive(payloads(reports[2])))
    assert sorted((a.rule, round(a.level, 6)) for a in older) == [("ncrp168-notify-kap", 0.04),
                                                                  ("ncrp168-notify-kar", 4.0)]
    assert restarted.sink.emit(*older) == [False, False]


def test_reported_totals_count_when_events_carry_no_dose(make_monitor):
    monitor = make_monitor()
    totals = factory.DoseTotals(dose_rp_total=("3.5", "Gy"), dap_total=("0.01", "Gy.m2"))
    report = factory.make_rdsr([factory.fluoro_event(dose_rp=None, dap=None)], totals=totals)
    assert [a.rule for a in alerts(monitor.derive(payloads(report)))] == ["ncrp168-notify-kar"]


# ---- summaries ---------------------------------------------------------------------------------------------------
def test_summary_figures(make_monitor):
    monitor = make_monitor()
    study = "1.2.826.0.1.3680043.8.498.30"
    daps = ["0.5", "0.7", "0.9", "3.0"]  # dGy·cm²; 3.0 is above the chest PA level
    for i, dap in enumerate(daps):
        monitor.derive(payloads(factory.make_dx(study_uid=study, dap_dgy_cm2=dap, acquisition_dt=dt(i * 20),
                                                exposure_index=str(250 * (i + 1)), target_exposure_index="250",
                                                deviation_index=None)))
    monitor.derive(payloads(factory.make_dx(study_uid=study, dap_dgy_cm2="0.6", acquisition_dt=dt(61))))  # repeat
    monitor.derive(payloads(factory.make_dx(protocol="Knie AP", body_part="KNEE", view="AP", dap_dgy_cm2=None,
                                            exposure_index=None, deviation_index=None, acquisition_dt=dt(5))))
    zone = ZoneInfo("UTC")
    summary = monitor.compute_summary("request", datetime(2024, 1, 5, tzinfo=zone), datetime(2024, 1, 6, tzinfo=zone))
    assert summary.exposures == 6 and summary.repeats == 1 and summary.repeat_rate == pytest.approx(1 / 6)
    assert summary.alerts == {"notification-level": 1, "deviation-index": 3, "cumulative": 0,
                              "patient-cumulative": 0}  # DAP 3.0; DI 3.01, 4.77, 6.02
    knee, thorax = summary.protocols
    assert knee.protocol == "Knie AP" and knee.exposures == 1 and knee.with_dap == 0 and knee.dap_median_gy_m2 is None
    assert knee.deviation_index_bands["unknown"] == 1.0
    values = sorted([5e-6, 7e-6, 9e-6, 3e-5, 6e-6])
    assert thorax.exposures == 5 and thorax.dap_median_gy_m2 == pytest.approx(values[2])
    assert thorax.dap_p75_gy_m2 == pytest.approx(values[3])
    assert thorax.repeats == 1 and thorax.alerts == {"notification-level": 1, "deviation-index": 3, "cumulative": 0,
                                                     "patient-cumulative": 0}
    # DI 0, 3.01, 4.77, 6.02 computed; the repeat carries the factory's 0.93
    assert thorax.deviation_index_bands == pytest.approx({"excessive": 0.6, "over": 0.0, "normal": 0.4,
                                                          "under": 0.0, "excessively-under": 0.0, "unknown": 0.0})
    empty = monitor.compute_summary("request", datetime(2024, 1, 7, tzinfo=zone), datetime(2024, 1, 8, tzinfo=zone))
    assert empty.exposures == 0 and empty.protocols == [] and empty.deviation_index_bands == {}


def test_daily_summary_goes_out_once_at_the_local_time(make_monitor, outbox):
    berlin = ZoneInfo("Europe/Berlin")
    clock = Clock(datetime(2024, 3, 30, 12, 0, tzinfo=berlin))
    monitor = make_monitor(clock=clock, timezone="Europe/Berlin", summary_at=time(6, 0))
    monitor.tick()
    assert stored(outbox, "summary") == []  # first start: the current day is the first period
    clock.now = datetime(2024, 3, 31, 5, 59, tzinfo=berlin)
    monitor.tick()
    assert stored(outbox, "summary") == []
    clock.now = datetime(2024, 3, 31, 6, 0, tzinfo=berlin)  # the night the clocks go forward
    monitor.tick()
    monitor.tick()
    (daily,) = stored(outbox, "summary")
    assert daily["trigger"] == "daily" and daily["timezone"] == "Europe/Berlin"
    start, end = datetime.fromisoformat(daily["period_start"]), datetime.fromisoformat(daily["period_end"])
    assert (start.isoformat(), end.isoformat()) == ("2024-03-30T06:00:00+01:00", "2024-03-31T06:00:00+02:00")
    assert end - start == timedelta(hours=23)
    monitor.stop()
    restarted = make_monitor(clock=clock, timezone="Europe/Berlin", summary_at=time(6, 0))
    restarted.tick()
    assert len(stored(outbox, "summary")) == 1  # not again after a restart
    clock.now = datetime(2024, 4, 2, 7, 0, tzinfo=berlin)  # the agent was off on the 1st: the latest day follows
    restarted.tick()
    assert [s["period_end"] for s in stored(outbox, "summary")][1] == "2024-04-02T06:00:00+02:00"


def test_request_summary_covers_the_day_so_far(make_monitor, outbox):
    clock = Clock(datetime(2024, 1, 5, 15, 30, tzinfo=timezone.utc))
    monitor = make_monitor(clock=clock)
    monitor.derive(payloads(factory.make_dx(acquisition_dt="20240105120000")))  # Berlin 12:00 = 11:00 UTC
    summary = monitor.request_summary()
    assert summary.trigger == "request" and summary.exposures == 1
    assert summary.period_start == datetime(2024, 1, 5, tzinfo=timezone.utc) and summary.period_end == clock.now
    assert stored(outbox, "summary")[0]["msg_id"] == summary.msg_id


def test_history_is_pruned_after_the_configured_days(make_monitor):
    clock = Clock(datetime(2024, 1, 5, 12, 0, tzinfo=timezone.utc))
    monitor = make_monitor(clock=clock, history_days=2)
    monitor.derive(payloads(factory.make_dx()))
    clock.now += timedelta(days=1)
    monitor.tick()
    assert rows(monitor, "exposures") == 1
    clock.now += timedelta(days=2)
    monitor.tick()
    assert rows(monitor, "exposures") == 0


# ---- robustness --------------------------------------------------------------------------------------------------
def test_a_history_that_cannot_be_written_costs_only_the_summaries(make_monitor, caplog):
    monitor = make_monitor()
    study = "1.2.826.0.1.3680043.8.498.41"
    with monitor.history.lock:  # (closing it under another thread's statement would crash sqlite3)
        monitor.history.conn.close()  # every write now fails
    outs = [monitor.derive(payloads(factory.make_dx(study_uid=study, dap_dgy_cm2="4", acquisition_dt=dt(m))))
            for m in (0, 1)]
    assert [a.rule for a in alerts(outs[0])] == ["chest-pa"]
    assert exposures(outs[1])[0].repeat_of == exposures(outs[0])[0].event_ref  # evaluation goes on from memory
    monitor.writer.flush()
    assert caplog.text.count("not written") == 1  # logged once per outage
    with pytest.raises(Exception):
        monitor.request_summary()
    monitor.history.close = lambda: None  # already closed


def test_an_unusable_history_file_runs_from_memory(make_monitor, tmp_path, caplog):
    with sqlite3.connect(tmp_path / "dose.db") as conn:
        conn.execute("PRAGMA user_version = 99")  # written by a newer agent
    monitor = make_monitor()
    assert monitor.alive() and monitor.history is None and "evaluating from memory only" in caplog.text
    study = "1.2.826.0.1.3680043.8.498.42"
    first = monitor.derive(payloads(factory.make_dx(study_uid=study, dap_dgy_cm2="4", acquisition_dt=dt(0))))
    again = monitor.derive(payloads(factory.make_dx(study_uid=study, acquisition_dt=dt(1))))
    assert [a.rule for a in alerts(first)] == ["chest-pa"]
    assert exposures(again)[0].repeat_of == exposures(first)[0].event_ref
    monitor.tick()  # no summary, no error


def test_concurrent_objects_are_all_recorded(make_monitor):
    monitor = make_monitor()
    study = "1.2.826.0.1.3680043.8.498.40"
    objects = [payloads(factory.make_dx(study_uid=study, view=f"V{i % 4}", acquisition_dt=dt(i / 10)))
               for i in range(80)]
    results, errors = [], []

    def work(chunk):
        try:
            for p in chunk:
                results.append(monitor.derive(p))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(objects[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 80
    assert rows(monitor, "exposures") == 80
    firsts = [e for r in results for e in exposures(r) if e.repeat_of is None]
    assert 4 <= len(firsts) <= 80  # arrival order decides which ones repeat; none is lost or doubled


def test_the_history_holds_no_identifying_value(make_monitor, tmp_path):
    monitor = make_monitor()
    patient = factory.Patient()
    objects = [factory.make_dx(patient=patient), factory.make_rdsr([factory.fluoro_event()], patient=patient),
               factory.make_xa(patient=patient, frames=2)]
    planted = set()
    for ds in objects:
        planted |= factory.identifying_values(ds, patient)
        monitor.derive(payloads(ds))
    monitor.stop()
    raw = b"".join(p.read_bytes() for p in Path(tmp_path).glob("dose.db*"))
    assert not sorted(v for v in planted if len(v) >= 4 and v.encode() in raw)


def test_a_bug_in_evaluation_never_blocks_the_exposures(make_monitor, caplog):
    monitor = make_monitor()
    monitor.matcher.first = None  # any evaluation now raises TypeError
    objects = payloads(factory.make_dx())
    assert monitor.derive(objects) == objects
    assert "dose evaluation failed" in caplog.text
