"""Serial instruments end to end: emulators on real ptys -> the real agent process -> real mosquitto -> a subscriber."""

from __future__ import annotations

import json
import os
import random
import select
import time

import pytest

from agent.outbox import Outbox
from drivers.emulators.diamentor import DiamentorEmulator
from drivers.emulators.ludlum import Ludlum375Emulator
from drivers.emulators.victoreen import VictoreenEmulator
from tests.realparts import AgentProcess, Subscriber, wait_for

pytestmark = pytest.mark.integration

BASE = "xray/v1/test-site/xr-01"
POLL_FAST = {"poll_interval_s": 0.05, "reply_timeout_s": 0.5, "read_timeout_s": 0.02}


@pytest.fixture
def start_agent(agent_factory):
    """The real agent with these [[instruments]] entries."""
    def start(port: int, instruments: list[dict], workdir=None) -> AgentProcess:
        return agent_factory(port, workdir=workdir, instruments=instruments)
    return start


@pytest.fixture
def emulators():
    started = []
    yield started
    for emulator in started:
        emulator.stop()


def run(emulators: list, emulator):
    emulators.append(emulator)
    return emulator.start()


def readings(sub: Subscriber, instrument_id: str) -> list[dict]:
    """Readings of one instrument in arrival order, first delivery of each msg_id only."""
    seen, out = set(), []
    for m in sub.snapshot("/qc/reading"):
        body = m.json()
        if body["instrument_id"] == instrument_id and body["msg_id"] not in seen:
            seen.add(body["msg_id"])
            out.append(body)
    return out


def wait_readings(sub: Subscriber, instrument_id: str, count: int, timeout: float, what: str) -> list[dict]:
    return wait_for(lambda: r if len(r := readings(sub, instrument_id)) >= count else None, timeout, what)


def equipment(sub: Subscriber, device_id: str) -> list[dict]:
    return [m.json() for m in sub.snapshot(f"/equipment/{device_id}")]


def is_ok(sub: Subscriber, device_id: str) -> bool:
    states = equipment(sub, device_id)
    return bool(states) and states[-1]["state"] == "ok"


