"""Reading -> QcReading mapping (units, raw frame, msg_id), the equipment payload's topic, and the state rules."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from agent.instruments import status as status_module
from agent.instruments.mapping import escape_raw, qc_reading, reading_msg_id, unescape_raw
from agent.instruments.status import EquipmentTracker
from agent.outbox import Outbox
from agent.payloads.equipment import EquipmentStatus
from agent.sink import Sink
from agent.topics import Topics
from drivers.ludlum import Ludlum375
from drivers.reading import Reading
from drivers.victoreen import Victoreen4000M, VictoreenSettings, parse_exposure

D_REPLY = b"+8.034E+01 +7.950E+01 +1.000E+02 +1.000E-01 2\r\n+8.100E+01 +8.000E+01\r\n"
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def victoreen_reading(raw: bytes = D_REPLY, at: datetime = T0) -> Reading:
    quantities, peaks = parse_exposure(raw)
    return Reading("kvp-1", quantities, frozenset({"b_flag", "a_flag"}), raw, wall_utc=at, series={"kvp_peaks": peaks})


def test_qc_reading_carries_quantities_units_series_and_the_raw_frame():
    payload = qc_reading(victoreen_reading(), driver="victoreen_4000m", site="s", room="r")
    body = json.loads(payload.to_json_bytes())
    assert body["schema"] == "xray.qc-reading/1" and body["instrument_id"] == "kvp-1"
    assert body["quantities"] == {"kvp": 80.34, "kvp_avg": 79.5, "air_kerma_ugy": 876.0, "exposure_time_ms": 100.0,
                                  "pulses": 2.0, "kvp_max": 81.0}
    assert body["units"] == {"kvp": "kV", "kvp_avg": "kV", "air_kerma_ugy": "uGy", "exposure_time_ms": "ms",
                             "pulses": "1", "kvp_max": "kV"}
    assert body["series"] == {"kvp_peaks": [81.0, 80.0]} and body["flags"] == ["a_flag", "b_flag"]
    assert body["measured_at"] == "2026-03-01T12:00:00.123456Z" and body["session_ref"] is None
    assert body["raw_frame"] == "+8.034E+01 +7.950E+01 +1.000E+02 +1.000E-01 2\\r\\n+8.100E+01 +8.000E+01\\r\\n"
    assert unescape_raw(body["raw_frame"]) == D_REPLY and body["raw_frame_bytes"] == len(D_REPLY)


def test_quantity_without_a_unit_suffix_has_no_unit_entry():
    reading = Reading("p", {"gamma_dose_rate_usv_h": 23.05, "battery": 3.0}, raw=b"x")
    payload = qc_reading(reading, driver="profile", site="s", room="r")
    assert payload.units == {"gamma_dose_rate_usv_h": "uSv/h"}


def test_raw_escaping_round_trips_every_byte():
    data = bytes(range(256)) * 2 + b"\\x41\\\\"
    text = escape_raw(data)
    assert text.isascii() and text.isprintable()
    assert unescape_raw(text) == data
    assert escape_raw(b"0642.1 04/21/95\r\n") == "0642.1 04/21/95\\r\\n"


def test_long_frames_are_cut_in_the_payload_but_counted():
    payload = qc_reading(Reading("p", {"kvp": 1.0}, raw=b"A" * 10_000), driver="profile", site="s", room="r")
    assert len(payload.raw_frame) == 4096 and payload.raw_frame_bytes == 10_000


def test_msg_id_is_stable_per_reading_and_distinct_between_readings():
    reading = victoreen_reading()
    same = reading_msg_id("s", "r", reading)
    assert same == reading_msg_id("s", "r", victoreen_reading()) and len(same) <= 128
    later = victoreen_reading(at=T0 + timedelta(microseconds=1))  # identical bytes, a new measurement
    others = {reading_msg_id("s", "r", later), reading_msg_id("s", "r2", reading), reading_msg_id("s2", "r", reading),
              reading_msg_id("s", "r", replace(reading, instrument_id="kvp-2")),
              reading_msg_id("s", "r", victoreen_reading(raw=D_REPLY.replace(b"8.034", b"8.035")))}
    assert same not in others and len(others) == 5


def test_a_retried_store_of_one_reading_is_stored_once(tmp_path):
    box = Outbox(tmp_path / "o.db", max_bytes=10**6)
    box.start()
    try:
        sink = Sink(box, Topics("xray/v1", "s", "r"))
        reading = victoreen_reading()
        assert sink.emit(qc_reading(reading, driver="victoreen_4000m", site="s", room="r")) == [True]
        assert sink.emit(qc_reading(reading, driver="victoreen_4000m", site="s", room="r")) == [False]
        assert box.depth() == 1
    finally:
        box.stop()


def test_equipment_status_goes_to_its_device_topic_retained_and_coalesced():
    status = EquipmentStatus(msg_id="m", site="s", room="r", device_id="dap-1", device_type="serial-instrument",
                             state="ok", since=T0)
    message = Sink(None, Topics("xray/v1", "s", "r")).to_message(status)
    assert message.topic == "xray/v1/s/r/equipment/dap-1" and message.retain and message.coalesce


def test_tracker_states_down_ok_degraded_ok_down(monkeypatch):
    monkeypatch.setattr(status_module, "DEGRADED_HOLD_S", 0.05)
    driver = Victoreen4000M(VictoreenSettings(instrument_id="kvp-1"))
    tracker = EquipmentTracker("kvp-1", driver, "/dev/serial/by-id/x")
    assert tracker.state() == "down" and not tracker.known
    tracker.connected("/dev/ttyUSB1")
    assert tracker.state() == "ok"
    driver.bad("bad frame")  # the problem episode lasts until the next good frame
    time.sleep(0.06)
    assert tracker.state() == "degraded"
    driver.good()
    assert tracker.state() == "degraded"  # held a moment, so a short burst still shows
    time.sleep(0.06)
    assert tracker.state() == "ok"
    tracker.storage_refused("outbox full")
    assert tracker.state() == "degraded"
    tracker.storage_refused(None)
    tracker.disconnected("port gone")
    tracker.connected("/dev/ttyUSB2")
    status = tracker.status("s", "r", "m")
    assert status.state == "ok" and status.port == "/dev/ttyUSB2" and status.counters.reconnects == 1
    assert status.counters.frames_bad == 1 and status.counters.frames_ok == 1 and status.last_error == "bad frame"
    tracker.disconnected("port gone")
    down = tracker.status("s", "r", "m")
    assert down.state == "down" and down.last_error == "port gone" and down.since >= status.since


def test_last_reading_age_is_measured_when_the_status_is_built():
    clock = {"now": T0}
    tracker = EquipmentTracker("area-1", Ludlum375(), "usb:0403:6001", clock=lambda: clock["now"])
    tracker.connected("/dev/ttyUSB0")
    tracker.reading_stored(Reading("area-1", {"dose_rate_ugy_s": 1.0}, wall_utc=T0))
    clock["now"] = T0 + timedelta(seconds=42)
    status = tracker.status("s", "r", "m")
    assert status.last_reading_at == T0 and status.last_reading_age_s == pytest.approx(42.0)
