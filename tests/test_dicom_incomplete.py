"""Incomplete objects against real peers: a C-STORE cut part-way (sent by tests/raw_scu.py over a real association)
is answered Cannot Understand, quarantined and publishes nothing, and its complete re-send reaches a subscriber on
mosquitto; the watched folder leaves files that are still open or cut alone until they complete; `ingest` prints
what the agent published for the same objects."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from agent.dicom.folder import FolderWatcher
from agent.dicom.intake import DicomIntake
from agent.config import FolderIntakeConfig
from agent.outbox import Outbox
from agent.sink import Sink
from agent.topics import Topics
from tests import dicom_factory as factory
from tests.realparts import REPO, wait_for
from tests.test_health_agent import metric

pytestmark = pytest.mark.integration

MODALITY_AET, AGENT_AET = "DR_ROOM3", "XRAYAGENT"
RULES_FILE = REPO / "config" / "dose-rules.example.toml"


@pytest.fixture
def dicom_agent(broker, subscriber, agent_factory):
    agent = agent_factory(broker.port, dicom={"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET]},
                          dose={"rules_file": str(RULES_FILE)})
    wait_for(lambda: "DICOM listener" in agent.log(), 15, "DICOM listener up")
    agent.dicom_port = tomllib.loads(agent.config.read_text())["dicom"]["port"]
    return agent


def raw_send(port: int, *files: Path) -> list[str]:
    """Send the files' bytes as they are over one association; the status of each, in order."""
    out = subprocess.run([sys.executable, "-m", "tests.raw_scu", str(port), AGENT_AET, MODALITY_AET, *map(str, files)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [line.rsplit(" ", 1)[1] for line in out.stdout.splitlines()]


def test_a_truncated_c_store_is_refused_and_its_complete_re_send_published(dicom_agent, subscriber, tmp_path):
    """The reported case: kVp "125" cut after "12" was published as 12 with DAP, mAs and SID null, and the complete
    re-send was then dropped as already known."""
    data = factory.to_bytes(factory.make_dx(kvp="125"))
    cut = data.index(b"125", data.index(b"\x18\x00\x60\x00")) + 2
    truncated, complete = tmp_path / "cut.dcm", tmp_path / "whole.dcm"
    truncated.write_bytes(data[:cut])
    complete.write_bytes(data)
    assert raw_send(dicom_agent.dicom_port, truncated) == ["0xC000"]
    time.sleep(1.0)
    assert subscriber.snapshot("/exposure") == [], "nothing from a cut object is published"
    assert raw_send(dicom_agent.dicom_port, complete) == ["0x0000"]
    exposure = wait_for(lambda: subscriber.snapshot("/exposure"), 15, "the complete object's event")[0].json()
    assert (exposure["kvp"], exposure["dap_gy_m2"], exposure["exposure_mas"], exposure["sid_mm"]) == (
        125, 9.23e-07, 1.04, 1800)
    time.sleep(0.5)
    assert len(subscriber.snapshot("/exposure")) == 1
    assert "incomplete object" in dicom_agent.log()
    kept = list((dicom_agent.config.parent / "quarantine").glob("*.dcm"))
    assert len(kept) == 1 and kept[0].stat().st_size < len(data)
    assert metric(dicom_agent, "xray_dicom_incomplete_total") == 1
    assert metric(dicom_agent, "xray_dicom_received_total") == 2


def test_cuts_of_a_dose_report_are_refused_at_every_kind_of_place(dicom_agent, subscriber, tmp_path):
    report = factory.make_rdsr([factory.acquisition_event(), factory.fluoro_event()])
    data = factory.to_bytes(report)
    header_end = data.index(b"\x08\x00\x05\x00")  # first data set element after the meta
    cuts = [header_end + 3, len(data) // 2, len(data) - 30, len(data) - 1]
    files = []
    for n, cut in enumerate(cuts):
        files.append(tmp_path / f"cut{n}.dcm")
        files[-1].write_bytes(data[:cut])
    files.append(tmp_path / "whole.dcm")
    files[-1].write_bytes(data)
    assert raw_send(dicom_agent.dicom_port, *files) == ["0xC000"] * len(cuts) + ["0x0000"]
    wait_for(lambda: len(subscriber.snapshot("/exposure")) == 2, 15, "the complete report's two events")
    time.sleep(0.5)
    assert len(subscriber.snapshot("/exposure")) == 2 and len(subscriber.snapshot("/dose-summary")) == 1


def test_ingest_prints_exactly_what_the_agent_published(dicom_agent, subscriber, tmp_path):
    """Same objects, same order: the agent over the network, and `ingest --config` on the files."""
    study, uid = generate_uid(), generate_uid()
    pair = factory.make_dx_pair(study_uid=study, dap_dgy_cm2="3.5", body_part="CHEST", view="PA",
                                patient=factory.Patient(age="003Y"))
    shared = [factory.make_dx(irradiation_event_uid=uid, study_uid=study, kvp=kv, acquisition_dt=at, dap_dgy_cm2=dap)
              for kv, at, dap in (("70", "20240105101000", "0.5"), ("125", "20240105101500", "0.9"))]
    reports = factory.make_cumulative_rdsrs([factory.acquisition_event(), factory.fluoro_event(),
                                             factory.acquisition_event(started="20240105102000")], counts=(1, 3))
    objects = [*pair, pair[1], *shared, *reports, reports[0]]
    folder = tmp_path / "objects"
    folder.mkdir()
    files = []
    for n, ds in enumerate(objects):
        files.append(folder / f"{n:02d}.dcm")
        files[-1].write_bytes(factory.to_bytes(ds))
    assert raw_send(dicom_agent.dicom_port, *files) == ["0x0000"] * len(files)

    result = subprocess.run([sys.executable, "-m", "agent", "ingest", "--config", str(dicom_agent.config), str(folder)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = {"xray.exposure/1": "/exposure", "xray.dose-summary/1": "/dose-summary", "xray.dose-alert/1": "/dose-alert"}
    assert {p["schema"] for p in printed} == set(kinds), "exposures, summaries and dose alerts all printed"
    wait_for(lambda: sum(len(subscriber.snapshot(k)) for k in kinds.values()) >= len(printed), 20, "all published")
    time.sleep(0.5)
    for schema, kind in kinds.items():
        received = [m.json()["msg_id"] for m in subscriber.snapshot(kind)]
        assert [p["msg_id"] for p in printed if p["schema"] == schema] == received, kind
    exposures = [p for p in printed if p["schema"] == "xray.exposure/1"]
    assert len(exposures) == 1 + 2 + 3  # the pair once, the two UID-sharing exposures, three report events


# ---- the watched folder ------------------------------------------------------------------------------------------
@pytest.fixture
def watcher(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=64 * 1024 * 1024)
    outbox.start()
    intake = DicomIntake(Sink(outbox, Topics("xray/v1", "site", "room")), factory.TEST_SECRET)
    export = tmp_path / "export"
    export.mkdir()

    def make(**cfg) -> FolderWatcher:
        watch = FolderWatcher(FolderIntakeConfig(path=export, settle_s=0, poll_s=0.1, **cfg), intake,
                              tmp_path / "folder.db")
        watch.export, watch.outbox = export, outbox
        return watch

    yield make
    outbox.stop()


def _scan(watch: FolderWatcher, times: int = 1) -> None:
    db = watch.open_state()
    for _ in range(times):
        watch.scan(db)
    db.close()


def test_a_settled_file_still_open_by_its_writer_is_left_alone(watcher, caplog):
    watch = watcher()
    data = factory.to_bytes(factory.make_dx(kvp="72"))
    path = watch.export / "writing.dcm"
    with path.open("wb") as writer:
        writer.write(data)  # complete bytes, but the writer has not closed the file yet
        writer.flush()
        _scan(watch, 3)
        assert path.exists() and watch.outbox.depth() == 0 and watch.intake.counters.received == 0
        assert "still open by its writer" in caplog.text
    _scan(watch)
    assert not path.exists() and watch.outbox.depth() == 1


def test_a_settled_file_cut_part_way_waits_and_is_handled_when_complete(watcher, caplog):
    watch = watcher()
    data = factory.to_bytes(factory.make_dx(kvp="72"))
    path = watch.export / "copying.dcm"
    path.write_bytes(data[: len(data) // 2])  # the copy paused for longer than settle_s
    _scan(watch, 3)
    assert path.exists() and watch.outbox.depth() == 0 and watch.intake.counters.quarantined == 0
    assert caplog.text.count("is not complete") == 1, "logged once"
    with path.open("ab") as rest:
        rest.write(data[len(data) // 2:])
    _scan(watch)
    assert not path.exists() and watch.outbox.depth() == 1


def test_a_file_that_never_completes_is_quarantined_after_the_wait_and_kept(watcher, tmp_path):
    watch = watcher(incomplete_wait_s=0.2)
    watch.intake.quarantine = None
    data = factory.to_bytes(factory.make_rdsr([factory.acquisition_event()]))
    path = watch.export / "stuck.dcm"
    path.write_bytes(data[:-40])
    _scan(watch)
    time.sleep(0.3)
    _scan(watch, 2)
    assert path.exists() and watch.outbox.depth() == 0
    assert (watch.intake.counters.incomplete, watch.intake.counters.quarantined) == (1, 1)
    _scan(watch)
    assert watch.intake.counters.incomplete == 1, "handled once while unchanged"
    path.write_bytes(data)  # it completes after all
    _scan(watch)
    assert not path.exists() and watch.outbox.depth() == 2  # the event and the summary
