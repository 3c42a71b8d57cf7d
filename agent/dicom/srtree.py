"""The SR content tree as dose-report extraction needs it: one `Node` per content item, holding only the concept,
the value (text, UID, date-time, code, numbers with units, referenced SOP classes) and the children.

Two builders give the same tree:
- `from_dataset`: the reference, from pydicom's parsed data set (attributes.py readers: a broken element is absent);
- `from_bytes`: a single pass over the raw bytes of the Content Sequence (0040,A730) that keeps only the attributes
  above. pydicom parses every undefined-length sequence eagerly into nested Datasets (about 1 s for a 145-event
  angiography report); this reader builds only the nodes, and is what makes a 1,000-event report fast enough to answer
  the C-STORE within a second.

`content_root(ds)` uses the raw bytes when the data set still holds them (reading.py leaves the Content Sequence
unparsed) and falls back to the reference builder otherwise, or when the bytes do not parse (the reference reader is
the tolerant one). Encoding rules: PS3.5 7.1 (data elements), 7.5 (nesting of data sets), 6.2 (VRs).
"""

from __future__ import annotations

import struct
from decimal import Decimal

from pydicom import Dataset
from pydicom.charset import decode_bytes
from pydicom.dataelem import RawDataElement

from agent.dicom import units
from agent.dicom.attributes import clean_text, code_of, read_items, read_numbers, read_text

Code = tuple[str, str]
Unit = tuple[str | None, str | None]  # (unit code value, unit code meaning)

CONTENT_SEQUENCE = 0x0040A730
CONCEPT_NAME = 0x0040A043
CONCEPT_CODE = 0x0040A168
MEASURED_VALUES = 0x0040A300
UNITS = 0x004008EA
REFERENCED_SOP = 0x00081199
TEXT_VALUE, UID, DATETIME = 0x0040A160, 0x0040A124, 0x0040A120
NUMERIC_VALUE, FLOAT_VALUE = 0x0040A30A, 0x0040A161
CODE_VALUE, SCHEME, MEANING, LONG_CODE, URN_CODE = 0x00080100, 0x00080102, 0x00080104, 0x00080119, 0x00080120
REFERENCED_SOP_CLASS = 0x00081150
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
MAX_DEPTH = 64  # SR trees are a few levels deep; deeper nesting is malformed (and would exhaust the stack)
SEQUENCES = frozenset({CONTENT_SEQUENCE, CONCEPT_NAME, CONCEPT_CODE, MEASURED_VALUES, UNITS, REFERENCED_SOP})
KEPT = SEQUENCES | {TEXT_VALUE, UID, DATETIME, NUMERIC_VALUE, FLOAT_VALUE, CODE_VALUE, SCHEME, MEANING, LONG_CODE,
                    URN_CODE, REFERENCED_SOP_CLASS}
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"})
_HEADER = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length (explicit VR little endian)
_IMPLICIT = struct.Struct("<HHI")
_U32 = struct.Struct("<I")


class Node:
    """One content item: concept name code, value and children. Absent values are None / empty."""

    __slots__ = ("concept", "text", "uid", "datetime", "code", "code_meaning", "numbers", "sop_classes", "children")

    def __init__(self) -> None:
        self.concept: Code | None = None
        self.text: str | None = None  # TEXT: Text Value (0040,A160)
        self.uid: str | None = None  # UIDREF: UID (0040,A124)
        self.datetime: str | None = None  # DATETIME: DateTime (0040,A120)
        self.code: Code | None = None  # CODE: first item of Concept Code Sequence (0040,A168)
        self.code_meaning: str | None = None
        self.numbers: list[tuple[Decimal, Unit]] = []  # NUM: Measured Value Sequence (0040,A300), in order
        self.sop_classes: list[str] = []  # IMAGE/COMPOSITE: Referenced SOP Class UIDs (0008,1199 > 0008,1150)
        self.children: list[Node] = []

    def as_tuple(self) -> tuple:
        """Everything the node holds, recursively (to compare two builders)."""
        return (self.concept, self.text, self.uid, self.datetime, self.code, self.code_meaning, tuple(self.numbers),
                tuple(self.sop_classes), tuple(child.as_tuple() for child in self.children))


