"""Remote checks over MQTT 5 request/response: the real agent process, a real mosquitto and a requester client."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.commands.protocol import Incoming, CommandRequest, refusal, reply_filters, response_topic_refusal
from agent.health.config import REPLY_TOPICS_DEFAULT
from tests.mqtt_requester import Requester
from tests.realparts import Subscriber, wait_for

pytestmark = pytest.mark.integration

BASE = "xray/v1/test-site/xr-01"


@pytest.fixture
def requester(broker):
    req = Requester(broker.port, BASE).start()
    yield req
    req.stop()


def started(agent_factory, broker, **overrides):
    agent = agent_factory(broker.port, **overrides)
    wait_for(lambda: "connected to broker" in agent.log(), 15, "agent connected")
    return agent


def test_ping_and_health_answered_with_correlation_data(broker, subscriber, requester, agent_factory):
    agent = started(agent_factory, broker)
    wait_for(lambda: subscriber.snapshot("/status"), 10, "birth")
    boot_id = subscriber.snapshot("/status")[-1].json()["boot_id"]

    pong = wait_for(lambda: _answered(requester, "ping"), 10, "a ping reply (subscription in place)")
    assert pong["ok"] is True and pong["command"] == "ping" and pong["schema"] == "xray.cmd-reply/1"
    assert pong["result"]["pong"] is True and pong["result"]["boot_id"] == boot_id == pong["boot_id"]

    reply = requester.request("health")
    assert reply["ok"] is True and reply["result"]["stored"] is True
    sample = reply["result"]["sample"]
    assert sample["schema"] == "xray.health/1" and sample["broker_connected"] is True
    published = wait_for(lambda: [m.json() for m in subscriber.snapshot("/health")
                                  if m.json()["msg_id"] == sample["msg_id"]], 10, "the sample on the health topic")
    assert published[0] == sample

    level = requester.request("set-log-level", {"level": "DEBUG"})
    assert level["ok"] and level["result"] == {"previous": "INFO", "level": "DEBUG"}
    assert not requester.request("set-log-level", {"level": "TRACE"})["ok"]
    flushed = requester.request("flush-outbox")
    assert flushed["ok"] and flushed["result"]["connected"] is True
    before = len(subscriber.snapshot("/status"))
    assert requester.request("republish-status")["ok"]
    wait_for(lambda: len(subscriber.snapshot("/status")) > before, 10, "the status published again")
    assert subscriber.snapshot("/status")[-1].json()["reason"] == "update"
    assert "command 'ping' run" in agent.log()

    summary = requester.request("dose-summary")
    assert summary["ok"] and summary["result"]["summary"]["schema"] == "xray.summary/1"
    assert summary["result"]["summary"]["trigger"] == "request"
    wait_for(lambda: [m for m in subscriber.snapshot("/summary")
                      if m.json()["msg_id"] == summary["result"]["summary"]["msg_id"]], 10, "summary on its topic")


def _answered(requester: Requester, command: str) -> dict | None:
    """Send and wait briefly: the first request may race the agent's SUBSCRIBE right after it connects."""
    try:
        return requester.reply(requester.send(command), timeout=1)
    except AssertionError:
        return None


def test_unknown_malformed_stale_and_retained_commands_are_refused(broker, requester, agent_factory):
    agent = started(agent_factory, broker)
    wait_for(lambda: _answered(requester, "ping"), 10, "agent answering")

    unknown = requester.request("shell", {"cmd": "rm -rf /"})
    assert unknown["ok"] is False and "unknown command 'shell'" in unknown["error"]
    assert "allowed: ping, health, republish-status, flush-outbox, set-log-level, dose-summary, retry-parked" in unknown["error"]
    malformed = requester.reply(requester.send("ping", raw=b"not json"))
    assert malformed["ok"] is False and malformed["command"] is None and "not a valid request" in malformed["error"]
    extra = requester.request("ping", {"verbose": True})
    assert extra["ok"] is False and "takes no arguments" in extra["error"]

    stale = requester.request("ping", ts=datetime.now(timezone.utc) - timedelta(minutes=5))
    assert stale["ok"] is False and stale["error"].startswith("stale: sent 300 s ago")
    ageless = requester.reply(requester.send("ping", raw=b'{"command": "ping"}', expiry_s=None))
    assert ageless["ok"] is False and ageless["error"].startswith("possibly stale: the request has neither `ts`")

    # A requester may not make the agent write on its data topics: no reply, nothing run.
    requester.send("ping", response_topic=f"{BASE}/exposure")
    wait_for(lambda: "is inside the agent's data topics" in agent.log(), 10, "the refusal logged")
    # Nor on any topic outside commands.reply_topics; a repeated request is logged once.
    for _ in range(3):
        requester.send("ping", response_topic="building/fire-alarm/panel")
    wait_for(lambda: "matches none of commands.reply_topics" in agent.log(), 10, "the reply-topic refusal logged")
    time.sleep(0.5)
    assert agent.log().count("'building/fire-alarm/panel' matches none") == 1
    assert "command 'shell' run" not in agent.log() and agent.log().count("command 'ping' run") == 1

    # A retained command reaches the connected agent once, as any command; the copy the broker keeps is never sent
    # to the agent again (subscription option "do not send retained"), so a reconnect does not run it again.
    retained = requester.send("flush-outbox", retain=True)
    assert requester.reply(retained)["ok"] is True
    assert agent.terminate() == 0
    del requester.replies[retained]
    agent = started(agent_factory, broker)
    wait_for(lambda: _answered(requester, "ping"), 10, "the restarted agent answering")
    assert retained not in requester.replies
    assert agent.log().count("command 'flush-outbox' run") == 1  # the log file holds both runs: the first one only


