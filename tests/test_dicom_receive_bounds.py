"""Reading received objects within bounds (agent/dicom/receive.py), on bytes and files: no network, real pydicom."""

from __future__ import annotations

import io
import time
import tracemalloc

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, UID

from agent.dicom.receive import (
    MAX_NESTING, NestingTooDeep, ObjectTooLarge, read_headers, read_received_file,
)
from tests.large_objects import nested_sequences, write_deflate_bomb, write_large_xa

MIB = 1024 * 1024


@pytest.mark.parametrize("undefined", [False, True])
def test_nesting_within_the_limit_is_read(undefined):
    ds = read_headers(io.BytesIO(nested_sequences(MAX_NESTING, undefined)), UID(ExplicitVRLittleEndian))
    assert "ContentSequence" in ds


@pytest.mark.parametrize("undefined", [False, True])
def test_deeper_nesting_is_refused_quickly(undefined):
    data = nested_sequences(5000, undefined)
    t0 = time.perf_counter()
    with pytest.raises((NestingTooDeep, RecursionError)):
        read_headers(io.BytesIO(data), UID(ExplicitVRLittleEndian))
    assert time.perf_counter() - t0 < 2


def test_deflate_bomb_stops_at_the_bound_without_holding_it(tmp_path):
    bomb = write_deflate_bomb(tmp_path / "bomb.dcm", inflated_mib=512)
    assert bomb.stat().st_size < 2 * MIB
    tracemalloc.start()
    try:
        with pytest.raises(ObjectTooLarge, match="inflates to more than dicom.max_object_bytes"):
            read_received_file(bomb, max_object_bytes=64 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, peak


def test_deflated_object_within_the_bound_is_read(tmp_path):
    small = write_deflate_bomb(tmp_path / "ok.dcm", inflated_mib=8)
    ds = read_received_file(small, max_object_bytes=64 * MIB)
    assert ds.Modality == "XA" and "PixelData" not in ds
    assert ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian


def test_long_private_value_before_pixel_data_is_skipped_unread(tmp_path):
    path = write_large_xa(tmp_path / "long.dcm", mib=2, private_before_pixels=200 * MIB)
    tracemalloc.start()
    try:
        ds = read_received_file(path, max_object_bytes=1024 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.Modality == "XA" and 0x7FDF1000 not in ds
    assert peak < 16 * MIB, peak


def test_object_over_the_bound_is_refused_before_reading(tmp_path):
    path = write_large_xa(tmp_path / "big.dcm", mib=3)
    with pytest.raises(ObjectTooLarge, match="more than dicom.max_object_bytes"):
        read_received_file(path, max_object_bytes=2 * MIB)


def test_watched_folder_files_are_read_within_the_same_bounds(tmp_path):
    from agent.dicom.receive import read_file_headers
    from tests import dicom_factory as factory
    from tests.large_objects import _body

    bomb = write_deflate_bomb(tmp_path / "bomb.dcm", inflated_mib=256)
    with pytest.raises(ObjectTooLarge):
        read_file_headers(bomb, max_object_bytes=64 * MIB)
    bare = tmp_path / "bare.dcm"  # a data set without preamble or file meta, as some exporters write
    bare.write_bytes(_body(factory.make_dx()))
    ds = read_file_headers(bare, max_object_bytes=64 * MIB)
    assert ds.Modality == "DX" and "PixelData" not in ds
    with pytest.raises(ObjectTooLarge):
        read_file_headers(bare, max_object_bytes=100)
