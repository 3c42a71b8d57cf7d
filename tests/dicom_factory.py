"""Builders of realistic DICOM test objects in memory: CR/DX/MG/XA/RF images and X-Ray Radiation Dose SRs.

Every builder returns a pydicom Dataset with file meta, so it can be written with
`ds.save_as(path, enforce_file_format=True)` (or `to_bytes(ds)`) and sent with storescu. Identifying values come from
a `Patient`, so a privacy test can plant distinctive ones and look for them afterwards (`identifying_values`).
Quirks seen in real files are parameters: `raw={"Exposure": b"12.5"}` writes bytes as-is (decimals in IS, over-long
DS), `transfer_syntax=ImplicitVRLittleEndian`, `private_tags=True`, RDSR unit spellings, retired codes, empty measured
values, per-pulse lists and vendor code meanings (`DoseEvent`, `make_rdsr(scramble_meanings=True)`).
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pydicom import Dataset, dcmread
from pydicom import uid as sop
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from agent.dicom.extract import ExtractContext

TEST_SECRET = b"test-site-secret-0123456789abcdef"
# Every dose report built during the current test (conftest checks that both readers read each one alike).
BUILT_REPORTS: list[Dataset] = []
RECEIVED_AT = datetime(2024, 1, 5, 9, 20, 0, tzinfo=timezone.utc)
AUTO = "auto"  # sentinel: generate a fresh value (None always means: leave the attribute out)
Code3 = tuple[str, str, str]  # (code value, coding scheme designator, code meaning)


@dataclass(frozen=True)
class Patient:
    """Identifying values planted in every object; distinctive so a leak is unambiguous."""

    name: str = "Zebedee^Quixotica^Marguerite"
    patient_id: str = "PID-7Q4471150"
    birth_date: str = "19580317"
    sex: str = "F"
    age: str | None = "065Y"
    accession: str = "ACC-88123-XZ"
    other_ids: str = "INS-5532-KLM"
    institution: str = "Saint Exemplar Royal Infirmary"
    institution_address: str = "12 Harbour Road, Portsmouth PO1 3XY"
    operator: str = "Technovska^Alicja"
    referring_physician: str = "Drumbleford^Bartholomew"
    comments: str = "patient anxious, call daughter on 07700 900142"

    def planted(self) -> list[str]:
        """Every identifying string planted from this patient (name components included)."""
        names = [self.name, self.operator, self.referring_physician]
        parts = [part for name in names for part in name.split("^") if len(part) > 3]
        iso_birth = f"{self.birth_date[:4]}-{self.birth_date[4:6]}-{self.birth_date[6:]}"
        values = [self.patient_id, self.birth_date, iso_birth, self.accession, self.other_ids, self.institution,
                  self.institution_address, self.comments]
        return names + parts + values


def make_context(**overrides: object) -> ExtractContext:
    """An ExtractContext for tests: site "site-1", room "room-3", a fixed secret, Europe/Berlin, fixed receipt time."""
    values = {"site": "site-1", "room": "room-3", "secret": TEST_SECRET, "timezone": "Europe/Berlin",
              "received_at": RECEIVED_AT, **overrides}
    return ExtractContext(**values)


def _base(sop_class_uid: str, modality: str, *, patient: Patient, study_uid: str, sop_uid: str,
          transfer_syntax: str) -> Dataset:
    """File meta, patient, study, series, equipment and SOP common modules."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class_uid, sop_uid, modality
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient.name, patient.patient_id, patient.birth_date
    ds.PatientSex, ds.OtherPatientIDs = patient.sex, patient.other_ids
    if patient.age is not None:
        ds.PatientAge = patient.age
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20240105", "100200", "4711", 1, 1
    ds.AccessionNumber, ds.ReferringPhysicianName = patient.accession, patient.referring_physician
    ds.OperatorsName, ds.InstitutionName = patient.operator, patient.institution
    ds.InstitutionAddress, ds.PatientComments = patient.institution_address, patient.comments
    return ds


def _equipment(ds: Dataset, manufacturer: str, model: str, station_name: str, device_serial: str) -> None:
    ds.Manufacturer, ds.ManufacturerModelName, ds.StationName = manufacturer, model, station_name
    ds.DeviceSerialNumber, ds.SoftwareVersions = device_serial, "VE10A"


def _set_raw(ds: Dataset, keyword: str, value: bytes) -> None:
    """Plant bytes exactly as a vendor wrote them (pydicom would refuse or reformat them)."""
    tag = Tag(tag_for_keyword(keyword))
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)


def _add_private_tags(ds: Dataset) -> None:
    block = ds.private_block(0x0099, "ACME XRAY 1.0", create=True)
    block.add_new(0x01, "LO", "vendor calibration 3")
    item = Dataset()
    item.add_new(0x00990010, "LO", "ACME XRAY 1.0")
    item.add_new(0x00991001, "DS", "1.5")
    block.add_new(0x02, "SQ", [item])
    block.add_new(0x03, "UN", b"\x01\x02\x03\x04")


