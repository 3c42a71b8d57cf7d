"""The dose programme as the standards define it, on hand-computed worked examples: notification levels per exposure,
the DRL audit by median per examination, NCRP 168 steps per plane, patient-level cumulative dose, counting each
irradiation once, paediatric bands on private age and weight, and the unit-wide target EI."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from agent.config import load_config
from agent.dicom.extract import extract
from agent.dicom.patient import age_from_dates, age_from_string
from agent.dose.bands import AgeBound, PatientAge, age_in_band
from agent.dose.evaluate import ExamMatcher, MatchKey, crossed, step_reached
from agent.dose.lookup import entitled
from agent.dose.monitor import DoseMonitor
from agent.dose.readable import alert_line
from agent.dose.rules import (CumulativeThreshold, DoseRules, NotificationLevel, PatientThreshold, ReferenceLevel,
                              load_rules)
from agent.dose.state import StudyState
from agent.outbox import Outbox
from agent.payloads.exposure import DoseSummary, ExposureEvent
from agent.pseudonym import load_secret
from agent.sink import Sink
from agent.topics import Topics
from tests import dicom_factory as factory
from tests.realparts import REPO, write_agent_config
from tests.test_dose_monitor import T0, Clock, alerts, exposures, make_monitor, outbox, payloads  # noqa: F401

UTC = timezone.utc
EXAMPLE_RULES = REPO / "config" / "dose-rules.example.toml"


def extracted(ds, **context):
    """The payloads and the private patient facts, as the intake hands them to the monitor."""
    extraction = extract(factory.roundtrip(ds), factory.make_context(received_at=T0, **context))
    return list(extraction.payloads()), extraction.patient


# ---- bands ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, months, days", [
    ("003D", 0, 3), ("006W", 1, 42), ("018M", 18, None), ("045Y", 540, None), ("4Y", None, None), ("", None, None),
])
def test_age_strings_give_months_and_days(text, months, days):
    age = age_from_string(text)
    assert (age.months, age.days) if age else (None, None) == (months, days)


@pytest.mark.parametrize("birth, on, months, days", [
    ((2024, 1, 31), (2024, 2, 29), 0, 29),  # 29 days: not yet a completed month (the 31st never came)
    ((2024, 1, 15), (2024, 2, 15), 1, 31),
    ((2023, 11, 5), (2024, 1, 5), 2, 61),
    ((2023, 1, 5), (2024, 1, 4), 11, 364),
])
def test_ages_from_dates_are_completed_calendar_months(birth, on, months, days):
    from datetime import date
    age = age_from_dates(date(*birth), date(*on))
    assert (age.months, age.days) == (months, days)


@pytest.mark.parametrize("age, low, high, inside", [
    (PatientAge(months=0, days=10), "0d", "28d", True),
    (PatientAge(months=0, days=28), "0d", "28d", False),  # [0d, 28d): day 28 is out
    (PatientAge(months=2, days=61), "28d", "3m", True),
    (PatientAge(months=3, days=92), "28d", "3m", False),
    (PatientAge(months=3), "3m", "1y", True),
    (PatientAge(months=12), "3m", "1y", False),  # "012M" is one year
    (PatientAge(months=0), "14d", "3m", None),  # "000M" cannot say whether 14 days have passed
    (None, "1y", "5y", None),  # unknown, never adult
    (PatientAge(months=600), None, None, True),  # no band: everyone
])
def test_age_bands_in_days_and_months(age, low, high, inside):
    bound = lambda v: None if v is None else AgeBound.parse(v)  # noqa: E731
    assert age_in_band(age, bound(low), bound(high)) is inside


@pytest.mark.parametrize("bad", ["40d", "3x", "-1y", "y"])
def test_bad_age_bounds_name_the_rule_and_key(bad):
    with pytest.raises(ValueError, match="rule 'r': age_min"):
        NotificationLevel(id="r", body_part="CHEST", age_min=bad, dap_gy_cm2=1)


def test_weight_bands_and_unknown_weight_is_never_adult():
    rules = [NotificationLevel(id="paed-15-30", body_part="ABDOMEN", age_max=16, weight_min_kg=15, weight_max_kg=30,
                               dap_gy_cm2=0.35),
             NotificationLevel(id="adult", body_part="ABDOMEN", dap_gy_cm2=2.5)]
    matcher = ExamMatcher(rules, "glob")
    key = lambda **kw: MatchKey("Abd", "ABDOMEN", "AP", "DX", "acquisition", **kw)  # noqa: E731
    assert matcher.find(key(age=PatientAge(months=72), weight_kg=20.0))[0].id == "paed-15-30"
    # 30 kg is outside [15, 30): the next rule whose band holds applies (here the unbanded one, as the file orders)
    assert matcher.find(key(age=PatientAge(months=72), weight_kg=30.0))[0].id == "adult"
    rule, band = matcher.find(key(age=PatientAge(months=72)))  # a child without weight
    assert band == "unknown" and matcher.first(key(age=PatientAge(months=72))) is None
    assert matcher.first(key(age=PatientAge(months=480))).id == "adult"  # an adult: the age settles it
    assert matcher.find(key())[1] == "unknown"  # nothing known: unknown, not adult


def test_banded_rules_use_the_age_the_object_carries_when_publishing_is_off(make_monitor):
    monitor = make_monitor(load_rules(EXAMPLE_RULES))
    baby = factory.Patient(birth_date="20231105", age=None)  # 2 months on the study date 2024-01-05
    out, facts = extracted(factory.make_dx(patient=baby, dap_dgy_cm2="0.5"), include_age_sex=False)
    assert exposures(out)[0].patient_age_years is None  # not published...
    found = alerts(monitor.derive(out, facts))
    assert [(a.alert, a.rule) for a in found] == [("notification-level", "paed-chest-ap-pa-0-3m")]  # ...but used
    assert "2023" not in json.dumps([p.model_dump(mode="json") for p in monitor.derive(out, facts)])


def test_no_age_with_paediatric_bands_is_band_unknown_not_adult(make_monitor):
    monitor = make_monitor(load_rules(EXAMPLE_RULES))
    nobody = factory.Patient(birth_date="", age=None)
    out, facts = extracted(factory.make_dx(patient=nobody, dap_dgy_cm2="3.0"))  # 0.3 Gy·cm², 3x the adult level
    assert alerts(monitor.derive(out, facts)) == []


# ---- notification levels and the old key ----------------------------------------------------------------------------
def test_old_drl_key_is_read_as_notification_levels_with_a_warning(tmp_path, caplog):
    path = tmp_path / "rules.toml"
    path.write_text('[[drl]]\nid = "chest"\nbody_part = "CHEST"\ndap_gy_cm2 = 0.1\n')
    with caplog.at_level(logging.WARNING):
        rules = load_rules(path)
    assert [r.id for r in rules.notification_level] == ["chest"]
    assert "[[drl]] is deprecated" in caplog.text
    path.write_text('[[drl]]\nid = "a"\nbody_part = "CHEST"\ndap_gy_cm2 = 0.1\n[[notification_level]]\nid = "b"\n'
                    'body_part = "X"\ndap_gy_cm2 = 1\n')
    with pytest.raises(ValueError, match="notification_level"):
        load_rules(path)


def test_alert_lines_read_as_sentences(make_monitor):
    monitor = make_monitor(DoseRules(notification_level=[NotificationLevel(id="chest-pa", body_part="CHEST",
                                                                           view="PA", dap_gy_cm2=0.1)]))
    out, facts = extracted(factory.make_dx(dap_dgy_cm2="2.5", exposure_index="1200", target_exposure_index="250",
                                           deviation_index=None))
    lines = [alert_line(a.model_dump(mode="json")) for a in alerts(monitor.derive(out, facts))]
    assert lines == ["notification level: Thorax PA, DAP 0.25 Gy·cm² above 0.1 Gy·cm² (x2.5, rule chest-pa)",
                     "deviation index excessive: Thorax PA, DI +6.81 above +3 (EI 4.80x target)"]


# ---- NCRP 168 steps, per plane ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, level", [
    (2.99, None), (3.0, None), (3.2, 3.0), (4.0, 3.0), (4.01, 4.0), (6.5, 6.0), (7.0, 6.0), (1000.5, 1000.0),
])
def test_reference_air_kerma_steps_3_gy_then_every_1(value, level):
    assert step_reached(value, 3.0, 1.0) == level


def test_kap_and_fluoro_time_steps():
    assert step_reached(0.0451, 0.03, 0.01) == pytest.approx(0.04)  # 451 Gy·cm²: the 400 step (300, then +100)
    assert step_reached(46 * 60, 30 * 60, 15 * 60) == 45 * 60  # 46 min: the 45 min step (30, then +15)
    assert step_reached(45 * 60, 30 * 60, 15 * 60) == 30 * 60  # exactly 45 min: still the 30 min step
    assert step_reached(61 * 60, 60 * 60, None) == 60 * 60  # SRDL 60 min: once


def test_reference_air_kerma_per_plane_and_in_total():
    totals = {"study_dose_rp_gy": 4.7}
    planes = {"A": {"study_dose_rp_gy": 3.5}, "B": {"study_dose_rp_gy": 1.2}}
    found = [(f.rule, f.plane, f.level) for f in crossed(totals, DoseRules().cumulative, planes)]
    assert found == [("ncrp168-notify-kar", None, 4.0), ("ncrp168-notify-kar-plane", "A", 3.0)]
    planes = {"A": {"study_dose_rp_gy": 5.2}, "B": {"study_dose_rp_gy": 1.5}}
    found = [(f.rule, f.plane, f.level) for f in crossed({"study_dose_rp_gy": 6.7}, DoseRules().cumulative, planes)]
    assert found == [("ncrp168-notify-kar", None, 6.0), ("ncrp168-notify-kar-plane", "A", 5.0),
                     ("ncrp168-srdl-kar", None, 5.0), ("ncrp168-srdl-kar-plane", "A", 5.0)]


class BiplaneSummary(DoseSummary):
    """A dose report's totals with the per-plane totals a biplane report gives (by_plane, keyed A / B)."""

    by_plane: dict[str, dict[str, float]] | None = None


