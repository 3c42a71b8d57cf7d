"""The PTW UNIDOS profile in QC sessions: air kerma from an integrating reference dosimeter, an exposure being an
increase of the integrated value (not every poll), for output, linearity and HVL; its calibration in the record."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from agent.instruments.config import InstrumentConfig
from agent.instruments.mapping import qc_reading
from agent.qc.config import QcConfig
from agent.qc.sessions import QcSessions
from agent.qc.store import QcStore
from agent.qc.wiring import instrument_measures
from drivers.reading import Reading
from tests.qc_fixtures import T0, published

UNIDOS = Path(__file__).resolve().parent.parent / "config" / "profiles" / "ptw_unidos.toml"


@pytest.fixture
def unidos():
    return InstrumentConfig(id="ref-1", driver="profile", port="/dev/serial/by-id/usb-ptw", profile=UNIDOS,
                            model="PTW UNIDOS webline", serial_number="T10021-00123", calibration_factor=4.87e7,
                            calibration_factor_unit="Gy/C", air_density_correction="applied_by_meter",
                            temperature_c=21.5, pressure_hpa=1008.0)


@pytest.fixture
def qc(tmp_path, sink, unidos):
    settings = unidos.driver_settings()
    service = QcSessions(QcConfig(), QcStore(tmp_path / "qc.db"), sink, {"ref-1": "profile"},
                         measures={"ref-1": instrument_measures(unidos)},
                         accumulating={"ref-1": frozenset(settings.accumulating)}, records={"ref-1": unidos.record()})
    service.start()
    yield service
    service.stop()


def total(seconds: float, kerma_ugy: float):
    quantities = {"air_kerma_ugy": kerma_ugy, "dose_rate_ugy_s": 0.0, "measurement_time_ms": 3000.0,
                  "chamber_voltage_v": 300.0}
    read = Reading("ref-1", quantities, raw=json.dumps(quantities).encode(), wall_utc=T0 + timedelta(seconds=seconds))
    return qc_reading(read, driver="profile", site="site", room="room")


def test_unidos_measures_air_kerma_for_output_linearity_and_hvl(unidos, qc):
    assert "air_kerma_ugy" in instrument_measures(unidos)
    for test in ("reproducibility", "linearity_mas", "hvl"):
        qc.discard(qc.open_session(test, ["ref-1"], "PH")["ref"])
    with pytest.raises(Exception, match="kVp"):
        qc.open_session("kvp_accuracy", ["ref-1"], "PH")


def test_an_exposure_is_an_increase_of_the_integrated_value(qc, sink, box):
    emit = qc.recorder(sink.emit)
    emit(total(-10, 2600.0))  # the meter's total when the agent meets it: the baseline
    ref = qc.open_session("linearity_mas", ["ref-1"], "PH")["ref"]
    # Polls every second: the total stands still between exposures (no exposure), then grows by the exposure.
    for second, kerma in ((0, 2600.0), (1, 2600.0), (2, 3600.0), (3, 3600.0), (20, 3600.0), (21, 5700.0)):
        emit(total(second, kerma))
    s = qc.session(ref)
    assert [e["measured"]["air_kerma_ugy"] for e in s["exposures"]] == pytest.approx([1000.0, 2100.0])
    for number, mas in ((1, 10.0), (2, 20.0)):
        qc.set_technique(ref, number, {"set_kvp": 70.0, "set_mas": mas})
    result = qc.session(ref)["result"]
    assert result["verdict"] == "pass"  # 0.100 vs 0.105 mGy/mAs
    qc.finish(ref)
    [body] = published(box, "/qc/session")
    [inst] = body["instrument_records"]
    assert (inst["calibration_factor"], inst["calibration_factor_unit"]) == (4.87e7, "Gy/C")
    assert (inst["air_density_correction"], inst["temperature_c"], inst["pressure_hpa"]) == (
        "applied_by_meter", 21.5, 1008.0)
    assert body["exposures"][0]["readings"][0]["increments"] == {"air_kerma_ugy": 1000.0}


def test_hvl_from_the_unidos_behind_added_aluminium(qc, sink):
    emit = qc.recorder(sink.emit)
    emit(total(-10, 0.0))
    ref = qc.open_session("hvl", ["ref-1"], "PH")["ref"]
    running = 0.0
    for i, (al, kerma) in enumerate(((0, 1000.0), (2, 620.0), (3, 480.0))):
        running += kerma
        emit(total(i * 20, running))
        qc.set_technique(ref, i + 1, {"set_kvp": 80.0, "filtration_mm_al": al})
    [crit] = qc.session(ref)["result"]["criteria"]
    assert crit["inputs"]["hvl_mm_al"] == pytest.approx(2.8405, abs=1e-4)
    assert crit["inputs"]["kv_basis"].startswith("indicated")
