"""The personal identifiers one DICOM object carries, which the free-text screen looks for in its labels. Pure.

Patient Identification Module (PS3.3 C.7.1.1 / C.2.2): Patient's Name (0010,0010), Patient ID (0010,0020), Other
Patient IDs (0010,1000, retired but still sent) and Other Patient IDs Sequence (0010,1002), Other Patient Names
(0010,1001), Patient's Birth Name (0010,1005), Patient's Mother's Birth Name (0010,1060), Patient's Birth Date
(0010,0030); Accession Number (0008,0050), also inside the Request Attributes Sequence (0040,0275) with the Requested
Procedure and Scheduled Procedure Step ids; the patient's address, telephone numbers, Responsible Person and Medical
Record Locator; the Study, Admission and Performed Procedure Step ids. The names of staff (Referring Physician,
Operators, Performing Physician) are personal data too and typed into the same labels.
"""

from __future__ import annotations

from pydicom import Dataset

from agent.dicom.attributes import read_items, read_text
from agent.privacy.screen import Identifiers

IDENTIFIER_KEYWORDS = ("PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
                       "PatientMotherBirthName", "AccessionNumber", "ReferringPhysicianName", "OperatorsName",
                       "PerformingPhysicianName",
                       # the visit's and the patient's other numbers and contacts (PS3.3 Patient, General Study,
                       # Patient Study, General Series modules; the section of each not re-checked here): a study or
                       # admission id is typed into labels like an accession number
                       "ResponsiblePerson", "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator",
                       "StudyID", "AdmissionID", "RequestedProcedureID", "PerformedProcedureStepID")
PROCEDURE_IDS = ("AccessionNumber", "RequestedProcedureID", "ScheduledProcedureStepID")
ITEM_KEYWORDS = {"OtherPatientIDsSequence": ("PatientID",), "RequestAttributesSequence": PROCEDURE_IDS}


# Identifiers are read whole, not at the labels' length cap: Other Patient IDs with a dozen values, or a name with its
# ideographic and phonetic groups, is longer than a label, and a value cut off would not be looked for. The bound
# only caps the work a malformed object can cause (a name or id past it is not looked for).
IDENTIFIER_MAX_CHARS = 1024  # 16 values of 64 characters (LO, PN component group: PS3.5 6.2)


def patient_identifiers(ds: Dataset) -> Identifiers:
    """The identifier components of `ds` (multi-valued names and ids give each value's components)."""
    values = [read_text(ds, keyword, IDENTIFIER_MAX_CHARS) for keyword in IDENTIFIER_KEYWORDS]
    for sequence, keywords in ITEM_KEYWORDS.items():
        values += [read_text(item, keyword, IDENTIFIER_MAX_CHARS) for item in read_items(ds, sequence)
                   for keyword in keywords]
    return Identifiers.of(values, [read_text(ds, "PatientBirthDate")])
