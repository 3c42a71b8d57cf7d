"""Fair shares and parking in the outbox, on a real SQLite file: one intake class filling its share never refuses
another; a parked message leaves the delivery order, stays stored and counted, and comes back on retry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.outbox import OutboxFull, OutMessage, Outbox
from agent.payloads.status import AgentStatus
from agent.sink import Sink
from agent.topics import KINDS, SHARES, Topics

SHARE_FRACTIONS = {"dicom": 0.55, "readings": 0.25, "qc": 0.15, "telemetry": 0.05}


@pytest.fixture
def shared(tmp_path):
    box = Outbox(tmp_path / "outbox.db", max_bytes=10_000, shares=SHARE_FRACTIONS)
    box.start()
    yield box
    box.stop()


def msg(i: int, share: str, size: int = 100) -> OutMessage:
    return OutMessage(f"{share}-{i}", f"xray/v1/s/r/{share}", b"x" * size, share=share)


def test_every_kind_belongs_to_a_configured_share():
    assert {policy.share for policy in KINDS.values()} == set(SHARES)
    from agent.config import OutboxShares
    assert set(OutboxShares.model_fields) == set(SHARES)


def test_a_meter_filling_its_share_never_refuses_dicom(shared):
    stored = 0
    with pytest.raises(OutboxFull, match="readings share of the outbox is full"):
        for i in range(1000):
            shared.enqueue([msg(i, "readings")])
            stored += 1
    assert stored == 25  # 2,500 bytes of 10,000: the readings share, not the whole outbox
    # DICOM still gets its whole share while readings are refused, and vice versa readings are unaffected by DICOM.
    for i in range(55):
        shared.enqueue([msg(i, "dicom")])
    with pytest.raises(OutboxFull, match="dicom share"):
        shared.enqueue([msg(99, "dicom")])
    stats = shared.stats()
    assert stats.share_bytes == {"dicom": 5500, "readings": 2500, "qc": 0, "telemetry": 0}
    assert stats.counters["refusing:readings"] == 1 and stats.counters["refusing:dicom"] == 1
    assert stats.counters["refused:readings"] == 1 and stats.counters["refused:dicom"] == 1
    assert shared.refusing
    # QC sessions still have their own room.
    shared.enqueue([msg(0, "qc")])


def test_a_refused_class_is_accepted_again_once_its_share_drains(shared):
    for i in range(25):
        shared.enqueue([msg(i, "readings")])
    with pytest.raises(OutboxFull):
        shared.enqueue([msg(25, "readings")])
    rows = shared.fetch_after(0, 5)
    shared.ack([(r.seq, r.msg_id, True) for r in rows], wait=True)  # 20% of the share delivered: below 90% again
    assert not shared.refusing
    assert shared.enqueue([msg(25, "readings")]) == [True]


def test_sink_puts_each_payload_in_its_kinds_share(tmp_path):
    box = Outbox(tmp_path / "o.db", max_bytes=1_000_000, shares=SHARE_FRACTIONS)
    box.start()
    try:
        sink = Sink(box, Topics("xray/v1", "s", "r"))
        status = AgentStatus(msg_id="st-1", site="s", room="r", online=True, version="1", boot_id="b",
                             config_hash="h", reason="birth")
        sink.emit(status)
        assert set(box.stats().share_bytes) >= {"telemetry"} and box.stats().share_bytes["telemetry"] > 0
    finally:
        box.stop()


def test_parked_message_leaves_the_delivery_order_and_comes_back_on_retry(shared):
    shared.enqueue([msg(i, "dicom") for i in range(5)])
    first = shared.fetch_after(0, 10)
    shared.park([(first[1].seq, "refused by the broker: Not authorized (0x87)")])
    shared.ack((), wait=True)
    assert [r.msg_id for r in shared.fetch_after(0, 10)] == ["dicom-0", "dicom-2", "dicom-3", "dicom-4"]
    parked = shared.parked_messages()
    assert [(p.msg_id, p.reason) for p in parked] == [("dicom-1", "refused by the broker: Not authorized (0x87)")]
    stats = shared.stats()
    assert stats.parked_now == 1 and stats.counters["parked"] == 1 and shared.depth() == 5  # kept and counted
    assert shared.retry_parked() == 1
    assert shared.retried_total == 1 and shared.parked_count() == 0
    assert [r.msg_id for r in shared.fetch_after(0, 10)] == [f"dicom-{i}" for i in range(5)]
    assert shared.retry_parked() == 0  # nothing parked: nothing released


def test_outbox_retry_from_another_process_is_seen_by_the_running_one(tmp_path):
    running = Outbox(tmp_path / "o.db", max_bytes=10**6)
    running.start()
    try:
        running.enqueue([msg(0, "dicom")])
        running.park([(running.fetch_after(0, 1)[0].seq, "too large")])
        running.ack((), wait=True)
        other = Outbox(tmp_path / "o.db", max_bytes=10**6)  # `xray-agent outbox retry`
        other.start()
        assert other.retry_parked() == 1
        other.stop()
        assert running.retried_total == 1 and [r.msg_id for r in running.fetch_after(0, 5)] == ["dicom-0"]
    finally:
        running.stop()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["dicom", "readings", "qc"]), st.integers(1, 400)), max_size=60))
def test_no_class_ever_holds_more_than_its_share(tmp_path_factory, sequence):
    box = Outbox(tmp_path_factory.mktemp("prop") / "o.db", max_bytes=10_000, shares=SHARE_FRACTIONS)
    box.start()
    try:
        for i, (share, size) in enumerate(sequence):
            try:
                box.enqueue([msg(i, share, size)])
            except OutboxFull:
                pass
            held = box.stats().share_bytes
            assert all(held.get(name, 0) <= int(f * 10_000) for name, f in SHARE_FRACTIONS.items())
            assert sum(held.values()) == box.stats().bytes_used
    finally:
        box.stop()
