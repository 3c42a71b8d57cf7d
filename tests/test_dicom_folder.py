"""Watched-folder intake: files still being written are left alone, each file is handled once, even across restarts."""

from __future__ import annotations

import time

import pytest

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
    assert "folder junk.dcm" in agent.log() and "Cannot Understand" in agent.log()
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
