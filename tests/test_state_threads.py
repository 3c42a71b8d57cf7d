"""A thread that dies never leaves the agent answering Success: the supervisor restarts it, or stops the agent with a
distinct exit status (3) when an essential one cannot be kept running.

The deaths are injected (one raised exception in the thread's loop); everything else is real: the outbox file, the
DICOM listener with dcmtk's storescu as the sender, the publisher with mosquitto and a subscriber.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest

from agent import supervisor as supervisor_module
from agent.config import DicomConfig, load_config
from agent.dicom.intake import DicomIntake
from agent.dicom.scp import StorageSCP
from agent.outbox import Outbox, OutMessage
from agent.publisher import Publisher
from agent.sink import Sink
from agent.supervisor import EXIT_SERVICE_FAILED, Supervisor
from agent.topics import Topics
from tests.realparts import free_port, wait_for, write_agent_config
from tests.test_state_corruption import AGENT_AET, MODALITY_AET, dx_files, require_storescu, storescu

pytestmark = pytest.mark.integration
INJECTED = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the test


def run_in_thread(sup: Supervisor) -> threading.Thread:
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    return thread


@INJECTED
def test_dead_outbox_writer_means_0xa700_until_restarted(tmp_path, monkeypatch):
    require_storescu()
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=64 * 1024 * 1024)
    intake = DicomIntake(Sink(outbox, Topics("xray/v1", "s", "r")), b"k" * 32)
    port = free_port()
    listener = StorageSCP(DicomConfig(ae_title=AGENT_AET, port=port, bind="127.0.0.1",
                                      allowed_calling_aets=[MODALITY_AET], quarantine_dir=tmp_path / "q"), intake)
    sup = Supervisor()
    sup.add("outbox", outbox, essential=True)
    sup.add("dicom-listener", listener)
    monkeypatch.setattr(supervisor_module, "RESTART_MAX_S", 3.0)  # first restart 2 s after the death
    thread = run_in_thread(sup)
    try:
        wait_for(listener.alive, 10, "listener up")
        assert set(storescu(port, dx_files(tmp_path / "a", 3)).values()) == {"0x0000"}

        real_commit, died = Outbox._commit, threading.Event()

        def dying_commit(self, conn, batch):
            if not died.is_set():
                died.set()
                raise RuntimeError("injected writer fault")
            return real_commit(self, conn, batch)

        monkeypatch.setattr(Outbox, "_commit", dying_commit)
        outcome = storescu(port, dx_files(tmp_path / "b", 3, base=2000))
        assert died.is_set() and outcome[str(tmp_path / "b" / "dx2000.dcm")] == "0xa700", outcome
        wait_for(outbox.alive, 10, "the supervisor restarts the outbox")
        after = storescu(port, dx_files(tmp_path / "c", 3, base=3000))
        assert set(after.values()) == {"0x0000"}, after
        stored = {round(json.loads(m.payload)["exposure_index"])
                  for m in outbox.fetch_after(0, 100) if m.topic.endswith("/exposure")}
        succeeded = {int(name.rsplit("dx", 1)[1][:-4]) for name, status in outcome.items() if status == "0x0000"}
        # Success exactly for what is stored: the object the dead writer had was refused, not lost; one sent after
        # the restart (the supervisor is quick) may have succeeded, and then it is stored.
        assert stored == {1000, 1001, 1002, 3000, 3001, 3002} | succeeded
    finally:
        sup.stop_event.set()
        thread.join(15)


@INJECTED
def test_dead_publisher_thread_is_restarted_and_delivery_goes_on(tmp_path, broker, subscriber, monkeypatch):
    cfg = load_config(write_agent_config(tmp_path / "agent", broker.port))
    outbox = Outbox(cfg.outbox.path, max_bytes=cfg.outbox.max_bytes)
    publisher = Publisher(cfg, outbox)
    sup = Supervisor()
    sup.add("outbox", outbox, essential=True)
    sup.add("publisher", publisher, essential=True)
    monkeypatch.setattr(supervisor_module, "RESTART_MAX_S", 1.0)
    real_fetch, died = Outbox.fetch_after, threading.Event()

    def dying_fetch(self, seq, limit):
        rows = real_fetch(self, seq, limit)
        if rows and not died.is_set():
            died.set()
            raise RuntimeError("injected publisher fault")
        return rows

    monkeypatch.setattr(Outbox, "fetch_after", dying_fetch)
    thread = run_in_thread(sup)
    try:
        wait_for(outbox.alive, 10, "outbox up")
        topic = "xray/v1/test-site/xr-01/exposure"
        outbox.enqueue([OutMessage(f"m{i:03d}", topic, b'{"msg_id": "m%03d"}' % i) for i in range(50)])
        wait_for(died.is_set, 10, "the injected death")
        wait_for(lambda: {m.json()["msg_id"] for m in subscriber.snapshot("/exposure")}
                 == {f"m{i:03d}" for i in range(50)}, 20, "all 50 delivered by the restarted publisher")
        assert sup.exit_status == 0
    finally:
        sup.stop_event.set()
        thread.join(15)


class Dying:
    """A service whose thread ends right after it starts (a bug in its loop)."""

    def __init__(self) -> None:
        self.starts = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.starts += 1
        self._thread = threading.Thread(target=lambda: None)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def test_an_essential_service_that_keeps_dying_stops_the_agent_with_exit_status_3(monkeypatch, caplog):
    monkeypatch.setattr(supervisor_module, "RESTART_MAX_S", 0.05)
    monkeypatch.setattr(supervisor_module, "TICK_S", 0.02)
    essential, optional = Dying(), Dying()
    sup = Supervisor()
    sup.add("outbox", essential, essential=True)
    sup.add("meter", optional)
    with caplog.at_level(logging.CRITICAL):
        assert sup.run() == EXIT_SERVICE_FAILED
    assert essential.starts == supervisor_module.GIVE_UP_AFTER + 1
    assert "outbox died" in caplog.text and "exit status 3" in caplog.text


def test_a_service_that_cannot_start_stops_the_agent_with_exit_status_3(tmp_path, caplog):
    sup = Supervisor()
    (tmp_path / "outbox.db").mkdir()  # not a file: SQLite cannot open it
    sup.add("outbox", Outbox(tmp_path / "outbox.db", max_bytes=1 << 20), essential=True)
    with caplog.at_level(logging.CRITICAL):
        assert sup.run() == EXIT_SERVICE_FAILED
    assert "could not start outbox" in caplog.text


def test_the_agent_process_exits_3_when_its_outbox_cannot_start(tmp_path, agent_factory):
    """Not 1 with a traceback (systemd then restarts it in a loop with nothing said): 3, after one critical line."""
    state = tmp_path / "agent"
    (state / "blocked.db").mkdir(parents=True)
    agent = agent_factory(free_port(), workdir=state, outbox={"path": str(state / "blocked.db")})
    assert agent.proc.wait(30) == EXIT_SERVICE_FAILED
    assert "could not start outbox" in agent.log()


@pytest.fixture(autouse=True)
def _quiet_paho(caplog):
    caplog.set_level(logging.WARNING, logger="paho")
