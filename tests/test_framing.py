"""Frame buffers: any chunking gives the same frames; garbage is dropped and counted; memory stays bounded."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.framing import FixedLengthFramer, FunctionFramer, MultiLineFramer, TerminatorFramer
from drivers.victoreen import exposure_reply_end
from tests.serial_fixtures import VICTOREEN_D, chunks_of

FRAMES = [b"0642.1000000", b"0001.5010000", b"9999.9111111"]
STREAM = b"".join(f + b"\r\n" for f in FRAMES)


def feed_all(framer, chunks) -> list[bytes]:
    return [frame for chunk in chunks for frame in framer.feed(chunk)]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_terminator_any_split(cuts):
    assert feed_all(TerminatorFramer(b"\r\n"), split(STREAM, cuts)) == FRAMES


@pytest.mark.parametrize("position", range(len(STREAM) + 1))
def test_terminator_every_single_split_position(position):
    assert feed_all(TerminatorFramer(b"\r\n"), [STREAM[:position], STREAM[position:]]) == FRAMES


@pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n", b"\x03"])
def test_terminator_char_by_char(terminator):
    data = b"".join(f + terminator for f in FRAMES)
    framer = TerminatorFramer(terminator)
    assert feed_all(framer, chunks_of(data, 1)) == FRAMES
    assert framer.pending == 0 and framer.drain_discarded() == 0


def test_partial_frame_is_held_not_returned():
    framer = TerminatorFramer(b"\r\n")
    assert framer.feed(b"0642.10000") == []
    assert framer.feed(b"00\r") == []
    assert framer.feed(b"\n") == [b"0642.1000000"]


def test_empty_frames_skipped_unless_kept():
    assert TerminatorFramer(b"\r\n").feed(b"\r\nA\r\n\r\n") == [b"A"]
    assert TerminatorFramer(b"\r\n", keep_empty=True).feed(b"A\r\n\r\n") == [b"A", b""]


def test_start_marker_drops_leading_garbage_and_unclosed_frame():
    framer = TerminatorFramer(b"\r\n", start=b"$")
    frames = feed_all(framer, [b"noise\x00\xff$GPX,1,2", b"$GPX,3,4*00\r", b"\n", b"junk$GPX,5\r\n"])
    assert frames == [b"$GPX,3,4*00", b"$GPX,5"]
    assert framer.drain_discarded() == len(b"noise\x00\xff$GPX,1,2") + len(b"junk")


def test_start_marker_split_across_chunks():
    framer = TerminatorFramer(b"\x03", start=b"\x02\x02")
    assert feed_all(framer, [b"xx\x02", b"\x02DATA\x03"]) == [b"\x02\x02DATA"]


def test_overflow_keeps_only_the_tail_counts_and_recovers():
    framer = TerminatorFramer(b"\r\n", max_frame=16)
    assert framer.feed(b"A" * 40) == []
    assert framer.pending == 16 and framer.overflows == 1 and framer.drain_discarded() == 24
    # the kept tail comes out as one (bad) frame for the parser to reject; the next frame is intact
    assert framer.feed(b"\r\n0642.1000000\r\n") == [b"A" * 16, b"0642.1000000"]


def test_overflow_inside_one_chunk():
    framer = TerminatorFramer(b"\r\n", max_frame=16)
    assert framer.feed(b"B" * 100 + b"\r\nOK\r\n") == [b"B" * 16, b"OK"]
    assert framer.overflows == 1 and framer.drain_discarded() == 84


def test_frame_glued_to_the_end_of_noise_survives_in_the_tail():
    # No terminator between the noise and the frame (a meter switched on mid-garbage): the frame is the tail.
    framer = TerminatorFramer(b"\r\n", max_frame=16)
    frames = framer.feed(b"\x17" * 5000 + b"0642.1000000\r\n")
    assert len(frames) == 1 and frames[0].endswith(b"0642.1000000") and len(frames[0]) == 16


def test_one_megabyte_of_noise_stays_bounded_then_valid_frame():
    rng = random.Random(1234)
    noise = rng.randbytes(1_000_000)
    framer = TerminatorFramer(b"\r\n", max_frame=64)
    for chunk in chunks_of(noise, 4096):
        framer.feed(chunk)
        assert framer.pending <= 64
    frames = framer.feed(b"\r\n0642.1000000\r\n")
    assert frames[-1] == b"0642.1000000"
    assert framer.drain_discarded() > 900_000


def test_one_megabyte_of_noise_with_start_marker_gives_exactly_the_frame():
    noise = random.Random(99).randbytes(1_000_000)
    framer = TerminatorFramer(b"\r\n", start=b"$", max_frame=64)
    frames = []
    for chunk in chunks_of(noise + b"$GPX,1,2*3F\r\n", 4093):
        frames += framer.feed(chunk)
        assert framer.pending <= 64
    assert frames[-1] == b"$GPX,1,2*3F"


@given(st.lists(st.integers(min_value=0, max_value=100), max_size=10))
def test_fixed_length_any_split(cuts):
    data = b"ABCDEFGHIJKL"
    assert feed_all(FixedLengthFramer(4), split(data, cuts)) == [b"ABCD", b"EFGH", b"IJKL"]


def test_fixed_length_resyncs_on_start_marker():
    framer = FixedLengthFramer(4, start=b"\x02")
    assert framer.feed(b"zz\x02abc\x02de") == [b"\x02abc"]
    assert framer.feed(b"f") == [b"\x02def"]
    assert framer.drain_discarded() == 2


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=10))
def test_multi_line_records_any_split(cuts):
    data = b"H 1\r\nv1\r\nH 2\r\nv2\r\n"
    assert feed_all(MultiLineFramer(2), split(data, cuts)) == [b"H 1\nv1", b"H 2\nv2"]


def test_multi_line_first_line_resynchronises():
    framer = MultiLineFramer(3, first_line=rb"^H ")
    frames = framer.feed(b"stray\r\nH 1\r\na\r\nH 2\r\nb\r\nc\r\n")
    assert frames == [b"H 2\nb\nc"]  # the record torn by a new header is dropped
    assert framer.drain_discarded() == len(b"stray") + len(b"H 1") + len(b"a")


@given(st.lists(st.integers(min_value=0, max_value=500), max_size=12))
def test_function_framer_victoreen_reply_any_split(cuts):
    framer = FunctionFramer(exposure_reply_end)
    assert feed_all(framer, split(VICTOREEN_D, cuts)) == [VICTOREEN_D]


@pytest.mark.parametrize("reply", [
    b"+8.0E+01 +7.9E+01 +1.0E+02 +1.0E-01 0\r\n\r\n",  # no peaks: empty second line
    b"+8.0E+01\r\n+7.9E+01\r\n+1.0E+02\r\n+1.0E-01\r\n2\r\n+8.1E+01\r\n+8.0E+01\r\n",  # one field per line
])
def test_victoreen_reply_end_tolerates_both_layouts(reply):
    assert exposure_reply_end(reply) == len(reply)
    assert exposure_reply_end(reply[:-1]) is None
