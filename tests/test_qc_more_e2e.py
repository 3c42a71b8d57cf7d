"""Fluoroscopy and AEC QC sessions end to end: the emulated Victoreen meter on a real pty (its fluoroscopy rate
mode), the real agent, storescu sending DX images whose headers carry the exposure index, mosquitto and a
subscriber. The record carries the unit and instrument identity as a radiographic session does."""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.qc_room import QcRoom, published, room, session_message  # noqa: F401 - room is a fixture
from tests.realparts import wait_for

pytestmark = pytest.mark.integration

FAST_FLUORO = {"limits": {"fluoro_settle_s": 1.0, "fluoro_run_gap_s": 2.0, "fluoro_min_settled_samples": 3,
                          "fluoro_measurement_point": "C-arm, 30 cm from the input surface"}}


def start(room: QcRoom, test: str, instrument: str = "kvp-1") -> str:
    result = room.cli("start", "--test", test, "--instrument", instrument, "--operator", "JQ")
    assert result.returncode == 0, result.stderr
    return result.stdout.split(" session ")[1].split()[0]


def test_fluoroscopy_maximum_rate_takes_the_settled_rate(broker, subscriber, agent_factory, room):
    room.start(agent_factory, broker.port, qc=FAST_FLUORO)
    ref = start(room, "fluoro_max_air_kerma_rate")
    # 95 mGy/min after a 0.8 s ramp from 50 %: every sample is an exposure of the session; the ramp's samples
    # (within the 1 s settle time) are not the measurement; the settled rate 95 > 88 fails in normal mode.
    room.victoreen.fluoroscopy(rate_mgy_per_min=95.0, kvp=85.0, duration_s=3.0, sample_s=0.4, ramp_s=0.8)
    result = wait_for(lambda: (r := room.session(ref)["result"]) and r["verdict"] != "incomplete" and r, 20,
                      "a settled fluoroscopy rate")
    crit = result["criteria"][0]
    assert result["verdict"] == "fail" and crit["limit"] == 88.0
    assert crit["value"] == pytest.approx(95.0, rel=0.01)
    assert crit["inputs"]["samples"] > crit["inputs"]["settled_samples"] >= 3
    assert crit["inputs"]["measurement_point"] == "C-arm, 30 cm from the input surface"
    time.sleep(3.5)  # the beam ends: the last run is complete
    # The technologist says the high-level control was on: every sample of the run is marked, 95 <= 176 passes.
    for exposure in room.session(ref)["exposures"]:
        room.api(f"/api/qc/sessions/{ref}/exposures/{exposure['number']}/technique", {"high_level_control": 1})
    finished = room.cli("finish", ref)
    assert finished.returncode == 0 and "verdict: PASS" in finished.stdout, finished.stdout
    body = session_message(subscriber, ref)
    assert body["test_type"] == "fluoro_max_air_kerma_rate" and body["result"]["verdict"] == "pass"
    assert body["result"]["criteria"][0]["limit"] == 176.0
    assert body["instrument_records"][0]["id"] == "kvp-1"
    # The report of a fluoroscopy session, as HTML and as PDF, like a radiographic one.
    with urllib.request.urlopen(f"{room.web}/qc/report/{ref}", timeout=10) as response:
        html = response.read().decode()
    assert "Verdict: PASS" in html and "176" in html and "kvp-1" in html
    with urllib.request.urlopen(f"{room.web}/qc/report/{ref}.pdf", timeout=30) as response:
        assert response.read(5) == b"%PDF-"


