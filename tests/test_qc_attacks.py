"""Hostile and odd input against the QC sessions: sign-off text that tries to be markup or breaks a PDF line, numbers
at the edges of floating point, attenuation series that contradict physics. Each answer must be a clear verdict or
refusal, never a crash, and what a user typed must come back as text, never as markup."""

from __future__ import annotations

import math
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.qc.analysis import analyse
from agent.qc.models import TEST_TYPES, QcExposure

from tests.qc_fixtures import event, make_qc, reading  # noqa: F401 - make_qc is a fixture
from tests.test_qc_pdf import poppler
from tests.test_qc_web_api import client  # noqa: F401 - fixture


def _finished(client, test_type="kvp_accuracy"):  # noqa: F811
    ref = client.post("/api/qc/sessions", json={"test_type": test_type, "instruments": ["kvp-1"],
                                                "operator": "AB"}).json["ref"]
    emit = client.qc.recorder(client.qc.sink.emit)
    emit(reading(0, kvp=80.4, air_kerma_ugy=900.0, exposure_time_ms=100.0))
    client.qc.observe([event(0, "e0", kvp=80.0, exposure_mas=10.0)])
    client.post(f"/api/qc/sessions/{ref}/confirm", json={})
    assert client.post(f"/api/qc/sessions/{ref}/finish", json={}).status_code == 200
    return ref


@pytest.mark.parametrize("name,comment", [
    ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>"),
    ("Dr. " + "W" * 70, "x" * 2000),
    ("Dr. 王小明", "Проверено ✓ 放射線 — ok Ωµ"),
    ("Dr. M. Curie", "line one\nline two\ttab\x00nul\x1b[31mred"),
])
def test_sign_off_text_reaches_the_pdf_as_text(client, tmp_path, name, comment):  # noqa: F811
    ref = _finished(client)
    answer = client.post(f"/api/qc/sessions/{ref}/review", json={"reviewed_by": name, "comment": comment})
    if answer.status_code == 400:
        assert "comment" in answer.json["error"] or "reviewed_by" in answer.json["error"]
        return
    assert answer.status_code == 200, answer.json
    pdf = client.get(f"/qc/report/{ref}.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF-")
    path = tmp_path / "r.pdf"
    path.write_bytes(pdf.data)
    text = subprocess.run([poppler("pdftotext"), str(path), "-"], capture_output=True, text=True, check=True).stdout
    flat = re.sub(r"\s+", "", text)
    assert re.search("Reviewedby" + _drawn(name), flat), "the signer's name, as typed, is in the report"
    assert re.search(_drawn(comment), flat), "the comment's printable text is in the report"


def _drawn(typed: str) -> str:
    """Pattern of `typed` as a PDF shows it: each printable character itself or, where no installed font has it,
    its code point <U+XXXX> (never dropped); whitespace and control characters aside."""
    return "".join(f"(?:{re.escape(ch)}|<U\\+{ord(ch):04X}>)" for ch in typed if ch.isprintable() and not ch.isspace())


# ---- numbers at the edges of floating point ---------------------------------------------------------------------
EDGE = st.sampled_from([0.0, 5e-324, 1e-320, 1e-300, 1e-9, 1.0, 80.0, 1e12, 1e300, 1e308, 1.7976931348623157e308])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(test_type=st.sampled_from(TEST_TYPES),
       rows=st.lists(st.fixed_dictionaries({
           "set_kvp": EDGE, "set_ma": EDGE, "set_mas": st.one_of(st.none(), EDGE), "set_time_ms": EDGE,
           "filtration_mm_al": EDGE, "field_area_cm2": EDGE, "kvp": EDGE, "air_kerma_ugy": EDGE,
           "exposure_time_ms": EDGE, "hvl_mm_al": st.one_of(st.none(), EDGE), "dap_gy_m2": st.one_of(st.none(), EDGE),
           "dicom_dap_gy_m2": EDGE}), min_size=1, max_size=12))
def test_any_finite_values_give_a_verdict_never_a_crash(test_type, rows):
    """Every value a meter or a technologist can give is finite, but sums, ratios and products of them overflow or
    divide by a subnormal: the analysis answers (incomplete with the reason), it does not raise, and whatever it
    publishes is finite JSON."""
    result = analyse(test_type, [QcExposure(**row) for row in rows])
    assert result.verdict in ("pass", "fail", "invalid", "incomplete")
    text = result.model_dump_json()
    assert "Infinity" not in text and "NaN" not in text
    for crit in result.criteria:
        if crit.passed is not None:
            assert math.isfinite(crit.value) and math.isfinite(crit.limit)


