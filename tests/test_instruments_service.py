"""The reader service in-process, on real pseudo-terminals and a real outbox file: storing before pulling the next
reading, holding a reading while the outbox refuses it, re-finding a renumbered port, stopping promptly."""

from __future__ import annotations

import json
import logging
import os
import pty
import time
from dataclasses import dataclass

import pytest
import serial

from agent.instruments import instrument_services
from agent.instruments.config import InstrumentConfig
from agent.instruments.reader import InstrumentReader
from agent.outbox import OutMessage, Outbox
from agent.sink import Sink
from drivers.emulators.ludlum import Ludlum375Emulator
from drivers.emulators.victoreen import VictoreenEmulator
from tests.realparts import wait_for

MIB = 1024 * 1024
FAST = {"read_timeout_s": 0.02}


@pytest.fixture
def stack():
    """Started things, stopped in reverse order at the end even if the test fails."""
    items = []
    yield items
    for item in reversed(items):
        item.stop()


def ludlum(tmp_path, script, **kwargs) -> Ludlum375Emulator:
    return Ludlum375Emulator(link=str(tmp_path / "ttyL0"), every_s=0.05, script=script, paused=True, **kwargs)


def reader_for(port: str, sink: Sink, driver: str = "ludlum_375", **settings) -> InstrumentReader:
    return InstrumentReader(InstrumentConfig(id="lud-1", driver=driver, port=port, settings={**FAST, **settings}),
                            sink)


def stored_readings(box: Outbox) -> list[dict]:
    return [json.loads(m.payload) for m in box.fetch_after(0, 10_000) if m.topic.endswith("/qc/reading")]


def rates(readings: list[dict]) -> list[float]:
    return [r["quantities"]["dose_rate_ugy_s"] for r in readings]


def expected_rates(values) -> list[float]:
    return [pytest.approx(v * 8.76 / 3600) for v in values]


def test_outbox_refusal_holds_the_reading_and_loses_nothing(tmp_path, box, sink, stack, caplog):
    caplog.set_level(logging.INFO)
    big = OutMessage("filler", "xray/v1/site/room/exposure", b"x" * (MIB - 100))
    box.enqueue([big])  # the outbox is now full for exposure-class messages
    values = [float(v) for v in range(1, 9)]
    emulator = ludlum(tmp_path, [{"reading": v} for v in values])
    stack.append(emulator)
    emulator.start()
    reader = reader_for(emulator.path, sink)
    stack.append(reader)
    reader.start()
    wait_for(lambda: reader.tracker.state() == "ok", 5, "port open")
    emulator.resume()
    wait_for(lambda: reader.tracker.state() == "degraded", 5, "degraded while the outbox refuses")
    time.sleep(0.6)  # several refused retries (and frames piling up in the port) while it is full
    assert stored_readings(box) == []
    [filler] = box.fetch_after(0, 10)
    box.ack([(filler.seq, filler.msg_id, False)], wait=True)  # the broker took it: room again
    wait_for(lambda: len(stored_readings(box)) >= len(values), 10, "the held and queued readings stored")
    assert rates(stored_readings(box))[:len(values)] == expected_rates(values)  # in order, nothing lost
    assert reader.tracker.state() == "ok"
    refusals = [r for r in caplog.records if "outbox refused a reading" in r.getMessage()]
    assert len(refusals) == 1  # once per episode, not per retry
    assert any("outbox takes readings again" in r.getMessage() for r in caplog.records)


@dataclass
class Closer:
    fds: tuple[int, ...]

    def stop(self) -> None:
        for fd in self.fds:
            os.close(fd)


def take_pty_named(device: str, stack: list) -> bool:
    """Open a pty and keep it, as another adapter would take ttyUSB0; True once one gets `device`'s number, so the
    emulator's replug comes back under a new name."""
    fds = pty.openpty()
    stack.append(Closer(fds))
    return os.ttyname(fds[1]) == device


@dataclass
class FakePortInfo:
    device: str
    vid: int | None = 0x0403
    pid: int | None = 0x6001
    serial_number: str | None = "A9XYZ"