def biplane(study: str, a_gy: float, b_gy: float, received: datetime = T0) -> BiplaneSummary:
    return BiplaneSummary(msg_id=f"{study}-{a_gy}", site="s", room="r", ts=received, received_at=received,
                          study_ref=study, events_count=2, dose_rp_total_gy=a_gy + b_gy,
                          by_plane={"A": {"dose_rp_total_gy": a_gy}, "B": {"dose_rp_total_gy": b_gy}})


def test_biplane_report_alerts_per_plane_once_per_step(make_monitor):
    monitor = make_monitor(DoseRules())
    first = alerts(monitor.derive([biplane("study-bi", 3.5, 1.2)]))
    assert sorted((a.rule, a.plane, a.level) for a in first) == [
        ("ncrp168-notify-kar", None, 4.0), ("ncrp168-notify-kar-plane", "A", 3.0)]
    again = alerts(monitor.derive([biplane("study-bi", 3.6, 1.2)]))  # no new step
    assert again == []
    grown = alerts(monitor.derive([biplane("study-bi", 4.2, 3.1)]))  # A passes 4, B passes 3, total 7.3
    assert sorted((a.rule, a.plane or "", a.level) for a in grown) == [
        ("ncrp168-notify-kar", "", 7.0), ("ncrp168-notify-kar-plane", "A", 4.0),
        ("ncrp168-notify-kar-plane", "B", 3.0), ("ncrp168-srdl-kar", "", 5.0)]