def _pixels(ds: Dataset, frames: int) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames, ds.FrameTime, ds.FrameIncrementPointer = frames, "66.7", Tag(0x00181063)
    ds.PixelData = bytes(range(32)) * frames  # 4 x 4 x 2 bytes per frame


_TECHNIQUE_KEYWORDS = {
    "kvp": "KVP", "exposure_uas": "ExposureInuAs", "exposure_mas": "Exposure", "exposure_time_us": "ExposureTimeInuS",
    "exposure_time_ms": "ExposureTime", "tube_current_ua": "XRayTubeCurrentInuA", "tube_current_ma": "XRayTubeCurrent",
    "dap_dgy_cm2": "ImageAndFluoroscopyAreaDoseProduct", "entrance_dose_mgy": "EntranceDoseInmGy",
    "exposure_index": "ExposureIndex", "target_exposure_index": "TargetExposureIndex",
    "deviation_index": "DeviationIndex", "sid_mm": "DistanceSourceToDetector",
}


def make_image(modality: str = "DX", *, sop_class_uid: str | None = None, for_processing: bool = False,
               patient: Patient = Patient(), study_uid: str | None = None, sop_uid: str | None = None,
               irradiation_event_uid: str | None = AUTO, acquisition_dt: str | None = "20240105101530.250000",
               content_dt: str | None = AUTO, datetime_style: str = "split", timezone_offset: str | None = None,
               acquisition_number: int | None = 1, body_part: str | None = "CHEST", view: str | None = "PA",
               laterality: str | None = None, protocol: str | None = "Thorax PA", frames: int = 1,
               radiation_setting: str | None = None, manufacturer: str = "ACME Medical",
               model: str = "RadMaster 500", station_name: str = "XR-ROOM-3", device_serial: str = "SN-42-0815",
               transfer_syntax: str = ExplicitVRLittleEndian, private_tags: bool = False,
               raw: Mapping[str, bytes] = {}, extra: Mapping[str, object] = {}, **technique: object) -> Dataset:
    """An X-ray image. Technique keywords (all optional, written in the unit their name says): kvp, exposure_uas,
    exposure_mas, exposure_time_us, exposure_time_ms, tube_current_ua, tube_current_ma, dap_dgy_cm2,
    entrance_dose_mgy, exposure_index, target_exposure_index, deviation_index, sid_mm.

    `acquisition_dt` is a DICOM DT; datetime_style "split" writes AcquisitionDate/Time, "combined" writes
    AcquisitionDateTime; None writes no date or time at all. `raw` plants bytes as-is, `extra` sets any keyword."""
    sop_class_uid = sop_class_uid or _IMAGE_CLASSES[(modality, for_processing)]
    ds = _base(sop_class_uid, modality, patient=patient, study_uid=study_uid or generate_uid(),
               sop_uid=sop_uid or generate_uid(), transfer_syntax=transfer_syntax)
    _equipment(ds, manufacturer, model, station_name, device_serial)
    if modality in ("DX", "MG", "IO"):
        ds.PresentationIntentType = "FOR PROCESSING" if for_processing else "FOR PRESENTATION"
    _set_acquisition_time(ds, acquisition_dt, content_dt, datetime_style, timezone_offset)
    optional = {"IrradiationEventUID": generate_uid() if irradiation_event_uid == AUTO else irradiation_event_uid,
                "AcquisitionNumber": acquisition_number, "BodyPartExamined": body_part, "ViewPosition": view,
                "ImageLaterality": laterality, "ProtocolName": protocol, "SeriesDescription": protocol,
                "RadiationSetting": radiation_setting}
    for name, value in technique.items():
        optional[_TECHNIQUE_KEYWORDS[name]] = value  # KeyError: unknown technique keyword
    for keyword, value in {**optional, **extra}.items():
        if value is not None:
            setattr(ds, keyword, value)
    ds.ImageComments = patient.comments
    _pixels(ds, frames)
    if private_tags:
        _add_private_tags(ds)
    for keyword, value in raw.items():
        _set_raw(ds, keyword, value)
    return ds


_IMAGE_CLASSES = {
    ("CR", False): sop.ComputedRadiographyImageStorage, ("CR", True): sop.ComputedRadiographyImageStorage,
    ("DX", False): sop.DigitalXRayImageStorageForPresentation, ("DX", True): sop.DigitalXRayImageStorageForProcessing,
    ("MG", False): sop.DigitalMammographyXRayImageStorageForPresentation,
    ("MG", True): sop.DigitalMammographyXRayImageStorageForProcessing,
    ("IO", False): sop.DigitalIntraOralXRayImageStorageForPresentation,
    ("IO", True): sop.DigitalIntraOralXRayImageStorageForProcessing,
    ("XA", False): sop.XRayAngiographicImageStorage, ("RF", False): sop.XRayRadiofluoroscopicImageStorage,
}


