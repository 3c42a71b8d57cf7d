"""A damaged outbox: 200 objects acknowledged by the real agent (dcmtk's storescu), pages of outbox.db damaged while
it is stopped, then a restart: the damage is found before the DICOM port opens, the damaged file is kept byte for
byte, every message still readable in it reaches a real mosquitto subscriber, and the damage is reported (log,
equipment/state-outbox). Also: a file truncated to half its size, and one cut inside its header, at start.

Which messages are readable is decided here from the file itself, not from the agent's code: the damaged pages are
chosen with SQLite's dbstat table, and the markers of the messages on a destroyed leaf page are read from its bytes
before it is destroyed. Each DX image carries its own Exposure Index (1000 + its number) as that marker.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests import dicom_factory as factory
from tests.realparts import Mosquitto, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODALITY_AET, AGENT_AET = "DR_ROOM3", "XRAYAGENT"
DICOM = {"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET]}
OBJECTS = 200
MARKER_BASE = 1000
STORESCU_ENV = dict(os.environ, TCP_NODELAY="1")
MARKER = re.compile(rb'"exposure_index":\s*(\d+)')


def dx_files(folder: Path, count: int, base: int = MARKER_BASE) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = folder / f"dx{base + i}.dcm"
        path.write_bytes(factory.to_bytes(factory.make_dx(kvp=str(50 + i % 90), exposure_index=str(base + i))))
        files.append(path)
    return files


def storescu(port: int, files: list[Path]) -> dict[str, str]:
    """file -> DIMSE status as dcmtk printed it ("0x0000", "0xa700"...)."""
    result = subprocess.run(["storescu", "-d", "-nh", "-aet", MODALITY_AET, "-aec", AGENT_AET, "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True, timeout=300, env=STORESCU_ENV)
    outcome, current = {}, None
    for line in (result.stdout + result.stderr).splitlines():
        if m := re.search(r"Sending file: (\S+)", line):
            current = m.group(1)
        elif m := re.search(r"DIMSE Status\s*: (0x[0-9a-f]{4})", line):
            outcome[current] = m.group(1)
    return outcome


def markers(sub) -> set[int]:
    return {round(m.json()["exposure_index"]) for m in sub.snapshot("/exposure")}


def dicom_port(agent) -> int:
    return tomllib.loads(agent.config.read_text())["dicom"]["port"]


def settle(path: Path) -> None:
    """Fold the WAL into the main file (the stopped agent's last close normally did), so pages hold the rows."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def pages_of(path: Path, name: str) -> dict[str, list[int]]:
    """pagetype ('internal', 'leaf', 'overflow') -> page numbers of table or index `name` (SQLite's dbstat)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT pageno, pagetype FROM dbstat WHERE name = ? ORDER BY pageno", (name,)).fetchall()
    finally:
        conn.close()
    out: dict[str, list[int]] = {}
    for pageno, kind in rows:
        out.setdefault(kind, []).append(pageno)
    return out


def damage(path: Path, pages: list[int], page_size: int = 4096) -> None:
    """Overwrite whole pages with bytes that are no b-tree page (random page corruption)."""
    rng = __import__("random").Random(11)
    with open(path, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(bytes([0xF7]) + bytes(rng.randrange(256) for _ in range(page_size - 1)))


def quick_check(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "; ".join(r[0] for r in conn.execute("PRAGMA quick_check").fetchall())
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def require_storescu() -> None:
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk's storescu is not installed; scripts/test.sh installs it (apt-get install dcmtk)")


def test_damaged_outbox_pages_every_readable_message_is_delivered(tmp_path, agent_factory):
    require_storescu()
    files = dx_files(tmp_path / "objects", OBJECTS)
    port = free_port()  # the broker is down while the objects arrive: every event waits in the outbox
    agent = agent_factory(port, dicom=DICOM)
    wait_for(lambda: "DICOM listener" in agent.log(), 15, "agent up")
    outcome = storescu(dicom_port(agent), files)
    assert list(outcome.values()).count("0x0000") == OBJECTS, outcome
    acked = {MARKER_BASE + i for i in range(OBJECTS)}
    assert agent.terminate() == 0

    outbox = agent.config.parent / "outbox.db"
    settle(outbox)
    messages = pages_of(outbox, "messages")
    assert messages.get("internal"), f"the messages table should have interior pages: {messages}"
    leaf = messages["leaf"][len(messages["leaf"]) // 2]
    page = outbox.read_bytes()[(leaf - 1) * 4096:leaf * 4096]
    lost = {int(m) for m in MARKER.findall(page)}
    assert 0 < len(lost) < 10, lost
    index_pages = pages_of(outbox, "messages_topic").get("leaf", [])
    damage(outbox, messages["internal"] + [leaf] + index_pages[:1])
    assert quick_check(outbox) != "ok", "the damage must be real"
    damaged = digest(outbox)

    broker = Mosquitto(tmp_path / "broker", port=port)
    subscriber = broker.start_with_subscriber()
    try:
        restarted = agent_factory(port, workdir=agent.config.parent, dicom=DICOM)
        wait_for(lambda: restarted.log().count("DICOM listener") == 2, 30, "restarted agent up")
        wait_for(lambda: acked - lost <= markers(subscriber), 30, "every readable acknowledged event")
        assert markers(subscriber) <= acked
        assert not markers(subscriber) & lost, "a message from the destroyed page cannot have been read"

        log = restarted.log()
        assert "is damaged" in log and "rebuilt with" in log, log[-3000:]
        kept = list(outbox.parent.glob("outbox.db.damaged-*"))
        main_copy = [p for p in kept if not p.name.endswith(("-wal", "-shm"))]
        assert len(main_copy) == 1 and digest(main_copy[0]) == damaged, "the damaged file is kept as it was found"
        assert quick_check(outbox) == "ok"
        # the first agent's last "ok" sample may still come first (it was in the outbox); the rebuild's comes after
        state = wait_for(lambda: (m := subscriber.snapshot("/equipment/state-outbox")) and
                         m[-1].json()["state"] == "degraded" and m[-1].json(), 15, "equipment/state-outbox degraded")
        assert state["device_type"] == "state-file"
        assert "rebuilt" in state["last_error"] and "damaged file kept" in state["last_error"]

        # the rebuilt outbox takes new objects and delivers them
        more = dx_files(tmp_path / "more", 5, base=5000)
        assert set(storescu(dicom_port(restarted), more).values()) == {"0x0000"}
        wait_for(lambda: set(range(5000, 5005)) <= markers(subscriber), 15, "events of objects sent after the rebuild")
        assert restarted.terminate() == 0
    finally:
        subscriber.stop()
        broker.kill()


@pytest.mark.parametrize("cut", ["half", "header"])
def test_truncated_outbox_at_start_is_rebuilt_not_a_restart_loop(cut, tmp_path, agent_factory):
    require_storescu()
    files = dx_files(tmp_path / "objects", 40)
    port = free_port()
    agent = agent_factory(port, dicom=DICOM)
    wait_for(lambda: "DICOM listener" in agent.log(), 15, "agent up")
    assert set(storescu(dicom_port(agent), files).values()) == {"0x0000"}
    assert agent.terminate() == 0
    outbox = agent.config.parent / "outbox.db"
    settle(outbox)
    size = outbox.stat().st_size
    os.truncate(outbox, size // 2 // 4096 * 4096 if cut == "half" else 60)  # half: whole pages are left
    # what survives: the markers in the bytes that are left (a row cut by the truncation is lost)
    readable = {int(m) for m in MARKER.findall(outbox.read_bytes())}

    broker = Mosquitto(tmp_path / "broker", port=port)
    subscriber = broker.start_with_subscriber()
    try:
        restarted = agent_factory(port, workdir=agent.config.parent, dicom=DICOM)
        wait_for(lambda: restarted.log().count("DICOM listener") == 2, 30, "restarted agent up")
        assert restarted.proc.poll() is None, restarted.log()[-2000:]
        if readable:
            wait_for(lambda: readable <= markers(subscriber), 30, "the events still in the truncated file")
        more = dx_files(tmp_path / "more", 3, base=7000)
        assert set(storescu(dicom_port(restarted), more).values()) == {"0x0000"}
        wait_for(lambda: {7000, 7001, 7002} <= markers(subscriber), 15, "new events after the rebuild")
        assert "rebuilt with" in restarted.log()
        assert restarted.terminate() == 0
    finally:
        subscriber.stop()
        broker.kill()


def test_outbox_damaged_while_running_refuses_until_rebuilt(tmp_path, agent_factory):
    """The damage appears under the running agent. Until the file is rebuilt every C-STORE is answered 0xA700 (the
    rebuild is held back by a directory where the new file must be written, so "until" lasts long enough to test),
    /readyz and the retained status say why, and the publisher waits instead of failing in a loop; once rebuilt, every
    readable message is delivered and new objects are acknowledged again."""
    require_storescu()
    from tests.test_health_agent import http

    files = dx_files(tmp_path / "objects", OBJECTS)
    port = free_port()
    agent = agent_factory(port, dicom=DICOM, outbox={"check_every_s": 1}, health={"broker_grace_s": 3600})
    wait_for(lambda: "DICOM listener" in agent.log(), 15, "agent up")
    assert list(storescu(dicom_port(agent), files).values()).count("0x0000") == OBJECTS
    acked = {MARKER_BASE + i for i in range(OBJECTS)}

    outbox = agent.config.parent / "outbox.db"
    blocker = outbox.with_name("outbox.db.rebuilding")
    blocker.mkdir()  # the rebuild cannot write its new file until this goes
    settle(outbox)
    messages = pages_of(outbox, "messages")
    leaf = messages["leaf"][len(messages["leaf"]) // 3]
    lost = {int(m) for m in MARKER.findall(outbox.read_bytes()[(leaf - 1) * 4096:leaf * 4096])}
    damage(outbox, messages["internal"] + [leaf])
    damaged = digest(outbox)
    wait_for(lambda: "could not rebuild outbox" in agent.log(), 20, "damage found, rebuild held back")

    refused = storescu(dicom_port(agent), dx_files(tmp_path / "refused", 5, base=3000))
    assert set(refused.values()) == {"0xa700"}, refused  # Refused: Out of Resources, never Success
    status, body = http(agent, "/readyz")
    assert status == 503 and "damaged" in body, body

    broker = Mosquitto(tmp_path / "broker", port=port)
    subscriber = broker.start_with_subscriber()
    try:
        birth = wait_for(lambda: [m.json() for m in subscriber.snapshot("/status")], 15, "retained status")[-1]
        assert birth["outbox_damaged"] is True
        assert not markers(subscriber), "nothing is read from a damaged outbox"
        assert agent.log().count("stopped unexpectedly") == 0, "no thread may die over the damage"

        blocker.rmdir()
        wait_for(lambda: "rebuilt with" in agent.log(), 20, "the rebuild")
        wait_for(lambda: acked - lost <= markers(subscriber), 30, "every readable acknowledged event")
        assert markers(subscriber) <= acked and not markers(subscriber) & {3000 + i for i in range(5)}
        wait_for(lambda: subscriber.snapshot("/status")[-1].json()["outbox_damaged"] is False, 15,
                 "status saying the outbox is sound again")
        wait_for(lambda: http(agent, "/readyz")[0] == 200, 15, "/readyz 200 after the rebuild")
        kept = [p for p in outbox.parent.glob("outbox.db.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
        assert len(kept) == 1 and digest(kept[0]) == damaged, "the damaged file is kept as it was found"

        again = storescu(dicom_port(agent), dx_files(tmp_path / "again", 5, base=4000))
        assert set(again.values()) == {"0x0000"}, again
        wait_for(lambda: set(range(4000, 4005)) <= markers(subscriber), 15, "events acknowledged after the rebuild")
        assert agent.terminate() == 0
    finally:
        subscriber.stop()
        broker.kill()
