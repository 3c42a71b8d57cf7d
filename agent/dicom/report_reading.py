"""Reading a received object's bytes into the pydicom Dataset extraction works on: every attribute up to the pixel
data, with an SR's Content Sequence (0040,A730) kept as its raw bytes (a defined-length RawDataElement).

Why: pydicom parses an undefined-length sequence eagerly into nested Datasets, which for a dose report with
thousands of irradiation events costs seconds while the modality waits for the C-STORE response. Kept raw, the
sequence is read once by srtree.py's single-pass reader; anything that asks pydicom for `ds.ContentSequence` still gets
pydicom's own parsing of the same bytes (a defined-length raw sequence is converted on access).
"""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.filereader import read_dataset, read_partial
from pydicom.tag import BaseTag, Tag

from agent.dicom.srtree import CONTENT_SEQUENCE, PARSED, UNDEFINED, _Reader, paused_collector

# (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data: bulk data extraction
# never reads (the same tags as pydicom's stop_before_pixels; what follows them, padding or signatures, is not read).
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
SEQUENCE_DELIMITER_BYTES = 8  # (FFFE,E0DD) + 32-bit zero length (PS3.5 7.5.2)


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in PIXEL_DATA_TAGS


def _at_content_or_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag == CONTENT_SEQUENCE or tag in PIXEL_DATA_TAGS


def _tag_at(data: bytes, pos: int) -> int:
    group, element = struct.unpack_from("<HH", data, pos)
    return group << 16 | element


def _keep_content_raw(ds: Dataset, data: bytes, pos: int, implicit: bool) -> int | None:
    """Put the Content Sequence that starts at `pos` into ds as raw bytes, with the single pass's reading of them
    (srtree.PARSED: finding the end of an undefined-length sequence is that reading); the position after it, or None
    when its bytes do not parse (the caller lets pydicom read them)."""
    reader = _Reader(data, implicit)
    try:
        tag, vr, length, value = reader.header(pos)
        if tag != CONTENT_SEQUENCE or vr not in (None, b"SQ"):
            return None
        with paused_collector():
            items, end = reader.sequence(value, length, 0, keep=True)
        content = data[value:end - SEQUENCE_DELIMITER_BYTES if length == UNDEFINED else end]
    except Exception:  # noqa: BLE001 - struct.error/ValueError on malformed bytes: pydicom decides
        return None
    ds[Tag(tag)] = RawDataElement(Tag(tag), "SQ", len(content), content, pos, implicit, True)
    setattr(ds, PARSED, (content, items))
    return end


def read_data_set(data: bytes, implicit: bool, little: bool) -> Dataset:
    """A data set (no file meta) from its bytes, up to the pixel data, the Content Sequence kept raw."""
    stream = BytesIO(data)
    ds = read_dataset(stream, implicit, little, stop_when=_at_content_or_pixels if little else _at_pixel_data)
    _read_rest(ds, stream, data, implicit, little)
    ds.set_original_encoding(implicit, little)
    return ds


def _read_rest(ds: Dataset, stream, data: bytes, implicit: bool, little: bool) -> None:
    """After a stop at the Content Sequence: keep it raw and read what follows it, up to the pixel data."""
    pos = stream.tell()
    if pos > len(data) - 8:
        return  # at the end of the data: nothing more to read
    if not little:  # big endian (retired): pydicom reads the rest, content tree included; stops again at pixel data
        ds.update(read_dataset(stream, implicit, little, stop_when=_at_pixel_data))
        return
    if _tag_at(data, pos) != CONTENT_SEQUENCE:
        return  # stopped at the pixel data: nothing more to read
    end = _keep_content_raw(ds, data, pos, implicit)
    stream.seek(pos if end is None else end)
    ds.update(read_dataset(stream, implicit, little, stop_when=_at_pixel_data))


def read_received(stream: BytesIO, implicit: bool, little: bool, deflated: bool) -> Dataset:
    """The data set of a C-STORE request (pynetdicom's raw bytes), inflated first when the transfer syntax says so."""
    data = stream.getvalue()
    if deflated:
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    return read_data_set(data, implicit, little)


def read_file(path: Path | str) -> Dataset:
    """A DICOM file (Part 10, or a bare data set with force) up to its pixel data, the Content Sequence kept raw."""
    return read_bytes(Path(path).read_bytes())


def _deflated(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    try:
        return bool(syntax is not None and syntax.is_deflated)
    except ValueError:  # not a transfer syntax pydicom knows: it guessed the encoding, as dcmread does
        return False


def read_bytes(data: bytes) -> Dataset:
    """A DICOM file's bytes (Part 10, or a bare data set) up to the pixel data, the Content Sequence kept raw."""
    stream = BytesIO(data)
    ds = read_partial(stream, stop_when=_at_content_or_pixels, force=True)
    if _deflated(ds):
        return dcmread(BytesIO(data), force=True, stop_before_pixels=True)  # inflated by pydicom, read as usual
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return ds
    _read_rest(ds, stream, data, implicit, little)
    return ds