def _set_acquisition_time(ds: Dataset, acquisition_dt: str | None, content_dt: str | None, style: str,
                          timezone_offset: str | None) -> None:
    local = re.split(r"[+-]", acquisition_dt or "")[0]  # DA and TM carry no offset, DT may
    content_dt = local if content_dt == AUTO else content_dt
    if acquisition_dt and style == "combined":
        ds.AcquisitionDateTime = acquisition_dt
    elif acquisition_dt:
        ds.AcquisitionDate, ds.AcquisitionTime = local[:8], local[8:]
    if content_dt:
        ds.ContentDate, ds.ContentTime = content_dt[:8], content_dt[8:]
    if timezone_offset:
        ds.TimezoneOffsetFromUTC = timezone_offset


def make_cr(**kwargs: object) -> Dataset:
    """A CR image (cassette-based): Exposure in mAs, Sensitivity as the vendor exposure indicator, no DAP."""
    kwargs = {"kvp": "81", "exposure_mas": 5, "exposure_time_ms": 20, "tube_current_ma": 250, "sid_mm": "1800",
              "extra": {"Sensitivity": "200"}, **kwargs}
    return make_image("CR", **kwargs)


def make_dx(**kwargs: object) -> Dataset:
    """A DX chest PA with µAs, µs and µA precision tags next to their rounded IS twins, DAP, EI/EI_T/DI and SID."""
    kwargs = {"kvp": "125", "exposure_uas": 1040, "exposure_mas": 1, "exposure_time_us": "6500.0",
              "exposure_time_ms": 6, "tube_current_ua": "160000", "tube_current_ma": 160, "dap_dgy_cm2": "0.0923",
              "entrance_dose_mgy": "0.085", "exposure_index": "310", "target_exposure_index": "250",
              "deviation_index": "0.93", "sid_mm": "1800", **kwargs}
    return make_image("DX", **kwargs)


def make_mg(**kwargs: object) -> Dataset:
    """A mammogram (left CC) with µAs, entrance dose and organ dose."""
    kwargs = {"kvp": "29", "exposure_uas": 85000, "exposure_mas": 85, "exposure_time_ms": 850,
              "tube_current_ma": 100, "entrance_dose_mgy": "6.1", "sid_mm": "650", "body_part": "BREAST",
              "view": "CC", "laterality": "L", "protocol": "L CC", "extra": {"OrganDose": "0.0123"}, **kwargs}
    return make_image("MG", **kwargs)


def make_xa(frames: int = 10, **kwargs: object) -> Dataset:
    """A multi-frame XA acquisition run (Radiation Setting GR) with DAP; `frames=1` gives a single frame."""
    kwargs = {"kvp": "78", "tube_current_ma": 420, "exposure_time_ms": 700, "dap_dgy_cm2": "12.3",
              "sid_mm": "1100", "body_part": "HEART", "view": None, "protocol": "Coro LAO", "radiation_setting": "GR",
              "datetime_style": "combined", **kwargs}
    return make_image("XA", frames=frames, **kwargs)


def make_rf(frames: int = 1, **kwargs: object) -> Dataset:
    """An RF fluoro store (Radiation Setting SC) with DAP."""
    kwargs = {"kvp": "70", "tube_current_ma": 3, "exposure_time_ms": 15000, "dap_dgy_cm2": "45.6",
              "sid_mm": "1150", "body_part": "ABDOMEN", "view": "AP", "protocol": "Barium swallow",
              "radiation_setting": "SC", **kwargs}
    return make_image("RF", frames=frames, **kwargs)


def make_dx_pair(*, share_irradiation_uid: bool = True, **kwargs: object) -> tuple[Dataset, Dataset]:
    """(For-Processing, For-Presentation) DX images of one exposure: same study, acquisition date/time, number and
    view; new series and SOP UIDs; the presentation image is created 2 s later and references its source image."""
    study_uid = kwargs.pop("study_uid", None) or generate_uid()
    event_uid = generate_uid() if share_irradiation_uid else None
    acquisition_dt = str(kwargs.pop("acquisition_dt", "20240105101530.250000"))
    processing = make_dx(for_processing=True, study_uid=study_uid, irradiation_event_uid=event_uid,
                         acquisition_dt=acquisition_dt, **kwargs)
    presentation = make_dx(for_processing=False, study_uid=study_uid, irradiation_event_uid=event_uid,
                           acquisition_dt=acquisition_dt, content_dt=acquisition_dt[:8] + "101532", **kwargs)
    source = Dataset()
    source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = processing.SOPClassUID, processing.SOPInstanceUID
    presentation.SourceImageSequence = [source]
    return processing, presentation


