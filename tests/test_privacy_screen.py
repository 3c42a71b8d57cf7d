"""The free-text screen: no planted identifier component survives, clinical words do; the policy modes, time
coarsening, private state files and the redaction of third-party log values."""

from __future__ import annotations

import logging
import os
import stat
import string
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.privacy import redact as redact_module
from agent.privacy.files import private_dir, private_file, private_sqlite, write_private
from agent.privacy.policy import OTHER, TextPolicy, coarsen
from agent.privacy.redact import redact
from agent.privacy.screen import (
    COMPONENT_MIN_CHARS, CONTAINS_MIN_CHARS, TOKEN, Identifiers, date_spellings, fold, screen,
)

CLINICAL = ["Thorax", "PA", "AP", "LAT", "Chest", "Knee", "Hand", "Abdomen", "Pelvis", "Skull", "Lumbar", "Spine",
            "L-Spine", "Wrist", "Ankle", "Portable", "Supine", "Erect", "Bilateral", "weight-bearing", "L4-5",
            "2 views", "Decubitus", "Left", "Right", "CC", "MLO", "Coro", "LAO", "RAO", "Barium", "swallow",
            "Femur", "Humerus", "Shoulder", "Y-view", "C1/C2", "Fluoro 7.5 p/s", "Stitching (3)"]
SEPARATORS = [" ", "^", "_", "-", ", ", " / ", "  ", "\\", ": ", " (", ") "]

names = st.text(alphabet=string.ascii_letters + "éüøçñ", min_size=2, max_size=12)
ids = st.text(alphabet=string.ascii_uppercase + string.digits + "-", min_size=4, max_size=14).filter(
    lambda s: any(c.isalnum() for c in s))
dates = st.dates(min_value=datetime(1900, 1, 1).date(), max_value=datetime(2030, 12, 31).date())


def spellings(date) -> list[str]:
    """A birth date as staff type it."""
    y, m, d = f"{date.year:04d}", f"{date.month:02d}", f"{date.day:02d}"
    month = date.strftime("%b")
    return [y + m + d, f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}.{m}.{y[2:]}",
            f"{d} {month} {y}", f"{date.day}-{month}-{y[2:]}", f"{month} {date.day}, {y}", d + m + y]


def collides(word: str, ident: Identifiers) -> bool:
    """True when a clinical word would itself match an identifier component under the rule (then it must go)."""
    for token in TOKEN.findall(word):
        folded = fold(token)
        for component in ident.components:
            if folded == component or (len(component) >= CONTAINS_MIN_CHARS and component in folded):
                return True
            if any(ch.isdigit() for ch in folded) and len(folded) >= 4 and folded in component:
                return True
    return False


def planted_tokens(values: list[str]) -> set[str]:
    return {fold(t) for v in values for t in TOKEN.findall(v) if len(t) >= COMPONENT_MIN_CHARS}


@settings(max_examples=300, deadline=None)
@given(first=names, last=names, middle=names, patient_id=ids, accession=ids, other_id=ids, birth=dates,
       words=st.lists(st.sampled_from(CLINICAL), min_size=1, max_size=4), data=st.data())
def test_no_planted_identifier_survives_and_clinical_words_do(first, last, middle, patient_id, accession, other_id,
                                                              birth, words, data):
    name = f"{last}^{first}^{middle}"
    values = [name, patient_id, accession, other_id]
    ident = Identifiers.of(values, [birth.strftime("%Y%m%d")])
    clinical = [w for w in words if not collides(w, ident)]
    assume(clinical)
    # Plant identifiers between the clinical words, in any case, glued or separated.
    planted = data.draw(st.lists(st.sampled_from([first, last, middle, patient_id, accession, other_id,
                                                  f"{last.upper()},{first}", *spellings(birth)]),
                                 min_size=1, max_size=3))
    pieces = clinical + planted
    order = data.draw(st.permutations(range(len(pieces))))
    separators = data.draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(pieces), max_size=len(pieces)))
    text = "".join(data.draw(st.sampled_from([str.upper, str.lower, str])) (pieces[i]) + sep
                   for i, sep in zip(order, separators))
    result = screen(text, ident)
    out = fold(result.text or "")
    out_tokens = {fold(t) for t in TOKEN.findall(result.text or "")}
    assert result.changed
    for token in planted_tokens(planted):
        if any(c.isalnum() for c in token):
            assert token not in out_tokens, (text, result.text, token)
            if len(token) >= CONTAINS_MIN_CHARS:
                assert token not in out, (text, result.text, token)
    for spelling in date_spellings(birth.strftime("%Y%m%d")):
        assert spelling not in out
    for word in clinical:  # every clinical word survives, in its own spelling
        for token in TOKEN.findall(word):
            assert fold(token) in out_tokens, (text, result.text, word)


