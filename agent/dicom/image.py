"""Exposure values from image headers (CR, DX, MG, IO, XA, RF; single- and multi-frame). Pure functions of a pydicom
Dataset; the generic attribute readers live in attributes.py.

`image_exposure` returns the domain values of the one exposure an image records; extract.py adds the context, the
pseudonymous refs and the envelope. Identifiers (UIDs) are returned in clear only inside `identity`, which the caller
hashes and never publishes.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from pydicom import Dataset
from pydicom import uid as sop
from pydicom.sequence import Sequence

from agent.dicom import materials, units
from agent.dicom.attributes import element_value, first_code_meaning, read_items, read_number, read_text

IMAGE_SOP_CLASSES = {  # SOP Class UID -> modality it records
    sop.ComputedRadiographyImageStorage: "CR",
    sop.DigitalXRayImageStorageForPresentation: "DX",
    sop.DigitalXRayImageStorageForProcessing: "DX",
    sop.DigitalMammographyXRayImageStorageForPresentation: "MG",
    sop.DigitalMammographyXRayImageStorageForProcessing: "MG",
    sop.BreastProjectionXRayImageStorageForPresentation: "MG",
    sop.BreastProjectionXRayImageStorageForProcessing: "MG",
    sop.DigitalIntraOralXRayImageStorageForPresentation: "IO",
    sop.DigitalIntraOralXRayImageStorageForProcessing: "IO",
    sop.XRayAngiographicImageStorage: "XA",
    sop.EnhancedXAImageStorage: "XA",
    sop.XRayRadiofluoroscopicImageStorage: "RF",
    sop.EnhancedXRFImageStorage: "RF",
}
IMAGE_MODALITIES = frozenset(IMAGE_SOP_CLASSES.values())  # dispatch when the SOP Class UID is missing
FLUORO_MODALITIES = frozenset({"XA", "RF"})
RADIATION_SETTING_TYPES = {"SC": "fluoroscopy", "GR": "acquisition"}  # (0018,1155): low-dose fluoro vs acquisition

Converter = Callable[[Decimal], float | None]
# field -> (keyword, converter) candidates, most precise first: IS mAs is often rounded (1040 µAs sent as Exposure 1).
TECHNIQUE_SOURCES: dict[str, tuple[tuple[str, Converter], ...]] = {
    "kvp": (("KVP", units.magnitude),),
    "tube_current_ma": (("XRayTubeCurrentInuA", units.ua_to_ma), ("XRayTubeCurrentInmA", units.magnitude),
                        ("XRayTubeCurrent", units.magnitude)),
    "exposure_time_ms": (("ExposureTimeInuS", units.us_to_ms), ("ExposureTimeInms", units.magnitude),
                         ("ExposureTime", units.magnitude)),
    "exposure_mas": (("ExposureInuAs", units.uas_to_mas), ("ExposureInmAs", units.magnitude),
                     ("Exposure", units.magnitude)),
    "dap_gy_m2": (("ImageAndFluoroscopyAreaDoseProduct", units.dap_dgy_cm2_to_gy_m2),),
    "entrance_dose_mgy": (("EntranceDoseInmGy", units.magnitude), ("EntranceDose", units.dgy_to_mgy)),
    "exposure_index": (("ExposureIndex", units.magnitude),),
    "target_exposure_index": (("TargetExposureIndex", units.magnitude),),
    "deviation_index": (("DeviationIndex", units.signed),),
    "sid_mm": (("DistanceSourceToDetector", units.sid_to_mm),),
    # Mammography (PS3.3 C.8.11.7 Mammography Image, C.8.7.8 X-Ray Acquisition Dose, C.8.7.10 X-Ray Filtration):
    "average_glandular_dose_mgy": (("OrganDose", units.dgy_to_mgy),),  # (0040,0316) Organ Dose, dGy
    "compression_thickness_mm": (("BodyPartThickness", units.magnitude),),  # (0018,11A0), mm
    "compression_force_n": (("CompressionForce", units.magnitude),),  # (0018,11A2), N
    "hvl_mm_al": (("HalfValueLayer", units.magnitude),),  # (0040,0314), mm of aluminium
}
# (0040,8303) Entrance Dose Derivation: IAK = incident air kerma (the only value mapped; the rest of the term list
# could not be checked here). Without it, Entrance Dose is "at the surface of the patient" (PS3.3 C.8.7.8).
ENTRANCE_DOSE_DERIVATIONS = {"IAK": "incident_air_kerma"}


def _frame_groups(ds: Dataset) -> list[Dataset]:
    """Items of the shared functional groups' macros, where enhanced multi-frame objects may keep technique values."""
    groups = []
    for holder in read_items(ds, "SharedFunctionalGroupsSequence")[:1]:
        for tag in list(holder.keys()):
            value = element_value(holder, tag)
            if isinstance(value, Sequence):
                groups.extend(item for item in value if isinstance(item, Dataset))
    return groups


def technique_number(ds: Dataset, keyword: str) -> Decimal | None:
    """A technique value from the top level, else from the shared functional groups (enhanced multi-frame)."""
    value = read_number(ds, keyword)
    if value is not None:
        return value
    for group in _frame_groups(ds):
        value = read_number(group, keyword)
        if value is not None:
            return value
    return None