def make_non_exposure(kind: str = "CT", patient: Patient = Patient()) -> Dataset:
    """A valid object without projection exposure data: "CT", "SC" (secondary capture) or "PR" (presentation state)."""
    sop_class, modality = {"CT": (sop.CTImageStorage, "CT"), "SC": (sop.SecondaryCaptureImageStorage, "OT"),
                           "PR": (sop.GrayscaleSoftcopyPresentationStateStorage, "PR")}[kind]
    ds = _base(sop_class, modality, patient=patient, study_uid=generate_uid(), sop_uid=generate_uid(),
               transfer_syntax=ExplicitVRLittleEndian)
    _equipment(ds, "ACME Medical", "Scanmaster", "CT-1", "SN-1")
    if kind == "CT":
        ds.KVP, ds.XRayTubeCurrent, ds.ExposureTime = "120", 200, 1000
    if kind != "PR":
        _pixels(ds, 1)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """The object as a DICOM Part 10 file (quirky planted values are written as they are)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values the quirk builders plant on purpose
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def roundtrip(ds: Dataset) -> Dataset:
    """Write and read back, as the intake would see the object after a C-STORE."""
    return dcmread(io.BytesIO(to_bytes(ds)))


def identifying_values(ds: Dataset, patient: Patient = Patient()) -> set[str]:
    """Every planted identifying string plus every UID (UI element) anywhere in the object and its file meta."""
    values = set(patient.planted())
    for dataset in (ds, getattr(ds, "file_meta", Dataset())):
        dataset.walk(lambda _, element: values.update(_uid_values(element)))
    return {value for value in values if value}


def _uid_values(element: object) -> list[str]:
    if getattr(element, "VR", None) != "UI" or element.value in (None, ""):
        return []
    return [str(value) for value in element.value] if element.VM > 1 else [str(element.value)]


# --- X-Ray Radiation Dose SR (TID 10001, irradiation events TID 10003) --------------------------------------------

Measured = tuple[object, str]  # (value, or a per-pulse list of values; unit code value as the vendor spells it)

_CONCEPTS: dict[str, Code3] = {
    "title": ("113701", "DCM", "X-Ray Radiation Dose Report"),
    "procedure": ("121058", "DCM", "Procedure reported"),
    "scope": ("113705", "DCM", "Scope of Accumulation"),
    "study_uid": ("110180", "DCM", "Study Instance UID"),
    "observer_type": ("121005", "DCM", "Observer Type"),
    "device_uid": ("121012", "DCM", "Device Observer UID"),
    "device_name": ("121013", "DCM", "Device Observer Name"),
    "person_name": ("121008", "DCM", "Person Observer Name"),
    "comment": ("121106", "DCM", "Comment"),
    "start": ("113809", "DCM", "Start of X-Ray Irradiation"),
    "end": ("113810", "DCM", "End of X-Ray Irradiation"),
    "accumulated": ("113702", "DCM", "Accumulated X-Ray Dose Data"),
    "event": ("113706", "DCM", "Irradiation Event X-Ray Data"),
    "plane": ("113764", "DCM", "Acquisition Plane"),
    "event_uid": ("113769", "DCM", "Irradiation Event UID"),
    "started": ("111526", "DCM", "DateTime Started"),
    "event_type": ("113721", "DCM", "Irradiation Event Type"),
    "protocol": ("125203", "DCM", "Acquisition Protocol"),
    "target_region": ("123014", "DCM", "Target Region"),
    "view": ("111031", "DCM", "Image View"),
    "dap": ("122130", "DCM", "Dose Area Product"),
    "dose_rp": ("113738", "DCM", "Dose (RP)"),
    "rp_definition": ("113780", "DCM", "Reference Point Definition"),
    "entrance_exposure": ("111636", "DCM", "Entrance Exposure at RP"),
    "exposure_index": ("113845", "DCM", "Exposure Index"),
    "target_exposure_index": ("113846", "DCM", "Target Exposure Index"),
    "deviation_index": ("113847", "DCM", "Deviation Index"),
    "kvp": ("113733", "DCM", "KVP"),
    "tube_current": ("113734", "DCM", "X-Ray Tube Current"),
    "average_tube_current": ("113767", "DCM", "Average X-Ray Tube Current"),
    "exposure": ("113736", "DCM", "Exposure"),
    "pulses": ("113768", "DCM", "Number of Pulses"),
    "sid": ("113750", "DCM", "Distance Source to Detector"),
    "dap_total": ("113722", "DCM", "Dose Area Product Total"),
    "dose_rp_total": ("113725", "DCM", "Dose (RP) Total"),
    "fluoro_dap_total": ("113726", "DCM", "Fluoro Dose Area Product Total"),
    "acquisition_dap_total": ("113727", "DCM", "Acquisition Dose Area Product Total"),
    "fluoro_dose_rp_total": ("113728", "DCM", "Fluoro Dose (RP) Total"),
    "acquisition_dose_rp_total": ("113729", "DCM", "Acquisition Dose (RP) Total"),
    "fluoro_time": ("113730", "DCM", "Total Fluoro Time"),
    "acquisition_time": ("113855", "DCM", "Total Acquisition Time"),
    "frames": ("113731", "DCM", "Total Number of Radiographic Frames"),
    "pulse_width": ("113793", "DCM", "Pulse Width"),
    "irradiation_duration": ("113742", "DCM", "Irradiation Duration"),
    "agd": ("111631", "DCM", "Average Glandular Dose"),
    "compression_thickness": ("111633", "DCM", "Compression Thickness"),
    "compression_force": ("111647", "DCM", "Compression Force"),
    "hvl": ("111634", "DCM", "Half Value Layer"),
    "anode": ("111632", "DCM", "Anode Target Material"),
    "filters": ("113771", "DCM", "X-Ray Filters"),
    "filter_type": ("113772", "DCM", "X-Ray Filter Type"),
    "filter_material": ("113757", "DCM", "X-Ray Filter Material"),
    "laterality": ("G-C171", "SRT", "Laterality"),
    "accumulated_agd": ("111637", "DCM", "Accumulated Average Glandular Dose"),
    "device_serial": ("121016", "DCM", "Device Observer Serial Number"),
    "device_manufacturer": ("121014", "DCM", "Device Observer Manufacturer"),
    "device_model": ("121015", "DCM", "Device Observer Model Name"),
    "device_type": ("122142", "DCM", "Acquisition Device Type"),
    "acquired_image": ("113795", "DCM", "Acquired Image"),
}
MAMMOGRAPHY_PROCEDURE: Code3 = ("71651007", "SCT", "Mammography")
CT_PROCEDURE: Code3 = ("P5-08000", "SRT", "Computed Tomography X-Ray")
MATERIALS: dict[str, Code3] = {"MOLYBDENUM": ("C-15000", "SRT", "Molybdenum"), "RHODIUM": ("59801003", "SCT", "Rhodium"),
                               "TUNGSTEN": ("26194003", "SCT", "Tungsten"), "SILVER": ("41967008", "SCT", "Silver"),
                               "ALUMINUM": ("C-12000", "SRT", "Aluminum"), "COPPER": ("66925006", "SCT", "Copper")}
SIDES: dict[str, Code3] = {"L": ("80248007", "SCT", "Left breast"), "R": ("T-04020", "SRT", "Right breast"),
                           "B": ("63762007", "SCT", "Both breasts")}
PLANE_A: Code3 = ("113620", "DCM", "Plane A")
PLANE_B: Code3 = ("113621", "DCM", "Plane B")
EXPOSURE_TIME_CODES = {"113824": "Exposure Time", "113735": "Exposure Time"}  # 113735: retired, still sent
EVENT_TYPES: dict[str, Code3] = {"acquisition": ("113611", "DCM", "Stationary Acquisition"),
                                 "rotational": ("113613", "DCM", "Rotational Acquisition")}
SINGLE_PLANE: Code3 = ("113622", "DCM", "Single Plane")


@dataclass(frozen=True)
class DoseEvent:
    """One irradiation event. Numbers are (value, unit) written as given; a list value is one value per pulse."""

    kind: str = "acquisition"  # "acquisition" (stationary), "rotational" or "fluoroscopy"
    uid: str | None = field(default_factory=generate_uid)  # None: a device that omits the Irradiation Event UID
    started: str | None = "20240105101530"
    protocol: str | None = "Abdomen AP"
    target_region: Code3 | None = ("818981001", "SCT", "Abdomen")
    view: Code3 | None = ("399348003", "SCT", "antero-posterior")
    plane: Code3 = SINGLE_PLANE
    dap: Measured | None = ("0.000123", "Gy.m2")
    dose_rp: Measured | None = ("0.00056", "Gy")
    entrance_exposure: Measured | None = None
    kvp: Measured | None = ("75", "kV")
    tube_current: Measured | None = ("250", "mA")
    average_tube_current: Measured | None = None
    exposure_time: Measured | None = ("40", "ms")
    exposure: Measured | None = ("10000", "uA.s")
    pulses: int | None = None
    sid: Measured | None = ("1150", "mm")
    exposure_index: str | None = None
    target_exposure_index: str | None = None
    deviation_index: str | None = None
    exposure_time_code: str = "113824"  # "113735": the retired code
    fluoro_code: Code3 = ("44491008", "SCT", "Fluoroscopy")  # older devices: ("P5-06000", "SRT", "Fluoroscopy")
    per_pulse: str = "items"  # per-pulse lists as "items" (one NUM item per value) or "multivalue" (one NUM, VM n)
    empty: tuple[str, ...] = ()  # concept code values written with an empty Measured Value Sequence
    pulse_width: Measured | None = None  # one value for all pulses, or a per-pulse list
    irradiation_duration: Measured | None = None
    agd: Measured | None = None  # mammography rows of TID 10003
    compression_thickness: Measured | None = None
    compression_force: Measured | None = None
    hvl: Measured | None = None
    anode: Code3 | None = None
    filters: tuple[Code3, ...] = ()  # one X-Ray Filters container per material
    laterality: Code3 | None = None
    image_sop_class: str | None = None  # an Acquired Image (113795) reference of this SOP class
    extra_nums: tuple[tuple[Code3, Measured], ...] = ()  # any other NUM rows (geometry: angles, table positions...)


def fluoro_event(**kwargs: object) -> DoseEvent:
    """A pulsed fluoroscopy event with per-pulse kV and mA lists and no Exposure (mAs)."""
    defaults = {"kind": "fluoroscopy", "protocol": "Fluoro 7.5 p/s", "dap": ("0.000456", "Gy.m2"),
                "dose_rp": ("0.0021", "Gy"), "kvp": (["70", "72", "74"], "kV"),
                "tube_current": (["12", "13", "14"], "mA"),
                "exposure_time": ("8000", "ms"), "exposure": None, "pulses": 120}
    return DoseEvent(**{**defaults, **kwargs})


def acquisition_event(**kwargs: object) -> DoseEvent:
    """A single radiographic acquisition event (the DoseEvent defaults)."""
    return DoseEvent(**kwargs)


@dataclass(frozen=True)
class DoseTotals:
    """Accumulated X-Ray Dose Data of one plane (113702); (value, unit) as written, None leaves the item out."""

    dap_total: Measured | None = ("0.000579", "Gy.m2")
    fluoro_dap_total: Measured | None = ("0.000456", "Gy.m2")
    acquisition_dap_total: Measured | None = ("0.000123", "Gy.m2")
    dose_rp_total: Measured | None = ("0.00266", "Gy")
    fluoro_dose_rp_total: Measured | None = None
    acquisition_dose_rp_total: Measured | None = None
    fluoro_time: Measured | None = ("8", "s")
    acquisition_time: Measured | None = None
    frames: int | None = 1
    plane: Code3 = SINGLE_PLANE
    accumulated_agd: tuple[tuple[Code3, Measured], ...] = ()  # (laterality, value) per breast (TID 10005)

    @classmethod
    def from_events(cls, events: Sequence[DoseEvent]) -> DoseTotals:
        """Totals summed from the events' values written in Gy.m2, Gy and ms (the defaults); others are skipped."""
        fluoro = [e for e in events if e.kind == "fluoroscopy"]
        acquisitions = [e for e in events if e.kind != "fluoroscopy"]
        return cls(dap_total=_total(events, "dap", "Gy.m2"), fluoro_dap_total=_total(fluoro, "dap", "Gy.m2"),
                   acquisition_dap_total=_total(acquisitions, "dap", "Gy.m2"),
                   dose_rp_total=_total(events, "dose_rp", "Gy"),
                   fluoro_time=_total(fluoro, "exposure_time", "ms", to=("s", 0.001)), frames=len(acquisitions))