def test_a_jump_past_several_steps_raises_the_highest_only(make_monitor):
    monitor = make_monitor(DoseRules(cumulative=[CumulativeThreshold(id="kar", quantity="dose_rp_gy", level=3,
                                                                     every=1)]))
    out = alerts(monitor.derive([biplane("study-jump", 6.5, 0.0)]))
    assert [(a.rule, a.level) for a in out] == [("kar", 6.0)]  # 6.5 Gy at once: one alert, the 6 Gy step
    assert alerts(monitor.derive([biplane("study-jump", 6.6, 0.0)])) == []  # the 3, 4, 5 steps never come later


# ---- patient-level cumulative dose -----------------------------------------------------------------------------------
def patient_study(started: str, dose_gy: str):
    return factory.make_rdsr([factory.fluoro_event(dose_rp=(dose_gy, "Gy"), dap=("0.001", "Gy.m2"),
                                                   started=started)], patient=factory.Patient())


def test_a_patient_crosses_a_threshold_over_three_studies_in_two_months(make_monitor):
    rule = PatientThreshold(id="patient-kar-5gy-60d", quantity="dose_rp_gy", level=5.0, window_days=60)
    monitor = make_monitor(DoseRules(patient_cumulative=[rule]))
    studies = []
    # 1 March 2.0 Gy, 20 March 1.5 Gy, 25 April 2.0 Gy: 2.0, 3.5, then 5.5 Gy over the 60 days ending 25 April
    for started, dose in (("20240301101530", "2.0"), ("20240320101530", "1.5"), ("20240425101530", "2.0")):
        out, facts = extracted(patient_study(started, dose))
        studies.append(exposures(out)[0].study_ref)
        found = [a for a in alerts(monitor.derive(out, facts)) if a.alert == "patient-cumulative"]
    assert len(found) == 1
    alert = found[0]
    assert alert.rule == "patient-kar-5gy-60d" and alert.quantity == "patient_dose_rp_gy" and alert.unit == "Gy"
    assert alert.value == pytest.approx(5.5) and alert.level == 5.0 and alert.window_days == 60
    assert alert.studies == studies and alert.patient_ref == facts.patient_ref and alert.study_ref == studies[2]
    # 10 May, 1.0 Gy: the 1 March study has left the window (1.5 + 2.0 + 1.0 = 4.5 Gy): nothing
    out, facts = extracted(patient_study("20240510101530", "1.0"))
    assert [a for a in alerts(monitor.derive(out, facts)) if a.alert == "patient-cumulative"] == []


