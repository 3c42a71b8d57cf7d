"""What the dose monitor needs to know of the patient, and is never published: age in months and days, weight, and the
keyed reference of the Patient ID. Pure.

Age and weight are read whatever `privacy` says about publishing them: banded reference and notification levels
(ICRP 135 paediatric bands) are evaluated on them, but they travel only from extraction to the dose monitor's
evaluation (the intake's derive hook), never into a payload, a log or the history file. The patient ref is the same
keyed hash as study_ref (agent.pseudonym.make_ref, domain "patient"), so it can be joined locally across studies and
recomputed from a Patient ID by `xray-agent lookup`, but not reversed without the site secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from pydicom import Dataset

from agent.dicom import units
from agent.dicom.attributes import read_number, read_text
from agent.dose.bands import PatientAge
from agent.pseudonym import make_ref

AGE_STRING = re.compile(r"(\d{3})([DWMY])")  # PS3.5 Table 6.2-1, VR AS: nnnD, nnnW, nnnM, nnnY
DAYS_PER_MONTH = 30.4375  # mean Gregorian month: only to give an age stated in days or weeks whole months
MAX_WEIGHT_KG = 500.0


@dataclass(frozen=True)
class PatientFacts:
    """Private, per object: never serialised."""

    patient_ref: str | None = None
    age: PatientAge | None = None
    weight_kg: float | None = None


def patient_ref(secret: bytes, ds: Dataset) -> str | None:
    """Keyed hash of Patient ID (0010,0020), qualified by its Issuer (0010,0021) when present; None without an ID."""
    patient_id = read_text(ds, "PatientID")
    if not patient_id:
        return None
    return make_ref(secret, "patient", patient_id_key(patient_id, read_text(ds, "IssuerOfPatientID")))


def patient_id_key(patient_id: str, issuer: str | None = None) -> str:
    """The text hashed for a patient: the ID, and its issuer when the object names one."""
    return f"{patient_id.strip()}\x1f{issuer.strip()}" if issuer and issuer.strip() else patient_id.strip()


def age_from_string(text: str | None) -> PatientAge | None:
    """Patient Age (AS): days and weeks give days and the completed months they make; months and years give months."""
    match = AGE_STRING.fullmatch((text or "").strip().upper())
    if not match:
        return None
    number, unit = int(match[1]), match[2]
    if unit in "DW":
        days = number * (7 if unit == "W" else 1)
        return PatientAge(months=int(days // DAYS_PER_MONTH), days=days)
    return PatientAge(months=number * (12 if unit == "Y" else 1))


def age_from_dates(birth: date, on: date) -> PatientAge | None:
    """Completed calendar months and exact days from birth to the study date; None if `on` is before birth."""
    days = (on - birth).days
    if days < 0:
        return None
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    return PatientAge(months=max(0, months), days=days)


def patient_age(ds: Dataset) -> PatientAge | None:
    """Patient Age (0010,1010), the age at the study, as extraction publishes it; refined to exact months and days
    by birth date vs study (else acquisition) date when those agree with it (same years, or same months for an age
    in months); the dates alone when there is no Patient Age. An age in days or weeks is already exact."""
    text = read_text(ds, "PatientAge")
    stated = age_from_string(text)
    birth = units.parse_date(read_text(ds, "PatientBirthDate"))
    on = units.parse_date(read_text(ds, "StudyDate")) or units.parse_date(read_text(ds, "AcquisitionDate"))
    dated = age_from_dates(birth, on) if birth and on else None
    if stated is None or dated is None or stated.days is not None:
        return stated or dated
    in_years = (text or "").strip().upper().endswith("Y")
    agree = dated.months // 12 == stated.months // 12 if in_years else dated.months == stated.months
    return dated if agree else stated


def patient_weight_kg(ds: Dataset) -> float | None:
    """Patient's Weight (0010,1030) in kg; 0 (a common placeholder) and implausible values are unknown."""
    value = read_number(ds, "PatientWeight")
    if value is None:
        return None
    weight = float(value)
    return weight if 0 < weight <= MAX_WEIGHT_KG else None


def patient_facts(ds: Dataset, secret: bytes) -> PatientFacts:
    return PatientFacts(patient_ref=patient_ref(secret, ds), age=patient_age(ds), weight_kg=patient_weight_kg(ds))