# ---- the reference builder (pydicom) -------------------------------------------------------------------------------

def node_from_dataset(item: Dataset, depth: int = 0) -> Node:
    """The node of one content item parsed by pydicom, children included."""
    if depth > MAX_DEPTH:
        raise ValueError("SR content nested too deeply")
    node = Node()
    names = read_items(item, "ConceptNameCodeSequence")
    node.concept = code_of(names[0]) if names else None
    node.text, node.uid, node.datetime = read_text(item, "TextValue"), read_text(item, "UID"), read_text(item,
                                                                                                         "DateTime")
    codes = read_items(item, "ConceptCodeSequence")
    if codes:
        node.code, node.code_meaning = code_of(codes[0]), read_text(codes[0], "CodeMeaning")
    for measured in read_items(item, "MeasuredValueSequence"):
        unit_items = read_items(measured, "MeasurementUnitsCodeSequence")
        unit = (read_text(unit_items[0], "CodeValue"), read_text(unit_items[0], "CodeMeaning")) if unit_items else (
            None, None)
        numbers = read_numbers(measured, "FloatingPointValue") or read_numbers(measured, "NumericValue")
        node.numbers.extend((number, unit) for number in numbers)
    node.sop_classes = [uid for ref in read_items(item, "ReferencedSOPSequence")
                        if (uid := read_text(ref, "ReferencedSOPClassUID"))]
    node.children = [node_from_dataset(child, depth + 1) for child in read_items(item, "ContentSequence")]
    return node


def root_from_dataset(ds: Dataset) -> Node:
    """The document's root node (its title and content) from pydicom's data set."""
    return node_from_dataset(ds)


# ---- the fast builder (raw bytes) ----------------------------------------------------------------------------------

class _Reader:
    """Walks little-endian data set bytes once, keeping the KEPT attributes as {tag: bytes | [item dicts]}."""

    def __init__(self, data: bytes, implicit: bool) -> None:
        self.data = memoryview(data)
        self.raw = data
        self.implicit = implicit

    def header(self, pos: int) -> tuple[int, bytes | None, int, int]:
        """(tag, VR or None, value length, value position) of the element at pos."""
        data = self.raw
        if self.implicit:
            group, element, length = _IMPLICIT.unpack_from(data, pos)
            return group << 16 | element, None, length, pos + 8
        group, element, vr, length = _HEADER.unpack_from(data, pos)
        tag = group << 16 | element
        if group == 0xFFFE:  # item and delimiters carry no VR (PS3.5 7.5)
            return tag, None, _U32.unpack_from(data, pos + 4)[0], pos + 8
        if vr in LONG_VRS:
            return tag, vr, _U32.unpack_from(data, pos + 8)[0], pos + 12
        return tag, vr, length, pos + 8

    def dataset(self, pos: int, end: int, depth: int) -> tuple[dict, int]:
        """Elements from pos up to end (or up to an item delimiter when end is None); returns (kept, next pos)."""
        if depth > MAX_DEPTH:
            raise ValueError("SR content nested too deeply")
        kept: dict = {}
        limit = len(self.raw) if end is None else end
        while pos < limit:
            tag, vr, length, value = self.header(pos)
            if tag == ITEM_END:
                return kept, value
            is_sequence = vr == b"SQ" or (vr is None and tag in SEQUENCES) or (
                length == UNDEFINED and (vr in (None, b"UN")))
            if is_sequence:
                items, pos = self.sequence(value, length, depth + 1, keep=tag in SEQUENCES)
                if tag in SEQUENCES:
                    kept[tag] = items
                continue
            if length == UNDEFINED:
                raise ValueError("undefined length on a non-sequence element")
            pos = value + length
            if pos > len(self.raw):
                raise ValueError("element runs past the end of the data")
            if tag in KEPT:
                kept[tag] = self.raw[value:pos]
        if end is None:
            raise ValueError("item without delimiter")
        return kept, pos

    def sequence(self, pos: int, length: int, depth: int, keep: bool) -> tuple[list[dict], int]:
        """Items of a sequence value starting at pos; returns (item dicts, position after the sequence)."""
        end = None if length == UNDEFINED else pos + length
        items: list[dict] = []
        while end is None or pos < end:
            tag, _vr, item_length, value = self.header(pos)
            if tag == SEQUENCE_END:
                return items, value
            if tag != ITEM:
                raise ValueError("sequence holds something other than an item")
            item_end = None if item_length == UNDEFINED else value + item_length
            item, pos = self.dataset(value, item_end, depth)
            if keep:
                items.append(item)
        if end is not None and pos != end:
            raise ValueError("sequence length does not match its items")
        return items, pos