def _total(events: Sequence[DoseEvent], name: str, unit: str, to: tuple[str, float] | None = None) -> Measured:
    values = []
    for event in events:
        measured = getattr(event, name)
        if measured and measured[1] == unit:
            values += [float(v) for v in (measured[0] if isinstance(measured[0], (list, tuple)) else [measured[0]])]
    out_unit, scale = to or (unit, 1.0)
    return (f"{sum(values) * scale:.6g}", out_unit)


def _code(code: Code3) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _item(value_type: str, concept: Code3, **attributes: object) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", value_type
    item.ConceptNameCodeSequence = [_code(concept)]
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _container(concept: Code3, children: list[Dataset]) -> Dataset:
    return _item("CONTAINER", concept, ContinuityOfContent="SEPARATE", ContentSequence=children)


def _code_item(concept: Code3, value: Code3) -> Dataset:
    return _item("CODE", concept, ConceptCodeSequence=[_code(value)])


def _nums(concept: Code3, measured: Measured | None, per_pulse: str = "items", empty: bool = False) -> list[Dataset]:
    """NUM item(s) of one concept: one per value ("items") or one multi-valued Numeric Value ("multivalue")."""
    if measured is None:
        return []
    if empty:
        return [_item("NUM", concept, MeasuredValueSequence=[])]
    value, unit = measured
    values = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    groups = [values] if per_pulse == "multivalue" else [[v] for v in values]
    items = []
    for group in groups:
        measured_value = Dataset()
        measured_value.MeasurementUnitsCodeSequence = [_code((unit, "UCUM", unit))]
        measured_value.NumericValue = group if len(group) > 1 else group[0]
        items.append(_item("NUM", concept, MeasuredValueSequence=[measured_value]))
    return items


