"""PTW DIAMENTOR: byte-exact PTW / U / M exchanges (pymeasure's test pairs), units, named errors, bad input."""

from __future__ import annotations

import threading

import pytest

from drivers.diamentor import DiamentorSettings, PtwDiamentor, parse_measurement
from drivers.reading import ErrorReply
from tests.serial_fixtures import DIAMENTOR_M, chunks_of, collect, expected_protocol

FAST = dict(reply_timeout_s=0.05, poll_interval_s=0, retry_interval_s=0)
INIT = [(b"PTW\r", b"CRS 1.2.4\r")]


def run(pairs, limit=1, **settings):
    stop = threading.Event()
    driver = PtwDiamentor(DiamentorSettings(**{**FAST, **settings}))
    with expected_protocol(pairs) as port:
        readings = collect(driver.readings(port, stop), stop, limit=limit)
    return driver, readings


def test_measurement_byte_exact():
    driver, [reading] = run(INIT + [(b"U\r", b"U2\r"), (b"M\r", DIAMENTOR_M)])
    assert driver.identity == "CRS 1.2.4"
    assert reading.quantities == {
        "dap_gy_m2": pytest.approx(0.999999),  # 9999.99 Gy*cm2
        "dap_rate_gy_m2_s": pytest.approx(0.888888),  # 8888.88 Gy*cm2/s
        "exposure_time_ms": 13_353_000.0,  # 222 min 33 s
    }
    assert reading.raw == DIAMENTOR_M.rstrip(b"\r")  # the frame without its terminator
    assert driver.counters.frames_ok == 3


@pytest.mark.parametrize(("reply", "dap_gy_m2"), [
    (b"U1\r", 9999.99e-6), (b"U2\r", 9999.99e-4), (b"U3\r", 9999.99e-6), (b"U4\r", 9999.99 * 8.76e-7)])
def test_each_dap_unit(reply, dap_gy_m2):
    _, [reading] = run(INIT + [(b"U\r", reply), (b"M\r", DIAMENTOR_M)])
    assert reading.quantities["dap_gy_m2"] == pytest.approx(dap_gy_m2)


def test_charge_overflow_is_a_named_error_then_polling_continues():
    driver, [reading] = run(INIT + [(b"U\r", b"U2\r"), (b"M\r", b"E4\r"), (b"U\r", b"U2\r"), (b"M\r", DIAMENTOR_M)])
    assert driver.counters.error_replies == 1
    assert driver.counters.last_error == "instrument error E4: charge_overflow"
    assert reading.quantities["exposure_time_ms"] == 13_353_000.0


def test_unknown_error_code():
    with pytest.raises(ErrorReply) as err:
        parse_measurement(b"E99\r", "Gy*cm2")
    assert err.value.name == "unknown_error"


def test_unchanged_measurement_is_not_repeated():
    pairs = INIT + [(b"U\r", b"U2\r"), (b"M\r", DIAMENTOR_M)] * 2 + [(b"U\r", b"U2\r"), (b"M\r", b"M1.00,0.00,0,01\r")]
    _, readings = run(pairs, limit=2)
    assert [r.quantities["dap_gy_m2"] for r in readings] == pytest.approx([0.999999, 1e-4])


def test_emit_unchanged():
    _, readings = run(INIT + [(b"U\r", b"U2\r"), (b"M\r", DIAMENTOR_M)] * 2, limit=2, emit_unchanged=True)
    assert len(readings) == 2


def test_timeout_reruns_init():
    pairs = INIT + [(b"U\r", b"U2\r"), (b"M\r", b"")] + INIT + [(b"U\r", b"U2\r"), (b"M\r", DIAMENTOR_M)]
    driver, [_] = run(pairs)
    assert driver.counters.timeouts == 1


def test_crlf_replies_and_split_reads_are_tolerated():
    pairs = [(b"PTW\r", b"CRS 1.2.4\r\n"), (b"U\r", chunks_of(b"U2\r\n", 1)),
             (b"M\r", chunks_of(DIAMENTOR_M + b"\n", 5))]
    driver, [reading] = run(pairs)
    assert reading.quantities["dap_gy_m2"] == pytest.approx(0.999999)
    assert driver.counters.bytes_discarded == 0 and driver.counters.frames_bad == 0


def test_wrong_baud_rate_identity_is_retried():
    pairs = [(b"PTW\r", b"\x8f\xf0\x1e\r"), (b"PTW\r", b"CRS 1.2.4\r"), (b"U\r", b"U2\r"), (b"M\r", DIAMENTOR_M)]
    driver, [_] = run(pairs)
    assert driver.counters.frames_bad == 1


def test_garbage_measurement_is_bad_not_half_parsed():
    driver = PtwDiamentor(DiamentorSettings(**FAST))
    with expected_protocol([(b"U\r", b"U2\r"), (b"M\r", b"M12.5,xx,1,2\r")]) as port:
        assert driver.poll(port, threading.Event()) is None
    assert driver.counters.frames_bad == 1
