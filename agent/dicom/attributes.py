"""Tolerant readers of DICOM attributes: text, numbers, sequences and codes, by keyword or tag. Pure functions of a
pydicom Dataset, shared by image-header extraction (image.py), dose reports (rdsr.py) and the envelope (extract.py).

A malformed element (bad charset, wrong length, garbled sequence) reads as absent, so one broken attribute costs one
field, not the whole object.
"""

from __future__ import annotations

import unicodedata
from decimal import Decimal
from functools import lru_cache

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from agent.dicom import units

TEXT_MAX_CHARS = 128  # longer than any LO/SH value; caps junk from malformed files
BINARY_VRS = frozenset({"FD", "FL", "US", "UL", "SS", "SL", "SV", "UV"})


@lru_cache(maxsize=4096)
def _tag(key: str | int) -> BaseTag | None:
    """The tag of a keyword (or of an int tag), converted once: pydicom's keyword-to-tag conversion on every access
    (twice with `key in ds` then `ds[key]`) was the largest single cost of reading a dose report, which reads about
    a hundred elements per irradiation event."""
    try:
        return Tag(key)
    except Exception:  # not a keyword pydicom knows: never present
        return None


def element_value(ds: Dataset, key: str | int) -> object:
    """The converted value of an element (by keyword or tag), or None if absent or unreadable.

    A malformed element (bad charset, wrong length, garbled sequence) is treated as absent so that one broken
    attribute costs one field, not the whole object.
    """
    tag = _tag(key)
    if tag is None:
        return None
    try:
        return ds[tag].value  # KeyError when absent
    except Exception:  # pydicom raises many types for malformed values; absence is the honest reading
        return None


def read_text(ds: Dataset, keyword: str, max_chars: int = TEXT_MAX_CHARS) -> str | None:
    """An element as stripped text (multi-values joined by "\\"), or None if absent, empty or unreadable; at most
    `max_chars` characters (clean_text)."""
    value = element_value(ds, keyword)
    if value is None or isinstance(value, (bytes, bytearray, Sequence, Dataset)):
        return None
    parts = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    return clean_text("\\".join(str(part) for part in parts), max_chars)


def clean_text(text: str | None, max_chars: int = TEXT_MAX_CHARS) -> str | None:
    """Strip padding and control characters, cap the length; None when nothing is left. The cut never splits a word:
    a word cut in two ("Zebe" of a name) is a fragment no screen recognises, so the part before the cut goes too."""
    text = text or ""
    kept = (text if text.isprintable() else "".join(char for char in text if char.isprintable())).strip()
    if len(kept) > max_chars:
        cut = max_chars
        while cut > 0 and _word_char(kept[cut]) and _word_char(kept[cut - 1]):
            cut -= 1
        kept = kept[:cut].rstrip()
    return kept or None


def _word_char(char: str) -> bool:
    return char.isalnum() or unicodedata.category(char).startswith("M")


def read_numbers(ds: Dataset, keyword: str) -> list[Decimal]:
    """All values of a numeric element, parsed from the raw bytes when possible.

    Why raw: pydicom's own conversion of an IS holding "12.5" warns or raises depending on the global
    reading_validation_mode; parsing the bytes ourselves is tolerant and never touches that shared setting.
    """
    try:
        tag = _tag(keyword)
        element = ds.get_item(tag) if tag is not None and tag in ds else None
    except Exception:  # unreadable element: absent
        return []
    if element is None:
        return []
    value = element.value
    vr = element.VR if element.VR not in (None, "UN") else dictionary_VR(element.tag)
    if isinstance(value, (bytes, bytearray)) and vr in BINARY_VRS:
        value = element_value(ds, keyword)  # binary numbers: let pydicom unpack them
    return units.to_decimals(value) if value is not None else []


def unreadable_number(ds: Dataset, keyword: str) -> str | None:
    """When an element is present with text but yields no number ("9.5x", "n/a"): that text, else None. Binary VRs
    always decode, so only string values can be unreadable."""
    tag = _tag(keyword)
    try:
        present = tag is not None and tag in ds
    except Exception:  # an unreadable data set: nothing to report
        return None
    if not present or read_numbers(ds, keyword):
        return None
    return read_text(ds, keyword)


def value_warning(field: str, reason: str, raw: str | None = None) -> dict[str, str]:
    """One entry of a payload's `warnings` list: the field, why its value is null, and the raw text only when it is
    number-like (units.number_like), so a warning never carries patient data."""
    quoted = units.number_like(raw)
    return {"field": field, "reason": reason, **({"raw": quoted} if quoted else {})}


def read_number(ds: Dataset, keyword: str) -> Decimal | None:
    """The first valid value of a numeric element, or None."""
    numbers = read_numbers(ds, keyword)
    return numbers[0] if numbers else None


def read_items(ds: Dataset, keyword: str) -> list[Dataset]:
    """The items of a sequence element (empty when absent, empty or not a sequence)."""
    value = element_value(ds, keyword)
    if not isinstance(value, Sequence):
        return []
    return [item for item in value if isinstance(item, Dataset)]


def code_of(item: Dataset) -> tuple[str, str] | None:
    """(code value, coding scheme designator) of a code item; long and URN code values count too."""
    value = read_text(item, "CodeValue") or read_text(item, "LongCodeValue") or read_text(item, "URNCodeValue")
    scheme = read_text(item, "CodingSchemeDesignator")
    return (value, scheme.upper()) if value and scheme else None


def first_code_meaning(ds: Dataset, keyword: str) -> str | None:
    """Code meaning of the first item of a code sequence (for labels such as body part or view, never for matching)."""
    items = read_items(ds, keyword)
    return read_text(items[0], "CodeMeaning") if items else None
