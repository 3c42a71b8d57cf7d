"""Exposure identity: two objects are "already known" only when they record the same exposure (identity key AND
recorded content), through the real intake, outbox and dose monitor; what the outbox accepts is what is published."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid

from agent.dicom.extract import extract
from agent.dicom.intake import DicomIntake
from agent.dicom.statuses import SUCCESS
from agent.dose.monitor import DoseMonitor
from agent.dose.rules import DoseRules, DrlRule
from agent.outbox import Outbox
from agent.sink import Sink
from agent.topics import Topics
from tests import dicom_factory as factory

RULES = DoseRules(drl=[DrlRule(id="chest", body_part=["CHEST"], view=["PA", "LL"], dap_gy_cm2=0.5)])
CTX = factory.make_context()


class Pipeline:
    """The agent's intake path in process: DicomIntake -> dose monitor derive -> Sink -> a real outbox."""

    def __init__(self, tmp_path, rules: DoseRules = RULES):
        self.outbox = Outbox(tmp_path / "outbox.db", max_bytes=64 * 1024 * 1024)
        self.outbox.start()
        sink = Sink(self.outbox, Topics("xray/v1", "site-1", "room-3"))
        self.monitor = DoseMonitor(rules, tmp_path / "dose.db", sink)
        self.monitor.start()
        self.intake = DicomIntake(sink, factory.TEST_SECRET, timezone="Europe/Berlin", derive=self.monitor.derive)

    def send(self, *objects) -> None:
        for ds in objects:
            data = factory.to_bytes(ds)
            assert self.intake.handle(factory.roundtrip(ds), lambda: data, "test") == SUCCESS

    def published(self, kind: str) -> list[dict]:
        with sqlite3.connect(self.outbox.path) as conn:
            rows = conn.execute("SELECT payload FROM messages WHERE topic LIKE ? ORDER BY seq",
                                (f"%/{kind}",)).fetchall()
        return [json.loads(row[0]) for row in rows]

    def close(self) -> None:
        self.monitor.stop()
        self.outbox.stop()


@pytest.fixture
def pipeline(tmp_path):
    p = Pipeline(tmp_path)
    yield p
    p.close()


def test_three_rdsr_events_sharing_one_uid_are_three_events(pipeline):
    uid = generate_uid()
    events = [factory.acquisition_event(uid=uid, dap=(dap, "Gy.m2"), dose_rp=(rp, "Gy"))
              for dap, rp in (("0.0001", "0.0004"), ("0.0009", "0.0031"), ("0.0002", "0.0007"))]
    pipeline.send(factory.make_rdsr(events))
    published = pipeline.published("exposure")
    assert sorted(e["dose_rp_gy"] for e in published) == [0.0004, 0.0007, 0.0031]  # the highest-dose one too
    assert len({e["event_ref"] for e in published}) == 3
    assert pipeline.published("dose-summary")[0]["events_count"] == 3


def test_two_dx_images_sharing_a_uid_with_different_technique_are_two_events(pipeline, caplog):
    uid, study = generate_uid(), generate_uid()
    pa = factory.make_dx(irradiation_event_uid=uid, study_uid=study, kvp="70", view="PA",
                         acquisition_dt="20240105101530")
    lateral = factory.make_dx(irradiation_event_uid=uid, study_uid=study, kvp="125", view="LL",
                              acquisition_dt="20240105102030")
    with caplog.at_level(logging.WARNING, logger="agent.dicom.identities"):
        pipeline.send(pa, lateral, factory.make_dx(irradiation_event_uid=uid, study_uid=study, kvp="90",
                                                   view="PA", acquisition_dt="20240105102530"))
    assert [(e["kvp"], e["view"]) for e in pipeline.published("exposure")] == [(70, "PA"), (125, "LL"), (90, "PA")]
    assert pipeline.intake.counters.identity_conflicts == 2
    warnings = [r for r in caplog.records if "shared by exposures" in r.getMessage()]
    assert len(warnings) == 1, "logged once per identity"
    assert all(e["supersedes"] is None for e in pipeline.published("exposure"))


