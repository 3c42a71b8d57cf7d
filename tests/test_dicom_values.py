"""Values that cannot be read are never a silent null, a placeholder is never a measurement: decimal commas, zeros
written for "not measured", date-only date-times, and the `warnings` list, its log line and its counter."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from pydicom.uid import generate_uid

from agent.dicom.extract import extract
from agent.dicom.intake import DicomIntake, IntakeCounters
from agent.dicom.statuses import SUCCESS
from agent.web.metrics import AgentCollector
from tests import dicom_factory as factory

CTX = factory.make_context()


def event(ds):
    return extract(factory.roundtrip(ds), CTX).events[0]


def warnings_of(e) -> dict[str, dict]:
    return {w.field: w.model_dump(exclude_none=True) for w in e.warnings or ()}


def test_decimal_commas_are_decimals_in_image_headers_and_dose_reports():
    dx = event(factory.make_dx(exposure_uas=None, raw={"KVP": b"70,5", "ImageAndFluoroscopyAreaDoseProduct": b"0,0923",
                                                       "Exposure": b"2,5 "}))
    assert (dx.kvp, dx.dap_gy_m2, dx.exposure_mas) == (70.5, 9.23e-07, 2.5) and dx.warnings == []
    report = factory.make_rdsr([factory.acquisition_event(kvp=("70.5", "kV"), dap=("0.000123", "Gy.m2"))])
    commas = {"70.5": b"70,5", "0.000123": b"0,000123"}

    def plant(dataset, element):  # pydicom will not write a decimal comma: plant the vendor's bytes
        if element.keyword == "NumericValue" and str(element.value) in commas:
            factory._set_raw(dataset, "NumericValue", commas[str(element.value)])
    for measured in _measured_value_items(report):
        for element in list(measured):
            plant(measured, element)
    assert b"70,5" in factory.to_bytes(report) and b"0,000123" in factory.to_bytes(report)
    rdsr = extract(factory.roundtrip(report), CTX).events[0]
    assert (rdsr.kvp, rdsr.dap_gy_m2) == (70.5, 0.000123) and rdsr.warnings == []


def _measured_value_items(ds):
    for item in ds.get("ContentSequence", []):
        yield from item.get("MeasuredValueSequence", [])
        yield from _measured_value_items(item)


def test_placeholder_zeros_on_an_image_are_null_and_flagged():
    """CR digitisers and rooms without a DAP meter write 0: not a measurement."""
    e = event(factory.make_dx(kvp="0", exposure_uas=None, exposure_mas="0", exposure_time_us=None,
                              exposure_time_ms="0", tube_current_ua=None, tube_current_ma="0", dap_dgy_cm2="0",
                              entrance_dose_mgy="0", sid_mm="0", exposure_index="0", deviation_index="0"))
    fields = ("kvp", "exposure_mas", "exposure_time_ms", "tube_current_ma", "dap_gy_m2", "entrance_dose_mgy",
              "sid_mm", "exposure_index")
    assert all(getattr(e, f) is None for f in fields)
    assert e.deviation_index == 0  # DI 0 is a measurement: EI equal to its target
    assert {f: w["reason"] for f, w in warnings_of(e).items()} == dict.fromkeys(fields, "placeholder zero")


def test_a_precise_zero_falls_back_to_its_rounded_twin():
    e = event(factory.make_dx(exposure_uas="0", exposure_mas="3"))
    assert e.exposure_mas == 3 and e.warnings == []


def test_placeholder_zeros_in_a_dose_report_technique_are_null_and_flagged():
    e = extract(factory.make_rdsr([factory.acquisition_event(kvp=("0", "kV"), exposure=("0", "uA.s"))]),
                CTX).events[0]
    assert (e.kvp, e.exposure_mas) == (None, None) and e.dap_gy_m2 == 0.000123
    assert {w.field: w.reason for w in e.warnings} == {"kvp": "placeholder zero", "exposure_mas": "placeholder zero"}


def test_unreadable_values_are_flagged_and_only_numbers_are_quoted():
    patient = factory.Patient()
    e = event(factory.make_dx(raw={"ImageAndFluoroscopyAreaDoseProduct": b"9.5x",
                                   "KVP": patient.patient_id.encode()[:16]}))
    assert e.dap_gy_m2 is None and e.kvp is None
    assert warnings_of(e)["dap_gy_m2"] == {"field": "dap_gy_m2", "reason": "unparseable", "raw": "9.5x"}
    assert warnings_of(e)["kvp"] == {"field": "kvp", "reason": "unparseable"}  # could carry patient data: not quoted
    assert patient.patient_id[:8] not in e.model_dump_json()


def test_unknown_unit_in_a_dose_report_is_flagged():
    e = extract(factory.make_rdsr([factory.acquisition_event(dap=("1.5", "furlongs"))]), CTX).events[0]
    assert e.dap_gy_m2 is None and warnings_of(e)["dap_gy_m2"]["reason"] == "unknown unit"


def test_a_date_only_acquisition_datetime_does_not_hide_date_and_time():
    ds = factory.make_dx(acquisition_dt="20240105", datetime_style="combined", content_dt=None,
                         extra={"AcquisitionDate": "20240105", "AcquisitionTime": "101530"})
    assert event(ds).acquired_at.isoformat() == "2024-01-05T10:15:30+01:00"
    only_date = factory.make_dx(acquisition_dt="20240105", datetime_style="combined", content_dt=None)
    assert event(only_date).acquired_at is None


def test_date_only_datetime_falls_back_to_content_time_too():
    ds = factory.make_dx(acquisition_dt="20240105", datetime_style="combined", content_dt="20240105101532")
    assert event(ds).acquired_at.isoformat() == "2024-01-05T10:15:32+01:00"


def test_identity_without_uid_uses_the_full_time_behind_a_date_only_datetime():
    study = generate_uid()
    a, b = (factory.make_dx(irradiation_event_uid=None, study_uid=study, acquisition_dt="20240105",
                            datetime_style="combined", extra={"AcquisitionDate": "20240105", "AcquisitionTime": t},
                            content_dt=None) for t in ("101530", "102030"))
    assert event(a).msg_id != event(b).msg_id


def test_intake_logs_one_line_per_object_counts_and_metrics_show_it(sink, caplog):
    intake = DicomIntake(sink, factory.TEST_SECRET)
    ds = factory.make_dx(kvp="0", dap_dgy_cm2="0", raw={"EntranceDoseInmGy": b"1.2.3"})
    with caplog.at_level(logging.WARNING, logger="agent.dicom.intake"):
        assert intake.handle(factory.roundtrip(ds), lambda: b"", "DR1@127.0.0.1") == SUCCESS
    lines = [r.getMessage() for r in caplog.records if "not usable" in r.getMessage()]
    assert len(lines) == 1 and "dap_gy_m2 (placeholder zero)" in lines[0] and "entrance_dose_mgy (unparseable)" in lines[0]
    assert intake.counters.value_warnings == 3
    collector = AgentCollector(SimpleNamespace(intake=intake))
    samples = {m.name: m.samples[0].value for m in collector._intake()}
    assert samples["xray_dicom_value_warnings"] == 3 and samples["xray_dicom_incomplete"] == 0


@pytest.mark.parametrize("field", ["incomplete", "value_warnings", "identity_corrections", "identity_conflicts"])
def test_intake_counters_start_at_zero(field):
    assert getattr(IntakeCounters(), field) == 0
