"""Fuzzing extract(): generated and byte-mutated objects give an Extraction or an ExtractionError, nothing else.

The contract is checked strictly: extract()'s last-resort wrapper (reason "unreadable object: ...") must not be what
saved the day, so a reader that lets a pydicom exception escape fails here even though extract() would contain it.
Every produced payload must also serialise to its wire JSON.
"""

import io
import random
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from agent.dicom import Extraction, ExtractionError, extract
from agent.dicom.extract import UNREADABLE
from agent.dicom.image import IMAGE_SOP_CLASSES
from agent.dicom.rdsr import DOSE_SR_CLASSES, EVENT_MEASURES, TOTAL_MEASURES
from agent.dicom.report_reading import read_bytes
from tests.dicom_factory import (
    DoseTotals, acquisition_event, fluoro_event, make_context, make_dx, make_mg, make_rdsr, make_xa, to_bytes,
)
from tests.report_readers import assert_read_alike

CTX = make_context()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

SEEDS = [
    to_bytes(make_dx(private_tags=True)),
    to_bytes(make_dx(transfer_syntax=ImplicitVRLittleEndian, raw={"Exposure": b"12.5"})),
    to_bytes(make_mg()),
    to_bytes(make_xa(frames=3)),
    to_bytes(make_rdsr([acquisition_event(), fluoro_event()])),
    to_bytes(make_rdsr([fluoro_event(per_pulse="multivalue")], totals=[DoseTotals(), DoseTotals()],
                       transfer_syntax=ImplicitVRLittleEndian)),
]
HEADER_KEYWORDS = [
    "SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID", "IrradiationEventUID", "KVP", "Exposure",
    "ExposureInuAs", "ExposureTime", "ExposureTimeInuS", "XRayTubeCurrent", "XRayTubeCurrentInuA", "ExposureInmAs",
    "ImageAndFluoroscopyAreaDoseProduct", "EntranceDose", "EntranceDoseInmGy", "ExposureIndex", "TargetExposureIndex",
    "DeviationIndex", "DistanceSourceToDetector", "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime",
    "ContentDate", "ContentTime", "TimezoneOffsetFromUTC", "PatientAge", "PatientBirthDate", "StudyDate", "PatientSex",
    "BodyPartExamined", "ViewPosition", "ProtocolName", "RadiationSetting", "Manufacturer", "SpecificCharacterSet",
    "AcquisitionNumber",
]
CONCEPT_CODES = [code for measure in EVENT_MEASURES + TOTAL_MEASURES for code in measure.codes] + [
    ("113706", "DCM"), ("113702", "DCM"), ("113769", "DCM"), ("111526", "DCM"), ("113721", "DCM"), ("113701", "DCM")]

junk_bytes = st.one_of(st.binary(max_size=24), st.sampled_from([b"12.5", b"1e999", b"nan", b"-3", b"20240105",
                                                                b"+0100", b"045Y", b"1.2.3", b"\xff\xfe", b""]))


def raw_element(keyword: str, value: bytes) -> RawDataElement:
    tag = Tag(tag_for_keyword(keyword))
    return RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)


@st.composite
def header_datasets(draw) -> Dataset:
    """Image-like datasets whose header elements hold arbitrary bytes."""
    ds = Dataset()
    ds.SOPClassUID = draw(st.sampled_from(sorted(IMAGE_SOP_CLASSES) + sorted(DOSE_SR_CLASSES) + ["1.2.3"]))
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1"  # present unless a junk value replaces it below
    for keyword in draw(st.lists(st.sampled_from(HEADER_KEYWORDS), unique=True, max_size=15)):
        ds[tag_for_keyword(keyword)] = raw_element(keyword, draw(junk_bytes))
    return ds