def test_seven_images_of_one_second_and_view_without_uid_are_seven_events(pipeline):
    study = generate_uid()
    images = [factory.make_dx(irradiation_event_uid=None, study_uid=study, acquisition_dt="20240105101530",
                              view="PA", extra={"InstanceNumber": n}) for n in range(1, 8)]
    pipeline.send(*images)
    assert len(pipeline.published("exposure")) == 7


def test_the_same_exposure_is_published_once(pipeline):
    processing, presentation = factory.make_dx_pair()
    no_uid = factory.make_dx_pair(share_irradiation_uid=False)
    reports = factory.make_cumulative_rdsrs([factory.acquisition_event(), factory.fluoro_event(),
                                             factory.acquisition_event(started="20240105102000")], counts=(1, 3))
    pipeline.send(processing, presentation, *no_uid, processing, *reports, reports[1])
    published = pipeline.published("exposure")
    assert [e["source"] for e in published] == ["image", "image", "rdsr", "rdsr", "rdsr"]


def test_a_corrected_re_send_supersedes_the_first(pipeline, caplog):
    ds = factory.make_dx(dap_dgy_cm2="0.0923")
    first_dap = factory.roundtrip(ds)
    ds.ImageAndFluoroscopyAreaDoseProduct = "0.123"  # the modality corrects the DAP and sends the object again
    with caplog.at_level(logging.WARNING, logger="agent.dicom.identities"):
        pipeline.send(first_dap, ds)
    first, correction = pipeline.published("exposure")
    assert (first["dap_gy_m2"], correction["dap_gy_m2"]) == (9.23e-07, 1.23e-06)
    assert correction["supersedes"] == first["event_ref"] and first["supersedes"] is None
    assert pipeline.intake.counters.identity_corrections == 1
    assert any("published as a correction" in r.getMessage() for r in caplog.records)


def test_dose_alerts_name_only_published_exposures(pipeline):
    """The reported case: merged exposures, and an alert pointing at an exposure that was never published."""
    study, uid = generate_uid(), generate_uid()
    images = [factory.make_dx(irradiation_event_uid=None, study_uid=study, acquisition_dt="20240105101530",
                              view="PA", dap_dgy_cm2=dap, extra={"InstanceNumber": n})
              for n, dap in enumerate(["1", "9", "2", "8", "1", "7", "3"], start=1)]
    shared = [factory.make_dx(irradiation_event_uid=uid, study_uid=study, dap_dgy_cm2=dap, kvp=kv,
                              acquisition_dt=at) for dap, kv, at in (("2", "70", "20240105101000"),
                                                                     ("12", "125", "20240105101500"))]
    pipeline.send(*images, *shared, images[1])
    exposures = {e["event_ref"]: e for e in pipeline.published("exposure")}
    alerts = [a for a in pipeline.published("dose-alert") if a["alert"] == "notification-level"]
    assert len(exposures) == 9 and alerts
    for alert in alerts:
        assert alert["event_ref"] in exposures, "an alert names an exposure that was not published"
        assert alert["value"] == pytest.approx(exposures[alert["event_ref"]]["dap_gy_m2"])  # its own values
    assert len(alerts) == len({a["event_ref"] for a in alerts}) == sum(
        e["dap_gy_m2"] * 1e4 > 0.5 for e in exposures.values()) == 4  # 0.9, 0.8, 0.7 and 1.2 Gy·cm²


# ---- the property: two objects dedupe if and only if they record the same exposure ----------------------------

image_spec = st.fixed_dictionaries({
    "uid": st.sampled_from([None, "1.2.826.0.1.3680043.10.1", "1.2.826.0.1.3680043.10.2"]),
    "second": st.sampled_from(["30", "31"]),
    "kvp": st.sampled_from(["70", "125", "70,0"]),  # "70,0" is 70 written with a decimal comma
    "dap": st.sampled_from(["0.05", "0.2", "0.050"]),
    "view": st.sampled_from(["PA", "LL"]),
    "instance": st.sampled_from([1, 2]),
    "for_processing": st.booleans(),
})


