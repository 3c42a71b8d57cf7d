"""Incomplete objects (agent.dicom.completeness, agent.dicom.reading): a data set cut anywhere is refused before any
value is read, in every encoding the intake accepts; a complete object always passes. Pure: bytes in, verdict out."""

from __future__ import annotations

import io
import warnings
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
    RLELossless,
)
from pynetdicom.dsutils import split_dataset

from agent.dicom.completeness import IncompleteObject, check_dataset, check_file
from agent.dicom.extract import extract
from agent.dicom.reading import read_part10, read_received
from tests import dicom_factory as factory

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]


def _bytes(ds) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory.to_bytes(ds)


def _split(data: bytes):
    """(file meta, offset of the data set) of Part 10 bytes, as the C-STORE sender splits a file."""
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".dcm") as f:
        f.write(data)
        f.flush()
        return split_dataset(f.name)


def _undefined_lengths(ds):
    """Every sequence and item written with undefined length and delimiters (as many modalities write SRs)."""
    def mark(dataset):
        for element in dataset:
            if element.VR == "SQ":
                element.is_undefined_length = True
                for item in element.value:
                    item.is_undefined_length_sequence_item = True
                    mark(item)
    mark(ds)
    return ds


def _encapsulated(ds):
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([bytes(64), bytes(48)])
    ds["PixelData"].VR = "OB"
    return ds


OBJECTS = {
    **{f"dx-{s.keyword}": (lambda s=s: factory.make_dx(transfer_syntax=s, private_tags=True)) for s in SYNTAXES},
    **{f"rdsr-{s.keyword}": (lambda s=s: factory.make_rdsr([factory.acquisition_event(), factory.fluoro_event()],
                                                        transfer_syntax=s)) for s in SYNTAXES},
    "rdsr-undefined-lengths": lambda: _undefined_lengths(factory.make_rdsr([factory.fluoro_event()] * 2)),
    "dx-undefined-lengths": lambda: _undefined_lengths(factory.make_dx(private_tags=True)),
    "dx-encapsulated": lambda: _encapsulated(factory.make_dx()),
    "xa-multiframe": lambda: factory.make_xa(frames=5),
}
FILES = {name: _bytes(build()) for name, build in OBJECTS.items()}


def _whole_length(data: bytes) -> int:
    """Bytes up to the end of the object's content: for a deflated data set, the end of the deflate stream (a pad
    byte may follow it to make the length even; cutting that off cuts nothing)."""
    meta, offset = _split(data)
    if meta.TransferSyntaxUID != DeflatedExplicitVRLittleEndian:
        return len(data)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflater.decompress(data[offset:])
    return len(data) - len(inflater.unused_data)


@pytest.mark.parametrize("name", sorted(FILES))
def test_complete_objects_pass_and_read_as_before(name):
    data = FILES[name]
    check_file(data)
    ds = read_part10(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
    assert ds.SOPInstanceUID == full.SOPInstanceUID and len(ds) == len(full)


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_cut_of_every_object_is_incomplete(name):
    """Cut after any byte of the data set (and of the meta): refused, never interpreted."""
    data = FILES[name]
    for cut in range(1, _whole_length(data)):
        with pytest.raises((IncompleteObject, ValueError)):
            read_part10(data[:cut])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(FILES)), where=st.floats(0, 1, exclude_max=True))
def test_a_cut_c_store_data_set_is_incomplete(name, where):
    """The C-STORE path: the data set without meta, in the presentation context's syntax, cut anywhere."""
    path_bytes = FILES[name]
    meta, offset = _split(path_bytes)
    body = path_bytes[offset:]
    syntax = UID(meta.TransferSyntaxUID)
    read_received(io.BytesIO(body), syntax)  # whole: fine
    cut = int(where * (_whole_length(path_bytes) - offset))
    with pytest.raises(IncompleteObject):
        read_received(io.BytesIO(body[:cut]), syntax, meta.MediaStorageSOPClassUID)


def test_the_kvp_cut_after_two_characters_is_not_read_as_12():
    """The reported case: "125" cut after "12", then DAP, mAs and SID missing, was published as kVp 12."""
    data = FILES["dx-ExplicitVRLittleEndian"]
    cut = data.index(b"125", data.index(b"\x18\x00\x60\x00")) + 2  # (0018,0060) KVP's value, after "12"
    with pytest.raises(IncompleteObject) as caught:
        read_part10(data[:cut])
    assert caught.value.reason == "incomplete object: value longer than the stream"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        as_pydicom_reads_it = dcmread(io.BytesIO(data[:cut]), force=True)
    assert extract(as_pydicom_reads_it, factory.make_context()).events[0].kvp == 12  # what the walk prevents


def test_unclosed_sequence_and_unterminated_pixel_data_are_incomplete():
    rdsr = FILES["rdsr-undefined-lengths"]
    assert rdsr.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")  # ends with the content sequence's delimiter
    with pytest.raises(IncompleteObject, match="not closed"):
        check_file(rdsr[:-8])
    encapsulated = FILES["dx-encapsulated"]
    with pytest.raises(IncompleteObject, match="not closed"):
        check_file(encapsulated[:-8])


def test_deflated_stream_without_its_final_block_is_incomplete():
    data = FILES["dx-DeflatedExplicitVRLittleEndian"]
    meta, offset = _split(data)
    with pytest.raises(IncompleteObject, match="deflated"):
        check_dataset(data[offset:-3], DeflatedExplicitVRLittleEndian)


def test_junk_is_undecodable_not_incomplete():
    with pytest.raises(ValueError) as caught:
        check_file(b"not a dicom file at all")
    assert not isinstance(caught.value, IncompleteObject)


def test_walk_cost_does_not_grow_with_pixel_data():
    """One header for the pixel data: an 18 MB image walks as fast as a 1 kB one (linear in elements)."""
    import time

    small = factory.make_dx()
    big = factory.make_dx()
    big.Rows = big.Columns = 3000
    big.PixelData = bytes(3000 * 3000 * 2)
    small_bytes, big_bytes = _bytes(small), _bytes(big)
    timings = []
    for data in (small_bytes, big_bytes):
        start = time.perf_counter()
        for _ in range(200):
            check_file(data)
        timings.append((time.perf_counter() - start) / 200)
    assert len(big_bytes) > 18_000_000
    assert timings[1] < max(5 * timings[0], 0.002), timings
