"""The record an inspector accepts: the X-ray unit (configured id + its DICOM identity), the instruments with their
calibration, per-criterion inputs and limits with their source, per-exposure flags, times with offsets, and a
physicist's sign-off published as an update of the session record."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from agent.instruments.config import InstrumentConfig, calibration_warnings
from agent.qc.config import QcConfig
from agent.qc.sessions import QcError, QcSessions
from agent.qc.store import QcStore
from tests.qc_fixtures import INSTRUMENTS, event, published, reading

UNIT = dict(manufacturer="ACME Medical", model="Radiograph 9", device_serial="SN-4711", station_name="ROOM3DR")


def records(due: date) -> dict:
    inst = InstrumentConfig(id="kvp-1", driver="victoreen_4000m", port="/dev/serial/by-id/usb-x", model="Victoreen "
                            "4000M+", serial_number="12345", calibration_date=due - timedelta(days=365),
                            calibration_due=due)
    return {"kvp-1": inst.record()}


@pytest.fixture
def qc(tmp_path, sink):
    service = QcSessions(QcConfig(unit_id="XR-0042"), QcStore(tmp_path / "qc.db"), sink, INSTRUMENTS,
                         records=records(date.today() - timedelta(days=3)), time_zone="Europe/Berlin")
    service.start()
    yield service
    service.stop()


def run_session(qc, sink) -> str:
    ref = qc.open_session("kvp_accuracy", ["kvp-1"], "AB")["ref"]
    emit = qc.recorder(sink.emit)
    for i, kv in enumerate((80.0, 80.0)):
        emit(reading(i * 20, kvp=kv + 0.4, air_kerma_ugy=900.0, exposure_time_ms=100.0))
        qc.observe([event(i * 20, f"e{i}", kvp=kv, exposure_mas=10.0, **UNIT)])
    qc.confirm_all(ref)
    qc.finish(ref)
    return ref


def test_the_record_names_the_unit_and_the_instruments_calibration(qc, sink, box):
    ref = run_session(qc, sink)
    [body] = published(box, "/qc/session")
    assert body["unit"] == {"unit_id": "XR-0042", "manufacturer": "ACME Medical", "model": "Radiograph 9",
                            "serial_number": "SN-4711", "station_name": "ROOM3DR", "conflicts": []}
    [inst] = body["instrument_records"]
    assert (inst["model"], inst["serial_number"], inst["calibration_status"]) == ("Victoreen 4000M+", "12345",
                                                                                    "overdue")
    assert body["time_zone"] == "Europe/Berlin"
    [crit] = body["result"]["criteria"]
    assert crit["source"] == "manufacturer" and "1020.31(a)(4)" in crit["citation"]
    assert crit["inputs"]["mean_measured_kv"] == pytest.approx(80.4) and crit["inputs"]["sd_measured_kv"] == 0
    assert crit["limit"] == 0.05 and crit["value"] == pytest.approx(0.005)
    assert body["exposures"][0]["technique"]["dicom_reported"]["set_kvp"] == 80.0
    assert qc.session(ref)["unit"]["unit_id"] == "XR-0042"


def test_a_physicists_sign_off_is_published_as_an_update(qc, sink, box):
    ref = run_session(qc, sink)
    with pytest.raises(QcError, match="reviewed_by"):
        qc.review(ref, "  ", "")
    reviewed = qc.review(ref, "Dr. M. Curie", "Tube output within limits; recheck HVL next visit.")
    assert reviewed["review"]["reviewed_by"] == "Dr. M. Curie"
    assert reviewed["review"]["reviewed_at"][-6:] in ("+01:00", "+02:00")  # Berlin, with its offset
    first, update = published(box, "/qc/session")
    assert first["msg_id"] == f"qcs-{ref}" and first["review"] is None and first["revision"] == 0
    assert update["msg_id"] == f"qcs-{ref}-r1" and update["revision"] == 1
    assert update["review"]["comment"].startswith("Tube output") and update["result"] == first["result"]
    assert qc.record(ref)["review"]["reviewed_by"] == "Dr. M. Curie"
    open_ref = qc.open_session("kvp_accuracy", ["kvp-1"], "AB")["ref"]
    with pytest.raises(QcError, match="only a finished session"):
        qc.review(open_ref, "Dr. M. Curie")


def test_check_config_warns_about_an_overdue_calibration():
    overdue = InstrumentConfig(id="kvp-1", driver="victoreen_4000m", port="/dev/serial/by-id/usb-x",
                               calibration_due=date(2025, 1, 31))
    fine = InstrumentConfig(id="dap-1", driver="ptw_diamentor", port="/dev/serial/by-id/usb-y",
                            calibration_due=date(2027, 1, 31))
    [line] = calibration_warnings([overdue, fine], today=date(2025, 3, 1))
    assert line.startswith("instruments.0.calibration_due: kvp-1's calibration expired on 2025-01-31 (29 days ago)")
    with pytest.raises(ValueError, match="calibration_due is before calibration_date"):
        InstrumentConfig(id="x", driver="ptw_diamentor", port="/dev/serial/by-id/usb-y",
                         calibration_date=date(2025, 2, 1), calibration_due=date(2025, 1, 1))
