"""Pure parts of the publisher: the reconnect schedule, PUBLISH packet sizes, refusal codes, rate-limited parking
lines, and recognising another agent run on this room's status topic."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from agent.publish.backoff import Backoff
from agent.publish.parking import ParkLog, publish_packet_bytes, refused_reason, too_large, topic_refused
from agent.publish.session import rival_boot_id
from agent.publisher import publish_properties


def test_backoff_grows_to_the_cap_after_every_ended_connection_and_resets_only_when_healthy():
    low = Backoff(0.5, 30, rand=lambda a, b: a)  # the shortest delays the jitter allows
    assert [low.next_delay() for _ in range(8)] == [0.25, 0.5, 1, 2, 4, 8, 15, 15]
    low.connection_ended(5)  # a short connection does not reset the schedule
    assert low.next_delay() == 15
    low.connection_ended(low.healthy_s)
    assert low.next_delay() == 0.25 and low.healthy_s == 60
    high = Backoff(0.5, 30, rand=lambda a, b: b)
    assert [high.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_connect_budget_of_the_default_schedule():
    # The figures the README states: at most 9 connects in the first minute, then one per 15 s at most (4 a minute).
    b = Backoff(0.5, 30)
    assert b.max_attempts(60) == 9
    assert b.max_attempts(600) - b.max_attempts(300) == 20
    assert Backoff(0.5, 4).max_attempts(30) == 18  # the schedule of the broker-fault integration tests


def test_packet_size_matches_paho_and_only_large_messages_are_measured():
    topic, props = "xray/v1/s/r/exposure", publish_properties("abc")
    # fixed header 1 + length 1, topic 2 + 20, packet id 2, properties (their own length byte included), payload 10
    assert publish_packet_bytes(topic, b"x" * 10, props) == 2 + 22 + 2 + len(props.pack()) + 10
    assert publish_packet_bytes(topic, b"x" * 200, None) == 1 + 2 + 22 + 2 + 200  # 226 remaining: 2 length bytes
    assert too_large(topic, b"x" * 100, props, None) is None
    assert too_large(topic, b"x" * 100, props, 10_000) is None
    size = publish_packet_bytes(topic, b"x" * 5000, props)
    assert too_large(topic, b"x" * 5000, props, size) is None and too_large(topic, b"x" * 5000, props, size - 1) == size


def test_reason_codes_below_0x80_are_successes_and_acl_refusals_cover_the_topic():
    assert refused_reason(0x10, "No matching subscribers") is None
    assert refused_reason(0x87, "Not authorized") == "refused by the broker: Not authorized (0x87)"
    assert topic_refused(0x87) and topic_refused(0x90) and not topic_refused(0x97)


def test_park_log_writes_one_line_per_topic_then_a_summary(caplog):
    caplog.set_level(logging.ERROR)
    log = ParkLog(quiet_s=0.05)
    for i in range(100):
        log.parked("t/a", f"m{i}", "refused")
    assert len(caplog.records) == 1
    import time
    time.sleep(0.06)
    log.parked("t/a", "m100", "refused")
    log.parked("t/b", "n0", "refused")
    assert len(caplog.records) == 3 and "100 more messages on t/a" in caplog.records[1].getMessage()


def test_rival_is_another_boot_id_written_after_this_run_started():
    started = datetime.now(timezone.utc)
    later = (started + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    earlier = (started - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    assert rival_boot_id(f'{{"boot_id": "other", "ts": "{later}"}}'.encode(), "mine", started) == "other"
    assert rival_boot_id(f'{{"boot_id": "mine", "ts": "{later}"}}'.encode(), "mine", started) is None
    assert rival_boot_id(f'{{"boot_id": "old-run", "ts": "{earlier}"}}'.encode(), "mine", started) is None
    for junk in (b"", b"not json", b"[]", b'{"boot_id": 1, "ts": "x"}', b'{"ts": "2020-01-01T00:00:00"}'):
        assert rival_boot_id(junk, "mine", started) is None


def test_refused_client_id_and_session_takeover_name_the_likely_cause():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from agent.config import Config
    from agent.publish.session import describe_disconnect, describe_refusal

    cfg = Config.model_validate({"site": {"id": "s", "room": "r", "secret_key_file": "/k"}})
    words, clash = describe_refusal(cfg, ReasonCode(PacketTypes.CONNACK, identifier=0x85))
    assert clash and "another process uses client id xray-agent-s-r: a second agent or a cloned configuration" in words
    words, clash = describe_refusal(cfg, ReasonCode(PacketTypes.CONNACK, identifier=0x86))
    assert not clash and "check mqtt.username/password_file" in words
    lost = ReasonCode(PacketTypes.DISCONNECT, identifier=0x8E)
    assert describe_disconnect(cfg, lost, taken_over=True).startswith("session taken over: another process uses")
    assert describe_disconnect(cfg, ReasonCode(PacketTypes.DISCONNECT, identifier=0x80), False).startswith(
        "connection lost")
