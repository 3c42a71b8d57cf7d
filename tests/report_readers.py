"""Checks that a dose report is read alike by extraction's single-pass reader of the raw Content Sequence
(agent.dicom.reading + srtree.children_from_bytes) and by pydicom's full reading (the reference)."""

from __future__ import annotations

import io
import warnings

from pydicom import dcmread
from pydicom.dataelem import RawDataElement

from agent.dicom import ExtractionError, extract, srtree
from agent.dicom.attributes import element_value
from agent.dicom.report_reading import read_bytes
from tests.dicom_factory import make_context

CTX = make_context()


def outcome(ds) -> object:
    """Every payload of an object as JSON-ready dicts, or the ExtractionError's reason."""
    try:
        extraction = extract(ds, CTX)
    except ExtractionError as exc:
        return ("error", exc.reason)
    return [payload.model_dump(mode="json") for payload in extraction.payloads()], extraction.not_for_room


def assert_read_alike(data: bytes, *, fast_path_expected: bool = True) -> None:
    """Both readers give the same content tree and the same payloads. With fast_path_expected, the raw bytes must
    also have been read by the single pass (not handed back to pydicom)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast_ds, reference_ds = read_bytes(data), dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        element = fast_ds.get_item(srtree.CONTENT_SEQUENCE) if srtree.CONTENT_SEQUENCE in fast_ds else None
        if fast_path_expected and isinstance(element, RawDataElement) and element.is_little_endian:
            children = srtree.children_from_bytes(element.value, element.is_implicit_VR,
                                                  element_value(fast_ds, "SpecificCharacterSet"))
            reference = srtree.root_from_dataset(reference_ds).children
            assert [node.as_tuple() for node in children] == [node.as_tuple() for node in reference]
        assert outcome(fast_ds) == outcome(reference_ds)