def test_earlier_studies_stay_counted_across_a_restart(make_monitor):
    rule = PatientThreshold(id="p", quantity="dose_rp_gy", level=3.0, window_days=365)
    monitor = make_monitor(DoseRules(patient_cumulative=[rule]))
    out, facts = extracted(patient_study("20240301101530", "2.0"))
    monitor.derive(out, facts)
    monitor.stop()
    restarted = make_monitor(DoseRules(patient_cumulative=[rule]))
    out, facts = extracted(patient_study("20241001101530", "1.5"))
    found = [a for a in alerts(restarted.derive(out, facts)) if a.alert == "patient-cumulative"]
    assert [(a.value, len(a.studies)) for a in found] == [(pytest.approx(3.5), 2)]


def test_lookup_lists_a_patients_history_and_nothing_is_stored_in_clear(tmp_path):
    path = write_agent_config(tmp_path / "agent", 1)
    cfg = load_config(path)
    secret = load_secret(cfg.site.secret_key_file)
    box = Outbox(cfg.outbox.path, max_bytes=64 * 1024 * 1024)
    box.start()
    monitor = DoseMonitor(DoseRules(), cfg.dose.state_file(cfg.outbox.path), Sink(box, Topics("x", "s", "r")),
                          clock=Clock(T0))
    monitor.start()
    try:
        extraction = extract(factory.roundtrip(patient_study("20240301101530", "3.2")),
                             factory.make_context(secret=secret, received_at=T0))
        out = monitor.derive(list(extraction.payloads()), extraction.patient)
    finally:
        monitor.stop()
        box.stop()
    study = exposures(out)[0].study_ref
    run = lambda pid: subprocess.run([sys.executable, "-m", "agent", "lookup", pid, "--config", str(path)],  # noqa
                                     cwd=REPO, capture_output=True, text=True, timeout=60)
    found = run(factory.Patient().patient_id)
    assert found.returncode == 0, found.stderr
    assert "1 study(ies), 1 exposure(s), 1 dose alert(s)" in found.stdout and f"study {study}" in found.stdout
    assert "cumulative ncrp168-notify-kar" in found.stdout
    assert run("SOMEONE-ELSE").stdout.startswith("0 study(ies), 0 exposure(s), 0 dose alert(s)")
    db = cfg.dose.state_file(cfg.outbox.path).read_bytes()
    assert factory.Patient().patient_id.encode() not in db and b"Zebedee" not in db and b"19580317" not in db


def test_lookup_is_for_root_and_the_service_group_only():
    assert entitled(0, [])
    assert not entitled(1000, [], group="no-such-group-here")
    import grp
    gid = grp.getgrgid(0).gr_name
    assert entitled(1000, [0], group=gid) and not entitled(1000, [4242], group=gid)


# ---- counting each irradiation once ----------------------------------------------------------------------------------
def test_a_study_with_a_dose_report_takes_its_totals_not_the_images_too():
    study = StudyState()
    uid = "1.2.826.0.1.3680043.8.498.77"
    for dap in ("2.0", "3.0"):  # two radiographs, image DAP 2 and 3 dGy·cm²
        event = exposures(payloads(factory.make_dx(study_uid=uid, dap_dgy_cm2=dap)))[0]
        study.add(event, None)
    assert study.totals()[1]["study_dap_gy_m2"] == pytest.approx(5e-5)  # no report: the images' sum
    report = payloads(factory.make_rdsr([factory.acquisition_event(dap=("0.00004", "Gy.m2"))], study_uid=uid))
    for p in report:
        if isinstance(p, ExposureEvent):
            study.add(p, None)
        else:
            from agent.dose.state import report_totals
            study.report(*report_totals(p))
    assert study.totals()[1]["study_dap_gy_m2"] == pytest.approx(4e-5)  # the report's total, not 5 + 4


