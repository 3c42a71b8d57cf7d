"""QC sessions end to end, run from the CLI: emulated meters on real ptys, the real agent, storescu sending the matching
DX images, mosquitto and a subscriber. The verdicts are planted: reproducibility passes, linearity fails, DAP passes;
the set technique comes from DICOM; the finished session arrives on qc/session."""

from __future__ import annotations

import pytest

from tests.qc_room import QcRoom, published, room, session_message  # noqa: F401 - room is a fixture
from tests.realparts import wait_for

pytestmark = pytest.mark.integration

KERMA_REPRO = [870.0, 880.0, 875.0, 878.0, 872.0, 881.0, 869.0, 877.0, 874.0, 879.0]  # CV 0.5 %


def start(room: QcRoom, test: str, instrument: str) -> str:
    result = room.cli("start", "--test", test, "--instrument", instrument, "--operator", "JQ")
    assert result.returncode == 0, result.stderr
    assert f"started {test} session" in result.stdout
    return result.stdout.split(" session ")[1].split()[0]


def test_reproducibility_and_linearity_from_the_cli(broker, subscriber, agent_factory, room):
    room.start(agent_factory, broker.port)
    room.victoreen.expose(kvp=70.0, air_kerma_ugy=500.0, exposure_time_ms=20.0)  # before any session
    wait_for(lambda: published(subscriber, "qc/reading"), 15, "a reading with no session")
    assert published(subscriber, "qc/reading")[0]["session_ref"] is None

    ref = start(room, "reproducibility", "kvp-1")
    for kerma in KERMA_REPRO:
        room.expose(ref, kvp=80, mas=10, kerma_ugy=kerma, measured_kvp=80.6)
    status = room.cli("status")
    assert "verdict: INCOMPLETE" in status.stdout and "not confirmed" in status.stdout
    confirmed = room.cli("confirm")
    assert confirmed.returncode == 0, confirmed.stderr
    status = room.cli("status")
    assert status.returncode == 0, status.stderr
    assert "verdict: PASS" in status.stdout and "set kV" in status.stdout and "dicom" in status.stdout
    finished = room.cli("finish", ref)
    assert finished.returncode == 0 and "verdict: PASS" in finished.stdout
    body = session_message(subscriber, ref)
    assert body["result"]["verdict"] == "pass" and body["operator"] == "JQ" and body["instruments"] == ["kvp-1"]
    assert [e["technique"]["set_kvp"] for e in body["exposures"]] == [80.0] * 10
    assert {e["technique"]["set_mas"] for e in body["exposures"]} == {10.0}
    assert {e["technique"]["source"] for e in body["exposures"]} == {"dicom"}
    assert [e["measured"]["air_kerma_ugy"] for e in body["exposures"]] == pytest.approx(KERMA_REPRO, rel=1e-3)
    readings = [r for r in published(subscriber, "qc/reading") if r["session_ref"] == ref]
    assert [r["msg_id"] for r in readings] == [e["readings"][0]["msg_id"] for e in body["exposures"]]

    ref = start(room, "linearity_mas", "kvp-1")
    # 0.100 mGy/mAs at 10 and 20 mAs (pair passes), 0.070 at 40 mAs: L = 0.03 / 0.17 = 0.18 > 0.10 (pair fails).
    for mas, kerma in ((10, 1000.0), (20, 2000.0), (40, 2800.0)):
        room.expose(ref, kvp=80, mas=mas, kerma_ugy=kerma)
    room.confirm(ref)
    finished = room.cli("finish")
    assert finished.returncode == 0, finished.stderr
    assert "verdict: FAIL" in finished.stdout and "PASS  10 mAs vs 20 mAs" in finished.stdout
    assert "FAIL  20 mAs vs 40 mAs" in finished.stdout
    body = session_message(subscriber, ref)
    assert body["result"]["verdict"] == "fail"
    assert [e["technique"]["set_mas"] for e in body["exposures"]] == [10.0, 20.0, 40.0]
    assert [c["passed"] for c in body["result"]["criteria"]] == [True, False]

    listing = room.cli("list")
    assert listing.returncode == 0 and "FAIL" in listing.stdout and "PASS" in listing.stdout


def test_dap_agreement_with_the_dap_meter(broker, subscriber, agent_factory, room):
    room.start(agent_factory, broker.port)
    ref = start(room, "dap_agreement", "dap-1")
    # The DIAMENTOR shows a running total: each exposure is its increase. DICOM DAP within 25 % of the meter's.
    first = room.expose(ref, kvp=80, mas=10, kerma_ugy=0, dap_gy_m2=1.0e-3, dicom_dap_gy_m2=1.1e-3)
    second = room.expose(ref, kvp=80, mas=10, kerma_ugy=0, dap_gy_m2=2.0e-3, dicom_dap_gy_m2=1.9e-3)
    assert first["measured"]["dap_gy_m2"] == pytest.approx(1.0e-3, rel=1e-3)
    assert second["measured"]["dap_gy_m2"] == pytest.approx(2.0e-3, rel=1e-3)
    assert second["technique"]["dicom_dap_gy_m2"] == pytest.approx(1.9e-3)
    finished = room.cli("finish", "--json")
    assert finished.returncode == 0, finished.stderr
    body = session_message(subscriber, ref)
    assert body["result"]["verdict"] == "pass" and len(body["result"]["criteria"]) == 2


def test_cli_errors_say_what_to_do(broker, agent_factory, room, tmp_path):
    room.start(agent_factory, broker.port)
    result = room.cli("finish")
    assert result.returncode == 1 and "no open QC session; start one with: xray-agent qc start" in result.stderr
    result = room.cli("start", "--test", "hvl", "--instrument", "kvp-9", "--operator", "JQ")
    assert result.returncode == 1 and "unknown instrument kvp-9; configured: kvp-1, dap-1" in result.stderr
    room.agent.terminate()
    result = room.cli("status")
    assert result.returncode == 1 and "agent not running on 127.0.0.1:" in result.stderr
    assert "start it with `xray-agent run`" in result.stderr
