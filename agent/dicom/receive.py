"""Reading a received object's headers within stated bounds of memory and CPU, whatever the object holds.

The listener receives every object to a temporary file (pynetdicom's STORE_RECV_CHUNKED_DATASET); only the headers
up to the pixel data are read from it, never the pixel data. The bounds (README "DICOM listener limits"):

- size: the data set at most `max_object_bytes`; for the Deflated Explicit VR Little Endian transfer syntax
  (PS3.5 A.5) that is the inflated size, inflated in chunks to a temporary file, so a small deflate bomb inflating
  to gigabytes stops at the bound (ObjectTooLarge) without holding it in memory;
- memory: at most HEADER_BYTES_MAX of header values are read into memory; a single value longer than DEFER_BYTES
  is skipped unread (logged), except a sequence, whose items extraction may need (RDSR content trees), which is read
  within the same budget (HeaderTooLarge beyond it);
- nesting: sequences nested deeper than MAX_NESTING levels are refused (NestingTooDeep); an RDSR tree is about six
  levels deep (TID 10001 > 10003 > content items), image headers two or three.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import zlib
from pathlib import Path

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import UID

from agent.dicom.completeness import IncompleteObject
from agent.logs import log_repeated

log = logging.getLogger(__name__)

MIB = 1024 * 1024
HEADER_BYTES_MAX = 64 * MIB  # header values read into memory per object
DEFER_BYTES = 4 * MIB  # a longer single value (other than a sequence) is skipped unread
MAX_NESTING = 32  # sequence levels
INFLATE_CHUNK = MIB
SPOOL_IN_MEMORY = 4 * MIB  # inflated data sets up to this stay in memory, larger ones go to a temporary file
# (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data and whatever follows
# (trailing padding, signatures): extraction never reads them. pydicom's stop_before_pixels stops at the same tags.
PIXEL_DATA_FIRST_TAG = 0x7FE00008


class ObjectTooLarge(Exception):
    """The data set (inflated, for a deflated transfer syntax) exceeds dicom.max_object_bytes."""

    def __init__(self, size: int, limit: int, inflated: bool):
        self.size, self.limit, self.inflated = size, limit, inflated
        what = "inflates to more than" if inflated else f"is {size} bytes, more than"
        super().__init__(f"data set {what} dicom.max_object_bytes ({limit} bytes)")


class HeaderTooLarge(Exception):
    """The headers before the pixel data hold more than HEADER_BYTES_MAX bytes of values."""


class NestingTooDeep(Exception):
    """Sequences nested deeper than MAX_NESTING."""


class _Budget(io.RawIOBase):
    """A read-only view of a file that counts the bytes read (seeks past skipped values are free)."""

    def __init__(self, fp, limit: int):
        super().__init__()
        self._fp, self.remaining = fp, limit
        self.name = getattr(fp, "name", "<received>")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.remaining + 1
        if size > self.remaining:
            raise HeaderTooLarge(f"headers hold more than {HEADER_BYTES_MAX // MIB} MiB of values")
        data = self._fp.read(size)
        self.remaining -= len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >= PIXEL_DATA_FIRST_TAG


def inflate_bounded(fp, limit: int):
    """Inflate a raw deflate stream (PS3.5 A.5: no zlib header) from `fp` into a seekable file; ObjectTooLarge once
    more than `limit` bytes come out. Memory: one input chunk and one output chunk at a time."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    total = 0
    try:
        while True:
            chunk = fp.read(INFLATE_CHUNK)
            data = inflater.decompress(chunk, INFLATE_CHUNK) if chunk else inflater.flush()
            while True:
                total += len(data)
                if total > limit:
                    raise ObjectTooLarge(total, limit, inflated=True)
                out.write(data)
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, INFLATE_CHUNK)
            if not chunk or inflater.eof:
                break
        if not inflater.eof:  # PS3.5 A.5: a deflate stream without its final block was cut part-way
            raise IncompleteObject("deflated stream ends before its final block")
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def read_headers(stream, transfer_syntax: UID, max_object_bytes: int | None = None) -> Dataset:
    """The data set in `stream` (positioned at its start) up to its pixel data, within the module's bounds.

    Raises ObjectTooLarge, HeaderTooLarge, NestingTooDeep, or pydicom's errors for malformed bytes."""
    limit = max_object_bytes if max_object_bytes is not None else 1 << 62
    if transfer_syntax.is_deflated:
        with inflate_bounded(stream, limit) as inflated:
            return _read(inflated, transfer_syntax)
    return _read(stream, transfer_syntax)


