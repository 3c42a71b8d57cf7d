"""Ludlum 375: byte-exact push frames, alarm bits, error codes, noise, silence."""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

from drivers.ludlum import Ludlum375, Ludlum375Settings, parse_frame_375
from tests.serial_fixtures import LUDLUM_375, chunks_of, collect, expected_protocol

RATE_642_1 = 642.1 * 8.76 / 3600  # mR/h -> uGy/s


def run(stream, **settings):
    stop = threading.Event()
    driver = Ludlum375(Ludlum375Settings(**settings))
    with expected_protocol(stream=stream, stop=stop) as port:  # a push instrument: any write fails the test
        readings = collect(driver.readings(port, stop), stop)
    return driver, readings


def test_frames_byte_exact():
    driver, readings = run([LUDLUM_375, b"0001.5000000\r\n"])
    assert [r.quantities["dose_rate_ugy_s"] for r in readings] == pytest.approx([RATE_642_1, 1.5 * 8.76 / 3600])
    assert readings[0].flags == {"high_alarm"} and readings[1].flags == frozenset()
    assert readings[0].raw == b"0642.1010000"
    assert driver.counters.frames_ok == 2


def test_char_by_char_and_an_unclosed_frame_first():
    driver, readings = run(chunks_of(b"42.1000" + LUDLUM_375 + b"0010.0101010\r\n", 1))
    assert len(readings) == 2
    assert readings[1].flags == {"audio", "low_alarm", "monitor"}
    assert driver.counters.bytes_discarded == len(b"42.1000")


def test_one_megabyte_of_noise_then_a_frame():
    noise = random.Random(375).randbytes(1_000_000)
    driver, readings = run(chunks_of(noise, 4096) + [LUDLUM_375])
    assert len(readings) == 1
    assert readings[0].quantities["dose_rate_ugy_s"] == pytest.approx(RATE_642_1)
    # Every noise byte is either discarded by the framer or handed on (with its CR LF) in a frame the parser rejected.
    longest_bad = driver.make_framer().max_frame + len(b"\r\n")
    assert len(noise) - longest_bad * driver.counters.frames_bad <= driver.counters.bytes_discarded <= len(noise)


def test_error_code_is_flagged_and_counted():
    driver, [reading] = run([b"0642.1000003\r\n"])
    assert reading.flags == {"error_3"} and driver.counters.error_replies == 1


def test_printer_format_and_unit_setting():
    _, [reading] = run([b"0642.1 04/21/95 16:56:24 ALARM\r\n"], reading_unit="uSv/h")
    assert reading.quantities == {"dose_rate_usv_h": 642.1} and reading.flags == {"alarm"}


def test_bad_frames_are_counted_not_raised():
    driver, readings = run([b"06X2.1000000\r\n", b"0642.10000\r\n", b"------000000\r\n"])
    assert readings == [] and driver.counters.frames_bad == 3


class _Silent:
    in_waiting = 0

    def read(self, size=1):
        time.sleep(0.01)
        return b""

    def write(self, data):
        raise AssertionError("push instrument: nothing to write")


def test_silence_counts_timeouts_logged_once(caplog):
    driver = Ludlum375(Ludlum375Settings(silence_timeout_s=0.05))
    stop = threading.Event()
    threading.Timer(0.4, stop.set).start()
    with caplog.at_level(logging.WARNING, logger="drivers"):
        assert collect(driver.readings(_Silent(), stop), stop) == []
    assert driver.counters.timeouts >= 3
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_parse_trims_leading_noise():
    quantities, flags, noise = parse_frame_375(b"\x00zz0642.1000000", "mR/h")
    assert noise == 3 and flags == set()
