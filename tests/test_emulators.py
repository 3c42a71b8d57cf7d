"""Drivers against their emulators over REAL pseudo-terminals, opened with pyserial through the emulator's link."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial

from drivers.diamentor import DiamentorSettings, PtwDiamentor
from drivers.emulators import EMULATORS, Faults
from drivers.emulators.diamentor import DiamentorEmulator
from drivers.emulators.ludlum import Ludlum375Emulator
from drivers.emulators.profile import ProfileEmulator
from drivers.emulators.victoreen import VictoreenEmulator
from drivers.ludlum import Ludlum375, Ludlum375Settings
from drivers.profile import load_profile
from drivers.profile_driver import ProfileDriver
from drivers.victoreen import Victoreen4000M, VictoreenSettings
from tests.serial_fixtures import collect

REPO = Path(__file__).resolve().parent.parent
PORT_TIMEOUT = dict(read_timeout_s=0.02)


def read_from(link: str, driver, limit: int, timeout_s: float = 5.0) -> list:
    """Open the link as the agent would and take `limit` readings."""
    stop = threading.Event()
    with serial.Serial(link, exclusive=True, **driver.settings.serial_kwargs()) as port:
        return collect(driver.readings(port, stop), stop, limit=limit, timeout_s=timeout_s)


def test_victoreen_exposures_on_demand(tmp_path):
    link = str(tmp_path / "ttyV0")
    with VictoreenEmulator(link=link, arm_delay_s=0.05, faults=Faults(split_writes=True)) as emulator:
        emulator.expose(kvp=80.34, air_kerma_ugy=876.0, exposure_time_ms=100.0, kvp_avg=79.5, peaks=(81.0, 80.0))
        emulator.expose(kvp=70.0, air_kerma_ugy=438.0, exposure_time_ms=50.0)
        driver = Victoreen4000M(VictoreenSettings(reply_timeout_s=0.3, poll_interval_s=0.02, **PORT_TIMEOUT))
        first, second = read_from(link, driver, 2)
    assert dict(first.quantities) == {"kvp": 80.34, "kvp_avg": 79.5, "air_kerma_ugy": 876.0, "exposure_time_ms": 100.0,
                                      "pulses": 2.0, "kvp_max": 81.0, "filter_position": 3.0}
    assert first.series["kvp_peaks"] == (81.0, 80.0)
    assert (second.quantities["air_kerma_ugy"], second.quantities["exposure_time_ms"]) == (438.0, 50.0)
    assert not os.path.exists(link)  # stop() removes the link


def test_victoreen_timed_exposures_follow_the_script(tmp_path):
    link = str(tmp_path / "ttyV2")
    script = [{"kvp": 90.0, "air_kerma_ugy": 1752.0, "exposure_time_ms": 200.0}]
    with VictoreenEmulator(link=link, arm_delay_s=0.02, every_s=0.05, script=script):
        driver = Victoreen4000M(VictoreenSettings(reply_timeout_s=0.3, poll_interval_s=0.02, **PORT_TIMEOUT))
        [reading] = read_from(link, driver, 1)
    assert (reading.quantities["kvp"], reading.quantities["air_kerma_ugy"]) == (90.0, 1752.0)


def test_victoreen_arm_fault_then_recovery(tmp_path):
    link = str(tmp_path / "ttyV1")
    with VictoreenEmulator(link=link, arm_delay_s=0.02) as emulator:
        emulator.arm_status = 9
        emulator.expose(kvp=60.0, air_kerma_ugy=87.6, exposure_time_ms=20.0)
        threading.Timer(0.3, setattr, (emulator, "arm_status", 0)).start()
        driver = Victoreen4000M(VictoreenSettings(reply_timeout_s=0.3, poll_interval_s=0.02, **PORT_TIMEOUT))
        [reading] = read_from(link, driver, 1)
    assert reading.quantities["air_kerma_ugy"] == 87.6
    assert driver.counters.error_replies >= 1 and "integrator_failure" in driver.counters.last_error


def test_diamentor_with_garbage_split_writes_and_slow_replies(tmp_path):
    link = str(tmp_path / "ttyD0")
    faults = Faults(split_writes=True, reply_delay_s=0.02, garbage_every_s=0.15, garbage_bytes=16)
    with DiamentorEmulator(link=link, unit=1, faults=faults, seed=7) as emulator:
        emulator.expose(dap_gy_m2=1.234e-3, dap_rate_gy_m2_s=5.6e-5, exposure_time_ms=3000)
        settings = DiamentorSettings(reply_timeout_s=0.5, poll_interval_s=0.01, emit_unchanged=True, **PORT_TIMEOUT)
        driver = PtwDiamentor(settings)
        readings = read_from(link, driver, 4)
    for reading in readings:  # every reading that came out is right: noise never yields a half-parsed value
        assert reading.quantities["dap_gy_m2"] == pytest.approx(1.234e-3)  # 1234.00 cGy*cm2
        assert reading.quantities["dap_rate_gy_m2_s"] == pytest.approx(5.6e-5)
        assert reading.quantities["exposure_time_ms"] == 3000.0
    assert driver.identity == "CRS 1.2.4"


def test_diamentor_error_replies_are_counted(tmp_path):
    link = str(tmp_path / "ttyD1")
    with DiamentorEmulator(link=link, faults=Faults(error_rate=0.5), seed=3) as emulator:
        emulator.expose(dap_gy_m2=1e-4)
        driver = PtwDiamentor(DiamentorSettings(reply_timeout_s=0.5, poll_interval_s=0.0, emit_unchanged=True,
                                                retry_interval_s=0.0, **PORT_TIMEOUT))
        readings = read_from(link, driver, 3)
    assert all(r.quantities["dap_gy_m2"] == pytest.approx(1e-4) for r in readings)
    assert driver.counters.error_replies > 0


def test_ludlum_scripted_values_in_order(tmp_path):
    link = str(tmp_path / "ttyL0")
    script = [{"reading": 642.1, "high_alarm": True}, {"reading": 1.5}, {"reading": 0.2, "error": "2"}]
    with Ludlum375Emulator(link=link, every_s=0.05, script=script, paused=True) as emulator:
        driver = Ludlum375(Ludlum375Settings(**PORT_TIMEOUT))
        threading.Timer(0.1, emulator.resume).start()  # after the port is open (opening flushes its input)
        readings = read_from(link, driver, 3)
    assert [r.quantities["dose_rate_ugy_s"] for r in readings] == pytest.approx(
        [642.1 * 8.76 / 3600, 1.5 * 8.76 / 3600, 0.2 * 8.76 / 3600])
    assert [set(r.flags) for r in readings] == [{"high_alarm"}, set(), {"error_2"}]


@pytest.mark.parametrize("profile_name", ["ludlum_2363", "ptw_unidos"])
def test_profile_emulator_request_response(tmp_path, profile_name):
    link = str(tmp_path / "ttyP0")
    profile = load_profile(REPO / "config" / "profiles" / f"{profile_name}.toml", poll_interval_s=0.01, **PORT_TIMEOUT)
    with ProfileEmulator(link=link, profile=profile):
        readings = read_from(link, ProfileDriver(profile), 2)
    assert len(readings) == 2 and all(r.instrument_id == profile_name for r in readings)
    if profile_name == "ludlum_2363":
        assert [r.quantities["gamma_dose_rate_usv_h"] for r in readings] == [23.05, 23.10]


def test_profile_emulator_push_csv(tmp_path):
    link = str(tmp_path / "ttyP1")
    profile = load_profile(REPO / "config" / "profiles" / "vendor_csv_export.toml", **PORT_TIMEOUT)
    with ProfileEmulator(link=link, profile=profile, every_s=0.03):
        driver = ProfileDriver(profile)
        readings = read_from(link, driver, 3)
    assert {r.quantities["kvp"] for r in readings} <= {80.2, 70.1}
    assert driver.counters.frames_bad == 0  # the header line is ignored, not counted


def _until_error(readings, stop: threading.Event, timeout_s: float = 3.0) -> None:
    timer = threading.Timer(timeout_s, stop.set)
    timer.start()
    try:
        for _ in readings:
            pass
    finally:
        timer.cancel()


def test_unplug_then_replug_under_the_same_link(tmp_path):
    link = str(tmp_path / "ttyUSB-by-id")
    driver = Ludlum375(Ludlum375Settings(**PORT_TIMEOUT))
    with Ludlum375Emulator(link=link, every_s=0.03, random_mode=True, seed=1) as emulator:
        first_device = emulator.device
        stop = threading.Event()
        with serial.Serial(link, **driver.settings.serial_kwargs()) as port:
            readings = driver.readings(port, stop)
            assert next(readings).quantities["dose_rate_ugy_s"] > 0
            emulator.unplug(0.3)
            assert not os.path.exists(link)
            with pytest.raises(serial.SerialException):
                _until_error(readings, stop)
        assert emulator.plugged.wait(2.0), "the device did not come back"
        assert emulator.replugs == 1 and emulator.device and os.path.realpath(link) == emulator.device
        [reading] = read_from(link, driver, 1)  # the service re-finds the port by its link and resumes
    assert reading.quantities["dose_rate_ugy_s"] > 0 and first_device


def test_scheduled_unplug_fault(tmp_path):
    link = str(tmp_path / "ttyAuto")
    with Ludlum375Emulator(link=link, faults=Faults(unplug_after_s=0.1, unplug_for_s=0.1)) as emulator:
        deadline = time.monotonic() + 3.0
        while emulator.replugs < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert emulator.replugs == 1 and emulator.plugged.wait(1.0) and os.path.islink(link)


def test_cli_builds_faults_from_flags():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import emulate
    finally:
        sys.path.remove(str(REPO / "scripts"))
    emulator = emulate.build(emulate.parse_args([
        "ptw_diamentor", "--garbage-every", "5", "--error-rate", "0.1", "--unplug-after", "30", "--unplug-for", "4",
        "--split-writes", "--reply-delay", "0.2", "--random", "--seed", "9"]))
    assert isinstance(emulator, EMULATORS["ptw_diamentor"])
    assert emulator.faults == Faults(garbage_every_s=5, error_rate=0.1, split_writes=True, reply_delay_s=0.2,
                                     unplug_after_s=30, unplug_for_s=4)
    assert emulator.random_mode and emulator.every_s == 10.0


def test_cli_runs_for_duration_and_serves_the_link(tmp_path):
    link = str(tmp_path / "ttyCLI")
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"reading": 12.5}]))
    command = [sys.executable, str(REPO / "scripts" / "emulate.py"), "ludlum_375", "--link", link,
               "--every", "0.05", "--duration", "1.5", "--script", str(script)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == link
            [reading] = read_from(link, Ludlum375(Ludlum375Settings(**PORT_TIMEOUT)), 1)
            assert reading.quantities["dose_rate_ugy_s"] == pytest.approx(12.5 * 8.76 / 3600)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
    assert not os.path.exists(link)


def test_victoreen_fluoroscopy_rate_mode_reports_air_kerma_per_interval(tmp_path):
    # 80 mGy/min for 1.5 s, sampled every 0.2 s armed: each D record is the air kerma of its interval and the
    # interval as exposure time, so air kerma / time x 60 gives back 80 mGy/min once the 0.4 s ramp is over.
    link = str(tmp_path / "ttyV5")
    with VictoreenEmulator(link=link, arm_delay_s=0.02, filter_position=4) as emulator:
        emulator.fluoroscopy(rate_mgy_per_min=80.0, kvp=85.0, duration_s=1.5, sample_s=0.2, ramp_s=0.4, ramp_from=0.5)
        driver = Victoreen4000M(VictoreenSettings(reply_timeout_s=0.3, poll_interval_s=0.02, **PORT_TIMEOUT))
        readings = read_from(link, driver, 5)
    rates = [60.0 * r.quantities["air_kerma_ugy"] / r.quantities["exposure_time_ms"] for r in readings]
    assert all(r.quantities["kvp"] == 85.0 for r in readings)
    assert rates[0] < 75.0  # the ramp
    assert rates[-1] == pytest.approx(80.0, rel=0.01)
