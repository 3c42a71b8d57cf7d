"""The QC JSON API and report pages through Flask's test client, on a real qc.db and outbox: status codes and error
messages, JSON-only writes, the overview, and the report of open, finished and discarded sessions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from flask import Flask

from agent.instruments.status import EquipmentBoard
from agent.web.qc import register_qc
from tests.qc_fixtures import event, make_qc, reading  # noqa: F401 - fixtures and helpers


@pytest.fixture
def client(make_qc):
    qc = make_qc()
    app = Flask("test")
    cfg = SimpleNamespace(site=SimpleNamespace(id="site", room="room"))
    app.extensions["xray_agent"] = SimpleNamespace(cfg=cfg, board=EquipmentBoard())
    register_qc(app, qc)
    client = app.test_client()
    client.qc = qc
    return client


def start(client, **body):
    body = {"test_type": "kvp_accuracy", "instruments": ["kvp-1"], "operator": "AB", **body}
    return client.post("/api/qc/sessions", json=body)


def test_start_status_and_finish(client, sink):
    answer = start(client)
    assert answer.status_code == 201
    ref = answer.json["ref"]
    client.qc.observe([event(0, "a", kvp=80.0, exposure_mas=10.0)])
    client.qc.recorder(sink.emit)(reading(0))
    assert client.get(f"/api/qc/sessions/{ref}").json["result"]["verdict"] == "incomplete"  # not confirmed yet
    session = client.post(f"/api/qc/sessions/{ref}/confirm", json={}).json
    assert session["exposures"][0]["technique"]["confirmed"] is True
    assert session["result"]["verdict"] == "pass" and session["exposures"][0]["technique"]["set_kvp"] == 80.0
    overview = client.get("/api/qc/overview").json
    assert [i["session"] for i in overview["instruments"]] == [ref, None]
    assert overview["instruments"][0]["state"] == "unknown"  # not on the board: no reader in this test
    assert overview["open"][0]["verdict"] == "pass" and overview["test_types"][0]["id"] == "reproducibility"
    assert client.post(f"/api/qc/sessions/{ref}/finish", json={}).json["published"] is True
    record = client.get(f"/api/qc/sessions/{ref}/record").json
    assert record["schema"] == "xray.qc-session/1" and record["result"]["verdict"] == "pass"
    report = client.get(f"/qc/report/{ref}").get_data(as_text=True)
    assert "Verdict: PASS" in report and "published on qc/session" in report and "80 kV" in report


def test_errors_are_json_with_a_message(client):
    assert start(client, test_type="gloss").json["error"].startswith("unknown test type 'gloss'")
    assert start(client, instruments=["nope"]).status_code == 400
    ref = start(client).json["ref"]
    busy = start(client)
    assert busy.status_code == 409 and f"open session {ref}" in busy.json["error"]
    assert client.get("/api/qc/sessions/qc-missing").status_code == 404
    assert client.post(f"/api/qc/sessions/{ref}/exposures/1/technique", json={}).status_code == 404
    assert client.get(f"/api/qc/sessions/{ref}/record").status_code == 404  # open: no audit record yet
    assert client.get("/api/qc/sessions?state=weird").status_code == 400


def test_writes_need_a_json_body(client):
    # A form post (what another web page can send cross-origin without a preflight) is refused.
    answer = client.post("/api/qc/sessions", data={"test_type": "hvl", "instruments": "kvp-1", "operator": "X"})
    assert answer.status_code == 415 and "JSON" in answer.json["error"]
    ref = start(client).json["ref"]
    assert client.post(f"/api/qc/sessions/{ref}/finish").status_code == 415
    assert client.post(f"/api/qc/sessions/{ref}/discard", json=[1]).status_code == 400


def test_page_and_reports_render(client):
    page = client.get("/qc").get_data(as_text=True)
    assert "X-ray QC" in page and "/qc/static/qc.js" in page and client.get("/qc/static/qc.js").status_code == 200
    ref = start(client).json["ref"]
    assert "still open" in client.get(f"/qc/report/{ref}").get_data(as_text=True)
    client.post(f"/api/qc/sessions/{ref}/discard", json={})
    assert "discarded" in client.get(f"/qc/report/{ref}").get_data(as_text=True)
    assert client.get("/qc/report/qc-missing").status_code == 404
    listed = client.get("/api/qc/sessions?state=closed").json["sessions"]
    assert [(s["ref"], s["state"]) for s in listed] == [(ref, "discarded")]
