"""Big and hostile DICOM objects written straight to disk, never held whole in memory.

- `write_large_xa`: an XA cine of any size (8-bit 1024 x 1024 frames), optionally with a long private value before
  the pixel data;
- `write_deflate_bomb`: a Deflated Explicit VR Little Endian object (PS3.5 A.5) whose data set inflates to a chosen
  size (zeros deflate about 1000:1);
- `nested_sequences`: a data set with sequences nested to a chosen depth.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from tests import dicom_factory as factory

FRAME = 1024 * 1024  # bytes per 8-bit 1024 x 1024 frame
CHUNK = 4 * 1024 * 1024


def _xa_header(frames: int) -> Dataset:
    ds = factory.make_xa(frames=2)
    del ds.PixelData
    ds.Rows = ds.Columns = 1024
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = frames
    return ds


def _meta(ds: Dataset, syntax: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    return fp.getvalue()


def _body(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _ob_header(group: int, element: int, length: int) -> bytes:
    return struct.pack("<HH2sHI", group, element, b"OB", 0, length)


def _stream(length: int):
    zeros = bytes(CHUNK)
    while length > 0:
        yield zeros[:min(CHUNK, length)]
        length -= CHUNK


def _large_parts(frames: int, private_before_pixels: int):
    ds = _xa_header(frames)
    if private_before_pixels:
        ds.add_new(0x7FDF0010, "LO", "XRAY AGENT TEST")  # private creator of block 10xx in odd group 7FDF
    yield _body(ds)
    if private_before_pixels:
        yield _ob_header(0x7FDF, 0x1000, private_before_pixels)
        yield from _stream(private_before_pixels)
    yield _ob_header(0x7FE0, 0x0010, frames * FRAME)
    yield from _stream(frames * FRAME)


def write_large_xa(path: Path, mib: int, private_before_pixels: int = 0) -> Path:
    """An XA object of `mib` 1 MiB frames (and a private OB value of that many bytes before the pixel data)."""
    ds = _xa_header(mib)
    with open(path, "wb") as f:
        f.write(_meta(ds, ExplicitVRLittleEndian))
        for part in _large_parts(mib, private_before_pixels):
            f.write(part)
    return path


def write_deflate_bomb(path: Path, inflated_mib: int) -> Path:
    """A deflated XA object whose data set inflates to about `inflated_mib` MiB."""
    ds = _xa_header(inflated_mib)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as f:
        f.write(_meta(ds, DeflatedExplicitVRLittleEndian))
        for part in _large_parts(inflated_mib, 0):
            f.write(deflater.compress(part))
        f.write(deflater.flush())
    return path


def nested_sequences(depth: int, undefined_length: bool = False) -> bytes:
    """Explicit VR LE data set bytes: (0040,A730) Content Sequence nested `depth` levels, then a Modality."""
    inner = struct.pack("<HH2sH", 0x0008, 0x0060, b"CS", 2) + b"DX"
    for _ in range(depth):
        if undefined_length:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
            inner = (struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF) + item
                     + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
        else:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
            inner = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, len(item)) + item
    return inner