@settings(max_examples=300, deadline=None)
@given(component=st.text(alphabet=string.ascii_letters + string.digits, min_size=4, max_size=12),
       glued=st.text(alphabet=string.ascii_letters + string.digits, max_size=8), before=st.booleans(),
       word=st.sampled_from(CLINICAL))
def test_a_component_glued_to_other_text_goes_with_it(component, glued, before, word):
    ident = Identifiers.of([f"Doe^{component}"])
    assume(not collides(word, ident))
    token = glued + component if before else component + glued
    result = screen(f"{word} {token}", ident)
    assert fold(component) not in fold(result.text or ""), (token, result.text)
    assert all(fold(t) in fold(result.text or "") for t in TOKEN.findall(word))


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.sampled_from(CLINICAL), min_size=1, max_size=5),
       separators=st.lists(st.sampled_from(SEPARATORS), min_size=5, max_size=5))
def test_clinical_text_without_identifiers_is_left_exactly_as_sent(words, separators):
    text = "".join(w + s for w, s in zip(words, separators)).strip()
    ident = Identifiers.of(["Zebedee^Quixotica", "PID-7Q4471150", "ACC-88123-XZ"], ["19580317"])
    assert screen(text, ident) == screen(text, ident)  # pure
    result = screen(text, ident)
    assert not result.changed and result.text == text


@settings(max_examples=200, deadline=None)
@given(prefix=st.sampled_from(CLINICAL), number=st.integers(10_000, 10**12), glue=st.sampled_from(["", " ", "#", "-"]))
def test_runs_of_five_or_more_digits_go_even_when_the_object_does_not_carry_them(prefix, number, glue):
    result = screen(f"{prefix} {glue}{number}", Identifiers())
    assert str(number) not in (result.text or "") and result.changed
    assert fold(prefix.split()[0]) in fold(result.text or "")


@settings(max_examples=200, deadline=None)
@given(date=dates, prefix=st.sampled_from(["Chest", "Knee AP", "Hand"]))
def test_dates_go_in_their_usual_spellings(date, prefix):
    for spelling in spellings(date):
        result = screen(f"{prefix} {spelling}", Identifiers())
        assert result.text == prefix, spelling


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60), first=names, patient_id=ids)
def test_screening_twice_changes_nothing_more(text, first, patient_id):
    ident = Identifiers.of([first, patient_id])
    once = screen(text, ident)
    again = screen(once.text, ident)
    assert again.text == once.text


@pytest.mark.parametrize("text, expected", [
    ("Thorax PA Zebedee", "Thorax PA"), ("ZEBEDEE^QUIXOTICA", None), ("Knee (Marguerite) lat", "Knee lat"),
    ("Chest 7Q447", "Chest"), ("Thorax, PID-7Q4471150, PA", "Thorax PA"), ("ZebedeeThorax", None),
    ("Abdomen ACC88123XZ", "Abdomen"), ("Portable 17 Mar 1958", "Portable"), ("Hand 17031958", "Hand"),
    ("Müller Knee", "Knee"),
    # kept: short name parts match whole tokens only; clinical words, spine levels and counts stay
    ("Scanning hand", "Scanning hand"), ("L4-5 lat", "L4-5 lat"), ("Decubitus 1", "Decubitus 1"),
    ("XR-ROOM-3", "XR-ROOM-3"), ("Knee (weight bearing)", "Knee (weight bearing)"),
])
def test_examples(text, expected):
    ident = Identifiers.of(["Zebedee^Quixotica^Marguerite", "PID-7Q4471150", "ACC-88123-XZ", "MULLER^Ann"],
                           ["19580317"])
    result = screen(text, ident)
    assert result.text == expected
    assert result.changed == (expected != text)


def test_serial_numbers_keep_their_digits_but_not_identifiers():
    ident = Identifiers.of(["Zebedee^Quixotica", "PID-7Q4471150"], ["19580317"])
    assert screen("SN 12345678", ident, keep_numbers=True).text == "SN 12345678"
    assert screen("SN 12345678 Zebedee", ident, keep_numbers=True).text == "SN 12345678"
    assert screen("19580317", ident, keep_numbers=True).text is None


