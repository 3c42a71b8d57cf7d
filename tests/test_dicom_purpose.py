"""`purpose`: clinical or qc (flat-field/phantom objects, "not a patient" names, an open QC session), and dose
monitoring counting only clinical exposures; patient weight and size, published with age and sex only."""

from __future__ import annotations

import pytest

from agent.config import DicomConfig
from agent.dicom import extract
from agent.dicom.intake import DicomIntake
from agent.dicom.statuses import SUCCESS
from agent.dose.monitor import DoseMonitor
from agent.dose.rules import DoseRules, DrlRule
from tests.dicom_factory import (
    TEST_SECRET, Patient, acquisition_event, make_context, make_dx, make_mg, make_rdsr, roundtrip,
)
from tests.qc_fixtures import make_qc  # noqa: F401 - fixture

CTX = make_context()


def purpose_of(ds, ctx=CTX) -> str:
    (event,) = extract(roundtrip(ds), ctx).events
    return event.purpose


def test_a_patient_exposure_is_clinical():
    assert purpose_of(make_dx()) == "clinical"


@pytest.mark.parametrize("case, ds", [
    ("flat-field image flagged Quality Control Image", make_dx(protocol="FLAT FIELD", patient=Patient(
        name="Service^Engineer", patient_id="SVC-1"), extra={"QualityControlImage": "YES"})),
    ("phantom view on a mammography unit", make_mg(protocol="ACR Phantom", patient=Patient(name="QC^PHANTOM"))),
    ("QC patient id", make_dx(patient=Patient(patient_id="QC_DAILY_01"))),
    ("constancy study description", make_dx(extra={"StudyDescription": "Weekly constancy check"})),
    ("flat-field series, no flag", make_dx(protocol="Detector Flat-Field Calibration")),
])
def test_qc_objects_are_qc(case, ds):
    assert purpose_of(ds) == "qc", case


def test_words_that_merely_contain_qc_are_not_qc():
    assert purpose_of(make_dx(patient=Patient(name="Marquez^Aqcuin"), protocol="Thorax PA")) == "clinical"


def test_configured_patterns_replace_the_defaults():
    ctx = make_context(not_a_patient=(r"^TESTPAT",))
    assert purpose_of(make_dx(patient=Patient(patient_id="TESTPAT-07")), ctx) == "qc"
    assert purpose_of(make_dx(protocol="FLAT FIELD"), ctx) == "clinical"  # the defaults are replaced, not added
    with pytest.raises(ValueError, match="not_a_patient"):
        DicomConfig(not_a_patient=["(unclosed"])


def test_a_dose_report_event_with_a_qc_protocol_is_qc_and_the_report_is_qc_only_if_all_are():
    mixed = extract(make_rdsr([acquisition_event(protocol="Flat field calibration"), acquisition_event()]), CTX)
    assert [event.purpose for event in mixed.events] == ["qc", "clinical"] and mixed.summary.purpose == "clinical"
    qc_only = extract(make_rdsr([acquisition_event(protocol="Phantom 80 kV")]), CTX)
    assert qc_only.summary.purpose == "qc"


def test_exposures_received_while_a_qc_session_is_open_are_qc(make_qc, sink):
    qc = make_qc()
    intake = DicomIntake(sink, TEST_SECRET)
    intake.qc_session_open = qc.session_open
    seen = []
    intake.observers.append(seen.extend)
    assert intake.handle(make_dx(), lambda: b"", "DR1@127.0.0.1") == SUCCESS
    ref = qc.open_session("reproducibility", ["kvp-1"], "AB")["ref"]
    assert intake.handle(make_dx(), lambda: b"", "DR1@127.0.0.1") == SUCCESS
    qc.discard(ref)
    assert intake.handle(make_dx(), lambda: b"", "DR1@127.0.0.1") == SUCCESS
    assert [event.purpose for event in seen] == ["clinical", "qc", "clinical"]


def test_dose_monitoring_counts_only_clinical_exposures(tmp_path, sink):
    rules = DoseRules(drl=[DrlRule(id="chest-pa", body_part="CHEST", view="PA", dap_gy_cm2=0.1)])
    monitor = DoseMonitor(rules, tmp_path / "dose.db", sink)
    monitor.start()
    try:
        study = "1.2.826.0.1.3680043.8.498.77"
        high = dict(dap_dgy_cm2="2.5", study_uid=study)
        qc = list(extract(roundtrip(make_dx(protocol="FLAT FIELD", acquisition_dt="20240105101500", **high)),
                          CTX).payloads())
        out = monitor.derive(qc)
        assert out == qc  # no alert, no repeat mark for a QC exposure
        clinical = list(extract(roundtrip(make_dx(acquisition_dt="20240105101600", **high)), CTX).payloads())
        out = monitor.derive(clinical)
        assert [p.KIND for p in out] == ["exposure", "dose-alert"]
        assert out[0].repeat_of is None  # the QC exposure before it is not an earlier attempt
    finally:
        monitor.stop()


# ---- patient weight and size -------------------------------------------------------------------------------------
def test_weight_and_size_as_sent_and_only_with_age_and_sex():
    ds = make_dx(extra={"PatientWeight": "72.5", "PatientSize": "1.78"})
    (event,) = extract(roundtrip(ds), CTX).events
    assert (event.patient_weight_kg, event.patient_size_m) == (float(ds.PatientWeight), float(ds.PatientSize))
    (hidden,) = extract(roundtrip(ds), make_context(include_age_sex=False)).events
    assert (hidden.patient_weight_kg, hidden.patient_size_m, hidden.patient_age_years) == (None, None, None)
    summary = extract(make_rdsr([acquisition_event()]), CTX).summary
    assert summary.patient_weight_kg is None


@pytest.mark.parametrize("weight, size", [("0", "0"), ("0", "178"), ("650", "3.5")])
def test_placeholder_and_impossible_weights_and_sizes_are_unknown(weight, size):
    (event,) = extract(roundtrip(make_dx(extra={"PatientWeight": weight, "PatientSize": size})), CTX).events
    assert (event.patient_weight_kg, event.patient_size_m) == (None, None)


def test_not_a_patient_patterns_match_in_linear_time_and_lookaround_is_refused():
    """The texts come from the modality: a pattern that backtracks catastrophically in Python's engine must not stall
    the intake (RE2), and a pattern RE2 cannot run is a config error naming the key."""
    import time

    from agent.config import DicomConfig
    from agent.dicom import purpose

    slow = ("(a+)+$",)
    started = time.perf_counter()
    assert not purpose.matches("a" * 5000 + "!", slow)
    assert time.perf_counter() - started < 1.0
    with pytest.raises(ValueError, match="RE2"):
        DicomConfig(not_a_patient=["(?<![a-z])phantom"])
    assert purpose.matches("Chest PHANTOM 5", purpose.DEFAULT_NOT_A_PATIENT)
    assert not purpose.matches("Elephantom", purpose.DEFAULT_NOT_A_PATIENT[:1])