def read_received_file(path: Path, max_object_bytes: int) -> Dataset:
    """A received Part 10 file (pynetdicom's chunked receive): file meta and the data set's headers, bounded."""
    with open(path, "rb") as fp:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        size = os.fstat(fp.fileno()).st_size - fp.tell()
        if size > max_object_bytes:
            raise ObjectTooLarge(size, max_object_bytes, inflated=False)
        ds = read_headers(fp, UID(meta.TransferSyntaxUID), max_object_bytes)
    ds.file_meta = meta
    return ds


def read_inflated_headers(fp, ts: UID) -> Dataset:
    """The headers of an already inflated data set (from inflate_bounded), within the header and nesting bounds."""
    return _read(fp, ts)


def _read(fp, ts: UID) -> Dataset:
    budget = _Budget(fp, HEADER_BYTES_MAX)
    ds = read_dataset(budget, ts.is_implicit_VR, ts.is_little_endian, stop_when=_at_pixel_data,
                      defer_size=DEFER_BYTES)
    ds.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian)
    _resolve_deferred(ds, budget)
    check_nesting(ds)
    return ds


def _resolve_deferred(ds: Dataset, budget: _Budget) -> None:
    """Values skipped for their length: sequences are read (within the budget), anything else is dropped."""
    for tag, elem in list(ds._dict.items()):
        if not isinstance(elem, RawDataElement) or elem.value is not None or elem.length in (0, 0xFFFFFFFF):
            continue
        if _vr(elem) == "SQ":
            budget.seek(elem.value_tell)  # value_tell counts from the stream's start, as read_dataset saw it
            ds._dict[tag] = elem._replace(value=budget.read(elem.length))
        else:
            del ds._dict[tag]
            log_repeated(log, logging.WARNING, ("long value", int(tag)),
                         "received object: value of %s (%d bytes) skipped unread: longer than %d MiB, which no "
                         "header attribute the agent reads needs", tag, elem.length, DEFER_BYTES // MIB)


def _vr(elem: RawDataElement) -> str | None:
    if elem.VR is not None:
        return str(elem.VR)
    try:
        return dictionary_VR(elem.tag)
    except KeyError:
        return None


def check_nesting(ds: Dataset, depth: int = 0) -> None:
    """NestingTooDeep when sequences go deeper than MAX_NESTING (parses sequences on the way, as extraction would)."""
    for tag, elem in list(ds._dict.items()):
        vr = _vr(elem) if isinstance(elem, RawDataElement) else str(elem.VR)
        if vr != "SQ":
            continue
        if depth + 1 > MAX_NESTING:
            raise NestingTooDeep(f"sequences nested deeper than {MAX_NESTING} levels")
        for item in ds[tag].value or ():
            check_nesting(item, depth + 1)


def read_file_headers(path: Path, max_object_bytes: int) -> Dataset:
    """A file from a watched folder, within the same bounds: a Part 10 file as a received object; a bare data set
    (no preamble, some exporters write them) with pydicom's own guess of its encoding, values over DEFER_BYTES left
    unread and nothing from the pixel data on (a bare data set cannot be deflated: that needs the file meta)."""
    size = path.stat().st_size
    with open(path, "rb") as fp:
        part10 = fp.read(132)[128:] == b"DICM"
    if part10:
        return read_received_file(path, max_object_bytes)
    if size > max_object_bytes:
        raise ObjectTooLarge(size, max_object_bytes, inflated=False)
    from pydicom import dcmread

    ds = dcmread(path, force=True, defer_size=DEFER_BYTES, stop_before_pixels=True)
    check_nesting(ds)
    return ds
