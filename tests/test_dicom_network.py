"""DICOM intake end to end: dcmtk's storescu/dcmsend -> the agent's SCP -> outbox -> mosquitto -> a subscriber."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGLosslessSV1, RLELossless

from tests import dicom_factory as factory
from tests.realparts import REPO, Subscriber, wait_for

pytestmark = pytest.mark.integration

MODALITY_AET = "DR_ROOM3"
AGENT_AET = "XRAYAGENT"
STORESCU = shutil.which("storescu")


@pytest.fixture
def dicom_agent(broker, subscriber, agent_factory, tmp_path):
    """A running agent accepting MODALITY_AET, with its DICOM port."""
    if STORESCU is None:
        pytest.fail("dcmtk's storescu is not installed; scripts/test.sh installs it (apt-get install dcmtk)")
    agent = agent_factory(broker.port, dicom={"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET]})
    wait_for(lambda: "DICOM listener" in agent.log(), 15, "DICOM listener up")
    agent.dicom_port = tomllib.loads(agent.config.read_text())["dicom"]["port"]
    return agent


def save(ds, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.dcm"
    path.write_bytes(factory.to_bytes(ds))
    return path


def storescu(port: int, *files: Path, aet: str = MODALITY_AET, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([STORESCU, "-v", "-nh", "-aet", aet, "-aec", AGENT_AET, *extra, "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=120)


def events(sub: Subscriber, kind: str = "/exposure") -> list[dict]:
    return [m.json() for m in sub.snapshot(kind)]


def test_image_values_arrive_as_sent(dicom_agent, subscriber, tmp_path):
    dx = factory.make_dx(kvp="81", exposure_uas="12500", exposure_mas="12", exposure_time_us="16400",
                         exposure_time_ms="16", dap_dgy_cm2="1.23", exposure_index="512", target_exposure_index="400",
                         deviation_index=None, sid_mm="1800", body_part="CHEST", view="PA")
    result = storescu(dicom_agent.dicom_port, save(dx, tmp_path, "dx"))
    assert result.returncode == 0, result.stderr
    event = wait_for(lambda: events(subscriber), 15, "exposure event")[0]
    assert event["schema"] == "xray.exposure/1" and event["source"] == "image" and event["modality"] == "DX"
    assert event["kvp"] == 81 and event["exposure_mas"] == 12.5 and event["exposure_time_ms"] == 16.4
    assert event["dap_gy_m2"] == pytest.approx(1.23e-5)
    assert event["deviation_index"] == pytest.approx(10 * math.log10(512 / 400), abs=0.01)  # computed: none sent
    assert event["sid_mm"] == 1800 and event["body_part"] == "CHEST" and event["view"] == "PA"


def test_rdsr_events_summary_and_cumulative_resend(dicom_agent, subscriber, tmp_path):
    all_events = [factory.fluoro_event(), factory.acquisition_event(), factory.acquisition_event(),
                  factory.fluoro_event()]
    first, second = factory.make_cumulative_rdsrs(all_events, counts=(2, 4))
    assert storescu(dicom_agent.dicom_port, save(first, tmp_path, "rdsr-2")).returncode == 0
    wait_for(lambda: len(events(subscriber)) == 2, 15, "first two RDSR events")
    assert storescu(dicom_agent.dicom_port, save(second, tmp_path, "rdsr-4")).returncode == 0
    wait_for(lambda: len(events(subscriber, "/dose-summary")) == 2, 15, "two dose summaries")
    received = events(subscriber)
    assert len(received) == 4, "the re-sent cumulative report must add only its two new events"
    assert len({e["msg_id"] for e in received}) == 4
    assert {e["irradiation_type"] for e in received} == {"fluoroscopy", "acquisition"}
    assert all(e["source"] == "rdsr" for e in received)
    summaries = events(subscriber, "/dose-summary")
    assert [s["events_count"] for s in summaries] == [2, 4]


def test_processing_and_presentation_pair_is_one_event(dicom_agent, subscriber, tmp_path):
    processing, presentation = factory.make_dx_pair(kvp="70", exposure_uas="5000")
    files = [save(processing, tmp_path, "proc"), save(presentation, tmp_path, "pres")]
    assert storescu(dicom_agent.dicom_port, *files).returncode == 0
    wait_for(lambda: "stored 0 new event(s) (1 already known)" in dicom_agent.log(), 15, "second image deduped")
    assert len(events(subscriber)) == 1


@pytest.mark.parametrize("syntax, flag", [(JPEGLosslessSV1, "-xs"), (RLELossless, "-xr"),
                                          (DeflatedExplicitVRLittleEndian, "-xd")])
def test_compressed_transfer_syntaxes_are_accepted(dicom_agent, subscriber, tmp_path, syntax, flag):
    ds = factory.make_dx(kvp="66", exposure_uas="3200")
    ds.file_meta.TransferSyntaxUID = syntax
    if syntax != DeflatedExplicitVRLittleEndian:
        # Pixel data is never decoded by the agent, so an encapsulated stand-in frame is enough to travel as sent.
        ds.PixelData = encapsulate([b"\xff\xd8" + bytes(64) + b"\xff\xd9" if syntax == JPEGLosslessSV1 else bytes(64)])
        ds["PixelData"].VR = "OB"
    result = storescu(dicom_agent.dicom_port, save(ds, tmp_path, "compressed"), extra=(flag,))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout + result.stderr
    event = wait_for(lambda: events(subscriber), 15, f"event sent as {syntax.name}")[0]
    assert event["kvp"] == 66 and event["exposure_mas"] == 3.2


def test_unknown_calling_ae_title_is_rejected(dicom_agent, subscriber, tmp_path):
    result = storescu(dicom_agent.dicom_port, save(factory.make_dx(), tmp_path, "dx"), aet="INTRUDER")
    assert result.returncode != 0
    assert "Association Rejected" in result.stdout + result.stderr
    wait_for(lambda: "rejected association from INTRUDER" in dicom_agent.log(), 10, "rejection logged")
    assert "not in dicom.allowed_calling_aets" in dicom_agent.log()
    assert events(subscriber) == []


def test_uninterpretable_object_gets_failure_status_and_is_quarantined(dicom_agent, subscriber, tmp_path):
    # storescu refuses to send an object without a SOP Instance UID; a buggy modality does not. tests/raw_scu.py
    # sends the file's bytes as they are, on a real association.
    broken = factory.make_dx()
    del broken.SOPInstanceUID  # the file meta still names it, so a sender can send it
    path = save(broken, tmp_path, "broken")
    sent = subprocess.run([sys.executable, "-m", "tests.raw_scu", str(dicom_agent.dicom_port), AGENT_AET,
                           MODALITY_AET, str(path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert sent.stdout.split() == [str(path), "0xC000"], sent.stdout + sent.stderr  # Error: Cannot understand
    quarantine = dicom_agent.config.parent / "quarantine"
    kept = wait_for(lambda: list(quarantine.glob("*.dcm")), 10, "quarantined copy")
    assert dcmread(kept[0]).StudyInstanceUID == broken.StudyInstanceUID  # the object as received, for inspection
    assert "SOP Instance UID" in kept[0].with_suffix(".txt").read_text()
    # the listener is still up and answers the next object normally
    assert storescu(dicom_agent.dicom_port, save(factory.make_dx(), tmp_path, "ok")).returncode == 0
    wait_for(lambda: events(subscriber), 15, "next object after a bad one")


def test_dcmsend_and_echo(dicom_agent, subscriber, tmp_path):
    echo = subprocess.run(["echoscu", "-aet", MODALITY_AET, "-aec", AGENT_AET, "127.0.0.1",
                           str(dicom_agent.dicom_port)], capture_output=True, text=True, timeout=30)
    assert echo.returncode == 0, echo.stderr
    path = save(factory.make_cr(kvp="60", exposure_mas="4"), tmp_path, "cr")
    sent = subprocess.run(["dcmsend", "-aet", MODALITY_AET, "-aec", AGENT_AET, "127.0.0.1",
                           str(dicom_agent.dicom_port), str(path)], capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    event = wait_for(lambda: events(subscriber), 15, "event from dcmsend")[0]
    assert event["modality"] == "CR" and event["exposure_mas"] == 4


def test_no_identifying_value_leaves_the_room(dicom_agent, subscriber, tmp_path):
    patient = factory.Patient()
    objects = [factory.make_dx(patient=patient, kvp="77"), factory.make_mg(patient=patient),
               factory.make_rdsr([factory.fluoro_event(), factory.acquisition_event()], patient=patient),
               factory.make_xa(patient=patient, frames=3)]
    planted = set()
    for i, ds in enumerate(objects):
        planted |= factory.identifying_values(ds, patient)
        assert storescu(dicom_agent.dicom_port, save(ds, tmp_path, f"o{i}")).returncode == 0
    wait_for(lambda: len(events(subscriber)) >= 5, 15, "all events")
    published = b"\n".join(m.payload for m in subscriber.snapshot())
    leaks = sorted(v for v in planted if len(v) >= 4 and v.encode() in published)
    assert not leaks, f"identifying values published: {leaks}"


def test_ingest_prints_the_payloads_the_agent_would_publish(tmp_path):
    folder = tmp_path / "export"
    save(factory.make_dx(kvp="90", exposure_mas="2.5"), folder, "a")
    save(factory.make_rdsr([factory.acquisition_event()]), folder, "b")
    (folder / "notes.txt").write_text("not dicom")
    result = subprocess.run([sys.executable, "-m", "agent", "ingest", str(folder)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(p["schema"] for p in lines) == ["xray.dose-summary/1", "xray.exposure/1", "xray.exposure/1"]
    assert any(p.get("kvp") == 90 for p in lines)
    assert "notes.txt: cannot interpret" in result.stderr and "3 file(s), 3 payload(s), 1 failed" in result.stderr
    assert result.returncode == 1