def test_usb_selector_finds_the_device_again_under_a_new_name(tmp_path, sink, box, stack, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="agent.instruments")
    emulator = Ludlum375Emulator(every_s=0.05, script=[{"reading": float(v)} for v in range(1, 500)])  # no link
    stack.append(emulator)
    emulator.start()
    # serial.tools.list_ports as the OS would answer: the adapter, under whatever pty it has now, or nothing.
    from serial.tools import list_ports
    monkeypatch.setattr(list_ports, "comports",
                        lambda: [FakePortInfo(emulator.device)] if emulator.plugged.is_set() else [])
    reader = reader_for("usb:0403:6001:A9XYZ", sink)
    stack.append(reader)
    reader.start()
    wait_for(lambda: len(stored_readings(box)) >= 3, 5, "readings before the unplug")
    first_device = emulator.device
    emulator.unplug(0.8)
    wait_for(lambda: reader.tracker.state() == "down", 3, "down while unplugged")
    deadline = time.monotonic() + 1.0
    while not take_pty_named(first_device, stack) and time.monotonic() < deadline:
        time.sleep(0.02)  # (if another process takes the number first, the replug gets a new name all the same)
    wait_for(lambda: emulator.replugs == 1, 5, "replug")
    assert emulator.device != first_device
    count = len(stored_readings(box))
    wait_for(lambda: len(stored_readings(box)) >= count + 3, 5, "readings after the replug")
    status = reader.tracker.status("site", "room", "m")
    assert status.port == emulator.device != first_device
    assert status.state == "ok" and status.counters.reconnects == 1
    lost = [r for r in caplog.records if r.levelno >= logging.WARNING and "lost port" in r.getMessage()]
    retries = [r for r in caplog.records if r.levelno == logging.DEBUG and "attempt" in r.getMessage()]
    assert len(lost) == 1 and retries, "one warning per outage, retries at debug level"


def test_port_is_opened_exclusively(tmp_path, sink, stack):
    emulator = ludlum(tmp_path, [])
    stack.append(emulator)
    reader = reader_for(emulator.start(), sink)
    stack.append(reader)
    reader.start()
    wait_for(lambda: reader.tracker.state() == "ok", 5, "port open")
    with pytest.raises(serial.SerialException):
        serial.Serial(emulator.path, exclusive=True)


@pytest.mark.parametrize("situation", ["silent push port", "port missing", "request/response polling",
                                       "outbox refusing"])
def test_stop_returns_within_a_second(tmp_path, box, sink, stack, situation):
    emulator = None
    if situation == "request/response polling":
        emulator = VictoreenEmulator(link=str(tmp_path / "ttyV0"), arm_delay_s=0.05)
        reader = reader_for(emulator.start(), sink, "victoreen_4000m", reply_timeout_s=2.0, arm_timeout_s=3.0)
    elif situation == "port missing":
        reader = reader_for(str(tmp_path / "no-such-port"), sink)
    else:
        emulator = ludlum(tmp_path, [{"reading": 1.0}])
        reader = reader_for(emulator.start(), sink)
    if emulator:
        stack.append(emulator)
    if situation == "outbox refusing":
        box.enqueue([OutMessage("filler", "xray/v1/site/room/exposure", b"x" * MIB)])
        emulator.resume()
    reader.start()
    time.sleep(0.6)  # settle into the situation (waiting for a reply, backing off, retrying the store)
    assert reader.alive()
    started = time.monotonic()
    reader.stop()
    assert time.monotonic() - started < 1.0
    assert not reader.alive() and reader.tracker.state() == "down"


def test_services_stop_last_reporter_publishes_final_down_state(tmp_path, box, sink):
    emulator = ludlum(tmp_path, [])
    emulator.start()
    try:
        cfg = type("Cfg", (), {"instruments": [InstrumentConfig(id="lud-1", driver="ludlum_375",
                                                                  port=emulator.path, settings=FAST)]})()
        services = instrument_services(cfg, sink)
        assert [name for name, _ in services] == ["equipment", "instrument-lud-1"]
        for _, service in services:
            service.start()
        wait_for(lambda: [m for m in box.fetch_after(0, 100) if b'"state":"ok"' in m.payload], 5, "ok published")
        for _, service in reversed(services):
            service.stop()
    finally:
        emulator.stop()
    [last] = [json.loads(m.payload) for m in box.fetch_after(0, 100) if "/equipment/" in m.topic]  # coalesced
    assert last["state"] == "down" and last["last_error"] == "agent stopped"
