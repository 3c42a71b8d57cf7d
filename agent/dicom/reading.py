"""From received bytes to the Dataset extraction reads, for every intake path (C-STORE, watched folder, `ingest`).

Each path first checks that the object is complete (completeness.py): a data set cut part-way raises IncompleteObject
and is never interpreted, so no value read from a partial object is acknowledged or published. Then only the headers
are parsed (up to the pixel data, which extraction never reads), within the bounds of receive.py (size, inflated size,
header bytes, nesting). A structured report within SR_IN_MEMORY_MAX_BYTES is read by report_reading.py, which keeps
its Content Sequence as raw bytes for the single-pass content-tree reader (srtree.py): a dose report of thousands of
irradiation events is answered in well under a second.
"""

from __future__ import annotations

import mmap
import os
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

from pydicom import Dataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import UID

from agent.dicom import image, rdsr, receive, report_reading
from agent.dicom.attributes import read_text
from agent.dicom.completeness import EXPLICIT_LE, MAGIC, PREAMBLE, IncompleteObject, check_dataset, check_file

UNBOUNDED = 1 << 62
MAP_ABOVE_BYTES = 1 << 20  # smaller objects are simply read; larger ones are memory-mapped for the walk
DEFAULT_MAX_OBJECT_BYTES = 1 << 30  # dicom.max_object_bytes' default
SR_IN_MEMORY_MAX_BYTES = receive.HEADER_BYTES_MAX  # an SR (no pixel data: all of it is header) read whole, up to this
SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."  # every Structured Report storage SOP class (PS3.4 B.5)


def _is_sr(sop_class: str | None) -> bool:
    return bool(sop_class) and str(sop_class).startswith(SR_CLASS_PREFIX)

def read_received(stream: BytesIO, transfer_syntax: UID, sop_class: str | None = None,
                  max_object_bytes: int | None = None) -> Dataset:
    """A C-STORE data set held in memory (no meta, in the presentation context's transfer syntax; `sop_class` the
    request's Affected SOP Class UID): checked complete, then its headers read within receive.py's bounds.

    Raises IncompleteObject for a cut object, ObjectTooLarge beyond `max_object_bytes` (the inflated size for the
    deflated syntax), HeaderTooLarge / NestingTooDeep, or what pydicom raises for undecodable bytes."""
    limit = max_object_bytes if max_object_bytes is not None else UNBOUNDED
    stream.seek(0)
    if transfer_syntax.is_deflated:
        ds, has_pixels = _read_deflated(stream, transfer_syntax, limit)
    else:
        view = stream.getbuffer()  # no copy of the (possibly 18 MB) received bytes
        try:
            has_pixels = check_dataset(view, transfer_syntax)
            size = len(view)
        finally:
            view.release()
        stream.seek(0)
        if _is_sr(sop_class) and size <= SR_IN_MEMORY_MAX_BYTES:
            ds = report_reading.read_data_set(stream.getvalue(), transfer_syntax.is_implicit_VR,
                                              transfer_syntax.is_little_endian)
        else:
            ds = receive.read_headers(stream, transfer_syntax, limit)
    require_whole_object(ds, has_pixels, sop_class)
    return ds


def read_received_path(path: Path, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
                       sop_class: str | None = None) -> Dataset:
    """A Part 10 file (a C-STORE received to a temporary file, or a watched-folder file with the DICM prefix): the
    whole data set checked complete through a memory map (the walk touches only element headers, so a 400 MiB object
    costs a few pages), then only its headers read. Raises as read_received."""
    with open(path, "rb") as fp:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        start = fp.tell()
        size = os.fstat(fp.fileno()).st_size - start
        if size > max_object_bytes:
            raise receive.ObjectTooLarge(size, max_object_bytes, inflated=False)
        syntax = UID(meta.TransferSyntaxUID)
        sop_class = sop_class or getattr(meta, "MediaStorageSOPClassUID", None)
        if syntax.is_deflated:
            ds, has_pixels = _read_deflated(fp, syntax, max_object_bytes, _is_sr(sop_class))
        else:
            with _mapped(fp) as data:
                has_pixels = check_dataset(data, syntax, start)
            fp.seek(start)
            if _is_sr(sop_class) and size <= SR_IN_MEMORY_MAX_BYTES:
                ds = report_reading.read_data_set(fp.read(), syntax.is_implicit_VR, syntax.is_little_endian)
            else:
                ds = receive.read_headers(fp, syntax, max_object_bytes)
    ds.file_meta = meta
    require_whole_object(ds, has_pixels, sop_class)
    return ds


