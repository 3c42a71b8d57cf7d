"""Dose reports: which kind of unit they came from (modality DX/RF/XA/MG, never SR), the device's identity from its
observer items, exposure time and mAs derived from pulses, per-plane totals of biplane systems, and CT and
radiopharmaceutical reports acknowledged without publishing anything.

Expected values are read from the objects independently (pydicom walks of the content tree here).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import pytest
from pydicom import Dataset
from pydicom import uid as sop

from agent.dicom import extract
from agent.dicom.intake import DicomIntake
from agent.dicom.statuses import SUCCESS
from tests.dicom_factory import (
    CT_PROCEDURE, PLANE_A, PLANE_B, TEST_SECRET, DoseTotals, acquisition_event, fluoro_event, make_context,
    make_ct_dose_report, make_mg, make_rdsr, make_xa, roundtrip,
)

CTX = make_context()
DX_FOR_PRESENTATION = sop.DigitalXRayImageStorageForPresentation


def content_items(ds: Dataset):
    stack = list(reversed(ds.ContentSequence))
    while stack:
        item = stack.pop()
        yield item
        stack.extend(reversed(item.get("ContentSequence", [])))


def concept_values(ds: Dataset, code: str) -> list[Decimal]:
    """Every number of every NUM item of `code`, in document order (pydicom's reading)."""
    values = []
    for item in content_items(ds):
        if item.ConceptNameCodeSequence[0].CodeValue == code:
            for measured in item.MeasuredValueSequence:
                element = measured["NumericValue"]
                values += [Decimal(str(v)) for v in (element.value if element.VM > 1 else [element.value])]
    return values


def text_of(ds: Dataset, code: str) -> str:
    return next(str(item.TextValue) for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == code)


# ---- modality ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case, build, sender, expected", [
    ("dx report: integrated radiography device type", lambda: make_rdsr(
        [acquisition_event()], device_type=("113958", "DCM", "Integrated Projection Radiography System")), None, "DX"),
    ("dx report: references DX images", lambda: make_rdsr(
        [acquisition_event(image_sop_class=DX_FOR_PRESENTATION)]), "XA", "DX"),
    ("fluoro on one plane, nothing else: RF", lambda: make_rdsr([fluoro_event()]), None, "RF"),
    ("fluoro, sender sent XA images", lambda: make_rdsr([fluoro_event()]), "XA", "XA"),
    ("biplane fluoro: XA", lambda: make_rdsr([fluoro_event(plane=PLANE_A), fluoro_event(plane=PLANE_B)]), None, "XA"),
    ("fluoro-guided device type", lambda: make_rdsr(
        [acquisition_event()], device_type=("113957", "DCM", "Fluoroscopy-Guided Projection Radiography System")),
     None, "RF"),
    ("acquisitions only: the sender's modality", lambda: make_rdsr([acquisition_event()]), "MG", "MG"),
    ("acquisitions only, CR sender: DX", lambda: make_rdsr([acquisition_event()]), "CR", "DX"),
    ("nothing tells: DX", lambda: make_rdsr([acquisition_event()]), None, "DX"),
])
def test_dose_report_events_carry_the_kind_of_unit(case, build, sender, expected):
    extraction = extract(roundtrip(build()), make_context(sender_modality=sender))
    assert {event.modality for event in extraction.events} == {expected}, case
    assert {event.source for event in extraction.events} == {"rdsr"}
    assert extraction.summary.modality == expected


def test_intake_remembers_the_modality_each_sender_sent_images_as(sink):
    intake = DicomIntake(sink, TEST_SECRET)
    assert intake.handle(make_xa(frames=1), lambda: b"", "ANGIO1@127.0.0.1") == SUCCESS
    assert intake.handle(make_mg(), lambda: b"", "MAMMO2@127.0.0.1") == SUCCESS
    assert intake.context("ANGIO1").sender_modality == "XA"
    assert intake.context("MAMMO2").sender_modality == "MG"
    assert intake.context("OTHER").sender_modality is None


