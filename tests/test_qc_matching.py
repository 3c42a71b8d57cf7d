"""Pure helpers of QC sessions: nearest-in-time matching, a DICOM event's technique, accumulating meters, measured
values from several readings, and the [qc] config section."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.config import ConfigError, load_config
from agent.payloads.exposure import ExposureEvent
from agent.qc.matching import event_technique, event_time, increments, measured, nearest

T0 = datetime(2025, 3, 4, 10, 0, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_nearest_within_the_window_wins():
    candidates = [("a", at(-8)), ("b", at(3)), ("c", at(-2.5))]
    assert nearest(T0, candidates, 10) == "c"


def test_nothing_outside_the_window():
    assert nearest(T0, [("a", at(10.5)), ("b", at(-30))], 10) is None
    assert nearest(T0, [("edge", at(-10))], 10) == "edge"  # inclusive
    assert nearest(T0, [], 10) is None


def test_a_tie_goes_to_the_earlier_candidate():
    assert nearest(T0, [("later", at(2)), ("earlier", at(-2))], 10) == "earlier"


def event(**values) -> ExposureEvent:
    base = {"msg_id": "e1", "site": "s", "room": "r", "source": "image", "received_at": at(20), "event_ref": "ev-1"}
    return ExposureEvent(**{**base, **values})


def test_event_technique_and_time():
    ev = event(kvp=80.0, tube_current_ma=200.0, exposure_mas=10.0, exposure_time_ms=50.0, sid_mm=1800.0,
               dap_gy_m2=1e-3, acquired_at=at(1))
    assert event_technique(ev) == {"set_kvp": 80.0, "set_ma": 200.0, "set_mas": 10.0, "set_time_ms": 50.0,
                                   "sid_mm": 1800.0, "dicom_dap_gy_m2": 1e-3}
    assert event_time(ev) == at(1)
    assert event_time(event(kvp=70.0)) == at(20)  # no acquisition time: when it was received
    assert event_technique(event()) == {}


def test_an_accumulating_meter_counts_the_increase():
    # First reading ever: only the baseline (the total may hold exposures made before).
    assert increments("ptw_diamentor", {"dap_gy_m2": 5e-3, "exposure_time_ms": 2000.0}, {}) == \
        ({}, {"dap_gy_m2": 5e-3, "exposure_time_ms": 2000.0}, False)
    grown, totals, is_exposure = increments("ptw_diamentor", {"dap_gy_m2": 6e-3, "exposure_time_ms": 2000.0},
                                            {"dap_gy_m2": 5e-3, "exposure_time_ms": 2000.0})
    assert grown == {"dap_gy_m2": pytest.approx(1e-3), "exposure_time_ms": 0.0} and is_exposure
    assert totals == {"dap_gy_m2": 6e-3, "exposure_time_ms": 2000.0}
    # Reset on the front panel: the total went down, the new value is all new.
    grown, _, is_exposure = increments("ptw_diamentor", {"dap_gy_m2": 4e-4}, {"dap_gy_m2": 6e-3})
    assert grown == {"dap_gy_m2": 4e-4} and is_exposure
    # Nothing new (the first poll after a restart repeats the total).
    assert increments("ptw_diamentor", {"dap_gy_m2": 6e-3}, {"dap_gy_m2": 6e-3})[2] is False
    assert increments("victoreen_4000m", {"kvp": 80.0}, {}) == ({}, {}, True)


def test_measured_values_come_from_the_first_reading_that_has_them():
    kvp_meter = {"quantities": {"kvp": 80.1, "air_kerma_ugy": 876.0, "exposure_time_ms": 100.0}}
    dap_meter = {"quantities": {"dap_gy_m2": 9e-3, "exposure_time_ms": 3000.0},
                 "increments": {"dap_gy_m2": 1e-3, "exposure_time_ms": 0.0}}
    assert measured([kvp_meter, dap_meter]) == {"kvp": 80.1, "air_kerma_ugy": 876.0, "exposure_time_ms": 100.0,
                                                "dap_gy_m2": 1e-3}


def write(tmp_path, text: str):
    key = tmp_path / "site.key"
    key.write_text("00" * 32)
    path = tmp_path / "agent.toml"
    path.write_text(f'[site]\nid = "s"\nroom = "r"\nsecret_key_file = "{key}"\n{text}')
    return path


def test_qc_config_defaults_and_limits(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg.qc.match_window_s == 10 and cfg.qc.limits.reproducibility_max_cv == 0.05
    cfg = load_config(write(tmp_path, "[qc]\nmatch_window_s = 5\n[qc.limits]\njurisdiction = \"WA\"\n"
                                      "reproducibility_method = \"range\"\nreproducibility_max_range_fraction = 0.1\n"
                                      "reproducibility_min_exposures = 4\nhvl_min_table_mm_al = \"cfr_pre_2006\"\n"))
    assert cfg.qc.match_window_s == 5 and cfg.qc.limits.jurisdiction == "WA"
    assert cfg.qc.limits.reproducibility_min_exposures == 4 and cfg.qc.limits.hvl_min_table_mm_al[3] == (51, 1.2)


def test_a_bad_limit_names_its_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[qc.limits]\nreproducibility_max_cv = 5\nkvp_tolerance = 0.1\n"))
    assert "qc.limits.reproducibility_max_cv" in str(err.value) and "qc.limits.kvp_tolerance: unknown key" in \
        str(err.value)
