"""Victoreen 4000M+: byte-exact F / S|O / D sequences, status bits, units, bad input."""

from __future__ import annotations

import threading

import pytest

from drivers.victoreen import Victoreen4000M, VictoreenSettings, parse_exposure, status_names
from tests.serial_fixtures import VICTOREEN_D, chunks_of, collect, expected_protocol

FAST = dict(reply_timeout_s=0.05, arm_timeout_s=0.05, poll_interval_s=0, retry_interval_s=0)
EXPECTED = {"kvp": 80.34, "kvp_avg": 79.5, "air_kerma_ugy": 876.0, "exposure_time_ms": 100.0, "pulses": 3.0,
            "kvp_max": 81.0, "filter_position": 3.0}


def run(pairs, limit=1, **settings):
    stop = threading.Event()
    driver = Victoreen4000M(VictoreenSettings(**{**FAST, **settings}))
    with expected_protocol(pairs) as port:
        readings = collect(driver.readings(port, stop), stop, limit=limit)
    return driver, readings


def test_exposure_sequence_byte_exact():
    # D before the exposure gets no answer (the armed meter is not READY); the next D returns the data.
    driver, [reading] = run([(b"F", b"3\r\n"), (b"S", b"0\r\n"), (b"D", b""), (b"D", VICTOREEN_D)])
    assert reading.quantities == EXPECTED
    assert reading.series["kvp_peaks"] == (81.0, 80.0, 79.0)
    assert reading.flags == frozenset() and reading.raw == VICTOREEN_D
    assert reading.instrument_id == "victoreen_4000m"
    assert (driver.counters.frames_ok, driver.counters.timeouts, driver.counters.frames_bad) == (3, 0, 0)


def test_two_exposures_rearm_in_between_and_molybdenum_uses_o():
    pairs = [(b"F", b"1\r\n"), (b"O", b"0\r\n"), (b"D", VICTOREEN_D)] * 2
    _, readings = run(pairs, limit=2, target="Mo")
    assert len(readings) == 2
    assert readings[0].flags == {"kvp_outside_filter_range"}  # 80 kV with the 21-50 kV filter in place


def test_reply_split_across_reads():
    _, [reading] = run([(b"F", b"3\r\n"), (b"S", chunks_of(b"0\r\n", 1)), (b"D", chunks_of(VICTOREEN_D, 7))])
    assert reading.quantities == EXPECTED


def test_arm_status_bits_are_named_error_replies():
    driver, [reading] = run([(b"F", b"3\r\n"), (b"S", b"9\r\n"), (b"F", b"3\r\n"), (b"S", b"0\r\n"),
                             (b"D", VICTOREEN_D)])
    assert driver.counters.error_replies == 1
    assert "integrator_offset_high+integrator_failure" in driver.counters.last_error
    assert reading.quantities["air_kerma_ugy"] == 876.0


def test_garbled_data_reply_is_counted_and_asked_again():
    bad = b"+8.0E+01 +7.9E+01 bad +1.0E-01 0\r\n\r\n"
    driver, [reading] = run([(b"F", b"3\r\n"), (b"S", b"0\r\n"), (b"D", bad), (b"D", VICTOREEN_D)])
    assert driver.counters.frames_bad == 1 and reading.quantities == EXPECTED


def test_wrong_baud_rate_looks_like_garbage_and_yields_nothing():
    driver = Victoreen4000M(VictoreenSettings(**FAST))
    with expected_protocol([(b"F", b"\xf0\x8f\x0f\xff\x00\r\n")]) as port:
        assert driver.poll(port, threading.Event()) is None
    assert driver.counters.frames_bad == 1 and not driver.armed


def test_silent_meter_counts_a_timeout():
    driver = Victoreen4000M(VictoreenSettings(**FAST))
    with expected_protocol([(b"F", b"")]) as port:
        assert driver.poll(port, threading.Event()) is None
    assert driver.counters.timeouts == 1


def test_time_unit_setting():
    _, [reading] = run([(b"F", b"3\r\n"), (b"S", b"0\r\n"),
                        (b"D", b"+8.0E+01 +8.0E+01 +1.0E+02 +1.0E+02 0\r\n\r\n")], time_unit="ms")
    assert reading.quantities["exposure_time_ms"] == 100.0 and "kvp_max" not in reading.quantities


def test_parse_exposure_rejects_peak_count_mismatch():
    with pytest.raises(ValueError):
        parse_exposure(b"+8.0E+01 +8.0E+01 +1.0E+02 +1.0E-01 2\r\n+8.1E+01\r\n")
    with pytest.raises(ValueError):
        parse_exposure(b"+8.0E+01 nan +1.0E+02 +1.0E-01 0\r\n\r\n")


def test_status_names():
    assert status_names(9) == ["integrator_offset_high", "integrator_failure"]
    assert status_names(0) == []


def test_reconnect_after_a_reading_never_asks_for_the_stale_data():
    # The link broke right after an exposure was read: the meter still holds that data. A new link asks F and arms.
    driver, [first] = run([(b"F", b"3\r\n"), (b"S", b"0\r\n"), (b"D", VICTOREEN_D)])
    stop = threading.Event()
    with expected_protocol([(b"F", b"3\r\n"), (b"S", b"0\r\n"), (b"D", b"")], stop=stop) as port:
        collect(driver.readings(port, stop), stop, timeout_s=1.0)
    assert driver.armed


def test_reconnect_while_armed_reads_the_exposure_made_meanwhile_or_rearms_a_power_cycled_meter():
    driver = Victoreen4000M(VictoreenSettings(**FAST))
    driver.armed = True
    stop = threading.Event()  # new link: F answers (READY), D answers -> the exposure we armed for
    with expected_protocol([(b"F", b"3\r\n"), (b"D", VICTOREEN_D)]) as port:
        [reading] = collect(driver.readings(port, stop), stop, limit=1)
    assert reading.quantities == EXPECTED
    driver.armed = True
    stop = threading.Event()  # new link: READY without data (power-cycled) -> armed again, no reading
    with expected_protocol([(b"F", b"3\r\n"), (b"D", b""), (b"S", b"0\r\n"), (b"D", b"")],
                           stop=stop) as port:
        assert collect(driver.readings(port, stop), stop, timeout_s=1.0) == []
    assert driver.armed


def test_not_responding_only_when_an_answer_is_due():
    driver = Victoreen4000M(VictoreenSettings(**FAST))
    driver.reset()
    assert driver.not_responding(driver.opened_at + 0.01) is None
    assert "not responding" in driver.not_responding(driver.opened_at + 10)
    driver.armed = True  # an armed meter is silent by design
    assert driver.not_responding(driver.opened_at + 10) is None


def test_a_meter_found_armed_at_start_gives_its_exposure_once_ready():
    # Armed by a previous run of the agent: F goes unanswered until the exposure; then the data is new.
    driver, [reading] = run([(b"F", b""), (b"F", b""), (b"F", b"3\r\n"), (b"D", VICTOREEN_D)])
    assert reading.quantities == EXPECTED and driver.counters.timeouts == 2
