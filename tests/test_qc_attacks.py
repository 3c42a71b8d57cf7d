"""Hostile and odd input against the QC sessions: sign-off text that tries to be markup or breaks a PDF line, numbers
at the edges of floating point, attenuation series that contradict physics. Each answer must be a clear verdict or
refusal, never a crash, and what a user typed must come back as text, never as markup."""

from __future__ import annotations

import re
import subprocess

import pytest

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
