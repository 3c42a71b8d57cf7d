"""The QC report as a real PDF file: Download PDF answers application/pdf, A4 portrait, one page width, the verdict,
unit, instruments, criteria with their source, flags and the sign-off in the text (poppler's pdftotext/pdfinfo read
it back); a page image goes to tests/artifacts/qc-report-pdf.png (pdftoppm)."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import timedelta

import pytest

from agent.instruments.mapping import qc_reading
from drivers.reading import Reading
from tests.qc_fixtures import T0, event, make_qc, reading  # noqa: F401 - make_qc is a fixture
from tests.realparts import REPO
from tests.test_qc_web_api import client  # noqa: F401 - fixture

ARTIFACTS = REPO / "tests" / "artifacts"


def poppler(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"poppler-utils' {tool} is not installed (apt-get install poppler-utils)")
    return path


def flagged(seconds: float):
    quantities = {"kvp": 120.3, "air_kerma_ugy": 900.0, "exposure_time_ms": 100.0}
    read = Reading("kvp-1", quantities, flags=frozenset({"kvp_outside_filter_range"}),
                   raw=json.dumps(quantities).encode(), wall_utc=T0 + timedelta(seconds=seconds))
    return qc_reading(read, driver="victoreen_4000m", site="site", room="room")


def test_download_pdf_is_a_legible_a4_report(client, sink, tmp_path):  # noqa: F811 - fixture
    ref = client.post("/api/qc/sessions", json={"test_type": "kvp_accuracy", "instruments": ["kvp-1"],
                                                "operator": "AB"}).json["ref"]
    emit = client.qc.recorder(sink.emit)
    emit(reading(0, kvp=80.4, air_kerma_ugy=900.0, exposure_time_ms=100.0))
    emit(flagged(20))
    for i, kv in enumerate((80.0, 120.0)):
        client.qc.observe([event(i * 20, f"e{i}", kvp=kv, exposure_mas=10.0, manufacturer="ACME Medical",
                                 model="Radiograph 9", device_serial="SN-4711", station_name="ROOM3DR")])
    client.post(f"/api/qc/sessions/{ref}/confirm", json={})
    client.post(f"/api/qc/sessions/{ref}/finish", json={})
    client.post(f"/api/qc/sessions/{ref}/review", json={"reviewed_by": "Dr. M. Curie", "comment": "Repeat 120 kV."})

    answer = client.get(f"/qc/report/{ref}.pdf")
    assert answer.status_code == 200 and answer.mimetype == "application/pdf"
    assert answer.headers["Content-Disposition"] == f'attachment; filename="qc-{ref}.pdf"'
    assert answer.data.startswith(b"%PDF-")
    path = tmp_path / "report.pdf"
    path.write_bytes(answer.data)
    info = subprocess.run([poppler("pdfinfo"), str(path)], capture_output=True, text=True, check=True).stdout
    assert "595.28 x 841.89 pts (A4)" in info
    text = subprocess.run([poppler("pdftotext"), "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    for expected in ("QC report: kVp accuracy", "Verdict: INVALID", "ACME Medical", "SN-4711", "ROOM3DR",
                     "kvp_outside_filter_range", "manufacturer", "Reviewed by Dr. M. Curie", "Repeat 120 kV."):
        assert expected in text, expected
    ARTIFACTS.mkdir(exist_ok=True)
    subprocess.run([poppler("pdftoppm"), "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile", str(path),
                    str(ARTIFACTS / "qc-report-pdf")], check=True)
    assert (ARTIFACTS / "qc-report-pdf.png").stat().st_size > 10_000
    assert client.get("/qc/report/qc-nosuch.pdf").status_code == 404
