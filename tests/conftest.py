"""Shared fixtures: a real mosquitto broker per test, a persistent-session subscriber, and agent processes."""

from __future__ import annotations

import pytest

from agent.outbox import Outbox
from agent.sink import Sink
from agent.topics import Topics
from tests import dicom_factory
from tests.realparts import AgentProcess, Mosquitto, Subscriber, write_agent_config

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def dose_reports_read_alike():
    """Every dose report a test builds is read alike by the single-pass reader of raw bytes and by pydicom (the
    reference): same content tree, same payloads (tests/report_readers.py)."""
    dicom_factory.BUILT_REPORTS.clear()
    yield
    from tests.report_readers import assert_read_alike

    for ds in dicom_factory.BUILT_REPORTS:
        assert_read_alike(dicom_factory.to_bytes(ds))
    dicom_factory.BUILT_REPORTS.clear()


@pytest.fixture
def box(tmp_path):
    """A started 1 MiB outbox in tmp_path."""
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=MIB)
    outbox.start()
    yield outbox
    outbox.stop()


@pytest.fixture
def sink(box):
    """A sink for site "site", room "room" on that outbox."""
    return Sink(box, Topics("xray/v1", "site", "room"))


@pytest.fixture
def broker(tmp_path):
    mq = Mosquitto(tmp_path / "broker").start()
    yield mq
    mq.kill()


@pytest.fixture
def subscriber(broker):
    sub = Subscriber(broker.port).start()
    yield sub
    sub.stop()


@pytest.fixture
def agent_factory(tmp_path):
    """Call with a broker port (and config overrides) to get a started AgentProcess; all are stopped afterwards."""
    started: list[AgentProcess] = []

    def make(port: int, workdir=None, **overrides) -> AgentProcess:
        config = write_agent_config(workdir or tmp_path / "agent", port, **overrides)
        proc = AgentProcess(config).start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.ensure_stopped()