def test_an_images_dap_is_its_events_not_summed_over_its_images():
    processing, presentation = factory.make_dx_pair(dap_dgy_cm2="2.0")
    study = StudyState()
    for ds in (processing, presentation):
        study.add(exposures(payloads(ds))[0], None)
    count, totals = study.totals()
    assert count == 1 and totals["study_dap_gy_m2"] == pytest.approx(2e-5)


def test_qc_exposures_are_skipped(make_monitor):
    monitor = make_monitor(DoseRules(notification_level=[NotificationLevel(id="c", body_part="CHEST",
                                                                           dap_gy_cm2=0.01)]))
    event = exposures(payloads(factory.make_dx(dap_dgy_cm2="5.0")))[0]
    qc = event.model_copy(update={"purpose": "qc"})
    assert alerts(monitor.derive([qc])) == [] and monitor.derive([qc])[0].repeat_of is None
    assert monitor.writer.flush() and monitor.history.count("exposures") == 0


# ---- the DRL audit ---------------------------------------------------------------------------------------------------
CHEST_DRL = ReferenceLevel(id="drl-chest", exam="Chest PA + lateral", body_part="CHEST", dap_gy_cm2=0.10)


def at(minutes: int) -> str:
    """A DICOM DT `minutes` after 10:00 on 5 January 2024."""
    return (datetime(2024, 1, 5, 10, 0) + timedelta(minutes=minutes)).strftime("%Y%m%d%H%M%S")


def chest_exams(monitor, pairs):
    """One study per (PA, LAT) pair of DAPs in Gy·cm², 20 min apart; the first study also has a repeated PA."""
    for i, (pa, lat) in enumerate(pairs):
        uid = f"1.2.826.0.1.3680043.8.498.9{i}"
        minute = i * 20
        for j, (view, dap) in enumerate((("PA", pa), ("LL", lat))):
            dt = at(minute + j)
            monitor.derive(*extracted(factory.make_dx(study_uid=uid, view=view, dap_dgy_cm2=f"{dap * 10:g}",
                                                      acquisition_dt=dt)))
        if i == 0:  # a repeated PA: a possible repeat, left out of the examination
            monitor.derive(*extracted(factory.make_dx(study_uid=uid, view="PA", dap_dgy_cm2="9",
                                                      acquisition_dt=at(minute + 2))))


def test_drl_audit_medians_of_examinations_with_views_summed(make_monitor):
    monitor = make_monitor(DoseRules(diagnostic_reference_level=[CHEST_DRL]))
    # examinations PA + LAT: 0.02+0.04, 0.03+0.05, 0.04+0.05, 0.05+0.07, 0.08+0.12 = 0.06 0.08 0.09 0.12 0.20 Gy·cm²
    chest_exams(monitor, [(0.02, 0.04), (0.03, 0.05), (0.04, 0.05), (0.05, 0.07), (0.08, 0.12)])
    zone = ZoneInfo("UTC")
    audit = monitor.compute_audit("request", datetime(2024, 1, 1, tzinfo=zone), datetime(2024, 2, 1, tzinfo=zone))
    (exam,) = audit.exams
    assert (exam.exam, exam.rule, exam.band, exam.examinations) == ("Chest PA + lateral", "drl-chest", "any", 5)
    assert exam.median_dap_gy_m2 == pytest.approx(0.09e-4)  # 0.09 Gy·cm²
    assert exam.q1_dap_gy_m2 == pytest.approx(0.08e-4) and exam.q3_dap_gy_m2 == pytest.approx(0.12e-4)
    assert exam.iqr_dap_gy_m2 == pytest.approx(0.04e-4) and exam.median_to_drl == pytest.approx(0.9)
    assert exam.flags == ["few-examinations"]  # 5 < 20
    assert audit.model_dump(by_alias=True)["schema"] == "xray.drl-audit/1"


def test_drl_audit_flags_a_median_above_the_drl_and_keeps_the_figures(make_monitor, outbox):
    drl = ReferenceLevel(**{**CHEST_DRL.model_dump(), "dap_gy_cm2": 0.08})
    rules = DoseRules(diagnostic_reference_level=[drl], audit={"min_examinations": 3})
    monitor = make_monitor(rules)
    chest_exams(monitor, [(0.02, 0.04), (0.04, 0.05), (0.05, 0.07)])  # 0.06, 0.09, 0.12: median 0.09 > 0.08
    zone = ZoneInfo("UTC")
    audit = monitor.publish_audit("request", datetime(2024, 1, 1, tzinfo=zone), datetime(2024, 2, 1, tzinfo=zone))
    (exam,) = audit.exams
    assert exam.flags == ["median-above-drl"] and exam.median_to_drl == pytest.approx(0.09 / 0.08)
    assert monitor.writer.flush() and monitor.history.count("drl_audits") == 1


