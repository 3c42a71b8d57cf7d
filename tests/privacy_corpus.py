"""The privacy corpus: objects with the patient's identifiers typed into every free-text field extraction reads, in
image headers (as values and as local code meanings) and in dose reports, and the scan for any planted value.

Fields planted: ProtocolName, SeriesDescription, Performed Protocol Code meaning, BodyPartExamined, Anatomic Region
meaning, ViewPosition, View Code meaning, StationName (= the dose report's Device Observer Name), Manufacturer,
Manufacturer's Model Name, Device Serial Number; in the dose report: Acquisition Protocol text, Target Region and
Image View meanings. One object also carries a malformed Irradiation Event UID holding the patient ID, which pydicom
quotes in its warning.
"""

from __future__ import annotations

from pydicom import Dataset

from tests.dicom_factory import (
    DoseEvent, Patient, _set_raw, acquisition_event, fluoro_event, identifying_values, make_dx, make_rdsr,
)

PATIENT = Patient()
BAD_UID = "1.2.826.0.1.7Q4471150.Zebedee"  # a malformed UID holding the patient ID and name
# Values the object carries nowhere else but that a screen must still catch: the ID's parts, dates as typed.
EXTRA_PLANTED = ("7Q4471150", "88123", "17.03.1958", "Zebedee", "Quixotica", "Marguerite", "Technovska",
                 "Drumbleford")


def _local(meaning: str, value: str = "99L1") -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "99LOCAL", meaning
    return item


EQUIPMENT = {"station_name": "XR3 ZEBEDEE", "manufacturer": "ACME Zebedee", "model": "RadMaster ACC-88123-XZ",
             "device_serial": "SN-42 INS-5532-KLM"}


def corpus(when: str = "20240105101530") -> dict[str, Dataset]:
    """Name -> object, each planted, acquired at `when` (DICOM DT, local); the first two alert (deviation index > +3)
    so dose alerts carry their labels too."""
    at = {"acquisition_dt": when}
    typed = make_dx(patient=PATIENT, protocol="Thorax PA Zebedee 7Q4471150", body_part="CHEST MARGUERITE",
                    view="PA QUIXOTICA", deviation_index="3.5", **at, **EQUIPMENT)
    _set_raw(typed, "IrradiationEventUID", BAD_UID.encode())
    coded = make_dx(patient=PATIENT, protocol=None, body_part=None, view=None, deviation_index="3.8", **at,
                    extra={"AnatomicRegionSequence": [_local("Chest of Zebedee")],
                           "ViewCodeSequence": [_local("PA 17.03.1958")],
                           "PerformedProtocolCodeSequence": [_local("Thorax PID-7Q4471150")]}, **EQUIPMENT)
    series = make_dx(patient=PATIENT, protocol=None, **at, **EQUIPMENT,
                     extra={"SeriesDescription": "Knee Quixotica 1958-03-17 Technovska"})
    event = DoseEvent(protocol="Abdomen AP Zebedee ACC-88123-XZ", started=when,
                      target_region=("99T1", "99LOCAL", "Abdomen Marguerite"),
                      view=("99V1", "99LOCAL", "AP 7Q4471150 Drumbleford"))
    report = make_rdsr([event, acquisition_event(protocol="Pelvis 19580317", started=when),
                        fluoro_event(protocol="Fluoro Quixotica", started=when)], patient=PATIENT,
                       irradiation_start=when, irradiation_end=when, station_name="DR Zebedee",
                       manufacturer="ACME Zebedee", model="AngioMaster PID-7Q4471150",
                       device_serial="SN-42 ACC-88123-XZ")
    return {"typed": typed, "coded": coded, "series": series, "report": report}


def planted_values(objects) -> set[str]:
    """Every identifying value of the objects (planted patient data, UIDs) and the extra planted spellings."""
    values = set(EXTRA_PLANTED) | {BAD_UID}
    for ds in objects:
        values |= identifying_values(ds, PATIENT)
    return values


def leaks_in(text: str | bytes, values: set[str]) -> list[str]:
    """The planted values found in `text` (bytes are searched as UTF-8 and as the raw bytes), case-insensitively."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    folded = text.casefold()
    return sorted(value for value in values if value.casefold() in folded)
