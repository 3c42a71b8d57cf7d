"""Delivery through a real mosquitto: nothing acknowledged is lost, order holds, duplicates repeat their msg_id."""

from __future__ import annotations

import json
import time

import pytest

from agent.outbox import OutMessage, Outbox
from tests.realparts import Subscriber, wait_for

pytestmark = pytest.mark.integration

TOPICS = ["xray/v1/test-site/xr-01/exposure", "xray/v1/test-site/xr-01/qc/reading", "xray/v1/test-site/xr-01/dose-alert"]


def fill_outbox(path, count: int, start: int = 0) -> list[str]:
    """Enqueue `count` exposure-class messages round-robin over three topics, as another process would."""
    box = Outbox(path, max_bytes=10**9)
    box.start()
    ids = []
    try:
        batch = []
        for i in range(start, start + count):
            msg_id = f"m{i:06d}"
            batch.append(OutMessage(msg_id, TOPICS[i % 3], json.dumps({"msg_id": msg_id, "n": i}).encode()))
            ids.append(msg_id)
            if len(batch) == 250:
                box.enqueue(batch)
                batch = []
        if batch:
            box.enqueue(batch)
    finally:
        box.stop()
    return ids


def delivered_ids(sub: Subscriber) -> list[str]:
    return [m.json()["msg_id"] for m in sub.snapshot() if "/status" not in m.topic]


def assert_order_per_topic(sub: Subscriber) -> None:
    """First deliveries of each topic come in enqueue order; a repeat is a re-send of an earlier msg_id."""
    for topic in TOPICS:
        firsts, seen = [], set()
        for m in sub.snapshot(topic):
            msg_id = m.json()["msg_id"]
            assert m.user_properties.get("msg_id") == msg_id  # duplicates carry the same msg_id
            if msg_id not in seen:
                seen.add(msg_id)
                firsts.append(msg_id)
        assert firsts == sorted(firsts), f"order broken on {topic}"


def test_5000_messages_survive_two_broker_restarts_mid_drain(broker, subscriber, agent_factory, tmp_path):
    ids = fill_outbox(tmp_path / "agent" / "outbox.db", 5000)
    agent = agent_factory(broker.port)
    for restart in range(2):
        wait_for(lambda: len(set(delivered_ids(subscriber))) >= 1500 * (restart + 1), 60, "drain progress")
        broker.stop()
        time.sleep(1.0)  # the agent notices, buffers, retries with backoff
        broker.start()
    wait_for(lambda: set(delivered_ids(subscriber)) >= set(ids), 90, "every msg_id at the subscriber")
    assert_order_per_topic(subscriber)
    duplicates = len(delivered_ids(subscriber)) - len(set(delivered_ids(subscriber)))
    print(f"delivered {len(ids)} messages with {duplicates} re-sent duplicates")
    wait_for(lambda: Outbox(tmp_path / "agent" / "outbox.db", max_bytes=1).depth() == 0, 20, "outbox empty")
    log = agent.log()
    assert log.count("lost connection to broker") == 2
    assert "reconnect attempt" not in log  # retries are not logged one by one at INFO
    assert agent.terminate() == 0


def test_sigkill_mid_drain_then_restart_loses_nothing(broker, subscriber, agent_factory, tmp_path):
    ids = fill_outbox(tmp_path / "agent" / "outbox.db", 3000)
    agent = agent_factory(broker.port)
    wait_for(lambda: len(delivered_ids(subscriber)) >= 500, 60, "drain started")
    agent.kill()
    partial = len(set(delivered_ids(subscriber)))
    assert partial < len(ids), "drain finished before the kill; the test proves nothing"
    agent_factory(broker.port)
    wait_for(lambda: set(delivered_ids(subscriber)) >= set(ids), 60, "every msg_id after restart")
    assert_order_per_topic(subscriber)