def _event_container(event: DoseEvent) -> Dataset:
    c = _CONCEPTS
    event_type = event.fluoro_code if event.kind == "fluoroscopy" else EVENT_TYPES[event.kind]
    children = [_code_item(c["plane"], event.plane), _code_item(c["event_type"], event_type),
                _code_item(c["rp_definition"], ("113860", "DCM", "15cm from Isocenter toward Source"))]
    if event.uid:
        children.append(_item("UIDREF", c["event_uid"], UID=event.uid))
    if event.started:
        children.append(_item("DATETIME", c["started"], DateTime=event.started))
    if event.protocol:
        children.append(_item("TEXT", c["protocol"], TextValue=event.protocol))
    for name in ("target_region", "view"):
        if getattr(event, name):
            children.append(_code_item(c[name], getattr(event, name)))
    time_concept = (event.exposure_time_code, "DCM", EXPOSURE_TIME_CODES[event.exposure_time_code])
    measures = [(c["dap"], event.dap), (c["dose_rp"], event.dose_rp), (c["entrance_exposure"], event.entrance_exposure),
                (c["kvp"], event.kvp), (c["tube_current"], event.tube_current),
                (c["average_tube_current"], event.average_tube_current), (time_concept, event.exposure_time),
                (c["exposure"], event.exposure), (c["sid"], event.sid),
                (c["pulses"], None if event.pulses is None else (event.pulses, "{pulses}"))]
    measures += [(c[name], (getattr(event, name), "1")) for name in
                 ("exposure_index", "target_exposure_index", "deviation_index") if getattr(event, name) is not None]
    measures += [(c["pulse_width"], event.pulse_width), (c["irradiation_duration"], event.irradiation_duration),
                 (c["agd"], event.agd), (c["compression_thickness"], event.compression_thickness),
                 (c["compression_force"], event.compression_force), (c["hvl"], event.hvl), *event.extra_nums]
    for concept, measured in measures:
        children += _nums(concept, measured, event.per_pulse, concept[0] in event.empty)
    if event.anode:
        children.append(_code_item(c["anode"], event.anode))
    for material in event.filters:
        children.append(_container(c["filters"], [_code_item(c["filter_type"], ("113650", "DCM", "Strip filter")),
                                                   _code_item(c["filter_material"], material)]))
    if event.laterality:
        children.append(_code_item(c["laterality"], event.laterality))
    if event.image_sop_class:
        reference = Dataset()
        reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = event.image_sop_class, generate_uid()
        children.append(_item("IMAGE", c["acquired_image"], ReferencedSOPSequence=[reference]))
    return _container(c["event"], children)


