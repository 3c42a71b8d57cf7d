"""Shared fixtures: a real mosquitto broker per test, a persistent-session subscriber, and agent processes."""

from __future__ import annotations

import pytest

from tests.realparts import AgentProcess, Mosquitto, Subscriber, write_agent_config


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
