"""Polled meters after their port goes away and comes back, on real pseudo-terminals: the driver forgets its protocol
state, asks the meter where it is, and reads the next exposure within 5 s of the port returning; a meter that stops
answering is `degraded` ("not responding"), never `ok`."""

from __future__ import annotations

import json
import os
import pty
import time
from pathlib import Path

import pytest

from agent.instruments.config import InstrumentConfig
from agent.instruments.reader import InstrumentReader
from agent.outbox import Outbox
from drivers.emulators.diamentor import DiamentorEmulator
from drivers.emulators.profile import ProfileEmulator
from drivers.emulators.victoreen import VictoreenEmulator
from drivers.profile import load_profile
from tests.realparts import wait_for

UNIDOS = Path(__file__).resolve().parent.parent / "config" / "profiles" / "ptw_unidos.toml"
FAST = {"read_timeout_s": 0.02, "reply_timeout_s": 0.3, "poll_interval_s": 0.1}
NEXT_EXPOSURE_S = 5.0


@pytest.fixture
def stack():
    items = []
    yield items
    for item in reversed(items):
        item.stop()


def stored(box: Outbox) -> list[dict]:
    return [json.loads(m.payload) for m in box.fetch_after(0, 10_000) if m.topic.endswith("/qc/reading")]


def start_reader(stack, sink, driver: str, port: str, profile: Path | None = None, **settings) -> InstrumentReader:
    inst = InstrumentConfig(id="meter-1", driver=driver, port=port, profile=profile, settings={**FAST, **settings})
    reader = InstrumentReader(inst, sink)
    stack.append(reader)
    reader.start()
    return reader


def replug(emulator, power_cycle: bool) -> float:
    """Unplug for 0.8 s; the monotonic time the port is back."""
    emulator.unplug(0.8, power_cycle=power_cycle)
    wait_for(lambda: emulator.replugs == 1, 5, "the port back")
    return time.monotonic()


@pytest.mark.parametrize("power_cycle", [True, False], ids=["meter power-cycled", "cable re-seated"])
def test_victoreen_reads_the_next_exposure_after_a_replug(tmp_path, box, sink, stack, power_cycle):
    emulator = VictoreenEmulator(link=str(tmp_path / "ttyV0"), arm_delay_s=0.05)
    stack.append(emulator)
    reader = start_reader(stack, sink, "victoreen_4000m", emulator.start(), arm_timeout_s=0.5)
    emulator.expose(kvp=70.0, air_kerma_ugy=500.0, exposure_time_ms=100.0)
    wait_for(lambda: len(stored(box)) == 1, 5, "the first exposure")
    wait_for(lambda: emulator.state == "armed" and reader.driver.armed, 5, "armed for the next exposure")
    back = replug(emulator, power_cycle)
    emulator.expose(kvp=81.0, air_kerma_ugy=900.0, exposure_time_ms=200.0)
    wait_for(lambda: len(stored(box)) == 2, NEXT_EXPOSURE_S, "the next exposure after the replug")
    assert time.monotonic() - back < NEXT_EXPOSURE_S
    first, second = stored(box)
    assert (first["quantities"]["kvp"], second["quantities"]["kvp"]) == (70.0, 81.0)  # the new one, not the stale
    time.sleep(0.5)
    assert len(stored(box)) == 2, "the stale data of the first exposure was read again"
    assert reader.tracker.status("s", "r", "m").counters.reconnects == 1


def test_victoreen_power_cycled_without_losing_the_port_is_rearmed(tmp_path, box, sink, stack):
    emulator = VictoreenEmulator(link=str(tmp_path / "ttyV0"), arm_delay_s=0.05)
    stack.append(emulator)
    reader = start_reader(stack, sink, "victoreen_4000m", emulator.start(), status_check_interval_s=0.5)
    wait_for(lambda: emulator.state == "armed" and reader.driver.armed, 5, "armed")
    with emulator._lock:
        emulator.power_on()  # READY, no data: the armed driver's D polls get no answer
    emulator.expose(kvp=90.0, air_kerma_ugy=900.0, exposure_time_ms=200.0)
    wait_for(lambda: len(stored(box)) == 1, 3, "the exposure after the meter re-armed")


def test_diamentor_reads_the_next_exposure_after_a_power_cycle(tmp_path, box, sink, stack):
    emulator = DiamentorEmulator(link=str(tmp_path / "ttyD0"))
    stack.append(emulator)
    start_reader(stack, sink, "ptw_diamentor", emulator.start())
    emulator.expose(dap_gy_m2=2e-4, exposure_time_ms=1000)
    wait_for(lambda: any(r["quantities"]["dap_gy_m2"] > 0 for r in stored(box)), 5, "the first exposure")
    back = replug(emulator, power_cycle=True)
    emulator.expose(dap_gy_m2=3e-4, exposure_time_ms=2000)
    wait_for(lambda: stored(box)[-1]["quantities"]["dap_gy_m2"] == pytest.approx(3e-4), NEXT_EXPOSURE_S,
             "the next exposure after the replug")
    assert time.monotonic() - back < NEXT_EXPOSURE_S


def test_unidos_profile_reads_again_after_a_replug(tmp_path, box, sink, stack):
    emulator = ProfileEmulator(profile=load_profile(UNIDOS), link=str(tmp_path / "ttyU0"))
    stack.append(emulator)
    start_reader(stack, sink, "profile", emulator.start(), profile=UNIDOS)
    wait_for(lambda: len(stored(box)) >= 1, 5, "a first reading")
    back = replug(emulator, power_cycle=True)
    count = len(stored(box))
    wait_for(lambda: len(stored(box)) > count, NEXT_EXPOSURE_S, "a reading after the replug")
    assert time.monotonic() - back < NEXT_EXPOSURE_S


@pytest.mark.parametrize("driver", ["victoreen_4000m", "ptw_diamentor"])
def test_a_polled_meter_that_never_answers_is_degraded_not_responding(tmp_path, sink, stack, driver):
    master, slave = pty.openpty()  # a port with a silent meter behind it
    stack.append(type("Close", (), {"stop": lambda self: [os.close(fd) for fd in (master, slave)]})())
    reader = start_reader(stack, sink, driver, os.ttyname(slave), retry_interval_s=0.1)
    wait_for(lambda: reader.tracker.state() == "degraded", 5, "degraded")
    wait_for(lambda: "not responding" in (reader.tracker.status("s", "r", "m").last_error or ""), 5,
             "'not responding' as the last error")
    time.sleep(1.0)
    assert reader.tracker.state() == "degraded"