def _accumulated_container(totals: DoseTotals) -> Dataset:
    c = _CONCEPTS
    children = [_code_item(c["plane"], totals.plane)]
    for name in ("dap_total", "fluoro_dap_total", "acquisition_dap_total", "dose_rp_total", "fluoro_dose_rp_total",
                 "acquisition_dose_rp_total", "fluoro_time", "acquisition_time"):
        children += _nums(c[name], getattr(totals, name))
    if totals.frames is not None:
        children += _nums(c["frames"], (totals.frames, "{frames}"))
    for side, measured in totals.accumulated_agd:
        (item,) = _nums(c["accumulated_agd"], measured)
        item.ContentSequence = [_code_item(c["laterality"], side)]
        item.ContentSequence[0].RelationshipType = "HAS CONCEPT MOD"
        children.append(item)
    return _container(c["accumulated"], children)


def _scramble_meanings(ds: Dataset) -> None:
    """Replace every code meaning by vendor text: extraction must match codes, not meanings."""
    def scramble(_: Dataset, element: object) -> None:
        if getattr(element, "keyword", "") == "CodeMeaning":
            element.value = "Vendor " + str(element.value).swapcase()
    ds.walk(scramble)


def make_rdsr(events: Sequence[DoseEvent] = (), *, totals: DoseTotals | Sequence[DoseTotals] | str | None = AUTO,
              patient: Patient = Patient(), study_uid: str | None = None, sop_uid: str | None = None,
              sop_class_uid: str = sop.XRayRadiationDoseSRStorage, title: Code3 = _CONCEPTS["title"],
              irradiation_start: str | None = "20240105101000", irradiation_end: str | None = "20240105103000",
              timezone_offset: str | None = None, scramble_meanings: bool = False, manufacturer: str = "ACME Medical",
              model: str = "AngioMaster 9", station_name: str = "XR-ROOM-3", device_serial: str = "SN-42-0815",
              transfer_syntax: str = ExplicitVRLittleEndian, private_tags: bool = False,
              procedure: Code3 = ("113704", "DCM", "Projection X-Ray"), observer: Mapping[str, str] | None = None,
              device_type: Code3 | None = None, header: Mapping[str, object | None] = {}) -> Dataset:
    """A projection X-Ray Radiation Dose SR with the given irradiation events.

    `procedure` is Procedure reported (121058); `observer` adds Device Observer rows (keys device_serial,
    device_manufacturer, device_model; the Device Observer Name is the station name unless given as device_name);
    `device_type` adds an Acquisition Device Type (122142); `header` sets (or, with None, deletes) header keywords.

    totals: AUTO sums the events (DoseTotals.from_events); a DoseTotals or a list (one per plane, biplane); None
    omits the Accumulated X-Ray Dose Data. `sop_class_uid=sop.EnhancedSRStorage` makes the older generic form."""
    ds = _base(sop_class_uid, "SR", patient=patient, study_uid=study_uid or generate_uid(),
               sop_uid=sop_uid or generate_uid(), transfer_syntax=transfer_syntax)
    _equipment(ds, manufacturer, model, station_name, device_serial)
    ds.ContentDate, ds.ContentTime = "20240105", "103100"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ReferencedPerformedProcedureStepSequence, ds.PerformedProcedureCodeSequence = [], []
    if timezone_offset:
        ds.TimezoneOffsetFromUTC = timezone_offset
    template = Dataset()
    template.TemplateIdentifier, template.MappingResource = "10001", "DCMR"
    ds.ValueType, ds.ContinuityOfContent, ds.ContentTemplateSequence = "CONTAINER", "SEPARATE", [template]
    ds.ConceptNameCodeSequence = [_code(title)]
    ds.ContentSequence = _report_content(ds, list(events), totals, patient, irradiation_start, irradiation_end,
                                         procedure, dict(observer or {}), device_type)
    for keyword, value in header.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if scramble_meanings:
        _scramble_meanings(ds)
    if private_tags:
        _add_private_tags(ds)
    BUILT_REPORTS.append(ds)
    return ds


