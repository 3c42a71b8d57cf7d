"""The QC schedule: what is due from the configured intervals and the finished sessions (pure), and its config."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from agent.qc.config import QcConfig
from agent.qc.schedule import LastRuns, ScheduleEntry, due_list, overdue_tests
from tests.test_config import GOOD, check_config, folder  # noqa: F401 - folder is a fixture

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
MONTHLY = ScheduleEntry(test="reproducibility", interval_days=30, warn_days=7)
ANNUAL = ScheduleEntry(test="fluoro_max_air_kerma_rate", interval_days=365)


def test_never_passed_is_overdue():
    [item] = due_list([ANNUAL], {}, NOW)
    assert item["status"] == "overdue" and item["due_at"] is None and item["last_passed_at"] is None


def test_due_dates_from_the_last_pass():
    # Passed 2026-05-01 12:00: due 2026-05-31 12:00, exactly 15 days before NOW: overdue, days_left -15.
    last = {"reproducibility": LastRuns(passed_at=NOW - timedelta(days=45), passed_ref="qc-a")}
    [item] = due_list([MONTHLY], last, NOW)
    assert item["status"] == "overdue" and item["days_left"] == -15 and item["last_passed_ref"] == "qc-a"
    # Passed 25 days ago: due in 5 days, within warn_days 7: due.
    [item] = due_list([MONTHLY], {"reproducibility": LastRuns(passed_at=NOW - timedelta(days=25))}, NOW)
    assert item["status"] == "due" and item["days_left"] == 5
    # Passed 10 days ago: due in 20 days: ok.
    [item] = due_list([MONTHLY], {"reproducibility": LastRuns(passed_at=NOW - timedelta(days=10))}, NOW)
    assert item["status"] == "ok" and item["due_at"] == "2026-07-05T12:00:00+00:00"


def test_a_later_failed_session_does_not_reset_the_clock():
    last = {"reproducibility": LastRuns(passed_at=NOW - timedelta(days=40), finished_at=NOW - timedelta(days=1),
                                        finished_verdict="fail")}
    items = due_list([MONTHLY, ANNUAL], last, NOW)
    assert [i["status"] for i in items] == ["overdue", "overdue"] and items[0]["last_verdict"] == "fail"
    assert overdue_tests(items) == ["reproducibility", "fluoro_max_air_kerma_rate"]


def test_schedule_config_names_the_bad_key():
    with pytest.raises(ValidationError, match="schedule.0.test"):
        QcConfig.model_validate({"schedule": [{"test": "coffee", "interval_days": 30}]})
    with pytest.raises(ValidationError, match="listed more than once: reproducibility"):
        QcConfig.model_validate({"schedule": [{"test": "reproducibility", "interval_days": 30},
                                              {"test": "reproducibility", "interval_days": 7}]})
    with pytest.raises(ValidationError, match="interval_days"):
        QcConfig.model_validate({"schedule": [{"test": "hvl", "interval_days": 0}]})


def test_check_config_exits_2_naming_the_schedule_key(folder):
    (folder / "agent.toml").write_text(GOOD + '\n[[qc.schedule]]\ntest = "fluoro_kv"\ninterval_days = 365\n')
    result = check_config(folder / "agent.toml")
    assert result.returncode == 2 and "qc.schedule.0.test" in result.stderr, result.stderr


def test_last_runs_from_sessions_in_the_site_zone():
    from agent.qc.schedule import last_runs

    rows = [{"ref": "qc-1", "test_type": "hvl", "ended_at": "2026-01-10T08:00:00.000000+00:00", "verdict": "pass"},
            {"ref": "qc-2", "test_type": "hvl", "ended_at": "2026-02-10T08:00:00.000000+00:00", "verdict": "fail"}]
    runs = last_runs(rows, "Europe/Berlin")["hvl"]
    assert runs.passed_ref == "qc-1" and runs.passed_at.isoformat() == "2026-01-10T09:00:00+01:00"
    assert runs.finished_verdict == "fail" and runs.finished_at.isoformat() == "2026-02-10T09:00:00+01:00"


# ---------------------------------------------------------------- the service: qc/due in the outbox

from agent.qc.matching import event_technique  # noqa: E402
from tests.qc_fixtures import event, make_qc, published, reading  # noqa: E402,F401 - fixtures


def test_qc_due_is_stored_retained_at_start_and_again_only_when_it_changes(make_qc, sink, box):
    qc = make_qc(schedule=[{"test": "aec_reproducibility", "interval_days": 365}])
    [first] = published(box, "/qc/due")
    assert first["overdue"] == ["aec_reproducibility"] and qc.overdue() == ["aec_reproducibility"]
    assert [m.retain for m in box.fetch_after(0, 1000) if m.topic.endswith("/qc/due")] == [True]
    qc.refresh_due()
    assert len(published(box, "/qc/due")) == 1  # nothing changed: nothing new stored
    session = qc.open_session("aec_reproducibility", ["kvp-1"], "JQ")
    recorder = qc.recorder(sink.emit)
    for i, kerma in enumerate((2.0, 2.1, 1.9, 2.0)):
        recorder(reading(i * 10, air_kerma_ugy=kerma, kvp=80.0, exposure_time_ms=10.0))
        qc.set_technique(session["ref"], i + 1, {"set_kvp": 80})
    assert qc.finish(session["ref"])["result"]["verdict"] == "pass"
    latest = published(box, "/qc/due")[-1]
    assert latest["overdue"] == [] and latest["tests"][0]["status"] == "ok" and qc.overdue() == []
    assert latest["tests"][0]["last_passed_ref"] == session["ref"]


def test_no_schedule_no_qc_due(make_qc, box):
    make_qc().refresh_due()
    assert published(box, "/qc/due") == []


def test_dose_report_values_fill_the_displayed_and_modality_fields():
    # Dose (RP) 0.125 Gy of a fluoroscopy event is the unit's displayed cumulative air kerma, 125 mGy; the image's
    # exposure index is the modality's, kept for the AEC tests.
    values = event_technique(event(0, "r1", dose_rp_gy=0.125, exposure_index=410.0))
    assert values["displayed_air_kerma_mgy"] == pytest.approx(125.0) and values["dicom_exposure_index"] == 410.0
