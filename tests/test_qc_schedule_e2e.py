"""The QC schedule end to end: the real agent with [[qc.schedule]], the emulated meter, storescu, mosquitto, the CLI
(`qc due`), the retained qc/due message, the health sample and the page in headless Chromium. A passed session
takes its test off the overdue list everywhere."""

from __future__ import annotations

import pytest

from tests.qc_room import published, room, session_message  # noqa: F401 - room is a fixture
from tests.realparts import Subscriber, wait_for
from tests.test_qc_web import browser, text, wait  # noqa: F401 - browser is a fixture

pytestmark = pytest.mark.integration

SCHEDULE = [{"test": "reproducibility", "interval_days": 30, "warn_days": 7},
            {"test": "aec_reproducibility", "interval_days": 365}]


def latest(sub: Subscriber, kind: str) -> dict | None:
    bodies = published(sub, kind)
    return bodies[-1] if bodies else None


def test_schedule_due_everywhere_and_a_pass_clears_it(broker, subscriber, agent_factory, room, browser):
    room.start(agent_factory, broker.port, health={"interval_s": 1},
               qc={"schedule": SCHEDULE, "limits": {"aec_quantity": "exposure_index"}})
    due = room.cli("due")
    assert due.returncode == 0, due.stderr
    lines = due.stdout.splitlines()
    assert lines[0].split()[:2] == ["status", "test"]
    assert "OVERDUE  reproducibility" in due.stdout and "OVERDUE  aec_reproducibility" in due.stdout
    message = wait_for(lambda: latest(subscriber, "qc/due"), 15, "the qc/due message")
    assert message["schema"] == "xray.qc-due/1"
    assert message["overdue"] == ["reproducibility", "aec_reproducibility"]
    wait_for(lambda: (h := latest(subscriber, "health")) and h["qc_overdue_tests"] == message["overdue"], 15,
             "overdue tests in the health sample")

    browser.get(f"{room.web}/qc")
    wait(browser, lambda d: "OVERDUE" in text(d, "due") and "AEC reproducibility" in text(d, "due"),
         "the schedule panel")

    ref = room.cli("start", "--test", "aec_reproducibility", "--instrument", "kvp-1", "--operator", "JQ")
    ref = ref.stdout.split(" session ")[1].split()[0]
    for ei in (400, 404, 396, 402):
        room.expose(ref, kvp=81, mas=8, kerma_ugy=3.0, exposure_index=str(ei))
    room.confirm(ref)
    finished = room.cli("finish", ref)
    assert "verdict: PASS" in finished.stdout, finished.stdout
    session_message(subscriber, ref)

    due = room.cli("due", "--json")
    tests = {t["test_type"]: t for t in __import__("json").loads(due.stdout)}
    assert tests["aec_reproducibility"]["status"] == "ok" and tests["aec_reproducibility"]["last_passed_ref"] == ref
    assert tests["aec_reproducibility"]["days_left"] in (364, 365)
    assert tests["reproducibility"]["status"] == "overdue"
    wait_for(lambda: latest(subscriber, "qc/due")["overdue"] == ["reproducibility"], 15, "qc/due updated")
    wait_for(lambda: latest(subscriber, "health")["qc_overdue_tests"] == ["reproducibility"], 15, "health updated")
    wait(browser, lambda d: "OK" in d.find_element("css selector", "[data-test=aec_reproducibility]").text,
         "the page shows the AEC test done")

    late = Subscriber(broker.port, topic="xray/+/+/+/qc/due").start()  # a centre subscribing later
    try:
        got = wait_for(lambda: late.snapshot("/qc/due"), 10, "the retained qc/due")
        assert got[-1].retain and got[-1].json()["overdue"] == ["reproducibility"]
    finally:
        late.stop()