def test_birth_last_will_and_clean_shutdown_status(broker, agent_factory, tmp_path):
    status_topic = "xray/v1/test-site/xr-01/status"
    agent = agent_factory(broker.port)
    watcher = Subscriber(broker.port, topic=status_topic).start()
    try:
        birth = wait_for(lambda: [m for m in watcher.snapshot() if m.json()["online"]], 15, "birth status")[0]
        assert birth.json()["reason"] == "birth" and birth.json()["schema"] == "xray.status/1"
        agent.kill()  # no DISCONNECT: the broker publishes the last will after the keepalive lapses
        will = wait_for(lambda: [m for m in watcher.snapshot() if m.json()["reason"] == "lost"], 60, "last will")[0]
        assert will.json()["online"] is False and will.json()["boot_id"] == birth.json()["boot_id"]
        agent = agent_factory(broker.port)
        wait_for(lambda: len([m for m in watcher.snapshot() if m.json()["reason"] == "birth"]) == 2, 15, "rebirth")
        assert agent.terminate() == 0
        bye = wait_for(lambda: [m for m in watcher.snapshot() if m.json()["reason"] == "shutdown"], 15, "offline")[0]
        assert bye.json()["online"] is False
    finally:
        watcher.stop()
    # A subscriber that connects later sees the retained offline status.
    late = Subscriber(broker.port, topic=status_topic).start()
    try:
        retained = wait_for(lambda: late.snapshot(), 10, "retained status")[0]
        assert retained.retain and retained.json()["reason"] == "shutdown"
    finally:
        late.stop()


def test_mqtt5_properties_and_311_fallback(broker, subscriber, agent_factory, tmp_path):
    fill_outbox(tmp_path / "v5" / "outbox.db", 3)
    agent_factory(broker.port, workdir=tmp_path / "v5")
    first = wait_for(lambda: subscriber.snapshot("/exposure"), 15, "MQTT 5 message")[0]
    assert first.content_type == "application/json"
    assert first.user_properties["msg_id"] == first.json()["msg_id"]

    fill_outbox(tmp_path / "v311" / "outbox.db", 3, start=100)
    agent_factory(broker.port, workdir=tmp_path / "v311", mqtt={"protocol": "3.1.1", "client_id": "agent-311"})
    wait_for(lambda: "m000100" in delivered_ids(subscriber), 15, "MQTT 3.1.1 message")


def test_agent_starts_and_buffers_with_no_broker_then_delivers(tmp_path, agent_factory):
    from tests.realparts import Mosquitto, free_port

    port = free_port()
    agent = agent_factory(port)
    wait_for(lambda: "buffering in the outbox" in agent.log(), 15, "outage logged")
    ids = fill_outbox(tmp_path / "agent" / "outbox.db", 50)
    mq = Mosquitto(tmp_path / "late-broker", port=port)
    try:
        sub = mq.start_with_subscriber()
        wait_for(lambda: set(delivered_ids(sub)) >= set(ids), 30, "buffered messages delivered")
        sub.stop()
        assert agent.log().count("buffering in the outbox") == 1  # once per outage
        assert agent.terminate() == 0
    finally:
        mq.kill()


def test_sigterm_stops_within_5_seconds(broker, agent_factory):
    agent = agent_factory(broker.port)
    wait_for(lambda: "connected to broker" in agent.log(), 15, "agent connected")
    started = time.monotonic()
    assert agent.terminate(timeout=10) == 0
    assert time.monotonic() - started < 5


def test_full_outbox_is_reported_in_the_retained_status(tmp_path, agent_factory):
    from agent.outbox import OutboxFull
    from tests.realparts import Mosquitto, free_port

    port = free_port()
    agent = agent_factory(port, outbox={"max_bytes": 1024 * 1024})
    wait_for(lambda: "buffering in the outbox" in agent.log(), 15, "outage logged")
    box = Outbox(tmp_path / "agent" / "outbox.db", max_bytes=1024 * 1024)
    box.start()
    stored = 0
    try:
        with pytest.raises(OutboxFull):
            while True:
                box.enqueue([OutMessage(f"big{stored}", TOPICS[0], json.dumps({"msg_id": f"big{stored}"}).encode()
                                        + b" " * 50_000)])
                stored += 1
    finally:
        box.stop()
    mq = Mosquitto(tmp_path / "broker", port=port)
    try:
        sub = mq.start_with_subscriber("xray/v1/test-site/xr-01/#")
        wait_for(lambda: any(m.json().get("outbox_full") for m in sub.snapshot("/status")), 20, "status: outbox full")
        wait_for(lambda: len(sub.snapshot("/exposure")) >= stored, 30, "backlog delivered")
        cleared = wait_for(lambda: [m for m in sub.snapshot("/status")
                                    if m.json()["reason"] == "update" and not m.json()["outbox_full"]],
                           20, "status: outbox has room again")
        assert cleared[-1].json()["outbox_refused_total"] >= 1
        sub.stop()
    finally:
        mq.kill()
