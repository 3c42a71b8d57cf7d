"""What kind of unit and exam a dose report came from, and who the device is (PS3.16 TID 10001 / 10003 / 1002).

- `report_modality`: DX, RF, XA or MG for a projection X-Ray Radiation Dose SR, never "SR": from the SOP classes of
  the images the report references (IMAGE items, e.g. 113795 Acquired Image), the mammography procedure or content
  (Procedure reported 121058 = Mammography SCT 71651007 / SRT P5-40010; Average Glandular Dose 111631; Accumulated
  Average Glandular Dose 111637), the Acquisition Device Type (122142, CID 10032), fluoroscopy events or totals, else
  the modality the same sender's images came as, else DX (a projection radiography report with acquisitions only).
- `device_identity`: Device Observer Name / Manufacturer / Model / Serial Number (121013 / 121014 / 121015 / 121016,
  TID 1004) of the report's observer context, for headers that lack them.
- `not_for_room`: the reason a dose report records no X-ray room exposure (a CT or radiopharmaceutical report).
Codes are PS3.16 values as listed in pydicom's PS3.16 concept tables (pydicom.sr).
"""

from __future__ import annotations

from agent.dicom import image
from agent.dicom.rdsr import (ACCUMULATED_CONTAINER, ACQUISITION_PLANE, EVENT_CONTAINER, IRRADIATION_EVENT_TYPE,
                              IRRADIATION_TYPES, Code, Index, dcm)
from agent.dicom.srtree import Node

PROCEDURE_REPORTED = dcm("121058")
MAMMOGRAPHY = frozenset({("71651007", "SCT"), ("P5-40010", "SRT")})  # CID 10005
COMPUTED_TOMOGRAPHY = frozenset({("77477000", "SCT"), ("P5-08000", "SRT")})  # CID 10005
MAMMOGRAPHY_CONCEPTS = frozenset({dcm("111631"), dcm("111637")})
CT_CONTAINERS = frozenset({dcm("113811"), dcm("113819")})  # CT Accumulated Dose Data, CT Acquisition (TID 10011)
ACQUISITION_DEVICE_TYPE = dcm("122142")
DEVICE_TYPES = {dcm("113957"): "fluoro", dcm("113958"): "DX", dcm("113959"): "DX"}  # CID 10032
FLUORO_TOTALS = frozenset({dcm("113726"), dcm("113728"), dcm("113730")})  # fluoro DAP, Dose (RP), time totals
BIPLANE = frozenset({dcm("113620"), dcm("113621")})  # Plane A, Plane B
ROTATIONAL = dcm("113613")
RADIOPHARMACEUTICAL_SR = "1.2.840.10008.5.1.4.1.1.88.68"  # Radiopharmaceutical Radiation Dose SR Storage
RADIOPHARMACEUTICAL_TITLE = dcm("113500")
PROJECTION_MODALITIES = {"DX": "DX", "CR": "DX", "IO": "DX", "MG": "MG", "XA": "XA", "RF": "RF"}
DEVICE_OBSERVER = {"station_name": dcm("121013"), "manufacturer": dcm("121014"), "model": dcm("121015"),
                   "device_serial": dcm("121016")}
CT_REPORT = "CT dose report: not an X-ray room object"
NM_REPORT = "radiopharmaceutical dose report: not an X-ray room object"


def _codes(tree: Index, concept: Code) -> set[Code]:
    return {item.code for item in tree.get(concept, ()) if item.code}


def _referenced_modality(tree: Index) -> str | None:
    found = {PROJECTION_MODALITIES.get(image.IMAGE_SOP_CLASSES.get(uid, "")) for items in tree.values()
             for item in items for uid in item.sop_classes}
    found.discard(None)
    return found.pop() if len(found) == 1 else None  # images of two kinds: let the other signs decide


def _is_fluoro(tree: Index) -> bool:
    if any(IRRADIATION_TYPES.get(code) == "fluoroscopy" for code in _codes(tree, IRRADIATION_EVENT_TYPE)):
        return True
    return any(number > 0 for concept in FLUORO_TOTALS for item in tree.get(concept, ())
               for number, _unit in item.numbers)


def _fluoro_modality(tree: Index, sender: str | None) -> str:
    """XA or RF for a report with fluoroscopy: the sender's own fluoro modality when known; else XA for a biplane or
    rotational system (angiography), RF otherwise."""
    if sender in ("XA", "RF"):
        return sender
    rotational = ROTATIONAL in _codes(tree, IRRADIATION_EVENT_TYPE)
    return "XA" if _codes(tree, ACQUISITION_PLANE) & BIPLANE or rotational else "RF"


def report_modality(tree: Index, sender_modality: str | None = None) -> str:
    """DX, RF, XA or MG for the report's events, from the index of its whole content tree (rdsr.concept_index);
    see the module docstring for the order of evidence."""
    sender = PROJECTION_MODALITIES.get((sender_modality or "").upper())
    referenced = _referenced_modality(tree)
    if referenced in ("DX", "MG"):
        return referenced
    if _codes(tree, PROCEDURE_REPORTED) & MAMMOGRAPHY or any(tree.get(concept) for concept in MAMMOGRAPHY_CONCEPTS):
        return "MG"
    if referenced in ("XA", "RF"):
        return referenced
    device = next((DEVICE_TYPES[code] for code in _codes(tree, ACQUISITION_DEVICE_TYPE) if code in DEVICE_TYPES),
                  None)
    if device == "fluoro" or _is_fluoro(tree):
        return _fluoro_modality(tree, sender)
    if device == "DX":
        return "DX"
    return sender or "DX"


def device_identity(root: Node) -> dict[str, str]:
    """Device observer name, manufacturer, model and serial number from the report's direct children (TID 1004)."""
    found: dict[str, str] = {}
    for field, code in DEVICE_OBSERVER.items():
        text = next((item.text for item in root.children if item.concept == code and item.text), None)
        if text:
            found[field] = text
    return found


def not_for_room(sop_class: str | None, root: Node, tree: Index) -> str | None:
    """Why a dose report records no X-ray room exposure (CT or radiopharmaceutical report), or None. `tree` is the
    index of the whole content tree (rdsr.concept_index)."""
    if sop_class == RADIOPHARMACEUTICAL_SR or root.concept == RADIOPHARMACEUTICAL_TITLE:
        return NM_REPORT
    projection = tree.get(EVENT_CONTAINER) or tree.get(ACCUMULATED_CONTAINER)
    ct = _codes(tree, PROCEDURE_REPORTED) & COMPUTED_TOMOGRAPHY or any(tree.get(c) for c in CT_CONTAINERS)
    return CT_REPORT if ct and not projection else None


__all__ = ["report_modality", "device_identity", "not_for_room", "CT_REPORT", "NM_REPORT"]