def test_overflowing_values_say_why():
    result = analyse("reproducibility", [QcExposure(set_kvp=80, set_mas=10, air_kerma_ugy=1e308)] * 10)
    assert result.verdict == "incomplete" and "numeric range" in result.reason
    result = analyse("linearity_mas", [QcExposure(set_kvp=80, set_mas=1e-320, air_kerma_ugy=100),
                                       QcExposure(set_kvp=80, set_mas=2e-320, air_kerma_ugy=100)])
    assert result.verdict == "incomplete" and "numeric range" in result.reason


def test_typed_in_technique_at_the_edge_keeps_the_session_working(client):  # noqa: F811
    ref = client.post("/api/qc/sessions", json={"test_type": "linearity_mas", "instruments": ["kvp-1"],
                                                "operator": "AB"}).json["ref"]
    emit = client.qc.recorder(client.qc.sink.emit)
    emit(reading(0, kvp=80.4, air_kerma_ugy=900.0, exposure_time_ms=100.0))
    emit(reading(20, kvp=80.4, air_kerma_ugy=1800.0, exposure_time_ms=100.0))
    for number, mas in ((1, 1e-320), (2, 1e308)):
        answer = client.post(f"/api/qc/sessions/{ref}/exposures/{number}/technique",
                             json={"set_kvp": 80, "set_mas": mas})
        assert answer.status_code in (200, 400), answer.data
    assert client.get(f"/api/qc/sessions/{ref}").status_code == 200
    assert client.post(f"/api/qc/sessions/{ref}/finish", json={}).status_code == 200


# ---- attenuation series that contradict physics ----------------------------------------------------------------
def _series(*points, kv=80.0):
    return [QcExposure(set_kvp=kv, filtration_mm_al=t, air_kerma_ugy=k) for t, k in points]


def test_air_kerma_rising_with_added_aluminium_is_no_hvl():
    """More aluminium always transmits less: a series where air kerma rises (a thickness typed wrong, a reading from
    another beam) gives no HVL, and says where, instead of a verdict from its first bracket."""
    result = analyse("hvl", _series((0, 100), (1, 40), (2, 60), (3, 30)))
    assert result.verdict == "incomplete"
    assert "rises" in result.reason and "1 mm" in result.reason and "2 mm" in result.reason


def test_falling_series_still_judged():
    result = analyse("hvl", _series((0, 100), (2, 70), (3, 52), (4, 45)))
    assert result.verdict == "pass", result.reason


def test_zero_kv_gives_no_minimum():
    """The table extrapolated to 0 kV gives a 0 mm minimum that every HVL passes: a kV of zero is no kV."""
    result = analyse("hvl", [QcExposure(set_kvp=0, hvl_mm_al=3.0)])
    assert result.verdict == "incomplete" and "kV" in result.reason


