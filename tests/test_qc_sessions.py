"""QC sessions in-process on real files (qc.db and the outbox): readings join the open session of their instrument,
DICOM events fill the technique, restarts and crashes neither lose nor double-count a reading."""

from __future__ import annotations

import pytest

from agent.qc.recording import record_reading
from agent.qc.sessions import QcError
from tests.qc_fixtures import event, make_qc, published, reading  # noqa: F401 - fixtures


def test_a_reading_with_no_open_session_is_published_with_a_null_session_ref(make_qc, sink, box):
    qc = make_qc()
    qc.recorder(sink.emit)(reading(0))
    [body] = published(box)
    assert body["session_ref"] is None and body["quantities"]["kvp"] == 80.2
    assert qc.sessions() == []


def test_readings_join_the_open_session_of_their_instrument(make_qc, sink, box):
    qc = make_qc()
    ref = qc.open_session("reproducibility", ["kvp-1"], " AB ")["ref"]
    emit = qc.recorder(sink.emit)
    for i in range(3):
        emit(reading(i * 5))
    assert [b["session_ref"] for b in published(box)] == [ref] * 3
    s = qc.session(ref)
    assert [e["number"] for e in s["exposures"]] == [1, 2, 3] and s["operator"] == "AB"
    assert s["exposures"][0]["measured"] == {"kvp": 80.2, "air_kerma_ugy": 876.0, "exposure_time_ms": 100.0}
    assert s["result"]["verdict"] == "incomplete"  # no technique yet, and 10 exposures needed
    with pytest.raises(QcError, match="in open session"):
        qc.open_session("hvl", ["kvp-1"], "CD")


def test_restart_keeps_an_open_session_and_its_readings(make_qc, sink, box):
    qc = make_qc()
    ref = qc.open_session("linearity_mas", ["kvp-1"], "AB")["ref"]
    for i, kerma in enumerate((1000.0, 2000.0)):
        qc.recorder(sink.emit)(reading(i * 5, air_kerma_ugy=kerma))
    qc.stop()
    again = make_qc()
    s = again.session(ref)
    assert s["state"] == "open" and [e["measured"]["air_kerma_ugy"] for e in s["exposures"]] == [1000.0, 2000.0]
    again.recorder(sink.emit)(reading(10, air_kerma_ugy=1000.0))
    assert len(again.session(ref)["exposures"]) == 3
    assert again.finish(ref)["state"] == "finished"


def test_a_retried_reading_counts_once(make_qc, sink, box):
    qc = make_qc()
    ref = qc.open_session("reproducibility", ["kvp-1"], "AB")["ref"]
    emit, same = qc.recorder(sink.emit), reading(0)
    emit(same)
    emit(same)  # the reader retrying after the outbox refused (its first attempt may have committed)
    assert len(qc.session(ref)["exposures"]) == 1 and len(published(box)) == 1


def test_a_crash_between_session_record_and_outbox_is_healed_at_start(make_qc, box, tmp_path):
    qc = make_qc()
    ref = qc.open_session("reproducibility", ["kvp-1"], "AB")["ref"]
    recorded = record_reading(qc.store, reading(0), 5, 10)  # the session record committed; then the agent died
    assert recorded.session_ref == ref and published(box) == []
    qc.stop()
    make_qc().stop()  # restart: the reading goes to the outbox with its session_ref
    make_qc()  # and another restart does not send it twice
    assert [b["session_ref"] for b in published(box)] == [ref]
    assert len(make_qc().session(ref)["exposures"]) == 1


def test_an_event_before_the_reading_fills_its_technique(make_qc, sink):
    qc = make_qc()
    ref = qc.open_session("reproducibility", ["kvp-1"], "AB")["ref"]
    qc.observe([event(-30, "far"), event(-2, "near"), event(-6, "other")])
    qc.recorder(sink.emit)(reading(0))
    [e] = qc.session(ref)["exposures"]
    assert e["technique"] == {"set_kvp": 80.0, "set_mas": 10.0, "set_time_ms": 100.0, "source": "dicom",
                              "confirmed": False, "event_ref": "near",
                              "dicom_reported": {"set_kvp": 80.0, "set_mas": 10.0, "set_time_ms": 100.0}}


def test_an_event_after_the_reading_fills_the_nearest_exposure_only_within_the_window(make_qc, sink):
    qc = make_qc(match_window_s=10)
    ref = qc.open_session("linearity_mas", ["kvp-1"], "AB")["ref"]
    emit = qc.recorder(sink.emit)
    emit(reading(0, air_kerma_ugy=1000.0))
    emit(reading(20, air_kerma_ugy=2000.0))
    emit(reading(60, air_kerma_ugy=2000.0))
    qc.observe([event(19, "second", kvp=80.0, exposure_mas=20.0), event(1, "first", kvp=80.0, exposure_mas=10.0),
                event(45, "orphan", kvp=80.0, exposure_mas=20.0)])
    qc.observe([event(0.5, "first", kvp=99.0)])  # the same exposure again (its dose report): no change
    techniques = [e["technique"] for e in qc.session(ref)["exposures"]]
    assert [(t.get("event_ref"), t.get("set_mas")) for t in techniques] == [("first", 10.0), ("second", 20.0),
                                                                          (None, None)]
    # DICOM's values are a proposal: not judged until confirmed (or corrected).
    assert qc.session(ref)["result"]["reason"] == ("exposures 1, 2: the DICOM technique is not confirmed yet "
                                                   "(confirm or correct it)")
    qc.confirm_all(ref)
    assert qc.session(ref)["result"]["reason"] == "exposure 3 has no set mAs (nor set mA and time)"