# ---- device identity ---------------------------------------------------------------------------------------------
def test_device_identity_from_the_observer_when_the_header_lacks_it():
    ds = make_rdsr([acquisition_event()], header={"StationName": None, "DeviceSerialNumber": None},
                   observer={"device_name": "ANGIO-SUITE-2", "device_serial": "AX-00917"})
    extraction = extract(roundtrip(ds), CTX)
    for payload in (*extraction.events, extraction.summary):
        assert payload.station_name == text_of(ds, "121013")
        assert payload.device_serial == text_of(ds, "121016")
    with_header = make_rdsr([acquisition_event()], observer={"device_name": "OTHER", "device_serial": "OTHER-1"})
    (event,) = extract(with_header, CTX).events
    assert (event.station_name, event.device_serial) == (with_header.StationName, with_header.DeviceSerialNumber)


# ---- derived exposure time and mAs -------------------------------------------------------------------------------
def test_fluoro_pulses_without_exposure_time_give_a_derived_time_and_mas():
    ds = make_rdsr([fluoro_event(exposure_time=None, pulses=120, pulse_width=("8.0", "ms"))])
    (event,) = extract(roundtrip(ds), CTX).events
    pulses, width = concept_values(ds, "113768")[0], concept_values(ds, "113793")[0]
    currents = concept_values(ds, "113734")
    time_ms = pulses * width
    assert event.exposure_time_ms == float(time_ms)
    assert event.tube_current_ma == float(sum(currents) / len(currents))
    assert event.exposure_mas == pytest.approx(float(time_ms / 1000 * sum(currents) / len(currents)))
    assert event.derived == ["exposure_time_ms", "exposure_mas"]


def test_per_pulse_widths_are_summed_and_a_stated_time_is_kept():
    widths = ["5.0", "6.5", "7.0", "6.0"]
    ds = make_rdsr([acquisition_event(exposure_time=None, exposure=None, pulses=4, pulse_width=(widths, "ms"),
                                      tube_current=("400", "mA")),
                    fluoro_event(pulses=30, pulse_width=("8", "ms"))])
    derived, stated = extract(roundtrip(ds), CTX).events
    assert derived.exposure_time_ms == float(sum(concept_values(ds, "113793")[:4]))
    assert derived.exposure_mas == pytest.approx(derived.exposure_time_ms * 400 / 1000)
    assert derived.derived == ["exposure_time_ms", "exposure_mas"]
    assert (stated.exposure_time_ms, stated.derived) == (8000.0, None)  # the report states it: nothing derived


def test_irradiation_duration_is_the_time_when_no_pulse_is_described():
    ds = make_rdsr([fluoro_event(exposure_time=None, pulses=None, irradiation_duration=("12.5", "s"))])
    (event,) = extract(roundtrip(ds), CTX).events
    assert event.exposure_time_ms == float(concept_values(ds, "113742")[0] * 1000)
    assert event.derived == ["exposure_time_ms", "exposure_mas"]


# ---- biplane -------------------------------------------------------------------------------------------------------
def test_biplane_summary_keeps_each_planes_totals():
    plane_a = DoseTotals(dap_total=("0.00123", "Gy.m2"), fluoro_time=("240", "s"), frames=30, plane=PLANE_A)
    plane_b = DoseTotals(dap_total=("0.00077", "Gy.m2"), fluoro_time=("180", "s"), frames=22, plane=PLANE_B)
    ds = make_rdsr([fluoro_event(plane=PLANE_A), fluoro_event(plane=PLANE_B)], totals=[plane_a, plane_b])
    summary = extract(roundtrip(ds), CTX).summary
    dap_a, dap_b = concept_values(ds, "113722")
    time_a, time_b = concept_values(ds, "113730")
    assert summary.by_plane["A"].dap_total_gy_m2 == float(dap_a)
    assert summary.by_plane["B"].dap_total_gy_m2 == float(dap_b)
    assert (summary.by_plane["A"].fluoro_time_total_s, summary.by_plane["B"].fluoro_time_total_s) == (
        float(time_a), float(time_b))
    assert summary.dap_total_gy_m2 == pytest.approx(float(dap_a + dap_b))
    assert summary.radiographic_frames_total == 52 and summary.modality == "XA"
    single = extract(make_rdsr([fluoro_event()]), CTX).summary
    assert single.by_plane is None


