"""SIGKILL the agent in the middle of a QC session: after a restart the session, its exposures, their readings and
DICOM techniques are all there, nothing is counted twice, and the session can be continued and finished."""

from __future__ import annotations

import pytest

from tests.qc_room import published, room, session_message  # noqa: F401 - room is a fixture

pytestmark = pytest.mark.integration


def test_killed_mid_session_the_session_survives_and_finishes(broker, subscriber, agent_factory, room):
    room.start(agent_factory, broker.port)
    ref = room.api("/api/qc/sessions", {"test_type": "reproducibility", "instruments": ["kvp-1"],
                                        "operator": "KM"})["ref"]
    for kerma in (875.0, 880.0, 870.0):
        room.expose(ref, kvp=80, mas=10, kerma_ugy=kerma)
    before = room.session(ref)["exposures"]
    room.agent.kill()  # SIGKILL: no shutdown code runs

    room.start(agent_factory, broker.port)  # same workdir: same outbox and qc.db, new ports
    after = room.session(ref)
    assert after["state"] == "open" and after["exposures"] == before
    room.expose(ref, kvp=80, mas=10, kerma_ugy=877.0)
    finished = room.api(f"/api/qc/sessions/{ref}/finish", {})
    assert finished["state"] == "finished" and len(finished["exposures"]) == 4

    body = session_message(subscriber, ref)
    ids = [e["readings"][0]["msg_id"] for e in body["exposures"]]
    assert len(set(ids)) == 4 and {e["technique"]["source"] for e in body["exposures"]} == {"dicom"}
    assert [e["measured"]["air_kerma_ugy"] for e in body["exposures"]] == pytest.approx([875, 880, 870, 877], rel=1e-3)
    assert body["result"]["n_exposures"] == 4
    readings = [r["msg_id"] for r in published(subscriber, "qc/reading") if r["session_ref"] == ref]
    assert readings == ids  # each published once, in order, with the session's ref
