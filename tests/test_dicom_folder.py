"""Watched-folder intake: files still being written are left alone, each file is handled once, even across restarts."""

from __future__ import annotations

import stat
import time

import pytest
import sqlite_utils

from agent.config import FolderIntakeConfig
from agent.dicom.folder import FolderWatcher, file_ref
from agent.dicom.intake import DicomIntake
from agent.dicom.statuses import SUCCESS
from tests import dicom_factory as factory
from tests.realparts import wait_for

pytestmark = pytest.mark.integration


def test_folder_files_become_events_once_and_are_moved(broker, subscriber, agent_factory, tmp_path):
    export, done = tmp_path / "export", tmp_path / "done"
    export.mkdir()
    folder_cfg = {"dicom": {"enabled": False}, "dicom.folder": {"path": str(export), "settle_s": 1.0,
                                                              "poll_s": 0.2, "after": "move", "move_to": str(done)}}
    agent = agent_factory(broker.port, **folder_cfg)
    wait_for(lambda: "watching" in agent.log(), 15, "folder watch started")

    # A file arriving slowly: half now, the rest after the settle time would have passed for a finished file.
    data = factory.to_bytes(factory.make_dx(kvp="72", exposure_mas="3.2"))
    partial = export / "slow.dcm"
    partial.write_bytes(data[: len(data) // 2])
    time.sleep(0.7)
    with partial.open("ab") as f:
        f.write(data[len(data) // 2:])
    (export / "sub").mkdir()
    (export / "sub" / "rdsr.dcm").write_bytes(factory.to_bytes(factory.make_rdsr([factory.acquisition_event()])))
    (export / "junk.dcm").write_bytes(b"not a dicom file at all")

    wait_for(lambda: len(subscriber.snapshot("/exposure")) == 2, 20, "events from the folder")
    wait_for(lambda: sorted(p.name for p in done.rglob("*.dcm")) == ["junk.dcm", "rdsr.dcm", "slow.dcm"], 10,
             "processed files moved")
    kvps = sorted(e.json()["kvp"] for e in subscriber.snapshot("/exposure"))
    assert 72 in kvps, "the slowly written file must be read whole, not half"
    secret = (agent.config.parent / "site.key").read_bytes().strip()
    assert f"file {file_ref(secret, 'junk.dcm')[:12]} in {export}" in agent.log() and "Cannot Understand" in agent.log()
    assert "junk" not in agent.log() and "slow" not in agent.log(), "exported file names are not logged"
    assert list((agent.config.parent / "quarantine").glob("*.dcm")), "junk kept for inspection"

    # Restart: nothing in the folder is handled twice, a new file is handled.
    assert agent.terminate() == 0
    agent = agent_factory(broker.port, **folder_cfg)
    (export / "late.dcm").write_bytes(factory.to_bytes(factory.make_cr(kvp="61", exposure_mas="2")))
    wait_for(lambda: len(subscriber.snapshot("/exposure")) == 3, 20, "event after restart")
    time.sleep(1.5)
    assert len(subscriber.snapshot("/exposure")) == 3


def test_keep_mode_handles_each_file_once_across_restarts(broker, subscriber, agent_factory, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "a.dcm").write_bytes(factory.to_bytes(factory.make_dx(kvp="80")))
    folder_cfg = {"dicom": {"enabled": False}, "dicom.folder": {"path": str(export), "settle_s": 0.2,
                                                              "poll_s": 0.2, "after": "keep"}}
    agent = agent_factory(broker.port, **folder_cfg)
    wait_for(lambda: len(subscriber.snapshot("/exposure")) == 1, 20, "event from kept file")
    assert agent.terminate() == 0
    agent = agent_factory(broker.port, **folder_cfg)
    # both runs log to one file: wait for the second run's own "watching" line
    wait_for(lambda: agent.log().count("watching") == 2, 15, "folder watch restarted")
    time.sleep(1.5)
    assert (export / "a.dcm").exists()
    assert len(subscriber.snapshot("/exposure")) == 1
    assert "stored" not in agent.log().split("watching")[-1], "the kept file must not be processed again"


def test_state_of_an_earlier_agent_keeps_its_files_handled_without_their_names(sink, tmp_path):
    # folder-intake.db of an earlier agent keyed files by their path in clear (an exported name carries the patient's).
    export, state = tmp_path / "export", tmp_path / "state" / "folder-intake.db"
    (export / "ZEBEDEE^QUIXOTICA").mkdir(parents=True)
    kept = export / "ZEBEDEE^QUIXOTICA" / "PID-7Q4471150.dcm"
    kept.write_bytes(factory.to_bytes(factory.make_dx()))
    st = kept.stat()
    state.parent.mkdir()
    legacy = sqlite_utils.Database(state)
    legacy["handled"].insert({"path": str(kept), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                              "handled_at": time.time(), "status": SUCCESS}, pk="path")
    legacy.close()

    cfg = FolderIntakeConfig(path=export, settle_s=0, after="keep")
    watcher = FolderWatcher(cfg, DicomIntake(sink, factory.TEST_SECRET), state)
    db = watcher.open_state()
    watcher.scan(db)
    assert watcher.intake.counters.received == 0, "the file handled before the upgrade is not read again"
    db.close()
    for path in state.parent.iterdir():
        data = path.read_bytes()
        assert b"ZEBEDEE" not in data and b"7Q4471150" not in data, path.name
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
