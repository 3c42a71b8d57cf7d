"""Backpressure: with the broker unreachable, a small outbox fills and the SCP answers 0xA700 "Refused: Out of
Resources" so the modality keeps its objects; once the broker is back everything acknowledged is delivered, the
retained status said the outbox was full, and the refused objects succeed when re-sent.

The outbox stores only the extracted payloads (under 1 KB per exposure event), so the objects are dose reports with 60
irradiation events each (about 52 KB of payloads): 1 MiB holds about 19 of them. Every event's Acquisition Protocol is
a marker "bp-OOO-EEE" (object, event), so published events map back to the files that carried them.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tomllib

import pytest

from tests import dicom_factory as factory
from tests.realparts import Mosquitto, Subscriber, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODALITY_AET, AGENT_AET = "DR_ROOM3", "XRAYAGENT"
OBJECTS, EVENTS_PER_OBJECT = 30, 60
# Room for about 15 of the 30 reports in the DICOM share (55 % of max_bytes, [outbox.shares]): refused once full, not
# before, and the rest acknowledged after the broker drained it.
OUTBOX_BYTES = 2 * 1024 * 1024
STORESCU_ENV = dict(os.environ, TCP_NODELAY="1")  # see test_dicom_kill.py: dcmtk leaves Nagle on otherwise
GENERATED_UID = re.compile(rb"1\.2\.826\.0\.1\.3680043\.8\.498\.[0-9.]+")  # pydicom's generate_uid()


def dose_reports(folder, count: int) -> list:
    """`count` RDSR files, each its own study with its own event UIDs; built once, then copied with new UIDs and
    markers of the same length (building 30 reports of 60 events each with pydicom takes seconds)."""
    template = factory.to_bytes(factory.make_rdsr(
        [factory.acquisition_event(protocol=f"bp-000-{j:03d}") for j in range(EVENTS_PER_OBJECT)]))
    rng = random.Random(7)
    folder.mkdir()
    files = []
    for i in range(count):
        prefix = len(b"1.2.826.0.1.3680043.8.498.")
        renamed = {uid: uid[:prefix] + str(rng.randrange(10 ** (len(uid) - prefix - 1), 10 ** (len(uid) - prefix)))
                   .encode() for uid in set(GENERATED_UID.findall(template))}
        data = GENERATED_UID.sub(lambda m: renamed[m.group(0)], template).replace(b"bp-000-", b"bp-%03d-" % i)
        path = folder / f"rdsr{i:03d}.dcm"
        path.write_bytes(data)
        files.append(path)
    return files


def storescu(port: int, files) -> dict[str, str]:
    """Send with `storescu -d -nh` (debug output, continues past failures); file -> the status code of its C-STORE
    response as dcmtk printed it: "0x0000", or "0xa700" from "DIMSE Status : 0xa700: Refused: Out of resources"."""
    result = subprocess.run(["storescu", "-d", "-nh", "-aet", MODALITY_AET, "-aec", AGENT_AET, "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True, timeout=300, env=STORESCU_ENV)
    outcome, current = {}, None
    for line in (result.stdout + result.stderr).splitlines():
        if m := re.search(r"Sending file: (\S+)", line):
            current = m.group(1)
        elif m := re.search(r"DIMSE Status\s*: (0x[0-9a-f]{4})", line):
            outcome[current] = m.group(1)
    assert set(outcome) == {str(f) for f in files}, result.stdout + result.stderr[-3000:]
    return outcome


def published_objects(sub: Subscriber) -> dict[int, set[int]]:
    """object number -> event numbers published for it."""
    found: dict[int, set[int]] = {}
    for message in sub.snapshot("/exposure"):
        obj, event = map(int, message.json()["protocol"].split("-")[1:])
        found.setdefault(obj, set()).add(event)
    return found


def test_full_outbox_refuses_with_out_of_resources_then_recovers(tmp_path, agent_factory):
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk's storescu is not installed; scripts/test.sh installs it (apt-get install dcmtk)")
    files = dose_reports(tmp_path / "objects", OBJECTS)
    port = free_port()  # nothing listens here yet: the broker is "down"
    agent = agent_factory(port, outbox={"max_bytes": OUTBOX_BYTES},
                          dicom={"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET]})
    wait_for(lambda: "buffering in the outbox" in agent.log() and "DICOM listener" in agent.log(), 15, "agent up")
    dicom_port = tomllib.loads(agent.config.read_text())["dicom"]["port"]

    outcome = storescu(dicom_port, files)
    acked = {i for i, f in enumerate(files) if outcome[str(f)] == "0x0000"}
    refused = [i for i, f in enumerate(files) if outcome[str(f)] != "0x0000"]
    assert {outcome[str(files[i])] for i in refused} == {"0xa700"}, outcome  # Refused: Out of Resources
    assert 10 <= len(acked) < OBJECTS and acked == set(range(len(acked))), outcome  # refused once full, not before
    assert "answering Out of Resources" in agent.log()

    broker = Mosquitto(tmp_path / "late-broker", port=port)
    subscriber = broker.start_with_subscriber()
    try:
        every_event = set(range(EVENTS_PER_OBJECT))
        wait_for(lambda: all(published_objects(subscriber).get(i) == every_event for i in acked), 60,
                 f"all events of the {len(acked)} acknowledged reports")
        assert set(published_objects(subscriber)) == acked, "a refused report was (partly) stored"
        statuses = [m.json() for m in subscriber.snapshot("/status")]
        assert any(s["outbox_full"] for s in statuses), "the status never said the outbox was full"
        wait_for(lambda: not subscriber.snapshot("/status")[-1].json()["outbox_full"], 30,
                 "status saying the outbox has room again")

        again = storescu(dicom_port, [files[i] for i in refused])
        assert set(again.values()) == {"0x0000"}, again
        wait_for(lambda: all(published_objects(subscriber).get(i) == every_event for i in range(OBJECTS)), 60,
                 "all events of the re-sent reports")
        summaries = subscriber.snapshot("/dose-summary")
        assert len({m.json()["msg_id"] for m in summaries}) == OBJECTS
        assert agent.terminate() == 0
    finally:
        subscriber.stop()
        broker.kill()