def test_policy_modes():
    ident = Identifiers.of(["Zebedee^Quixotica"])
    values = {"protocol": "Thorax PA Zebedee", "station_name": "XR-3", "body_part": "CHEST", "kvp": 80.0}
    screened, warnings = TextPolicy().apply(values, ident)
    assert screened == {**values, "protocol": "Thorax PA"}
    assert warnings == [{"field": "protocol", "reason": "screened"}]
    catalog = TextPolicy.of("catalog", known_protocols=["thorax  pa"], known_stations=["XR-1"])
    published, warnings = catalog.apply({**values, "protocol": "Thorax PA"}, ident)
    assert published["protocol"] == "Thorax PA" and published["station_name"] == OTHER
    assert warnings == [{"field": "station_name", "reason": "not-in-catalog"}]
    assert catalog.apply(values, ident)[0]["protocol"] == OTHER
    assert TextPolicy("verbatim").apply(values, ident) == (values, [])


@pytest.mark.parametrize("resolution, expected", [
    ("exact", datetime(2024, 1, 5, 10, 15, 30, 250000, tzinfo=timezone(timedelta(hours=1)))),
    ("minute", datetime(2024, 1, 5, 10, 15, tzinfo=timezone(timedelta(hours=1)))),
    ("hour", datetime(2024, 1, 5, 10, tzinfo=timezone(timedelta(hours=1)))),
    ("day", datetime(2024, 1, 5, tzinfo=timezone(timedelta(hours=1)))),
])
def test_coarsening_truncates_in_the_times_own_offset(resolution, expected):
    moment = datetime(2024, 1, 5, 10, 15, 30, 250000, tzinfo=timezone(timedelta(hours=1)))
    assert coarsen(moment, resolution) == expected
    assert coarsen(None, resolution) is None


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_state_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        db = private_sqlite(tmp_path / "new" / "deeper" / "state.db")
        import sqlite3
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        written = write_private(tmp_path / "new" / "object.dcm", b"data")
        assert _mode(tmp_path / "new") == _mode(tmp_path / "new" / "deeper") == 0o700
        for path in (db, db.with_name("state.db-wal"), db.with_name("state.db-shm"), written):
            assert _mode(path) == 0o600, path
        conn.close()
        existing = tmp_path / "old.db"
        existing.write_bytes(b"")
        existing.chmod(0o644)
        assert _mode(private_file(existing)) == 0o600, "an older agent's readable file is narrowed"
        outer = tmp_path / "kept"
        outer.mkdir(mode=0o755)
        outer.chmod(0o755)
        assert _mode(private_dir(outer)) == 0o755, "an existing state folder keeps the installer's mode"
    finally:
        os.umask(old)


def test_third_party_log_values_are_redacted(caplog):
    uid, name = "1.2.840.10008.5.1.4.1.1.1.1.xyz", "Zebedee^Quixotica"
    caplog.set_level(logging.INFO)
    redact_module.install()
    try:
        logging.getLogger("pydicom").warning("Invalid value for VR UI: %r", uid)
        logging.getLogger("py.warnings").warning(f'x.py:3: UserWarning: Value "{name}" is not valid; birth 19580317')
        logging.getLogger("agent.dicom").info("stored %d new event(s) from %s", 2, "'AE'")
    finally:
        redact_module.uninstall()
    assert uid not in caplog.text and "Invalid value for VR UI: …" in caplog.text
    assert name not in caplog.text and "19580317" not in caplog.text
    assert "stored 2 new event(s) from 'AE'" in caplog.text, "the agent's own messages pass unchanged"
    assert redact("UID 1.2.3.4 and 123456") == "UID … and …"


EXPORTED_FILE = "/nonexistent/ZEBEDEE^QUIXOTICA/PID-7Q4471150.dcm"


def test_exception_messages_in_the_log_are_redacted_frames_kept(caplog):
    exported = EXPORTED_FILE  # the traceback's source line shows the name, not the value
    redact_module.install()
    try:
        try:
            open(exported)  # noqa: SIM115 - the error message names the file
        except OSError:
            logging.getLogger("agent.dicom.folder").exception("cannot handle a file")
    finally:
        redact_module.uninstall()
    assert "cannot handle a file" in caplog.text and "FileNotFoundError" in caplog.text
    assert "Traceback (most recent call last)" in caplog.text and "open(exported)" in caplog.text
    assert "ZEBEDEE" not in caplog.text and "7Q4471150" not in caplog.text