def test_command_expired_while_agent_offline_does_not_run(broker, requester, agent_factory, tmp_path):
    agent = started(agent_factory, broker)
    wait_for(lambda: _answered(requester, "ping"), 10, "agent answering")
    agent.kill()  # the broker keeps the agent's session (commands.session_expiry_s) and queues commands for it
    expiring = requester.send("republish-status", expiry_s=1)
    lasting = requester.send("ping", expiry_s=120)
    time.sleep(2.5)  # the first one's expiry passes while the agent is away
    watcher = Subscriber(broker.port, topic=f"{BASE}/status").start()
    try:
        agent = started(agent_factory, broker)
        assert requester.reply(lasting, timeout=15)["ok"] is True  # queued, delivered after the reconnect, run
        time.sleep(1.0)
        assert expiring not in requester.replies  # dropped by the broker: never delivered, never run
        log = agent.log()
        assert "command 'ping' run" in log and "republish-status" not in log
        assert all(m.json()["reason"] != "update" for m in watcher.snapshot())
    finally:
        watcher.stop()


def test_refusal_rules():
    now = 1000.0
    wall = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)

    def incoming(ts=None, expires_at=None, retained=False):
        return Incoming(CommandRequest(command="ping", ts=ts), None, "r", b"c", retained, expires_at)

    assert refusal(incoming(), 60, now, wall).startswith("possibly stale")  # neither ts nor expiry: age unknown
    assert refusal(incoming(ts=wall - timedelta(seconds=5)), 60, now, wall) is None
    assert refusal(incoming(expires_at=now - 0.1), 60, now, wall).startswith("expired")
    assert refusal(incoming(expires_at=now + 5), 60, now, wall) is None
    assert refusal(incoming(ts=wall - timedelta(seconds=61)), 60, now, wall).startswith("stale")
    assert refusal(incoming(ts=wall + timedelta(seconds=61)), 60, now, wall).startswith("ts is 61 s in the future")
    assert refusal(incoming(retained=True), 60, now, wall).startswith("retained")
    base = "xray/v1/s/r"
    filters = reply_filters(REPLY_TOPICS_DEFAULT, "xray/v1", "s", "r")
    assert filters == (f"{base}/cmd/reply/#", "replies/#")

    def refused(topic, allowed=filters):
        return response_topic_refusal(topic, allowed, "xray/v1", base)

    assert refused("replies/abc") is None and refused("replies/a/b/c") is None
    assert refused(f"{base}/cmd/reply/abc") is None
    assert "matches none" in refused(f"{base}/cmd/response/abc")
    assert refused("replies") is None  # '#' also matches the parent level (MQTT 5 section 4.7.1.2)
    assert "matches none" in refused("elsewhere/replies/abc") and "matches none" in refused("Replies/abc")
    assert "inside" in refused(f"{base}/cmd")  # would loop back as a command
    assert "inside" in refused("xray/v1/s/other-room/status")
    assert "inside" in refused("xray/v1/s/r/exposure", ("#",))  # whatever the filters, never on data topics
    assert "broker topic" in refused("$SYS/broker/x", ("#",))
    assert "wildcard" in refused("replies/#")
    assert "no response topic" in refused(None)


LEVEL = st.sampled_from(["xray", "v1", "s", "r", "cmd", "reply", "replies", "status", "exposure", "x", "$SYS", ""])


@settings(max_examples=300, deadline=None)
@given(levels=st.lists(LEVEL, min_size=1, max_size=7))
def test_a_reply_goes_only_where_the_filters_say_and_never_on_data_topics(levels):
    topic, prefix, base = "/".join(levels), "xray/v1", "xray/v1/s/r"
    filters = reply_filters(REPLY_TOPICS_DEFAULT, prefix, "s", "r")
    problem = response_topic_refusal(topic, filters, prefix, base)
    if problem is None:
        assert topic == f"{base}/cmd/reply" or topic.startswith(f"{base}/cmd/reply/") or levels[0] == "replies"
    if topic == prefix or (topic.startswith(prefix + "/") and not topic.startswith(base + "/cmd/")):
        assert response_topic_refusal(topic, ("#",), prefix, base) is not None  # whatever the filters say


def test_a_very_long_or_odd_response_topic_is_refused_in_a_short_message():
    base, prefix = "xray/v1/s/r", "xray/v1"
    filters = reply_filters(REPLY_TOPICS_DEFAULT, prefix, "s", "r")
    for topic in ("elsewhere/" + "x" * 65_000, "replies/" + "#" * 65_000, "$SYS/" + "y" * 65_000,
                  f"{base}/exposure/" + "z" * 65_000):
        problem = response_topic_refusal(topic, filters, prefix, base)
        assert problem is not None and len(problem) < 400 and "65" in problem, problem[:200]
    for topic in ("replies/\u200b+", "replies/a+b", "replies/\uff03", "$share/g/replies/x", "xray/v1/s/r/cmd"):
        assert response_topic_refusal(topic, filters, prefix, base) is not None or topic == "replies/\uff03", topic