def test_victoreen_diamentor_and_ludlum_readings_arrive_in_canonical_units(broker, subscriber, start_agent, tmp_path,
                                                                            emulators):
    victoreen = VictoreenEmulator(link=str(tmp_path / "ttyV0"), arm_delay_s=0.05)
    victoreen.expose(kvp=80.34, air_kerma_ugy=876.0, exposure_time_ms=100.0, kvp_avg=79.5, peaks=(81.0, 80.0))
    victoreen.expose(kvp=70.0, air_kerma_ugy=438.0, exposure_time_ms=50.0)
    victoreen.expose(kvp=120.0, air_kerma_ugy=43.8, exposure_time_ms=5.0)
    diamentor = DiamentorEmulator(link=str(tmp_path / "ttyD0"), unit=1)  # the meter shows cGy*cm2
    diamentor.expose(dap_gy_m2=1.234e-3, dap_rate_gy_m2_s=5.6e-5, exposure_time_ms=3000)
    script = [{"reading": 642.1, "high_alarm": True, "audio": True}, {"reading": 1.5}]
    ludlum = Ludlum375Emulator(link=str(tmp_path / "ttyL0"), every_s=0.1, script=script, paused=True)
    start_agent(broker.port, [
        {"id": "kvp-1", "driver": "victoreen_4000m", "port": run(emulators, victoreen), "settings": POLL_FAST,
         "status_every_s": 1.0},
        {"id": "dap-1", "driver": "ptw_diamentor", "port": run(emulators, diamentor), "settings": POLL_FAST,
         "status_every_s": 1.0},
        {"id": "area-1", "driver": "ludlum_375", "port": run(emulators, ludlum), "settings": {"read_timeout_s": 0.02},
         "status_every_s": 1.0},
    ])
    wait_for(lambda: is_ok(subscriber, "area-1"), 15, "equipment/area-1 ok (port open)")
    ludlum.resume()  # only now: opening a port flushes what is waiting in it

    kvp = wait_readings(subscriber, "kvp-1", 3, 20, "3 Victoreen readings")
    assert [r["quantities"] for r in kvp] == [
        {"kvp": 80.34, "kvp_avg": 79.5, "air_kerma_ugy": 876.0, "exposure_time_ms": 100.0, "pulses": 2.0,
         "kvp_max": 81.0, "filter_position": 3.0},
        {"kvp": 70.0, "kvp_avg": 70.0, "air_kerma_ugy": 438.0, "exposure_time_ms": 50.0, "pulses": 1.0,
         "kvp_max": 70.0, "filter_position": 3.0},
        {"kvp": 120.0, "kvp_avg": 120.0, "air_kerma_ugy": 43.8, "exposure_time_ms": 5.0, "pulses": 1.0,
         "kvp_max": 120.0, "filter_position": 3.0},
    ]
    first = kvp[0]
    assert first["units"] == {"kvp": "kV", "kvp_avg": "kV", "kvp_max": "kV", "air_kerma_ugy": "uGy",
                              "exposure_time_ms": "ms", "pulses": "1", "filter_position": "1"}
    assert first["series"] == {"kvp_peaks": [81.0, 80.0]} and first["driver"] == "victoreen_4000m"
    assert first["schema"] == "xray.qc-reading/1" and first["session_ref"] is None
    assert first["raw_frame"].startswith("+8.034E+01 +7.950E+01 +1.000E+02 +1.000E-01 2\\r\\n")
    assert kvp[2]["flags"] == ["kvp_outside_filter_range"]  # 120 kV on filter 3 (50-85 kV)

    dap = wait_for(lambda: readings(subscriber, "dap-1"), 20, "a DIAMENTOR reading")
    assert dap[0]["quantities"] == {"dap_gy_m2": pytest.approx(1.234e-3), "dap_rate_gy_m2_s": pytest.approx(5.6e-5),
                                    "exposure_time_ms": 3000.0}
    assert dap[0]["units"] == {"dap_gy_m2": "Gy*m2", "dap_rate_gy_m2_s": "Gy*m2/s", "exposure_time_ms": "ms"}
    diamentor.expose(dap_gy_m2=1.0e-3, dap_rate_gy_m2_s=4.0e-5, exposure_time_ms=2000)
    dap = wait_readings(subscriber, "dap-1", 2, 10, "2nd DIAMENTOR reading")
    assert dap[1]["quantities"]["dap_gy_m2"] == pytest.approx(2.234e-3)  # the meter accumulates
    assert len(dap) == 2  # unchanged polls are not readings

    area = wait_readings(subscriber, "area-1", 2, 10, "2 Ludlum readings")
    assert [r["quantities"]["dose_rate_ugy_s"] for r in area[:2]] == [pytest.approx(642.1 * 8.76 / 3600),
                                                                      pytest.approx(1.5 * 8.76 / 3600)]
    assert [r["flags"] for r in area[:2]] == [["audio", "high_alarm"], []]
    assert area[0]["units"] == {"dose_rate_ugy_s": "uGy/s"}

    links = {"kvp-1": victoreen, "dap-1": diamentor, "area-1": ludlum}
    late = Subscriber(broker.port, topic=f"{BASE}/equipment/#").start()  # sees only what is retained
    try:
        for device, emulator in links.items():  # status_every_s = 1: a periodic sample after the readings
            body = wait_for(lambda: [e for e in equipment(subscriber, device) if e["last_reading_at"]], 10,
                            f"equipment/{device} after a reading")[-1]
            assert body["state"] == "ok" and body["counters"]["frames_ok"] >= 1
            assert body["schema"] == "xray.equipment/1" and body["device_type"] == "serial-instrument"
            assert body["port"] == emulator.device and body["port_selector"] == emulator.link  # link resolved
            assert 0 <= body["last_reading_age_s"] < 5
        # (the agent's own devices, dicom-listener and broker-link, have equipment topics too)
        topics = {f"{BASE}/equipment/{device}" for device in links}
        wait_for(lambda: topics <= {m.topic for m in late.snapshot()}, 10, "a state of each device")
        firsts = {m.topic: m for m in reversed(late.snapshot()) if m.topic in topics}  # first per topic: retained
        assert all(m.retain and m.json()["state"] == "ok" for m in firsts.values())
    finally:
        late.stop()


def test_unplug_and_replug_mid_stream_loses_and_duplicates_nothing(broker, subscriber, start_agent, tmp_path,
                                                                     emulators):
    script = [{"kvp": 60.0 + i, "air_kerma_ugy": 100.0 + i, "exposure_time_ms": 10.0 + i} for i in range(8)]
    victoreen = VictoreenEmulator(link=str(tmp_path / "ttyV0"), arm_delay_s=0.05, every_s=0.3, script=script)
    agent = start_agent(broker.port, [{"id": "kvp-1", "driver": "victoreen_4000m", "port": run(emulators, victoreen),
                                       "settings": POLL_FAST}])
    wait_for(lambda: len(readings(subscriber, "kvp-1")) >= 3, 20, "3 readings before the unplug")
    # Unplug while the meter waits, armed, for its next exposure (where a QC meter spends its time).
    wait_for(lambda: victoreen.state == "armed", 5, "meter armed")
    victoreen.unplug(1.5)
    wait_for(lambda: equipment(subscriber, "kvp-1")[-1]["state"] == "down", 5, "equipment/kvp-1 down")
    got = wait_readings(subscriber, "kvp-1", len(script), 20, "every scripted reading")
    time.sleep(0.5)  # nothing extra trails in
    got = readings(subscriber, "kvp-1")
    assert [r["quantities"]["kvp"] for r in got] == [s["kvp"] for s in script]  # all, in order, each once
    for m in subscriber.snapshot("/qc/reading"):  # any repeat is a true re-send: same msg_id, same content
        assert m.json() == next(r for r in got if r["msg_id"] == m.json()["msg_id"])
    states = [e["state"] for e in equipment(subscriber, "kvp-1")]
    assert "down" in states and states[-1] == "ok" and states.index("ok") < states.index("down")
    assert equipment(subscriber, "kvp-1")[-1]["counters"]["reconnects"] == 1
    assert victoreen.replugs == 1
    assert agent.log().count("lost port") == 1 and "open again after" in agent.log()
    started = time.monotonic()
    assert agent.terminate(timeout=10) == 0 and time.monotonic() - started < 5  # readers stop promptly


