"""SIGKILL of the agent during a stream of 500 C-STOREs from dcmtk's storescu, then a restart on the same outbox.

What must hold: every object storescu saw answered Success is published once the agent runs again (its event reaches
the persistent subscriber), and the objects after the kill simply failed at the sender. At most one object that did
not get Success may still be published: the one in flight at the kill, if its commit beat the kill but its response
did not reach the sender (it is not acknowledged, so the modality re-sends it; dedupe makes that one event).

Each of the 500 DX images carries its own Exposure Index (1000 + its number) as a marker, so the published events map
back to files without trusting anything the agent computes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import tomllib
from pathlib import Path

import pytest

from tests import dicom_factory as factory
from tests.realparts import Mosquitto, Subscriber, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODALITY_AET, AGENT_AET = "DR_ROOM3", "XRAYAGENT"
OBJECTS = 500
KILL_AFTER_SUCCESSES = 200
MARKER_BASE = 1000
DICOM = {"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET]}
# dcmtk 3.6.x leaves Nagle's algorithm on unless TCP_NODELAY is set in its environment; with it on, each C-STORE's
# data PDU waits for the delayed ACK of its command PDU (~40 ms), and 500 objects would take 25 s instead of ~4.
STORESCU_ENV = dict(os.environ, TCP_NODELAY="1")


def parse_storescu(log: str) -> dict[str, str]:
    """file -> "success" or "failed" from `storescu -v` output: each file starts with "Sending file: PATH" and ends
    with "Received Store Response (Success)" or "Store Failed, file: PATH" (or another response status)."""
    outcome: dict[str, str] = {}
    current = None
    for line in log.splitlines():
        if m := re.search(r"Sending file: (\S+)", line):
            current = m.group(1)
            outcome[current] = "pending"
        elif "Received Store Response (Success)" in line:
            outcome[current] = "success"
        elif (m := re.search(r"Store Failed, file: (\S+?):?$", line)) or "Received Store Response" in line:
            outcome[m.group(1) if m else current] = "failed"
    return outcome


def markers(sub: Subscriber) -> set[int]:
    return {round(m.json()["exposure_index"]) - MARKER_BASE for m in sub.snapshot("/exposure")}


@pytest.mark.parametrize("broker_during_stream", ["up", "down"])
def test_sigkill_mid_stream_loses_nothing_acknowledged(broker_during_stream, tmp_path, agent_factory):
    """"up": the usual case, most events are already published at the kill. "down": the broker is unreachable during
    the stream, so every acknowledged event exists only in the outbox when the agent is killed, and the restarted
    agent must deliver all of them from there."""
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk's storescu is not installed; scripts/test.sh installs it (apt-get install dcmtk)")
    folder = tmp_path / "objects"
    folder.mkdir()
    files = []
    for i in range(OBJECTS):
        path = folder / f"dx{i:03d}.dcm"
        path.write_bytes(factory.to_bytes(factory.make_dx(kvp=str(50 + i % 90), exposure_index=str(MARKER_BASE + i))))
        files.append(path)
    broker = Mosquitto(tmp_path / "broker")
    subscriber = broker.start_with_subscriber() if broker_during_stream == "up" else None
    try:
        agent = agent_factory(broker.port, dicom=DICOM)
        wait_for(lambda: "DICOM listener" in agent.log(), 15, "DICOM listener up")
        port = tomllib.loads(agent.config.read_text())["dicom"]["port"]
        lines = stream_and_kill(agent, port, files)

        outcome = parse_storescu("".join(lines))
        assert set(outcome) == {str(f) for f in files}, "storescu did not report on every file"
        assert "pending" not in outcome.values(), [f for f, o in outcome.items() if o == "pending"][:5]
        acked = {files.index(Path(f)) for f, o in outcome.items() if o == "success"}
        failed = {files.index(Path(f)) for f, o in outcome.items() if o == "failed"}
        assert len(acked) >= KILL_AFTER_SUCCESSES and failed, (len(acked), len(failed))
        assert max(acked) < min(failed), "after the kill every object must fail at the sender, and none before it"

        if subscriber is None:
            assert "buffering in the outbox" in agent.log()
            subscriber = broker.start_with_subscriber()
        # restart on the same outbox and key (same msg_ids); everything acknowledged reaches the subscriber
        restarted = agent_factory(broker.port, workdir=agent.config.parent, dicom=DICOM)
        wait_for(lambda: restarted.log().count("DICOM listener") == 2, 15, "restarted agent up")
        try:
            wait_for(lambda: acked <= markers(subscriber), 30, "the events of all acknowledged objects")
        except AssertionError:
            lost = sorted(acked - markers(subscriber))
            raise AssertionError(f"{len(lost)} of {len(acked)} acknowledged objects never published: "
                                 f"{[files[i].name for i in lost[:10]]}") from None
        published = markers(subscriber)
        assert published <= acked | {min(failed)}, f"published without Success: {sorted(published - acked)}"
        assert restarted.terminate() == 0
    finally:
        if subscriber is not None:
            subscriber.stop()
        broker.kill()


def stream_and_kill(agent, port: int, files: list[Path]) -> list[str]:
    """Run storescu -v over all files, SIGKILL the agent right after the KILL_AFTER_SUCCESSES-th Success; the log."""
    sender = subprocess.Popen(["storescu", "-v", "-nh", "-aet", MODALITY_AET, "-aec", AGENT_AET, "127.0.0.1",
                               str(port), *map(str, files)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=STORESCU_ENV)
    lines: list[str] = []
    killed = threading.Event()

    def read() -> None:
        successes = 0
        for line in sender.stderr:
            lines.append(line)
            if "Received Store Response (Success)" in line:
                successes += 1
                if successes == KILL_AFTER_SUCCESSES:
                    agent.proc.send_signal(signal.SIGKILL)  # the next object is typically in flight now
                    killed.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        sender.wait(120)
    finally:
        if sender.poll() is None:
            sender.kill()
        reader.join(10)
    assert killed.is_set(), "storescu finished before the agent was killed:\n" + "".join(lines[-20:])
    assert agent.proc.wait(10) == -signal.SIGKILL
    return lines
