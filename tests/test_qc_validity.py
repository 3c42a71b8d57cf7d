"""Readings the meter flags are not measurements; a test runs only on instruments that measure what it needs; per
quantity only a fit instrument's value is used."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.instruments.mapping import qc_reading
from agent.qc.config import QcConfig
from agent.qc.quantities import excluded_by_flags
from agent.qc.sessions import QcError, QcSessions
from agent.qc.store import QcStore
from drivers.reading import Reading
from tests.qc_fixtures import T0, event, make_qc  # noqa: F401 - make_qc is a fixture
from tests.qc_fixtures import reading as plain_reading


def flagged_reading(seconds: float, kvp: float, flags=("kvp_outside_filter_range",)):
    quantities = {"kvp": kvp, "air_kerma_ugy": 900.0, "exposure_time_ms": 100.0}
    read = Reading("kvp-1", quantities, flags=frozenset(flags), raw=json.dumps(quantities).encode(),
                   wall_utc=T0 + timedelta(seconds=seconds))
    return qc_reading(read, driver="victoreen_4000m", site="site", room="room")


def test_a_kvp_session_whose_readings_are_flagged_does_not_pass(make_qc, sink):
    qc = make_qc()
    ref = qc.open_session("kvp_accuracy", ["kvp-1"], "AB")["ref"]
    emit = qc.recorder(sink.emit)
    for i in range(3):
        emit(flagged_reading(i * 20, kvp=120.3))  # 120 kV read with the 50-85 kV filter: the meter's flag
        qc.observe([event(i * 20, f"e{i}", kvp=120.0, exposure_mas=10.0)])
    s = qc.session(ref)
    assert s["result"]["verdict"] == "invalid"
    assert all(e["flags"] == ["kvp_outside_filter_range"] for e in s["exposures"])
    assert all(e["excluded"] == {"kvp": ["kvp_outside_filter_range"]} for e in s["exposures"])
    assert all("kvp" not in e["measured"] for e in s["exposures"])
    invalid = [c for c in s["result"]["criteria"] if c["invalid"]]
    assert [c["subject"] for c in invalid] == ["exposure 1", "exposure 2", "exposure 3"]
    assert "kVp flagged kvp_outside_filter_range" in s["result"]["reason"]
    finished = qc.finish(ref)
    record = qc.record(ref)
    assert finished["result"]["verdict"] == record["result"]["verdict"] == "invalid"
    assert record["exposures"][0]["flags"] == ["kvp_outside_filter_range"]


def test_one_flagged_exposure_among_good_ones_still_makes_the_test_invalid(make_qc, sink):
    qc = make_qc()
    ref = qc.open_session("kvp_accuracy", ["kvp-1"], "AB")["ref"]
    emit = qc.recorder(sink.emit)
    emit(plain_reading(0, kvp=80.5, air_kerma_ugy=900.0, exposure_time_ms=100.0))
    emit(flagged_reading(20, kvp=80.5, flags=("error_3",)))
    for i in range(2):
        qc.observe([event(i * 20, f"e{i}", kvp=80.0, exposure_mas=10.0)])
    result = qc.session(ref)["result"]
    assert result["verdict"] == "invalid"
    assert "exposure 2" in result["reason"] and "error_3" in result["reason"]


def test_a_failing_valid_exposure_is_still_a_fail():
    from agent.qc.analysis import analyse
    from agent.qc.models import QcExposure
    exposures = [QcExposure(set_kvp=80, kvp=90.0), QcExposure(set_kvp=100, excluded={"kvp": ["over_range"]})]
    assert analyse("kvp_accuracy", exposures).verdict == "fail"


def test_alarm_bits_do_not_invalidate_but_faults_do():
    values = {"kvp": 80.0, "air_kerma_ugy": 10.0}
    assert excluded_by_flags(values, ["high_alarm", "audio"]) == {}
    assert excluded_by_flags(values, ["kvp_outside_filter_range"]) == {"kvp": ["kvp_outside_filter_range"]}
    assert excluded_by_flags(values, ["integrator_failure"]) == {"kvp": ["integrator_failure"],
                                                                 "air_kerma_ugy": ["integrator_failure"]}


def test_a_kvp_test_on_an_area_monitor_is_refused_with_a_clear_message(tmp_path, sink):
    qc = QcSessions(QcConfig(), QcStore(tmp_path / "qc.db"), sink, {"area-1": "ludlum_375", "kvp-1": "victoreen_4000m"})
    qc.start()
    try:
        with pytest.raises(QcError, match=r"kvp_accuracy needs kVp, which the chosen instruments do not measure: "
                                          r"area-1 \(ludlum_375\) measures no exposure quantity") as err:
            qc.open_session("kvp_accuracy", ["area-1"], "AB")
        assert err.value.status == 400
        assert qc.sessions() == []
        with pytest.raises(QcError, match="area-1 measures nothing reproducibility uses: leave it out"):
            qc.open_session("reproducibility", ["kvp-1", "area-1"], "AB")
        qc.open_session("kvp_accuracy", ["kvp-1"], "AB")  # the kVp meter measures it
    finally:
        qc.stop()


def test_the_dap_meters_whole_second_time_never_feeds_the_timer_test(tmp_path, sink):
    qc = QcSessions(QcConfig(), QcStore(tmp_path / "qc.db"), sink, {"dap-1": "ptw_diamentor"})
    qc.start()
    try:
        with pytest.raises(QcError, match="timer_accuracy needs exposure time"):
            qc.open_session("timer_accuracy", ["dap-1"], "AB")
    finally:
        qc.stop()
    from agent.qc.matching import measured
    dap = {"driver": "ptw_diamentor", "quantities": {"dap_gy_m2": 1e-4, "exposure_time_ms": 1000.0}, "flags": []}
    assert measured([dap]) == {"dap_gy_m2": 1e-4}


def test_qc_status_shows_the_flags_per_exposure_and_the_invalid_criterion(make_qc, sink):
    from agent.qc.cli import render_session
    qc = make_qc()
    ref = qc.open_session("kvp_accuracy", ["kvp-1"], "AB")["ref"]
    qc.recorder(sink.emit)(flagged_reading(0, kvp=120.3))
    qc.observe([event(0, "e0", kvp=120.0, exposure_mas=10.0)])
    qc.confirm_all(ref)
    text = render_session(qc.session(ref))
    assert "meter flags" in text and "kvp_outside_filter_range (excluded)" in text
    assert "verdict: INVALID" in text and "INVALID  exposure 1:" in text


FLAG_NAMES = ["kvp_outside_filter_range", "over_range", "error_3", "integrator_failure", "high_alarm", "audio",
              "status_nonzero", "filter_position_unknown"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["victoreen_4000m", "ptw_diamentor", "profile"]),
                          st.dictionaries(st.sampled_from(["kvp", "air_kerma_ugy", "exposure_time_ms", "dap_gy_m2"]),
                                          st.floats(0, 1e4, allow_nan=False), min_size=1),
                          st.sets(st.sampled_from(FLAG_NAMES))), min_size=1, max_size=4))
def test_a_flagged_or_unfit_value_is_never_a_measured_value(readings):
    from agent.qc.matching import measured_and_excluded
    from agent.qc.quantities import excluded_by_flags, fit
    dicts = [{"driver": d, "quantities": q, "flags": sorted(f)} for d, q, f in readings]
    values, excluded = measured_and_excluded(dicts)
    for key, value in values.items():
        # Some reading gave this value validly: fit for its driver and not excluded by its own flags.
        assert any(r["quantities"].get(key) == value and fit(r["driver"], key)
                   and key not in excluded_by_flags(r["quantities"], r["flags"]) for r in dicts)
    for key, flags in excluded.items():
        assert key not in values and flags