def _image(spec: dict, study: str):
    return factory.make_dx(irradiation_event_uid=spec["uid"], study_uid=study, for_processing=spec["for_processing"],
                           acquisition_dt=f"202401051015{spec['second']}", view=spec["view"],
                           raw={"KVP": spec["kvp"].encode(), "ImageAndFluoroscopyAreaDoseProduct": spec["dap"].encode()},
                           extra={"InstanceNumber": spec["instance"]})


def _same_image_exposure(a: dict, b: dict) -> bool:
    """Written from the definition, not from the code: same identity (the UID; without one, the acquisition
    attributes and instance number), and the same recorded time, technique, dose and view."""
    content = all(float(a[k].replace(",", ".")) == float(b[k].replace(",", ".")) for k in ("kvp", "dap"))
    content = content and (a["second"], a["view"]) == (b["second"], b["view"])
    identity = a["uid"] == b["uid"] and (a["uid"] is not None or a["instance"] == b["instance"])
    return identity and content


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=image_spec, b=image_spec)
def test_images_dedupe_if_and_only_if_they_record_the_same_exposure(a, b):
    study = "1.2.826.0.1.3680043.10.9"
    first, second = (extract(factory.roundtrip(_image(spec, study)), CTX).events[0] for spec in (a, b))
    assert (first.msg_id == second.msg_id) == _same_image_exposure(a, b)


event_spec = st.fixed_dictionaries({
    "uid": st.sampled_from([None, "1.2.826.0.1.3680043.11.1", "1.2.826.0.1.3680043.11.2"]),
    "started": st.sampled_from(["20240105101530", "20240105101800"]),
    "kvp": st.sampled_from(["75", "80"]),
    "dap": st.sampled_from([("0.000123", "Gy.m2"), ("1.23", "dGy.cm2"), ("0.000456", "Gy.m2")]),
    "rp": st.sampled_from(["0.00056", "0.0011"]),
})


def _dap_gy_m2(dap: tuple[str, str]) -> float:
    return float(dap[0]) * (1e-5 if dap[1] == "dGy.cm2" else 1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=event_spec, b=event_spec)
def test_rdsr_events_dedupe_if_and_only_if_they_record_the_same_exposure(a, b):
    study = "1.2.826.0.1.3680043.11.9"
    first, second = (extract(factory.make_rdsr([factory.acquisition_event(
        uid=s["uid"], started=s["started"], kvp=(s["kvp"], "kV"), dap=s["dap"], dose_rp=(s["rp"], "Gy"))],
        study_uid=study), CTX).events[0] for s in (a, b))
    same = (a["uid"] == b["uid"] and (a["started"], a["kvp"], a["rp"]) == (b["started"], b["kvp"], b["rp"])
            and _dap_gy_m2(a["dap"]) == pytest.approx(_dap_gy_m2(b["dap"])))
    assert (first.msg_id == second.msg_id) == same


def test_a_cumulative_report_re_sent_with_a_corrected_event_supersedes_it(pipeline):
    uid = generate_uid()
    first = factory.make_rdsr([factory.acquisition_event(uid=uid, dose_rp=("0.0005", "Gy"))])
    corrected = factory.make_rdsr([factory.acquisition_event(uid=uid, dose_rp=("0.0006", "Gy")),
                                   factory.fluoro_event()], study_uid=first.StudyInstanceUID)
    pipeline.send(first, corrected)
    original, correction, fluoro = pipeline.published("exposure")
    assert correction["supersedes"] == original["event_ref"] and fluoro["supersedes"] is None
    assert (original["dose_rp_gy"], correction["dose_rp_gy"]) == (0.0005, 0.0006)