def _report_content(ds: Dataset, events: list[DoseEvent], totals: object, patient: Patient, start: str | None,
                    end: str | None, procedure: Code3 = ("113704", "DCM", "Projection X-Ray"),
                    observer: dict[str, str] | None = None, device_type: Code3 | None = None) -> list[Dataset]:
    c = _CONCEPTS
    scope = _code_item(c["scope"], ("113014", "DCM", "Study"))
    scope.ContentSequence = [_item("UIDREF", c["study_uid"], UID=ds.StudyInstanceUID,
                                   RelationshipType="HAS PROPERTIES")]
    observer = dict(observer or {})
    content = [_code_item(c["procedure"], procedure),
               _code_item(c["observer_type"], ("121007", "DCM", "Device")),
               _item("UIDREF", c["device_uid"], UID=generate_uid()),
               _item("TEXT", c["device_name"], TextValue=observer.pop("device_name", ds.StationName)),
               *[_item("TEXT", c[key], TextValue=value) for key, value in observer.items()],
               *([_code_item(c["device_type"], device_type)] if device_type else []),
               _item("PNAME", c["person_name"], PersonName=patient.operator), scope]
    content += [_item("DATETIME", c[name], DateTime=value) for name, value in (("start", start), ("end", end)) if value]
    planes = DoseTotals.from_events(events) if totals == AUTO else totals
    planes = [] if planes is None else [planes] if isinstance(planes, DoseTotals) else list(planes)
    content += [_accumulated_container(plane) for plane in planes]
    content += [_event_container(event) for event in events]
    return content + [_item("TEXT", c["comment"], TextValue=patient.comments)]


def make_cumulative_rdsrs(events: Sequence[DoseEvent], counts: Sequence[int] = (2, 4), **kwargs: object
                          ) -> list[Dataset]:
    """The same study's cumulative report sent several times, each with the first `count` events so far."""
    study_uid = kwargs.pop("study_uid", None) or generate_uid()
    return [make_rdsr(events[:count], study_uid=study_uid, **kwargs) for count in counts]


def make_ct_dose_report(patient: Patient = Patient()) -> Dataset:
    """A CT dose report: the same SOP class and title as a projection RDSR, but CT containers (no 113706 events)."""
    ds = make_rdsr([], totals=None, patient=patient)
    ct_event = _container(("113819", "DCM", "CT Acquisition"), [
        _item("UIDREF", _CONCEPTS["event_uid"], UID=generate_uid()),
        *_nums(("113838", "DCM", "DLP"), ("250.5", "mGy.cm"))])
    ct_totals = _container(("113811", "DCM", "CT Accumulated Dose Data"),
                           _nums(("113813", "DCM", "CT Dose Length Product Total"), ("250.5", "mGy.cm")))
    ds.ContentSequence = [*ds.ContentSequence, ct_totals, ct_event]
    return ds


__all__ = [
    "AUTO", "RECEIVED_AT", "TEST_SECRET", "DoseEvent", "MAMMOGRAPHY_PROCEDURE", "CT_PROCEDURE", "MATERIALS", "SIDES",
    "PLANE_A", "PLANE_B", "DoseTotals", "Patient", "acquisition_event", "fluoro_event",
    "identifying_values", "make_context", "make_cr", "make_ct_dose_report", "make_cumulative_rdsrs", "make_dx",
    "make_dx_pair", "make_image", "make_mg", "make_non_exposure", "make_rdsr", "make_rf", "make_xa", "roundtrip",
    "to_bytes",
]