def technique(ds: Dataset) -> dict[str, float | None]:
    """The technique and dose fields of one image, each from its most precise tag present, in canonical units."""
    values: dict[str, float | None] = {}
    for field, candidates in TECHNIQUE_SOURCES.items():
        values[field] = None
        for keyword, convert in candidates:
            number = technique_number(ds, keyword)
            if number is not None:
                values[field] = convert(number)
                break
    if values["deviation_index"] is None:  # IEC 62494-1: DI follows from EI and EI_T when the device omits it
        values["deviation_index"] = units.deviation_index(values["exposure_index"], values["target_exposure_index"])
    return values


def acquisition_datetime(ds: Dataset) -> str | None:
    """The acquisition moment as a DICOM DT string: AcquisitionDateTime, else acquisition, else content date+time."""
    return (read_text(ds, "AcquisitionDateTime")
            or units.combine_date_time(read_text(ds, "AcquisitionDate"), read_text(ds, "AcquisitionTime"))
            or units.combine_date_time(read_text(ds, "ContentDate"), read_text(ds, "ContentTime")))


def irradiation_type(ds: Dataset, modality: str | None) -> str | None:
    """"acquisition" for radiographs; XA/RF by Radiation Setting (SC = fluoroscopy, GR = acquisition)."""
    if modality in FLUORO_MODALITIES:
        return RADIATION_SETTING_TYPES.get(read_text(ds, "RadiationSetting") or "")
    return "acquisition" if modality in IMAGE_MODALITIES else None


def exposure_identity(ds: Dataset) -> str | None:
    """What makes this exposure unique, shared by its For-Processing and For-Presentation images (hashed by caller).

    1. Irradiation Event UID (0008,3010), when the vendor sets it (the same UID an RDSR event carries).
    2. Else study UID + acquisition date/time (to the second) + acquisition number + view + laterality: both images
       of one exposure keep the acquisition attributes, while content date/time and series/SOP UIDs differ.
    3. Else the SOP Instance UID: no dedupe across the pair rather than a risk of merging two exposures.
    """
    event_uid = read_text(ds, "IrradiationEventUID")
    if event_uid:
        return event_uid
    study_uid = read_text(ds, "StudyInstanceUID")
    acquired = (read_text(ds, "AcquisitionDateTime")
                or units.combine_date_time(read_text(ds, "AcquisitionDate"), read_text(ds, "AcquisitionTime")))
    if study_uid and acquired and len(acquired) >= 14:  # YYYYMMDDHHMMSS: to the second at least
        parts = [study_uid, acquired, read_text(ds, "AcquisitionNumber"), read_text(ds, "ViewPosition"),
                 read_text(ds, "ImageLaterality") or read_text(ds, "Laterality")]
        return "acquisition\x1f" + "\x1f".join(part or "" for part in parts)
    sop_uid = read_text(ds, "SOPInstanceUID")
    return f"sop\x1f{sop_uid}" if sop_uid else None


def entrance_dose_quantity(ds: Dataset, entrance_dose_mgy: float | None) -> str | None:
    """Which quantity Entrance Dose is: by Entrance Dose Derivation when sent, else entrance surface dose."""
    if entrance_dose_mgy is None:
        return None
    return ENTRANCE_DOSE_DERIVATIONS.get(read_text(ds, "EntranceDoseDerivation") or "", "entrance_surface_dose")


def mammography_labels(ds: Dataset) -> dict[str, str | None]:
    """Anode target and filter materials (defined terms, upper case) and laterality (L/R/B) of an image."""
    return {
        "anode_target_material": materials.material_term(read_text(ds, "AnodeTargetMaterial")),
        "filter_material": materials.material_term(read_text(ds, "FilterMaterial")),
        "laterality": (materials.header_laterality(read_text(ds, "ImageLaterality"))
                       or materials.header_laterality(read_text(ds, "Laterality"))),
    }


def image_exposure(ds: Dataset, modality: str | None) -> dict[str, object]:
    """The exposure one image records: technique, labels, irradiation type, acquisition DT string and identity."""
    values = technique(ds)
    if modality != "MG":  # Organ Dose of a radiograph is not a glandular dose; Body Part Thickness is not compression
        values.update(average_glandular_dose_mgy=None, compression_thickness_mm=None, compression_force_n=None)
    return {
        **values,
        **mammography_labels(ds),
        "entrance_dose_quantity": entrance_dose_quantity(ds, values["entrance_dose_mgy"]),
        "body_part": read_text(ds, "BodyPartExamined") or first_code_meaning(ds, "AnatomicRegionSequence"),
        "view": read_text(ds, "ViewPosition") or first_code_meaning(ds, "ViewCodeSequence"),
        "protocol": (read_text(ds, "ProtocolName") or read_text(ds, "SeriesDescription")
                     or first_code_meaning(ds, "PerformedProtocolCodeSequence")),
        "irradiation_type": irradiation_type(ds, modality),
        "acquired_dt": acquisition_datetime(ds),
        "identity": exposure_identity(ds),
    }
