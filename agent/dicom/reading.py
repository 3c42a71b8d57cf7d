"""From received bytes to the Dataset extraction reads, for every intake path (C-STORE, watched folder, `ingest`).

Each path first checks that the object is complete (completeness.py): a data set cut part-way raises IncompleteObject
and is never interpreted, so no value read from a partial object is acknowledged or published. Then only the headers
are parsed (up to the pixel data, which extraction never reads).
"""

from __future__ import annotations

import zlib
from io import BytesIO

from pydicom import Dataset, dcmread
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from agent.dicom import image, rdsr
from agent.dicom.attributes import read_text
from agent.dicom.completeness import IncompleteObject, check_dataset, check_file

# (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data and whatever follows
# (trailing padding, signatures): bulk data extraction never reads. pydicom's stop_before_pixels stops at the same tags.
PIXEL_DATA_FIRST_TAG = 0x7FE00008


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    # pydicom calls this for every element; BaseTag's own Python-level __ge__ cost more than the completeness walk
    # of the whole object, the C-level int comparison nothing.
    return int.__ge__(tag, PIXEL_DATA_FIRST_TAG)


def read_headers(stream: BytesIO, transfer_syntax: UID) -> Dataset:
    """The received data set up to its pixel data, as extraction needs it (parsing stays lazy, as pydicom's).

    No completeness check (read_received adds it). pynetdicom's `event.dataset` would read everything, copying the
    pixel data (18 MB for a large DX image) only for extraction to ignore it."""
    if transfer_syntax.is_deflated:
        stream = BytesIO(zlib.decompress(stream.getvalue(), -zlib.MAX_WBITS))
    stream.seek(0)
    ds = read_dataset(stream, transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian,
                      stop_when=_at_pixel_data)
    ds.set_original_encoding(transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian)
    return ds


def read_received(stream: BytesIO, transfer_syntax: UID, sop_class: str | None = None) -> Dataset:
    """A C-STORE data set (no meta, in the presentation context's transfer syntax; `sop_class` the request's Affected
    SOP Class UID): checked complete, then read. Raises IncompleteObject for a cut object, anything pydicom raises
    for undecodable bytes."""
    view = stream.getbuffer()  # no copy of the (possibly 18 MB) received bytes
    try:
        has_pixels = check_dataset(view, transfer_syntax)
    finally:
        view.release()
    ds = read_headers(stream, transfer_syntax)
    require_whole_object(ds, has_pixels, sop_class)
    return ds


def read_part10(data: bytes) -> Dataset:
    """A DICOM file's bytes (Part 10, or a bare data set as some exporters write): checked complete, then read up to
    the pixel data. Raises IncompleteObject, or what pydicom raises for an unreadable file."""
    _, has_pixels = check_file(data)
    ds = dcmread(BytesIO(data), force=True, stop_before_pixels=True)
    require_whole_object(ds, has_pixels)
    return ds


def require_whole_object(ds: Dataset, has_pixels: bool, sop_class_from_meta: str | None = None) -> None:
    """IncompleteObject for an object cut exactly between two elements, which the structural walk cannot see: an
    image without its pixel data (Type 1, PS3.3 C.7.6.3, and written last), a dose report without its content."""
    meta = getattr(ds, "file_meta", None)
    sop_class = read_text(ds, "SOPClassUID") or (read_text(meta, "MediaStorageSOPClassUID")
                                                 if isinstance(meta, Dataset) else None) or sop_class_from_meta
    is_image = (sop_class in image.IMAGE_SOP_CLASSES if sop_class
                else read_text(ds, "Modality") in image.IMAGE_MODALITIES)
    if is_image and not has_pixels:
        raise IncompleteObject("image ends before its pixel data")
    # A dose report's content tree is Type 1 (SR Document Content Module, PS3.3 C.17.3) and its last top-level
    # element but for signatures and padding: a report cut before it would be acknowledged with no events.
    if sop_class in rdsr.DOSE_SR_CLASSES and "ContentSequence" not in ds:
        raise IncompleteObject("dose report ends before its content")


__all__ = ["IncompleteObject", "read_headers", "read_received", "read_part10"]