@st.composite
def content_items(draw, depth: int = 0) -> Dataset:
    """SR content items with known concepts, odd units, odd values, missing parts and nesting."""
    item, name = Dataset(), Dataset()
    name.CodeValue, name.CodingSchemeDesignator = draw(st.sampled_from(CONCEPT_CODES))
    item.ConceptNameCodeSequence = draw(st.sampled_from([[name], [], [Dataset()]]))
    if draw(st.booleans()):
        measured, unit = Dataset(), Dataset()
        unit.CodeValue = draw(st.sampled_from(["Gy.m2", "dGy.cm2", "mGy", "uA.s", "kV", "ms", "", "??"]))
        measured.MeasurementUnitsCodeSequence = draw(st.sampled_from([[unit], []]))
        measured[tag_for_keyword("NumericValue")] = raw_element("NumericValue", draw(junk_bytes))
        item.MeasuredValueSequence = draw(st.sampled_from([[measured], []]))
    for keyword in draw(st.lists(st.sampled_from(["UID", "DateTime", "TextValue"]), unique=True)):
        item[tag_for_keyword(keyword)] = raw_element(keyword, draw(junk_bytes))
    if depth < 2 and draw(st.booleans()):
        item.ContentSequence = draw(st.lists(content_items(depth + 1), max_size=3))
    return item


@st.composite
def report_datasets(draw) -> Dataset:
    ds = draw(header_datasets())
    ds.ConceptNameCodeSequence = [draw(content_items(2))]
    ds.ContentSequence = draw(st.lists(content_items(), max_size=4))
    return ds


def dataset_offset(data: bytes) -> int:
    """Where the dataset starts: after the preamble, "DICM" and the file meta group (its length is at byte 140)."""
    return 144 + int.from_bytes(data[140:144], "little")


@st.composite
def mutated_bytes(draw) -> bytes:
    """A valid object with some bytes overwritten, a chunk duplicated or the tail cut off."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    rng = random.Random(draw(st.integers(0, 2**32)))  # uniform positions: hypothesis would favour the first bytes
    # Keep the preamble and "DICM" so the file is still recognised; mostly spare the file meta too, whose damage
    # leaves nothing for extraction to read.
    first = 132 if rng.random() < 0.2 else dataset_offset(data)
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(first, len(data))
        data[at:at + 4] = rng.randbytes(rng.randint(1, 4))
    if rng.random() < 0.3:
        start = rng.randrange(first, len(data))
        data[start:start] = data[start:start + rng.randint(1, 64)]
    if rng.random() < 0.2:
        data = data[:rng.randrange(first, len(data))]
    return bytes(data)


def assert_contract(ds: Dataset) -> None:
    try:
        extraction = extract(ds, CTX)
    except ExtractionError as error:
        assert not error.reason.startswith(UNREADABLE), f"a reader let an exception escape: {error.__cause__!r}"
        return
    assert isinstance(extraction, Extraction)
    for payload in extraction.payloads():
        payload.to_json_bytes()


@pytest.mark.filterwarnings("ignore")
@FUZZ
@given(header_datasets())
def test_generated_headers(ds):
    assert_contract(ds)


@pytest.mark.filterwarnings("ignore")
@FUZZ
@given(report_datasets())
def test_generated_reports(ds):
    assert_contract(ds)


@pytest.mark.filterwarnings("ignore")
@settings(FUZZ, max_examples=1000)
@given(mutated_bytes())
def test_mutated_files(data):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(data), force=True)
    except Exception:  # pydicom cannot parse it at all: that is the intake's concern, not extraction's
        return
    assert_contract(ds)


def test_seeds_are_valid():
    for data in SEEDS:
        assert extract(dcmread(io.BytesIO(data)), CTX).payloads()


# ---- the single-pass reader of raw report bytes reads every generated or damaged report as pydicom does ----------

def _encoded(ds: Dataset) -> bytes | None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = str(ds.get("SOPClassUID", "1.2.3"))
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.2.1"
    try:
        return to_bytes(ds)
    except Exception:  # a junk value pydicom cannot write: nothing to compare
        return None


@pytest.mark.filterwarnings("ignore")
@FUZZ
@given(report_datasets())
def test_generated_reports_read_alike(ds):
    data = _encoded(ds)
    if data is not None:
        assert_read_alike(data, fast_path_expected=False)


@pytest.mark.filterwarnings("ignore")
@settings(FUZZ, max_examples=500)
@given(mutated_bytes())
def test_mutated_reports_read_alike(data):
    readable = []
    for read in (read_bytes, lambda raw: dcmread(io.BytesIO(raw), force=True, stop_before_pixels=True)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                readable.append(read(data) is not None)
        except Exception:
            readable.append(False)
    assert readable[0] == readable[1], "the intake's reader and pydicom must agree on what can be read"
    if all(readable):
        assert_read_alike(data, fast_path_expected=False)