def test_the_technologist_confirms_corrects_or_enters_the_technique(make_qc, sink):
    qc = make_qc()
    ref = qc.open_session("linearity_mas", ["kvp-1"], "AB")["ref"]
    emit = qc.recorder(sink.emit)
    qc.observe([event(0, "first", kvp=80.0, exposure_mas=10.0)])
    emit(reading(0, air_kerma_ugy=1000.0))
    emit(reading(30, air_kerma_ugy=1500.0))
    first = qc.set_technique(ref, 1, {})["exposures"][0]["technique"]
    assert first["source"] == "dicom" and first["confirmed"]
    corrected = qc.set_technique(ref, 1, {"set_mas": 10.5})["exposures"][0]["technique"]
    assert corrected["source"] == "corrected" and corrected["set_mas"] == 10.5
    s = qc.set_technique(ref, 2, {"set_kvp": 80, "set_mas": 20})
    assert s["exposures"][1]["technique"]["source"] == "manual"
    assert s["result"]["verdict"] == "fail"  # 0.0952 vs 0.075 mGy/mAs: L = 0.119 > 0.1
    with pytest.raises(QcError, match="a number >= 0"):
        qc.set_technique(ref, 2, {"set_kvp": -1})
    with pytest.raises(QcError, match="unknown technique value"):
        qc.set_technique(ref, 2, {"kv": 80})
    with pytest.raises(QcError, match="no exposure 9"):
        qc.set_technique(ref, 9, {})


def test_a_dap_meter_exposure_is_its_increase_and_pairs_with_the_kvp_meter(make_qc, sink, box):
    qc = make_qc()
    emit = qc.recorder(sink.emit)
    emit(reading(-60, "dap-1", dap_gy_m2=5e-3))  # before any session: the meter's total is the baseline
    ref = qc.open_session("dap_agreement", ["kvp-1", "dap-1"], "AB")["ref"]
    emit(reading(-1, "dap-1", dap_gy_m2=5e-3))  # the first poll after a restart repeats the total: no exposure
    qc.observe([event(0, "x", kvp=80.0, dap_gy_m2=1.05e-3)])
    emit(reading(0, "kvp-1"))
    emit(reading(0.8, "dap-1", dap_gy_m2=6e-3))
    [e] = qc.session(ref)["exposures"]
    assert e["measured"]["dap_gy_m2"] == pytest.approx(1e-3) and e["measured"]["kvp"] == 80.2
    assert [r["instrument_id"] for r in e["readings"]] == ["kvp-1", "dap-1"]
    assert qc.session(ref)["result"]["verdict"] == "pass"
    assert [b["session_ref"] for b in published(box)] == [None, None, ref, ref]


def test_finish_publishes_the_session_with_verdict_and_raw_frames(make_qc, sink, box):
    qc = make_qc()
    ref = qc.open_session("kvp_accuracy", ["kvp-1"], "AB")["ref"]
    qc.observe([event(0, "a", kvp=80.0, exposure_mas=10.0)])
    qc.recorder(sink.emit)(reading(0))
    assert qc.session(ref)["result"]["verdict"] == "incomplete"  # the DICOM technique awaits confirmation
    qc.confirm_all(ref)
    assert qc.finish(ref)["published"] is True
    [body] = published(box, "/qc/session")
    assert body["schema"] == "xray.qc-session/1" and body["msg_id"] == f"qcs-{ref}"
    assert body["result"]["verdict"] == "pass" and body["result"]["criteria"][0]["inputs"]["set_kv"] == 80.0
    [exposure] = body["exposures"]
    assert exposure["technique"]["source"] == "dicom" and exposure["measured"]["kvp"] == 80.2
    assert exposure["readings"][0]["raw_frame"].startswith('{"kvp": 80.2')
    assert qc.record(ref)["result"] == body["result"]  # the audit record is what was published
    with pytest.raises(QcError, match="finished already"):
        qc.finish(ref)
    qc.recorder(sink.emit)(reading(5))
    assert published(box)[-1]["session_ref"] is None  # after the session: published, in no session


def test_discard_keeps_the_session_but_publishes_nothing(make_qc, sink, box):
    qc = make_qc()
    ref = qc.open_session("hvl", ["kvp-1"], "AB")["ref"]
    assert qc.discard(ref)["state"] == "discarded"
    assert published(box, "/qc/session") == [] and qc.sessions("closed")[0]["ref"] == ref
    assert qc.open_session("hvl", ["kvp-1"], "AB")["state"] == "open"  # the instrument is free again


@pytest.mark.parametrize("args, message", [
    (("gloss", ["kvp-1"], "AB"), "unknown test type"),
    (("hvl", ["kvp-9"], "AB"), "unknown instrument kvp-9; configured: kvp-1, dap-1"),
    (("hvl", [], "AB"), "at least one instrument"),
    (("hvl", ["kvp-1"], "  "), "operator"),
])
def test_a_bad_start_says_what_is_wrong(make_qc, args, message):
    with pytest.raises(QcError, match=message) as err:
        make_qc().open_session(*args)
    assert err.value.status == 400


def test_without_qc_db_readings_still_go_out_and_the_api_says_why(make_qc, sink, box, tmp_path):
    (tmp_path / "qc.db").mkdir()  # a directory where the file should be: cannot be opened
    qc = make_qc()
    assert not qc.alive()
    qc.recorder(sink.emit)(reading(0))
    assert published(box)[0]["session_ref"] is None
    with pytest.raises(QcError, match="unavailable") as err:
        qc.open_session("hvl", ["kvp-1"], "AB")
    assert err.value.status == 503