# ---- CT and radiopharmaceutical reports ----------------------------------------------------------------------------
def radiopharmaceutical_report() -> Dataset:
    ds = make_rdsr([], totals=None, sop_class_uid="1.2.840.10008.5.1.4.1.1.88.68",
                   title=("113500", "DCM", "Radiopharmaceutical Radiation Dose Report"))
    ds.Modality = "SR"
    return ds


@pytest.mark.parametrize("build, reason", [
    (make_ct_dose_report, "CT dose report: not an X-ray room object"),
    (lambda: make_rdsr([], totals=None, procedure=CT_PROCEDURE), "CT dose report: not an X-ray room object"),
    (radiopharmaceutical_report, "radiopharmaceutical dose report: not an X-ray room object"),
])
def test_ct_and_nm_dose_reports_publish_nothing_and_say_why(build, reason, sink, caplog):
    extraction = extract(roundtrip(build()), CTX)
    assert extraction.payloads() == () and extraction.not_for_room == reason
    intake = DicomIntake(sink, TEST_SECRET)
    with caplog.at_level(logging.INFO, logger="agent.dicom.intake"):
        assert intake.handle(roundtrip(build()), lambda: b"", "CT1@127.0.0.1") == SUCCESS
    assert (intake.counters.not_for_room, intake.counters.no_exposure, intake.counters.events_stored) == (1, 0, 0)
    assert reason in caplog.text and "not an image or dose report" not in caplog.text


# ---- end to end: storescu -> agent -> broker ------------------------------------------------------------------------
@pytest.mark.integration
def test_a_fluoro_report_after_xa_images_arrives_as_xa_and_a_ct_report_is_acknowledged(tmp_path, broker, subscriber,
                                                                                      agent_factory):
    from tests.test_dicom_network import AGENT_AET, MODALITY_AET, STORESCU, events, save, storescu
    if STORESCU is None:
        pytest.fail("dcmtk's storescu is not installed; scripts/test.sh installs it (apt-get install dcmtk)")
    import tomllib

    from tests.realparts import wait_for

    agent = agent_factory(broker.port, dicom={"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET]})
    wait_for(lambda: "DICOM listener" in agent.log(), 15, "DICOM listener up")
    port = tomllib.loads(agent.config.read_text())["dicom"]["port"]
    xa = save(make_xa(frames=1), tmp_path / "out", "xa")
    report = save(make_rdsr([fluoro_event(exposure_time=None, pulses=60, pulse_width=("7", "ms"))]),
                  tmp_path / "out", "rdsr")
    ct = save(make_ct_dose_report(), tmp_path / "out", "ct")
    for path in (xa, report, ct):
        result = storescu(port, path)
        assert result.returncode == 0, result.stderr
    wait_for(lambda: len(events(subscriber)) >= 2 and events(subscriber, "/dose-summary"), 20, "events published")
    rdsr_events = [e for e in events(subscriber) if e["source"] == "rdsr"]
    assert [(e["modality"], e["exposure_time_ms"], e["derived"]) for e in rdsr_events] == [
        ("XA", 420.0, ["exposure_time_ms", "exposure_mas"])]
    wait_for(lambda: "CT dose report: not an X-ray room object" in agent.log(), 10, "CT report logged")
    time.sleep(0.5)
    assert len(events(subscriber)) == 2  # the XA image and the report's one event: nothing from the CT report
