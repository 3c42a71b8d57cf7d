"""Hostile spellings of a patient's identifiers in free text: the ways a label can carry a name, an id or a birth
date that a naive tokenizer misses (invisible characters, combining marks, look-alike letters, separators inside a
name or an id, Unicode dashes and full-width digits, a record number split in groups). Each must be screened."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.privacy.screen import Identifiers, fold, screen

IDS = Identifiers.of(["Zebedee^Quincy", "AB12CD", "ACC-88123-XZ"], ["19600201"])
CYRILLIC_E = "\u0435"


def leaks(published: str | None) -> list[str]:
    """Planted values still readable in `published` (case, accents, look-alikes and invisible characters ignored)."""
    folded = fold(published or "").replace(" ", "").replace("-", "")
    return [v for v in ("zebedee", "quincy", "ab12cd", "19600201", "0201", "12345678") if v in folded]


@pytest.mark.parametrize("text", [
    "Chest Z\u200bebedee", "Zebe\u00addee Chest", "Zebe\u2060dee Chest", "Zeb\u0301edee Chest",  # invisible / marks
    f"Chest Z{CYRILLIC_E}b{CYRILLIC_E}d{CYRILLIC_E}{CYRILLIC_E}", "Chest Qu\u0456ncy",  # look-alike letters
    "\uff3a\uff45\uff42\uff45\uff44\uff45\uff45 Chest",  # full-width letters
])
def test_invisible_characters_marks_and_look_alikes_do_not_hide_a_name(text):
    result = screen(text, IDS)
    assert result.changed and not leaks(result.text), result.text
    assert "chest" in fold(result.text or "")


@pytest.mark.parametrize("text", [
    "Zebe-dee Chest", "Chest Z e b e d e e", "Chest Q.u.i.n.c.y", "AB-12-CD chest", "Chest AB 12 CD",
    "Zebe-dee_Thorax",
])
def test_separators_inside_a_name_or_an_id_do_not_hide_it(text):
    result = screen(text, IDS)
    assert result.changed and not leaks(result.text), result.text
    assert not {"ab", "cd", "zebe", "dee", "q", "z"} & set(fold(result.text or "").replace("_", " ").split())


@pytest.mark.parametrize("text", [
    "Chest 1960\u201002\u201001", "Chest 1960\u221202\u221201", "Chest \uff11\uff19\uff16\uff10\uff0d\uff10\uff12\uff0d"
    "\uff10\uff11", "Chest 01\u201302\u20131960", "Chest 1234 5678", "Chest 1234-5678", "Chest 1 2 1960",
    "Chest 12 34 56 78",
])
def test_dates_and_numbers_in_unicode_spellings_or_groups_go(text):
    other = Identifiers.of(["Doe^Jane"])  # the date is not this patient's: the date-like and number rules apply
    for ids in (IDS, other):
        result = screen(text, ids)
        assert result.changed and fold(result.text or "") == "chest", result.text


@pytest.mark.parametrize("text", ["Fluoro 7.5 p/s", "L4-5 lat", "Knee 2 views", "C1/C2 AP", "Stitching (3) 2 views",
                                  "Decubitus 1", "XR-ROOM-3", "Stitching 1 2 3 4 5", "CHEST PA 180CM",
                                  "Hand d.p. links", "Fluoro 7.5 p/s 15 fps", "Pédiatrie thorax", "Грудная клетка",
                                  "Thorax \u0915\u094d\u0937"])
def test_clinical_labels_in_any_script_stay_as_sent(text):
    result = screen(text, IDS)
    assert not result.changed and result.text == text


def test_a_name_written_with_combining_marks_in_the_identifiers_is_still_found():
    ids = Identifiers.of(["Jose\u0301phine^Mu\u0308ller"])
    for text in ("Chest Joséphine", "Müller knee", "Chest JOSEPHINE", "Mueller"[:0] + "MULLER knee"):
        result = screen(text, ids)
        assert result.changed and "joseph" not in fold(result.text or "") and "mull" not in fold(result.text or "")


HIDERS = ["\u200b", "\u00ad", "\u2060", "\u200d", "\ufeff", "\u0301"]
SPLITTERS = [" ", "-", ".", "_", "^", "\u2010", "  "]
LOOKS = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "x": "\u0445", "i": "\u0456"}


@settings(max_examples=300, deadline=None)
@given(name=st.text(alphabet=string.ascii_letters, min_size=5, max_size=12), data=st.data())
def test_a_name_disguised_any_of_these_ways_is_removed(name, data):
    ids = Identifiers.of([f"{name}^Jo", "PID-7Q4471150"])
    chars = []
    for char in name:
        if data.draw(st.booleans()):
            char = LOOKS.get(char, char)
        chars.append(char)
        if data.draw(st.integers(0, 3)) == 0:
            chars.append(data.draw(st.sampled_from(HIDERS)))
    disguised = "".join(chars)
    if data.draw(st.booleans()):  # split it once with a visible separator
        cut = data.draw(st.integers(1, len(disguised) - 1))
        disguised = disguised[:cut] + data.draw(st.sampled_from(SPLITTERS)) + disguised[cut:]
    result = screen(f"Chest {disguised} PA", ids)
    assert result.changed
    left = fold(result.text or "")
    assert fold(name) not in "".join(ch for ch in left if ch.isalnum()).replace("chest", "").replace("pa", ""), (
        disguised, result.text)
    assert left.split()[:1] == ["chest"] or fold(name) in "chestpa", result.text


# --- through extraction: what the object's reader hands the screen --------------------------------------------------

def _extracted(ds):
    from agent.dicom.extract import extract
    from tests.dicom_factory import make_context, roundtrip
    return extract(roundtrip(ds), make_context()).events[0]


def test_a_name_at_the_length_cut_does_not_survive_as_a_fragment():
    from tests.dicom_factory import make_dx
    for pad in range(118, 128):  # the name straddles the 128-character cut at every position
        protocol = ("Thorax " * 20)[:pad - 1] + " Zebedee"
        event = _extracted(make_dx(protocol=protocol))
        assert event.protocol and not event.protocol.rstrip().endswith(("Z", "Ze", "Zeb", "Zebe", "Zebed", "Zebede")), (
            pad, event.protocol[-12:])


def test_every_other_patient_id_is_looked_for_however_many_there_are():
    from tests.dicom_factory import make_dx
    others = [f"HOSP{n:02d}-QX{n:02d}" for n in range(12)]  # 12 ids of 11 characters: more than 128 joined
    ds = make_dx(protocol=f"Chest {others[-1]} PA")
    ds.OtherPatientIDs = others
    event = _extracted(ds)
    assert "QX11" not in (event.protocol or "") and "HOSP11" not in (event.protocol or ""), event.protocol
    assert event.protocol == "Chest PA"


# --- the journal: exception messages over several lines -----------------------------------------------------------

def test_an_indented_line_of_an_exception_message_is_redacted_like_its_first(caplog):
    import logging

    from pydantic import BaseModel, ValidationError

    from agent.privacy import redact as redact_module

    class Reading(BaseModel):
        kvp: int

    typed = "Zebedee^Quixotica 7Q4471150"  # the source line shows the variable, not the value
    redact_module.install()
    try:
        try:  # pydantic quotes the input on an indented line: "  Input should be ... input_value='...'"
            Reading(kvp=typed)
        except ValidationError:
            logging.getLogger("agent.dicom.intake").exception("could not build the payload")
        message = "bad label:\n    'Zebedee^Quixotica'\n  File \"x.py\", line 1\n    '19580317'"  # poses as a frame
        try:
            try:
                raise ValueError(message)
            except ValueError as exc:
                exc.add_note("  value: " + repr(typed.replace("Zebedee", "Marguerite")))
                raise KeyError(typed) from exc
        except KeyError:
            logging.getLogger("agent.dicom.intake").exception("could not read a label")
    finally:
        redact_module.uninstall()
    assert "Reading(kvp=typed)" in caplog.text and "raise ValueError(message)" in caplog.text, "source lines stay"
    assert "The above exception was the direct cause" in caplog.text and "KeyError: …" in caplog.text
    for planted in ("Zebedee", "7Q4471150", "19580317", "Marguerite"):
        assert planted not in caplog.text, planted


@pytest.mark.parametrize("keyword, value", [
    ("StudyID", "QX77Z"), ("AdmissionID", "ADM-Q7Z"), ("RequestedProcedureID", "RP9QZ"),
    ("PerformedProcedureStepID", "PPS7QZ"), ("ResponsiblePerson", "Quennell^Ottoline"),
    ("PatientTelephoneNumbers", "QZ-7781"), ("PatientAddress", "12 Quillwort Lane"),
    ("MedicalRecordLocator", "MRL-QZ7"),
])
def test_other_identifiers_of_the_visit_and_the_patient_are_looked_for(keyword, value):
    from tests.dicom_factory import make_dx
    planted = value.split("^")[0].split()[-1]
    ds = make_dx(protocol=f"Chest {planted} PA")
    setattr(ds, keyword, value)
    event = _extracted(ds)
    assert event.protocol == "Chest PA", (keyword, event.protocol)


def test_identifiers_inside_the_request_attributes_are_looked_for():
    from pydicom import Dataset

    from tests.dicom_factory import make_dx
    item = Dataset()
    item.AccessionNumber, item.RequestedProcedureID, item.ScheduledProcedureStepID = "ACQZ7", "RPQZ8", "SPSQZ9"
    ds = make_dx(protocol="Chest ACQZ7 RPQZ8 SPSQZ9 PA")
    ds.RequestAttributesSequence = [item]
    assert _extracted(ds).protocol == "Chest PA"


@pytest.mark.parametrize("text, expected", [
    ("Thorax L4-5-2000-01-01", "Thorax L4-5"),  # a date glued to a spine level: the level stays
    ("THORAX L4-5-01.01.2000 AA", "THORAX L4-5"),  # the birth date in another spelling: found by the property test
    ("Thorax L4-5-2023-01-01", "Thorax L4-5"),  # any date, not only the birth date
    ("Thorax AA-01 Jan 2000", "Thorax"), ("Thorax 2000-01-02-02 Jan 2000", "Thorax"),
    ("Thorax 0000 2 views", "Thorax 2 views"),  # a count next to a removed id stays
])
def test_dates_and_counts_next_to_other_tokens(text, expected):
    ids = Identifiers.of(["AA^BB", "0000"], ["20000101"])
    assert screen(text, ids).text == expected
