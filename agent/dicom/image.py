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
from agent.dicom.attributes import (
    element_value, first_code_meaning, read_items, read_number, read_text, unreadable_number, value_warning,
)

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


# A zero in these fields is a placeholder, not a measurement: no exposure happens at 0 kV, 0 mAs, 0 ms, 0 mA or at
# 0 mm, and a detector hit by X-rays has an EI above 0. CR digitisers and rooms without a DAP meter write "0" for the
# DAP and entrance dose they do not measure. Only the deviation index may be 0 (EI equal to its target).
PLACEHOLDER_ZERO_FIELDS = frozenset({"kvp", "tube_current_ma", "exposure_time_ms", "exposure_mas", "dap_gy_m2",
                                     "entrance_dose_mgy", "dose_rp_gy", "exposure_index", "target_exposure_index",
                                     "sid_mm"})


def _technique_holders(ds: Dataset) -> list[Dataset]:
    """The top level, then the shared functional groups' macros (where enhanced multi-frame keeps technique)."""
    return [ds, *_frame_groups(ds)]


def technique_number(ds: Dataset, keyword: str) -> Decimal | None:
    """A technique value from the top level, else from the shared functional groups (enhanced multi-frame)."""
    for holder in _technique_holders(ds):
        value = read_number(holder, keyword)
        if value is not None:
            return value
    return None


def technique(ds: Dataset, warnings: list[dict] | None = None) -> dict[str, float | None]:
    """The technique and dose fields of one image, each from its most precise tag present, in canonical units.

    A value present but not usable gives null and, when `warnings` is given, an entry there: "unparseable" (no
    number in the text), "out of range" (negative, non-finite), "placeholder zero" (PLACEHOLDER_ZERO_FIELDS)."""
    values: dict[str, float | None] = {}
    notes = warnings if warnings is not None else []
    holders = _technique_holders(ds)
    for field, candidates in TECHNIQUE_SOURCES.items():
        values[field] = None
        problem = None
        for keyword, convert in candidates:
            number = next((n for h in holders if (n := read_number(h, keyword)) is not None), None)
            if number is None:
                text = next((t for h in holders if (t := unreadable_number(h, keyword))), None)
                problem = problem or (("unparseable", text) if text else None)
                continue
            if number.is_zero() and field in PLACEHOLDER_ZERO_FIELDS:
                problem = problem or ("placeholder zero", None)
                continue  # a more precise tag may hold "0" while its rounded twin holds the value, or both are 0
            converted = convert(number)
            if converted is None:
                problem = problem or ("out of range", str(number))
                continue
            values[field], problem = converted, None
            break
        if problem is not None:
            notes.append(value_warning(field, problem[0], problem[1]))
    if values["deviation_index"] is None:  # IEC 62494-1: DI follows from EI and EI_T when the device omits it
        values["deviation_index"] = units.deviation_index(values["exposure_index"], values["target_exposure_index"])
    return values


def acquisition_datetime(ds: Dataset) -> str | None:
    """The acquisition moment as a DICOM DT string: AcquisitionDateTime, else acquisition, else content date+time;
    the first that holds a time of day wins (units.most_precise_dt: a date-only DT does not hide a full date+time)."""
    combined = read_text(ds, "AcquisitionDateTime")
    if units.has_time(combined):
        return combined  # read lazily: the pairs are read only when needed (a hundred objects a second per room)
    acquisition = units.combine_date_time(read_text(ds, "AcquisitionDate"), read_text(ds, "AcquisitionTime"))
    if units.has_time(acquisition):
        return acquisition
    return units.most_precise_dt(
        combined, acquisition, units.combine_date_time(read_text(ds, "ContentDate"), read_text(ds, "ContentTime")))


def irradiation_type(ds: Dataset, modality: str | None) -> str | None:
    """"acquisition" for radiographs; XA/RF by Radiation Setting (SC = fluoroscopy, GR = acquisition)."""
    if modality in FLUORO_MODALITIES:
        return RADIATION_SETTING_TYPES.get(read_text(ds, "RadiationSetting") or "")
    return "acquisition" if modality in IMAGE_MODALITIES else None


def exposure_identity(ds: Dataset) -> str | None:
    """The identity key of the exposure this image records (hashed by the caller), shared by its For-Processing and
    For-Presentation images. Only half of "already known": extract.py adds the fingerprint of the recorded content,
    so two images with one key but different content (a repeated UID) are never the same exposure.

    1. Irradiation Event UID (0008,3010), when the vendor sets it (the same UID an RDSR event carries).
    2. Else study UID + acquisition date/time (to the second) + acquisition number + instance number + view +
       laterality: both images of one exposure keep the acquisition attributes, while content date/time and
       series/SOP UIDs differ; the instance number separates the images of a stitched series taken in one second.
    3. Else the SOP Instance UID: no dedupe across the pair rather than a risk of merging two exposures.
    """
    event_uid = read_text(ds, "IrradiationEventUID")
    if event_uid:
        return event_uid
    study_uid = read_text(ds, "StudyInstanceUID")
    combined = read_text(ds, "AcquisitionDateTime")
    acquired = combined if units.has_time(combined) else units.most_precise_dt(
        combined, units.combine_date_time(read_text(ds, "AcquisitionDate"), read_text(ds, "AcquisitionTime")))
    if study_uid and acquired and len(acquired) >= 14:  # YYYYMMDDHHMMSS: to the second at least
        parts = [study_uid, acquired[:14], read_text(ds, "AcquisitionNumber"), read_text(ds, "InstanceNumber"),
                 read_text(ds, "ViewPosition"), read_text(ds, "ImageLaterality") or read_text(ds, "Laterality")]
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


MAMMOGRAPHY_ONLY = frozenset({"average_glandular_dose_mgy", "compression_thickness_mm", "compression_force_n"})


def image_exposure(ds: Dataset, modality: str | None) -> dict[str, object]:
    """The exposure one image records: technique, mammography labels, labels, irradiation type, acquisition DT string,
    identity key, and the `warnings` of values present but unusable."""
    warnings: list[dict] = []
    values = technique(ds, warnings)
    if modality != "MG":  # Organ Dose of a radiograph is not a glandular dose; Body Part Thickness is not compression
        values.update(average_glandular_dose_mgy=None, compression_thickness_mm=None, compression_force_n=None)
        warnings[:] = [w for w in warnings if w["field"] not in MAMMOGRAPHY_ONLY]
    acquired_dt = acquisition_datetime(ds)
    return {
        **values,
        **mammography_labels(ds),
        "entrance_dose_quantity": entrance_dose_quantity(ds, values["entrance_dose_mgy"]),
        "body_part": read_text(ds, "BodyPartExamined") or first_code_meaning(ds, "AnatomicRegionSequence"),
        "view": read_text(ds, "ViewPosition") or first_code_meaning(ds, "ViewCodeSequence"),
        "protocol": (read_text(ds, "ProtocolName") or read_text(ds, "SeriesDescription")
                     or first_code_meaning(ds, "PerformedProtocolCodeSequence")),
        "irradiation_type": irradiation_type(ds, modality),
        "acquired_dt": acquired_dt,
        "identity": exposure_identity(ds),
        "warnings": warnings,
    }
