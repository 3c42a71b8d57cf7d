"""The privacy promise: no patient identifier, accession number or UID leaves the room in clear."""

import pytest
from pydicom import Dataset
from pydicom import uid as sop

from agent.dicom import extract
from agent.privacy.policy import TextPolicy
from agent.pseudonym import make_ref
from tests.dicom_factory import (
    Patient, acquisition_event, fluoro_event, identifying_values, make_context, make_cr, make_dx, make_dx_pair,
    make_mg, make_rdsr, make_rf, make_xa, roundtrip,
)

CTX = make_context()
PATIENT = Patient()


def leaks(ds: Dataset, ctx=CTX) -> list[str]:
    """Planted identifying values (and UIDs) found in the wire JSON of any payload extracted from `ds`."""
    payloads = extract(roundtrip(ds), ctx).payloads()
    assert payloads, "nothing extracted: the scan would prove nothing"
    wire = "\n".join(payload.to_json_bytes().decode() for payload in payloads)
    return sorted(value for value in identifying_values(ds, PATIENT) if value in wire)


OBJECTS = {
    "cr": lambda: make_cr(patient=PATIENT),
    "dx": lambda: make_dx(patient=PATIENT, private_tags=True),
    "dx-processing": lambda: make_dx_pair(patient=PATIENT)[0],
    "dx-without-event-uid": lambda: make_dx(patient=PATIENT, irradiation_event_uid=None),
    "dx-without-dates": lambda: make_dx(patient=PATIENT, irradiation_event_uid=None, acquisition_dt=None),
    "mg": lambda: make_mg(patient=PATIENT),
    "xa": lambda: make_xa(patient=PATIENT),
    "rf": lambda: make_rf(patient=PATIENT),
    "rdsr": lambda: make_rdsr([acquisition_event(), fluoro_event()], patient=PATIENT, private_tags=True),
    "rdsr-without-event-uids": lambda: make_rdsr([acquisition_event(uid=None), fluoro_event(uid=None, started=None)],
                                                 patient=PATIENT),
    "enhanced-sr": lambda: make_rdsr([acquisition_event()], patient=PATIENT, sop_class_uid=sop.EnhancedSRStorage),
}


@pytest.mark.parametrize("build", OBJECTS.values(), ids=OBJECTS.keys())
def test_no_identifier_in_any_payload(build):
    assert leaks(build()) == []


def test_the_scan_sees_every_planted_value():
    ds = make_dx(patient=PATIENT)
    planted = identifying_values(ds, PATIENT)
    for expected in (PATIENT.name, "Zebedee", PATIENT.patient_id, PATIENT.birth_date, PATIENT.accession,
                     PATIENT.institution_address, PATIENT.operator, PATIENT.comments, ds.StudyInstanceUID,
                     ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.IrradiationEventUID, ds.SOPClassUID):
        assert expected in planted


def test_the_scan_catches_a_leak():
    # A protocol name typed with the patient's name, published verbatim, must be reported: proves the scan can fail.
    verbatim = make_context(free_text=TextPolicy("verbatim"))
    assert PATIENT.name in leaks(make_dx(patient=PATIENT, protocol=PATIENT.name), verbatim)


def test_age_and_sex_can_be_switched_off():
    ctx = make_context(include_age_sex=False)
    payloads = extract(make_rdsr([acquisition_event()], patient=PATIENT), ctx).payloads()
    payloads += extract(make_dx(patient=PATIENT), ctx).payloads()
    assert {(p.patient_age_years, p.patient_sex) for p in payloads} == {(None, None)}


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # the malformed values are planted on purpose
@pytest.mark.parametrize("age, birth_date, years", [
    ("065Y", "19580317", 65), ("018M", "19580317", 1), ("003D", "19580317", 0), ("095Y", "19580317", 90),
    (None, "19580317", 65), (None, "19200101", 90), (None, "bogus", None), ("bogus", "", None),
])
def test_age_in_whole_years_capped_at_90(age, birth_date, years):
    patient = Patient(age=age, birth_date=birth_date)
    assert extract(make_dx(patient=patient), CTX).events[0].patient_age_years == years


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize("sex, expected", [("F", "F"), ("M", "M"), ("O", "O"), ("m", "M"), ("X", None), ("", None)])
def test_sex_is_m_f_o_or_null(sex, expected):
    assert extract(make_dx(patient=Patient(sex=sex)), CTX).events[0].patient_sex == expected


def test_study_ref_is_keyed_not_a_plain_hash():
    ds = make_dx(patient=PATIENT)
    event = extract(ds, CTX).events[0]
    other_site = extract(ds, make_context(secret=b"another-site-secret-0123456789")).events[0]
    assert event.study_ref == make_ref(CTX.secret, "study", ds.StudyInstanceUID)
    assert other_site.study_ref != event.study_ref and other_site.event_ref != event.event_ref