def test_aec_reproducibility_and_tracking_from_the_images_exposure_index(broker, subscriber, agent_factory, room):
    room.start(agent_factory, broker.port, qc={"limits": {"aec_quantity": "exposure_index"}})
    ref = start(room, "aec_reproducibility")
    # EI 400, 404, 396, 402 (from the DX headers): mean 400.5, s = 3.416, C = 0.00853 <= 0.05.
    for ei in (400, 404, 396, 402):
        room.expose(ref, kvp=81, mas=8, kerma_ugy=3.0, exposure_index=str(ei))
    room.confirm(ref)
    status = room.cli("status")
    assert "verdict: PASS" in status.stdout, status.stdout
    finished = room.cli("finish", ref)
    assert finished.returncode == 0, finished.stderr
    body = session_message(subscriber, ref)
    crit = body["result"]["criteria"][0]
    assert crit["inputs"]["values_ei"] == [400.0, 404.0, 396.0, 402.0]
    assert crit["value"] == pytest.approx(0.008530, rel=1e-3)
    assert body["unit"]["manufacturer"]  # the unit's identity from its DICOM, as for radiographic sessions

    ref = start(room, "aec_thickness_tracking")
    # EI 400 at 100 mm, 330 at 200 mm (typed-in phantom thickness): means 400 / 330, overall 365;
    # (400 - 365) / 365 = 0.0959 <= 0.10 passes, (330 - 365) / 365 = -0.0959 passes; then 300 at 300 mm: overall
    # 343.3: (400 - 343.3) / 343.3 = 0.165 fails, (330 - 343.3) / 343.3 = -0.039 passes, (300 - 343.3) / 343.3 =
    # -0.126 fails.
    for number, (ei, mm) in enumerate(((400, 100), (330, 200)), 1):
        room.expose(ref, kvp=81, mas=8, kerma_ugy=3.0, exposure_index=str(ei))
        room.api(f"/api/qc/sessions/{ref}/exposures/{number}/technique", {"phantom_thickness_mm": mm})
    room.confirm(ref)
    assert room.session(ref)["result"]["verdict"] == "pass"
    room.expose(ref, kvp=81, mas=8, kerma_ugy=3.0, exposure_index="300")
    room.api(f"/api/qc/sessions/{ref}/exposures/3/technique", {"phantom_thickness_mm": 300})
    result = room.session(ref)["result"]
    assert result["verdict"] == "fail"
    assert [c["passed"] for c in result["criteria"]] == [False, True, False]


def test_mammography_kvp_and_output_with_the_meter_on_its_mammography_filter(broker, subscriber, agent_factory, room):
    # Filter position 1 reads 27-42 kV: the mammography range (a 28 kV reading on position 4 would be flagged).
    room.victoreen.filter_position = 1
    room.start(agent_factory, broker.port)
    ref = start(room, "mammo_kvp")
    # Set 28 kV; measured 28.5, 28.3, 28.6, 28.2: mean deviation 0.4 / 28 = 1.43 % <= 5 %; CV 0.1826 / 28.4 = 0.0064.
    for kv in (28.5, 28.3, 28.6, 28.2):
        room.expose(ref, kvp=28, mas=100, kerma_ugy=6000.0, measured_kvp=kv)
    room.confirm(ref)
    finished = room.cli("finish", ref)
    assert finished.returncode == 0 and "verdict: PASS" in finished.stdout, finished.stdout
    body = session_message(subscriber, ref)
    names = [c["name"] for c in body["result"]["criteria"]]
    assert names == ["mammo_kvp_accuracy", "mammo_kvp_reproducibility"]
    assert body["result"]["criteria"][1]["value"] == pytest.approx(0.0064286, rel=1e-3)

    ref = start(room, "mammo_output_reproducibility")
    # 6000, 6300, 5700, 6000 µGy: s = 244.9, C = 0.0408 <= 0.05.
    for kerma in (6000.0, 6300.0, 5700.0, 6000.0):
        room.expose(ref, kvp=28, mas=100, kerma_ugy=kerma, measured_kvp=28.2)
    room.confirm(ref)
    assert room.session(ref)["result"]["verdict"] == "pass"
    assert room.session(ref)["result"]["criteria"][0]["value"] == pytest.approx(0.040825, rel=1e-3)