def read_file(path: Path, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES) -> Dataset:
    """A file from the watched folder or `ingest`: a Part 10 file as read_received_path; a bare data set (no
    preamble, as some exporters write) checked complete the same way, then read with pydicom's guess of its encoding
    within the same bounds. Raises as read_received, and ValueError for a file that is not DICOM at all."""
    size = Path(path).stat().st_size
    if size > max_object_bytes:
        raise receive.ObjectTooLarge(size, max_object_bytes, inflated=False)
    with open(path, "rb") as fp:
        if fp.read(PREAMBLE + len(MAGIC))[PREAMBLE:] == MAGIC:
            part10 = True
        else:
            part10 = False
            fp.seek(0)
            with _mapped(fp) as data:
                _, has_pixels = check_file(data)
    if part10:
        return read_received_path(Path(path), max_object_bytes)
    if size <= SR_IN_MEMORY_MAX_BYTES and not has_pixels:  # a bare SR (no pixel data): its content tree kept raw
        ds = report_reading.read_bytes(Path(path).read_bytes())
        if _is_sr(read_text(ds, "SOPClassUID")):
            require_whole_object(ds, has_pixels)
            return ds
    ds = receive.read_file_headers(Path(path), max_object_bytes)
    require_whole_object(ds, has_pixels)
    return ds


def read_part10(data: bytes) -> Dataset:
    """A DICOM file's bytes (Part 10, or a bare data set as some exporters write): checked complete, then read up to
    the pixel data (an SR's content tree kept raw). Raises IncompleteObject, or what pydicom raises for an unreadable
    file."""
    _, has_pixels = check_file(data)
    ds = report_reading.read_bytes(data)
    require_whole_object(ds, has_pixels)
    return ds


def _read_deflated(fp, syntax: UID, limit: int, sr: bool = False) -> tuple[Dataset, bool]:
    """Inflate within the bound (to a temporary file past a few MiB: a deflate bomb never sits in memory), check the
    inflated data set complete, read its headers (an SR's content tree kept raw). (Dataset, has pixel data)."""
    with receive.inflate_bounded(fp, limit) as inflated:
        with _mapped(inflated) as data:
            has_pixels = check_dataset(data, EXPLICIT_LE)
            if sr and len(data) <= SR_IN_MEMORY_MAX_BYTES:
                return report_reading.read_data_set(bytes(data), False, True), has_pixels
        inflated.seek(0)
        return receive.read_inflated_headers(inflated, syntax), has_pixels


@contextmanager
def _mapped(fp):
    """The rest of an open file from offset 0 as a buffer: bytes when small, else a read-only memory map (pages are
    read only where the completeness walk looks, i.e. element headers)."""
    fp.seek(0, os.SEEK_END)
    size = fp.tell()
    fp.seek(0)
    if size <= MAP_ABOVE_BYTES:
        yield fp.read()
        return
    if hasattr(fp, "rollover"):  # a spooled temporary file: on disk past its spool size already, or made so
        fp.rollover()
    mapped = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield mapped
    finally:
        try:
            mapped.close()
        except BufferError:  # a view is still held by an exception's traceback: closed when that is collected
            pass


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


__all__ = ["IncompleteObject", "read_received", "read_received_path", "read_file", "read_part10"]