def test_the_monthly_audit_goes_out_once_when_the_month_ends(make_monitor, outbox):
    clock = Clock(datetime(2024, 1, 30, 12, 0, tzinfo=UTC))
    monitor = make_monitor(DoseRules(diagnostic_reference_level=[CHEST_DRL]), clock=clock)
    chest_exams(monitor, [(0.02, 0.04)])
    monitor.tick()
    assert monitor.writer.flush() and monitor.history.count("drl_audits") == 0
    clock.now = datetime(2024, 2, 1, 0, 5, tzinfo=UTC)
    monitor.tick()
    monitor.tick()
    assert monitor.writer.flush() and monitor.history.count("drl_audits") == 1
    from tests.test_dose_monitor import stored
    (published,) = stored(outbox, "drl-audit")
    assert published["trigger"] == "monthly" and published["period_start"].startswith("2024-01-01")
    assert published["exams"][0]["examinations"] == 1


# ---- deviation index: one target for everything ----------------------------------------------------------------------
def test_di_alerts_say_when_a_unit_uses_one_target_for_every_exam(make_monitor):
    monitor = make_monitor(DoseRules())
    for body, view in (("CHEST", "PA"), ("KNEE", "AP")):
        monitor.derive(*extracted(factory.make_dx(body_part=body, view=view, exposure_index="400",
                                                  target_exposure_index="400", deviation_index=None)))
    high = alerts(monitor.derive(*extracted(factory.make_dx(body_part="HAND", view="PA", exposure_index="1200",
                                                            target_exposure_index="400", deviation_index=None))))
    assert [(a.alert, a.target_ei_uniform) for a in high] == [("deviation-index", True)]
    zone = ZoneInfo("UTC")
    summary = monitor.compute_summary("request", datetime(2024, 1, 5, tzinfo=zone), datetime(2024, 1, 6, tzinfo=zone))
    assert summary.units_with_uniform_target_ei == ["ACME Medical / RadMaster 500 / SN-42-0815"]


def test_targets_set_per_exam_are_not_flagged(make_monitor):
    monitor = make_monitor(DoseRules())
    for body, view, target in (("CHEST", "PA", "400"), ("KNEE", "AP", "250")):
        monitor.derive(*extracted(factory.make_dx(body_part=body, view=view, exposure_index=target,
                                                  target_exposure_index=target, deviation_index=None)))
    high = alerts(monitor.derive(*extracted(factory.make_dx(body_part="HAND", view="PA", exposure_index="1200",
                                                            target_exposure_index="300", deviation_index=None))))
    assert [(a.alert, a.target_ei_uniform) for a in high] == [("deviation-index", False)]


# ---- the age the object carries --------------------------------------------------------------------------------------
@pytest.mark.parametrize("age_string, birth, months, days", [
    ("000Y", "20231105", 2, 61),  # the dates agree with the stated years: exact months and days
    ("003Y", "19580317", 36, None),  # they disagree (a wrong birth date): the stated age wins, as published
    ("010D", "20231105", 0, 10),  # days are already exact
    (None, "20231105", 2, 61),
])
def test_patient_age_prefers_the_stated_age_refined_by_agreeing_dates(age_string, birth, months, days):
    from agent.dicom.patient import patient_age
    ds = factory.make_dx(patient=factory.Patient(age=age_string, birth_date=birth))
    age = patient_age(ds)
    assert (age.months, age.days) == (months, days)


def test_a_history_of_the_earlier_schema_is_migrated(tmp_path):
    import sqlite3

    from agent.dose.history import MIGRATIONS, History
    path = tmp_path / "dose.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    conn.execute("INSERT INTO exposures (event_ref, study_ref, at, received_at, di_band) VALUES ('e', 's', 1, 1, "
                 "'normal')")
    conn.commit()
    conn.close()
    history = History(path)
    try:
        exposures_, report = history.load_study("s")
        assert [e.event_ref for e in exposures_] == ["e"] and exposures_[0].source is None and report is None
        assert history.count("patient_studies") == 0 and history.count("drl_audits") == 0
    finally:
        history.close()
