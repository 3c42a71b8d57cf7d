"""The outbox's guarantees, on a real SQLite file: durable, idempotent, FIFO, coalescing, bounded, migratable."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest

from agent.outbox import MIGRATIONS, SCHEMA_VERSION, OutboxError, OutboxFull, OutMessage, Outbox, connect, migrate
from tests.realparts import REPO


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.db", max_bytes=1024 * 1024)
    box.start()
    yield box
    box.stop()


def exposure(i: int, size: int = 100, topic: str = "xray/v1/s/r/exposure") -> OutMessage:
    return OutMessage(msg_id=f"exp-{i}", topic=topic, payload=b"x" * size)


def test_enqueue_same_msg_id_twice_stores_once(outbox):
    assert outbox.enqueue([exposure(1)]) == [True]
    assert outbox.enqueue([exposure(1)]) == [False]
    assert outbox.enqueue([exposure(1), exposure(2)]) == [False, True]
    assert [m.msg_id for m in outbox.fetch_after(0, 10)] == ["exp-1", "exp-2"]


def test_delivered_msg_id_is_remembered_so_a_resend_is_dropped(outbox):
    outbox.enqueue([exposure(1)])
    row = outbox.fetch_after(0, 1)[0]
    outbox.ack([(row.seq, row.msg_id, True)], wait=True)
    assert outbox.depth() == 0
    assert outbox.enqueue([exposure(1)]) == [False]
    assert outbox.depth() == 0


def test_fifo_per_topic_across_interleaved_topics(outbox):
    for i in range(50):
        topic = "xray/v1/s/r/exposure" if i % 3 else "xray/v1/s/r/qc/reading"
        outbox.enqueue([exposure(i, topic=topic)])
    rows = outbox.fetch_after(0, 100)
    for topic in {r.topic for r in rows}:
        ids = [int(r.msg_id.split("-")[1]) for r in rows if r.topic == topic]
        assert ids == sorted(ids)


def test_status_samples_are_coalesced_to_the_newest(outbox):
    for i in range(5):
        outbox.enqueue([OutMessage(f"h{i}", "xray/v1/s/r/health", b"%d" % i, coalesce=True)])
    rows = outbox.fetch_after(0, 10)
    assert [(r.msg_id, r.payload) for r in rows] == [("h4", b"4")]
    assert outbox.stats().counters["coalesced"] == 4


def test_full_outbox_refuses_exposures_with_distinct_error_but_takes_status(tmp_path):
    box = Outbox(tmp_path / "o.db", max_bytes=1024 * 1024)
    box.start()
    try:
        stored = 0
        with pytest.raises(OutboxFull):
            while True:
                box.enqueue([exposure(stored, size=10_000)])
                stored += 1
        assert box.refusing and box.refused_total == 1
        assert stored == (1024 * 1024) // 10_000  # filled up to the byte bound, not beyond
        # Status samples still go in (coalesced), so the agent can say it is full.
        assert box.enqueue([OutMessage("st", "xray/v1/s/r/health", b"{}", coalesce=True)]) == [True]
        # Draining makes room again and clears the refusing state.
        rows = box.fetch_after(0, 1000)
        box.ack([(r.seq, r.msg_id, True) for r in rows], wait=True)
        assert not box.refusing
        assert box.enqueue([exposure(10_000)]) == [True]
        assert box.stats().counters["refused"] == 1
    finally:
        box.stop()


def test_refused_call_stores_none_of_its_messages(tmp_path):
    box = Outbox(tmp_path / "o.db", max_bytes=1024 * 1024)
    box.start()
    try:
        box.enqueue([exposure(0, size=1000 * 1000)])
        with pytest.raises(OutboxFull):
            box.enqueue([exposure(1, size=1000), exposure(2, size=100_000)])
        assert [r.msg_id for r in box.fetch_after(0, 10)] == ["exp-0"]
    finally:
        box.stop()


def test_concurrent_enqueues_are_all_stored_and_grouped_into_fewer_commits(outbox):
    errors = []

    def producer(k):
        try:
            for i in range(100):
                assert outbox.enqueue([exposure(k * 1000 + i)]) == [True]
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert outbox.depth() == 800


def test_telemetry_expires_but_exposures_never_do(tmp_path):
    now = [1_000_000.0]
    box = Outbox(tmp_path / "o.db", max_bytes=1024 * 1024, telemetry_max_age_s=60, clock=lambda: now[0])
    box.start()
    try:
        box.enqueue([exposure(1), OutMessage("h", "xray/v1/s/r/health", b"{}", coalesce=True)])
        now[0] += 3600 * 24 * 365
        box.maintain()
        assert [r.msg_id for r in box.fetch_after(0, 10)] == ["exp-1"]
        assert box.stats().counters["expired"] == 1
    finally:
        box.stop()


def test_upgraded_agent_opens_an_older_outbox_with_its_messages(tmp_path):
    path = tmp_path / "old.db"
    conn = connect(path)
    migrate(conn, target=1)  # the file as the first released agent left it
    conn.execute("INSERT INTO messages (msg_id, topic, payload, created_at) VALUES ('old-1', 't/exposure', x'7b7d', 1)")
    conn.close()
    box = Outbox(path, max_bytes=1024 * 1024)
    box.start()
    try:
        assert [r.msg_id for r in box.fetch_after(0, 10)] == ["old-1"]
        assert box.stats().bytes_used == 2
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        box.stop()


def test_outbox_from_a_newer_agent_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "new.db"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(OutboxError, match="newer than this agent"):
        Outbox(path, max_bytes=1024 * 1024).start()


def test_enqueue_before_start_raises_outbox_error(tmp_path):
    box = Outbox(tmp_path / "o.db", max_bytes=1024 * 1024)
    with pytest.raises(OutboxError, match="not running"):
        box.enqueue([exposure(1)])


CHILD = """
import sys
from agent.outbox import Outbox, OutMessage
box = Outbox(sys.argv[1], max_bytes=10**9)
box.start()
i = 0
while True:
    box.enqueue([OutMessage(f"m{i}", "xray/v1/s/r/exposure", b"{}")])
    print(f"m{i}", flush=True)  # only printed once enqueue returned, i.e. the row is durable
    i += 1
"""


def test_sigkill_loses_no_enqueue_that_returned(tmp_path):
    path = tmp_path / "o.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    acked = []
    for line in child.stdout:
        acked.append(line.strip())
        if len(acked) >= 300:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    acked += [line.strip() for line in child.stdout.read().splitlines() if line.strip()]
    stored = {row[0] for row in sqlite3.connect(path).execute("SELECT msg_id FROM messages")}
    assert set(acked) <= stored