def write_all(emulator, data: bytes) -> None:
    """Write every byte into the pty (Emulator.write drops what does not fit, like a device; here all must arrive)."""
    view = memoryview(data)
    while view:
        select.select([], [emulator._master], [], 0.1)
        with emulator._lock:
            try:
                view = view[os.write(emulator._master, view[:65536]):]
            except BlockingIOError:
                pass


def test_one_megabyte_of_noise_then_the_next_frame_is_read_correctly(broker, subscriber, start_agent, tmp_path,
                                                                     emulators):
    script = [{"reading": 123.4}, {"reading": 5.6, "low_alarm": True}, {"reading": 7.8}, {"reading": 9.1}]
    frames = ["0123.4000000", "0005.6001000", "0007.8000000", "0009.1000000"]
    ludlum = Ludlum375Emulator(link=str(tmp_path / "ttyL0"), every_s=0.1, script=script, paused=True)
    start_agent(broker.port, [{"id": "area-1", "driver": "ludlum_375", "port": run(emulators, ludlum),
                               "settings": {"read_timeout_s": 0.02}}])
    wait_for(lambda: is_ok(subscriber, "area-1"), 15, "equipment/area-1 ok")
    write_all(ludlum, random.Random(1).randbytes(1024 * 1024))
    ludlum.resume()
    got = wait_readings(subscriber, "area-1", 3, 15, "readings after noise")
    # The format has no start marker: the first frame is read from the tail of whatever noise precedes its CR LF.
    assert [r["raw_frame"] for r in got[:3]] == frames[:3]  # the very next frame, nothing misread, nothing lost
    assert [r["quantities"]["dose_rate_ugy_s"] for r in got[:3]] == [
        pytest.approx(s["reading"] * 8.76 / 3600) for s in script[:3]]
    assert [r["flags"] for r in got[:3]] == [[], ["low_alarm"], []]
    recovered = wait_for(lambda: [e for e in equipment(subscriber, "area-1")
                                  if e["state"] == "ok" and e["counters"]["bytes_discarded"] > 0], 10, "ok again")
    counters = recovered[-1]["counters"]
    assert counters["bytes_discarded"] + 256 * counters["frames_bad"] >= 1024 * 1024 * 0.99
    assert "degraded" in [e["state"] for e in equipment(subscriber, "area-1")]


def test_sigkill_right_after_readings_were_taken_loses_none_of_them(broker, subscriber, start_agent, tmp_path,
                                                                      emulators):
    script = [{"reading": i / 10} for i in range(1, 5000)]
    ludlum = Ludlum375Emulator(link=str(tmp_path / "ttyL0"), every_s=0.02, script=script)
    instruments = [{"id": "area-1", "driver": "ludlum_375", "port": run(emulators, ludlum),
                    "settings": {"read_timeout_s": 0.02}}]
    agent = start_agent(broker.port, instruments)
    wait_for(lambda: len(readings(subscriber, "area-1")) >= 20, 15, "readings flowing")
    broker.stop()  # readings now stay in the outbox
    outbox_path = tmp_path / "agent" / "outbox.db"
    box = Outbox(outbox_path, max_bytes=1)

    def queued() -> list[str]:
        return [json.loads(m.payload)["msg_id"] for m in box.fetch_after(0, 100_000) if m.topic.endswith("/qc/reading")]

    wait_for(lambda: len(queued()) >= 20, 10, "readings taken while the broker is away")
    agent.kill()  # SIGKILL while the meter keeps pushing and readings are being stored
    queued_at_kill = set(queued())
    taken = queued_at_kill | {r["msg_id"] for r in readings(subscriber, "area-1")}
    print(f"{len(taken)} readings taken, {len(queued_at_kill)} of them still in the outbox at the SIGKILL")
    box.close_reader()
    broker.start()
    start_agent(broker.port, instruments)
    wait_for(lambda: taken <= {r["msg_id"] for r in readings(subscriber, "area-1")}, 30, "every taken reading")
    published = readings(subscriber, "area-1")
    numbers = [round(r["quantities"]["dose_rate_ugy_s"] * 3600 / 8.76 * 10) for r in published]
    assert len(numbers) == len(set(numbers)), "a reading was published under two msg_ids"
    before_kill = sorted(n for n, r in zip(numbers, published) if r["msg_id"] in taken)
    assert before_kill == list(range(before_kill[0], before_kill[0] + len(before_kill)))  # no gap before the kill