@pytest.mark.parametrize("operator", ["W" * 40, "Ｗ" * 40, "王" * 40, "a-" * 12])
def test_longest_operator_in_any_script_renders(client, tmp_path, operator):  # noqa: F811
    """The operator (up to its maximum length) sits in a narrow cell of the report's first table; a character no
    font draws becomes <U+XXXX>, eight times as wide: the PDF still renders and keeps it."""
    from agent.qc.sessions import OPERATOR_MAX

    operator = operator[:OPERATOR_MAX]
    answer = client.post("/api/qc/sessions", json={"test_type": "kvp_accuracy", "instruments": ["kvp-1"],
                                                   "operator": operator})
    assert answer.status_code == 201, answer.json
    pdf = client.get(f"/qc/report/{answer.json['ref']}.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF-")
    path = tmp_path / "r.pdf"
    path.write_bytes(pdf.data)
    text = subprocess.run([poppler("pdftotext"), "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    if len(operator) < 30:  # one line of its cell (a wrapped cell interleaves with its row's other cells)
        assert operator in text
    else:
        assert "".join(text.split()).count(operator[0]) + "".join(text.split()).count(f"<U+{ord(operator[0]):04X}>") \
            >= len(operator) * 0.8  # wrapped over lines, pdftotext may split a few of them


# ---- an integrating meter's flagged total -----------------------------------------------------------------------
def test_a_flagged_total_is_no_baseline_for_the_next_exposure(tmp_path, sink):
    """An integrating meter (PTW UNIDOS) sends an over-range total: the reading is invalid. Its value was kept as the
    baseline, so the next valid total (lower) read as a meter reset and its whole value became a phantom exposure
    of 2,600 µGy (an exposure that never happened)."""
    from agent.instruments.config import InstrumentConfig
    from agent.qc.config import QcConfig
    from agent.qc.sessions import QcSessions
    from agent.qc.store import QcStore
    from agent.qc.wiring import instrument_measures
    from tests.test_qc_unidos import UNIDOS

    unidos = InstrumentConfig(id="ref-1", driver="profile", port="/dev/serial/by-id/usb-ptw", profile=UNIDOS)
    qc = QcSessions(QcConfig(), QcStore(tmp_path / "qc.db"), sink, {"ref-1": "profile"},
                    measures={"ref-1": instrument_measures(unidos)},
                    accumulating={"ref-1": frozenset(unidos.driver_settings().accumulating)})
    qc.start()
    try:
        emit = qc.recorder(sink.emit)
        emit(_total(-10, 2600.0))
        ref = qc.open_session("reproducibility", ["ref-1"], "PH")["ref"]
        emit(_total(0, 9.99e9, flags={"over_range"}))  # the exposure the meter could not measure
        for second, kerma in ((1, 2600.0), (2, 2600.0), (20, 2610.0)):
            emit(_total(second, kerma))
        values = [(e["measured"].get("air_kerma_ugy"), sorted(e.get("excluded") or ())) for e in
                  qc.session(ref)["exposures"]]
        assert values == [(None, ["air_kerma_ugy"]), (10.0, [])], values
    finally:
        qc.stop()


def _total(seconds: float, kerma_ugy: float, flags=frozenset()):
    import json
    from datetime import timedelta

    from agent.instruments.mapping import qc_reading
    from drivers.reading import Reading
    from tests.qc_fixtures import T0

    quantities = {"air_kerma_ugy": kerma_ugy, "dose_rate_ugy_s": 0.0, "measurement_time_ms": 3000.0,
                  "chamber_voltage_v": 300.0}
    read = Reading("ref-1", quantities, flags=frozenset(flags), raw=json.dumps(quantities).encode(),
                   wall_utc=T0 + timedelta(seconds=seconds))
    return qc_reading(read, driver="profile", site="site", room="room")


def test_a_non_finite_or_flagged_total_forgets_the_baseline():
    from agent.qc.matching import increments

    acc = frozenset({"air_kerma_ugy"})
    _, totals, _ = increments("profile", {"air_kerma_ugy": float("nan")}, {"air_kerma_ugy": 100.0}, acc)
    assert totals == {"air_kerma_ugy": None}
    grown, totals, exposure = increments("profile", {"air_kerma_ugy": 9e9}, {"air_kerma_ugy": 100.0}, acc,
                                         ["over_range"])
    assert exposure and totals == {"air_kerma_ugy": None}  # an exposure, excluded by its flag; no baseline
    assert increments("profile", {"air_kerma_ugy": 110.0}, {}, acc) == ({}, {"air_kerma_ugy": 110.0}, False)


# ---- configuration numbers that are not numbers ---------------------------------------------------------------
@pytest.mark.parametrize("key", ["timer_tolerance_ms", "timer_min_set_time_ms", "linearity_max_station_ratio",
                                 "reproducibility_max_span_s", "linearity_max_span_s"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_limit_of_inf_or_nan_is_refused_naming_the_key(key, value):
    """TOML has inf and nan: timer_tolerance_ms = inf passed every timer; the limit must be refused at load."""
    from agent.qc.limits import QcLimitsError, limits_from_toml

    with pytest.raises(QcLimitsError, match=f"qc.limits.{key}"):
        limits_from_toml(f"[qc.limits]\n{key} = {value}\n")


@pytest.mark.parametrize("section,key", [("outbox", "telemetry_max_age_s"), ("outbox", "dedupe_days"),
                                         ("dicom.folder", "settle_s")])
def test_agent_config_refuses_inf_naming_the_key(tmp_path, section, key):
    from agent.config import ConfigError, load_config

    (tmp_path / "site.key").write_text("a" * 64)
    (tmp_path / "site.key").chmod(0o600)
    path = 'path = "export"' if section == "dicom.folder" else ""
    extra = f"[{section}]\n{path}\n{key} = inf\n"
    (tmp_path / "agent.toml").write_text(FOLDERS_CFG + extra)
    with pytest.raises(ConfigError, match=key):
        load_config(tmp_path / "agent.toml")


FOLDERS_CFG = """
[site]
id = "stmarys"
room = "xr-03"
secret_key_file = "site.key"
"""