class _Decoder:
    """Turns kept values into node fields exactly as attributes.py reads them from pydicom's elements."""

    def __init__(self, encodings: list[str]) -> None:
        self.encodings = encodings

    def text(self, value: bytes | None) -> str | None:
        if not value:
            return None
        if value.isascii() and b"\x1b" not in value:  # ASCII is the same in every DICOM character set but ISO 2022
            return clean_text(value.decode("ascii"))
        return clean_text(decode_bytes(value, self.encodings, set()))

    def code(self, item: dict) -> Code | None:
        value = self.text(item.get(CODE_VALUE)) or self.text(item.get(LONG_CODE)) or self.text(item.get(URN_CODE))
        scheme = self.text(item.get(SCHEME))
        return (value, scheme.upper()) if value and scheme else None

    def numbers(self, measured: dict) -> list[Decimal]:
        floats = measured.get(FLOAT_VALUE)
        if floats:
            count = len(floats) // 8
            values = units.to_decimals(list(struct.unpack_from(f"<{count}d", floats))) if count else []
            if values:
                return values
        numeric = measured.get(NUMERIC_VALUE)
        return units.to_decimals(bytes(numeric)) if numeric else []

    def node(self, item: dict, depth: int = 0) -> Node:
        node = Node()
        names = item.get(CONCEPT_NAME)
        node.concept = self.code(names[0]) if names else None
        node.text, node.uid = self.text(item.get(TEXT_VALUE)), self.text(item.get(UID))
        node.datetime = self.text(item.get(DATETIME))
        codes = item.get(CONCEPT_CODE)
        if codes:
            node.code, node.code_meaning = self.code(codes[0]), self.text(codes[0].get(MEANING))
        for measured in item.get(MEASURED_VALUES, ()):
            unit_items = measured.get(UNITS)
            unit = (self.text(unit_items[0].get(CODE_VALUE)), self.text(unit_items[0].get(MEANING))) if unit_items \
                else (None, None)
            node.numbers.extend((number, unit) for number in self.numbers(measured))
        node.sop_classes = [uid for ref in item.get(REFERENCED_SOP, ()) if (uid := self.text(
            ref.get(REFERENCED_SOP_CLASS)))]
        node.children = [self.node(child, depth + 1) for child in item.get(CONTENT_SEQUENCE, ())]
        return node


def children_from_bytes(value: bytes, implicit: bool, encodings: list[str]) -> list[Node]:
    """The nodes of a Content Sequence value (its items, as bytes, little endian). Raises ValueError/struct.error on
    bytes that do not parse."""
    reader = _Reader(bytes(value), implicit)
    items, end = reader.sequence(0, len(value), 0, keep=True)
    decoder = _Decoder(encodings)
    return [decoder.node(item) for item in items]


def _encodings(ds: Dataset) -> list[str]:
    charset = getattr(ds, "_character_set", None)
    return list(charset) if charset else ["iso8859"]


def content_root(ds: Dataset) -> Node:
    """The document's root node: from the raw Content Sequence bytes when the data set still holds them, else (or
    when they do not parse) from pydicom's reading."""
    element = ds.get_item(CONTENT_SEQUENCE) if CONTENT_SEQUENCE in ds else None
    if isinstance(element, RawDataElement) and isinstance(element.value, bytes) and element.is_little_endian \
            and element.length != UNDEFINED:
        try:
            root = Node()
            names = read_items(ds, "ConceptNameCodeSequence")
            root.concept = code_of(names[0]) if names else None
            root.children = children_from_bytes(element.value, element.is_implicit_VR, _encodings(ds))
            return root
        except (ValueError, struct.error, LookupError, RecursionError):
            pass  # the tolerant reference reader decides what is readable
    return root_from_dataset(ds)


__all__ = ["Node", "content_root", "root_from_dataset", "children_from_bytes"]
