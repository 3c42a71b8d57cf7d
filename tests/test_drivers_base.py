"""The shared driver machinery: Reading, settings, episode logging, transact, read_chunk."""

from __future__ import annotations

import dataclasses
import logging
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from serial import SerialException

from drivers.base import EpisodeLog, read_chunk
from drivers.diamentor import PtwDiamentor
from drivers.framing import TerminatorFramer
from drivers.ludlum import Ludlum375
from drivers.reading import Counters, Reading, make_reading
from drivers.settings import DriverSettings, PollSettings
from drivers.victoreen import Victoreen4000M
from tests.serial_fixtures import collect, expected_protocol


def test_reading_is_immutable_and_stamped():
    quantities = {"kvp": 80.0}
    reading = make_reading("room1-kv", quantities, b"raw", {"alarm"}, {"kvp_peaks": [80.0, 81.0]})
    quantities["kvp"] = 1.0
    assert reading.quantities == {"kvp": 80.0}
    with pytest.raises(TypeError):
        reading.quantities["kvp"] = 2.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        reading.raw = b""  # type: ignore[misc]
    assert reading.series["kvp_peaks"] == (80.0, 81.0)
    assert reading.wall_utc.tzinfo is not None and reading.monotonic > 0
    assert isinstance(reading, Reading) and reading.flags == frozenset({"alarm"})


def test_settings_defaults_forbid_unknown_keys_and_check_port():
    settings = DriverSettings()
    assert settings.serial_kwargs() == {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1,
                                        "rtscts": False, "xonxoff": False, "timeout": 0.1, "write_timeout": 2.0}
    assert DriverSettings(port="usb:0403:6001:A1").port == "usb:0403:6001:A1"
    assert DriverSettings(port="/dev/serial/by-id/usb-FTDI-if00").port.endswith("if00")
    with pytest.raises(ValidationError):
        DriverSettings(baud_rate=9600)
    with pytest.raises(ValidationError):
        DriverSettings(port="ttyUSB0")
    with pytest.raises(ValidationError):
        DriverSettings(parity="X")


def test_episode_logged_once_until_a_good_frame(caplog):
    log = EpisodeLog(logging.getLogger("t"), "meter")
    with caplog.at_level(logging.DEBUG, logger="t"):
        for _ in range(100):
            log.problem("garbage")
        log.ok()
        log.ok()
        log.problem("timeout")
    levels = [r.levelno for r in caplog.records if r.levelno >= logging.INFO]
    assert levels == [logging.WARNING, logging.INFO, logging.WARNING]


def test_counters_snapshot_is_a_copy():
    counters = Counters(frames_ok=1)
    snap = counters.snapshot()
    counters.frames_ok = 5
    assert snap.frames_ok == 1


class _GonePort:
    """A hung-up pty: the in_waiting ioctl fails with a bare OSError."""

    @property
    def in_waiting(self) -> int:
        raise OSError(5, "Input/output error")


def test_read_chunk_turns_a_failed_ioctl_into_serial_exception():
    with pytest.raises(SerialException):
        read_chunk(_GonePort())  # type: ignore[arg-type]


def test_transact_flushes_stale_bytes_and_drops_extra_frames():
    driver = PtwDiamentor(PtwDiamentor.Settings(reply_timeout_s=0.05))
    stop = threading.Event()
    with expected_protocol([(b"U\r", b"U1\r"), (b"PTW\r", b"CRS 1.2.4\rE1\r")]) as port:
        assert driver.transact(port, b"U\r", TerminatorFramer(b"\r"), 0.05, stop) == b"U1"
        port._rx.append(b"late noise")  # bytes arriving between two commands
        assert driver.transact(port, b"PTW\r", TerminatorFramer(b"\r"), 0.05, stop) == b"CRS 1.2.4"
    assert driver.counters.bytes_discarded == len(b"late noise") + len(b"E1")


def test_poll_settings_defaults():
    assert PollSettings().reply_timeout_s == 2.0


# --- fuzz: no input makes a driver raise out of its loop or yield a half-parsed reading -----------------------------
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_push_stream(data):
    stop = threading.Event()
    driver = Ludlum375()
    with expected_protocol(stream=[data], stop=stop) as port:
        readings = collect(driver.readings(port, stop), stop)
    counters = driver.counters
    assert len(readings) == counters.frames_ok
    assert all(set(r.quantities) == {"dose_rate_ugy_s"} for r in readings)


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_replies(data):
    diamentor = PtwDiamentor(PtwDiamentor.Settings(reply_timeout_s=0.01))
    with expected_protocol([(b"U\r", b"U2\r"), (b"M\r", data + b"\r")]) as port:
        reading = diamentor.poll(port, threading.Event())
    assert reading is None or set(reading.quantities) == {"dap_gy_m2", "dap_rate_gy_m2_s", "exposure_time_ms"}
    victoreen = Victoreen4000M(Victoreen4000M.Settings(reply_timeout_s=0.01))
    victoreen.armed, victoreen.filter_position = True, 3
    with expected_protocol([(b"D", data + b"\r\n\r\n")]) as port:
        reading = victoreen.poll(port, threading.Event())
    assert reading is None or {"kvp", "air_kerma_ugy", "exposure_time_ms"} <= set(reading.quantities)


@pytest.mark.parametrize("name", ["victoreen_4000m", "ptw_diamentor", "ludlum_375", "profile"])
def test_every_driver_starts_each_new_link_from_a_reset_protocol_state(name):
    # Whatever a driver knew about the meter on the previous link (ready, armed, last reply) is forgotten when its
    # readings() starts on a new transport: the loop asks the meter again.
    from pathlib import Path

    from drivers.profile import load_profile
    from drivers.registry import DRIVERS
    from tests.serial_fixtures import FakePort

    cls = DRIVERS[name]
    profile = Path(__file__).resolve().parent.parent / "config" / "profiles" / "ptw_unidos.toml"
    driver = cls(load_profile(profile)) if name == "profile" else cls()
    driver.ready, driver.last_reply_at = True, 123.0
    if hasattr(driver, "state"):
        driver.state = "unknown"
    stop = threading.Event()
    stop.set()  # the loop resets, then sees stop and returns without I/O
    list(driver.readings(FakePort(stop=stop), stop))
    assert driver.ready is False and driver.last_reply_at is None
