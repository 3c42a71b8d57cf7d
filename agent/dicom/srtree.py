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

import gc
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from agent.dicom import units
from agent.dicom.attributes import clean_text, code_of, element_value, read_items, read_numbers, read_text

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
PARSED = "_srtree_parsed"  # data set attribute: (the Content Sequence bytes, the single pass's items of them)
TEXT_ATTRIBUTES = ((TEXT_VALUE, "text"), (UID, "uid"), (DATETIME, "datetime"))
MAX_DEPTH = 64  # SR trees are a few levels deep; deeper nesting is malformed (and would exhaust the stack)
SEQUENCES = frozenset({CONTENT_SEQUENCE, CONCEPT_NAME, CONCEPT_CODE, MEASURED_VALUES, UNITS, REFERENCED_SOP})
EXPECTED_VRS = {  # PS3.6 VRs of the kept attributes: bytes written with another VR are left to pydicom's reading
    CONTENT_SEQUENCE: b"SQ", CONCEPT_NAME: b"SQ", CONCEPT_CODE: b"SQ", MEASURED_VALUES: b"SQ", UNITS: b"SQ",
    REFERENCED_SOP: b"SQ", TEXT_VALUE: b"UT", UID: b"UI", DATETIME: b"DT", NUMERIC_VALUE: b"DS", FLOAT_VALUE: b"FD",
    CODE_VALUE: b"SH", SCHEME: b"SH", MEANING: b"LO", LONG_CODE: b"UC", URN_CODE: b"UR", REFERENCED_SOP_CLASS: b"UI"}
KEPT = SEQUENCES | {TEXT_VALUE, UID, DATETIME, NUMERIC_VALUE, FLOAT_VALUE, CODE_VALUE, SCHEME, MEANING, LONG_CODE,
                    URN_CODE, REFERENCED_SOP_CLASS}
SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
                       b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})  # 16-bit length (PS3.5 7.1.2)
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"})
_HEADER = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length (explicit VR little endian)
_IMPLICIT = struct.Struct("<HHI")
_U32 = struct.Struct("<I")


class Node:
    """One content item: concept name code, value and children. Absent values are None / empty; class attributes
    are the defaults, so a builder sets only what the item has (nodes are many: one per content item)."""

    concept: Code | None = None
    text: str | None = None  # TEXT: Text Value (0040,A160)
    uid: str | None = None  # UIDREF: UID (0040,A124)
    datetime: str | None = None  # DATETIME: DateTime (0040,A120)
    code: Code | None = None  # CODE: first item of Concept Code Sequence (0040,A168)
    code_meaning: str | None = None
    numbers: Sequence[tuple[Decimal, Unit]] = ()  # NUM: Measured Value Sequence (0040,A300), in order
    unreadable: Sequence[str] = ()  # NUM: Numeric Values (0040,A30A) present that hold no number (e.g. "9.5x")
    sop_classes: Sequence[str] = ()  # IMAGE/COMPOSITE: Referenced SOP Class UIDs (0008,1199 > 0008,1150)
    children: Sequence[Node] = ()

    def as_tuple(self) -> tuple:
        """Everything the node holds, recursively (to compare two builders)."""
        return (self.concept, self.text, self.uid, self.datetime, self.code, self.code_meaning, tuple(self.numbers),
                tuple(self.unreadable), tuple(self.sop_classes), tuple(child.as_tuple() for child in self.children))


@contextmanager
def paused_collector() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a report is read: the reading allocates hundreds of thousands of
    small acyclic containers, and each collection pass rescans all of them, so collections made a 5,000-event report
    cost more per event than a 145-event one. Process-wide but brief; re-enabled only by the call that paused it, so
    overlapping readers in other threads never leave it off."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


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
    node.numbers = []
    for measured in read_items(item, "MeasuredValueSequence"):
        unit_items = read_items(measured, "MeasurementUnitsCodeSequence")
        unit = (read_text(unit_items[0], "CodeValue"), read_text(unit_items[0], "CodeMeaning")) if unit_items else (
            None, None)
        numbers = read_numbers(measured, "FloatingPointValue") or read_numbers(measured, "NumericValue")
        node.numbers.extend((number, unit) for number in numbers)
        if not numbers and (text := read_text(measured, "NumericValue")):
            node.unreadable = [*node.unreadable, text]
    node.sop_classes = [uid for ref in read_items(item, "ReferencedSOPSequence")
                        if (uid := read_text(ref, "ReferencedSOPClassUID"))]
    node.children = [node_from_dataset(child, depth + 1) for child in read_items(item, "ContentSequence")]
    return node


def root_from_dataset(ds: Dataset) -> Node:
    """The document's root node (its title and content) from pydicom's data set."""
    return node_from_dataset(ds)


# ---- the fast builder (raw bytes) ----------------------------------------------------------------------------------

MEMO_KEY_BYTES = 64  # bytes that index the memo of repeated encodings (a code sequence's value is in its first 64)
MEMO_MAX_BYTES = 512  # code sequences up to this size are remembered
MEMO_MAX_CANDIDATES = 4  # encodings remembered per key
CODE_SEQUENCES = frozenset({CONCEPT_NAME, CONCEPT_CODE, UNITS})  # the same few codes, over and over


class _Reader:
    """Walks little-endian data set bytes once, keeping the KEPT attributes as {tag: bytes | [item dicts]}.

    Repeated encodings are parsed once: a report repeats the same bytes for every concept name, unit and coded value
    (plane, event type, region), so a code sequence whose bytes equal one already parsed (compared in full with
    bytes.startswith, so the result is the same as parsing them) reuses that parse. The item dicts are shared and
    must not be modified."""

    def __init__(self, data: bytes, implicit: bool) -> None:
        self.raw = data
        self.implicit = implicit
        self.memo: dict[bytes, list[tuple[bytes, object]]] = {}

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

    def _remember(self, start: int, end: int, parsed: object) -> None:
        if end - start <= MEMO_MAX_BYTES:
            candidates = self.memo.setdefault(self.raw[start:start + MEMO_KEY_BYTES], [])
            if len(candidates) < MEMO_MAX_CANDIDATES:
                candidates.append((self.raw[start:end], parsed))

    def dataset(self, pos: int, end: int | None, depth: int) -> tuple[dict, int]:
        """Elements from pos up to end (or up to an item delimiter when end is None); returns (kept, next pos)."""
        if depth > MAX_DEPTH:
            raise ValueError("SR content nested too deeply")
        if self.implicit:
            return self._implicit_dataset(pos, end, depth)
        raw, unpack, u32, kept_tags = self.raw, _HEADER.unpack_from, _U32.unpack_from, KEPT
        kept: dict = {}
        limit = len(raw) if end is None else end
        while pos < limit:
            group, element, vr, length = unpack(raw, pos)
            if vr in SHORT_VRS:  # the common case: a leaf with a 16-bit length
                value, pos = pos + 8, pos + 8 + length
                tag = group << 16 | element
                if tag in kept_tags:
                    if EXPECTED_VRS[tag] != vr:
                        raise ValueError("unexpected VR")
                    kept[tag] = raw[value:pos]
                continue
            tag = group << 16 | element
            if group == 0xFFFE:  # item and delimiters carry no VR (PS3.5 7.5)
                if tag == ITEM_END and end is None:
                    return kept, pos + 8
                raise ValueError("item or sequence delimiter inside a data set")
            if vr not in LONG_VRS:
                raise ValueError("unknown VR")  # pydicom's tolerant reading decides what such bytes mean
            length, value = u32(raw, pos + 8)[0], pos + 12  # a VR with a 32-bit length (PS3.5 7.1.2)
            pos = self._value(kept, tag, vr, length, value, depth)
        return kept, self._ended(pos, end)

    def _value(self, kept: dict, tag: int, vr: bytes | None, length: int, value: int, depth: int) -> int:
        """Read one element's value at `value` (a sequence is walked); returns the position after it."""
        if vr is not None and tag in KEPT and EXPECTED_VRS[tag] != vr:
            raise ValueError("unexpected VR")
        if vr == b"UN" and length == UNDEFINED:
            raise ValueError("UN of undefined length")  # implicit VR inside (PS3.5 6.2.2): left to pydicom
        if vr == b"SQ" or (vr is None and tag in SEQUENCES) or (vr is None and length == UNDEFINED):
            keep = tag in SEQUENCES
            start = value - (8 if vr is None else 12)
            if tag in CODE_SEQUENCES:
                raw = self.raw
                for blob, parsed in self.memo.get(raw[start:start + MEMO_KEY_BYTES], ()):
                    if raw.startswith(blob, start):
                        kept[tag] = parsed
                        return start + len(blob)
            items, end = self.sequence(value, length, depth + 1, keep)
            if keep:
                kept[tag] = items
                if tag in CODE_SEQUENCES:
                    self._remember(start, end, items)
            return end
        if length == UNDEFINED:
            raise ValueError("undefined length on a non-sequence element")
        if tag in KEPT:
            kept[tag] = self.raw[value:value + length]
        return value + length

    def _implicit_dataset(self, pos: int, end: int | None, depth: int) -> tuple[dict, int]:
        raw, unpack = self.raw, _IMPLICIT.unpack_from
        kept: dict = {}
        limit = len(raw) if end is None else end
        while pos < limit:
            group, element, length = unpack(raw, pos)
            tag = group << 16 | element
            if tag == ITEM_END:
                if end is not None:
                    raise ValueError("item delimiter in an item of defined length")
                return kept, pos + 8
            pos = self._value(kept, tag, None, length, pos + 8, depth)
        return kept, self._ended(pos, end)

    def _ended(self, pos: int, end: int | None) -> int:
        if end is None:
            raise ValueError("item without delimiter")
        if pos != end:
            raise ValueError("item length does not match its elements")
        return pos

    def sequence(self, pos: int, length: int, depth: int, keep: bool) -> tuple[list[dict], int]:
        """Items of a sequence value starting at pos; returns (item dicts, position after the sequence)."""
        end = None if length == UNDEFINED else pos + length
        items: list[dict] = []
        raw, u32 = self.raw, _U32.unpack_from
        while end is None or pos < end:
            tag = u32(raw, pos)[0]
            tag = (tag & 0xFFFF) << 16 | tag >> 16  # (group, element) as two little-endian 16-bit words
            item_length = u32(raw, pos + 4)[0]
            if tag == SEQUENCE_END:
                if end is not None:
                    raise ValueError("sequence delimiter in a sequence of defined length")
                return items, pos + 8
            if tag != ITEM:
                raise ValueError("sequence holds something other than an item")
            value = pos + 8
            item, pos = self.dataset(value, None if item_length == UNDEFINED else value + item_length, depth)
            if keep:
                items.append(item)
        if pos != end:
            raise ValueError("sequence length does not match its items")
        return items, pos


class _Decoder:
    """Turns kept values into node fields exactly as attributes.py reads them from pydicom's elements. Decoded texts
    are cached by their bytes, and codes by their (shared, memoised) item dict."""

    def __init__(self, charset: object, implicit: bool) -> None:
        self.charset, self.implicit = charset, implicit
        self.texts: dict[bytes, str | None] = {}
        self.codes: dict[int, Code | None] = {}
        self.units: dict[int, Unit] = {}
        self.decimals: dict[bytes, list[Decimal]] = {}

    def text(self, value: bytes | None, tag: int = 0) -> str | None:
        if not value:
            return None
        try:
            return self.texts[value]
        except KeyError:
            pass
        if value.isascii() and b"\x1b" not in value and b"\\" not in value:
            text = clean_text(value.decode("ascii"))  # one value, ASCII: the same in every DICOM character set
            self.texts[value] = text
            return text
        return self.pydicom_text(value, tag)

    def pydicom_text(self, value: bytes, tag: int) -> str | None:
        """Text that is not plain ASCII, or holds several values: decoded by pydicom exactly as the reference reader
        does (the report's character set, ISO 2022 escapes, multi-value splitting by VR)."""
        holder = Dataset()
        if self.charset:
            holder.SpecificCharacterSet = self.charset
        holder[tag] = RawDataElement(Tag(tag), EXPECTED_VRS[tag].decode(), len(value), value, 0, self.implicit, True)
        return read_text(holder, tag)

    def code(self, item: dict) -> Code | None:
        key = id(item)
        if key not in self.codes:
            value = (self.text(item.get(CODE_VALUE), CODE_VALUE) or self.text(item.get(LONG_CODE), LONG_CODE)
                     or self.text(item.get(URN_CODE), URN_CODE))
            scheme = self.text(item.get(SCHEME), SCHEME)
            self.codes[key] = (value, scheme.upper()) if value and scheme else None
        return self.codes[key]

    def numbers(self, measured: dict) -> list[Decimal]:
        floats = measured.get(FLOAT_VALUE)
        if floats:
            if len(floats) % 8:
                raise ValueError("FD value of a length that is not a multiple of 8")
            count = len(floats) // 8
            values = units.to_decimals(list(struct.unpack_from(f"<{count}d", floats))) if count else []
            if values:
                return values
        numeric = measured.get(NUMERIC_VALUE)
        if not numeric:
            return []
        known = self.decimals.get(numeric)
        if known is None:
            known = self.decimals[numeric] = units.to_decimals(numeric)
        return known

    def node(self, item: dict) -> Node:
        node = Node()
        get = item.get
        names = get(CONCEPT_NAME)
        if names:
            node.concept = self.code(names[0])
        for tag, attribute in TEXT_ATTRIBUTES:
            value = get(tag)
            if value:
                setattr(node, attribute, self.text(value, tag))
        codes = get(CONCEPT_CODE)
        if codes:
            node.code, node.code_meaning = self.code(codes[0]), self.text(codes[0].get(MEANING), MEANING)
        measured_values = get(MEASURED_VALUES)
        if measured_values:
            node.numbers = numbers = []
            for measured in measured_values:
                unit_items = measured.get(UNITS)
                unit = self.unit(unit_items[0]) if unit_items else (None, None)
                parsed = self.numbers(measured)
                numbers.extend((number, unit) for number in parsed)
                if not parsed and (text := self.text(measured.get(NUMERIC_VALUE), NUMERIC_VALUE)):
                    node.unreadable = [*node.unreadable, text]
        references = get(REFERENCED_SOP)
        if references:
            node.sop_classes = [uid for ref in references
                                if (uid := self.text(ref.get(REFERENCED_SOP_CLASS), REFERENCED_SOP_CLASS))]
        children = get(CONTENT_SEQUENCE)
        if children:
            node.children = [self.node(child) for child in children]
        return node

    def unit(self, item: dict) -> Unit:
        key = id(item)
        if key not in self.units:
            self.units[key] = (self.text(item.get(CODE_VALUE), CODE_VALUE), self.text(item.get(MEANING), MEANING))
        return self.units[key]


def children_from_bytes(value: bytes, implicit: bool, charset: object = None) -> list[Node]:
    """The nodes of a Content Sequence value (its items, as bytes, little endian); `charset` is the report's Specific
    Character Set. Raises (ValueError, struct.error, ...) on bytes it does not read exactly as pydicom would."""
    items, _end = _Reader(bytes(value), implicit).sequence(0, len(value), 0, keep=True)
    return decode_items(items, implicit, charset)


def decode_items(items: list[dict], implicit: bool, charset: object = None) -> list[Node]:
    """Nodes of the item dicts the single pass kept."""
    decoder = _Decoder(charset, implicit)
    return [decoder.node(item) for item in items]


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
            charset = element_value(ds, "SpecificCharacterSet")
            parsed = ds.__dict__.get(PARSED)
            if parsed is not None and parsed[0] is element.value:  # read once already, while finding its end
                root.children = decode_items(parsed[1], element.is_implicit_VR, charset)
            else:
                root.children = children_from_bytes(element.value, element.is_implicit_VR, charset)
            return root
        except Exception:  # noqa: BLE001 - bytes the single pass does not read exactly: the tolerant reference decides
            pass
    return root_from_dataset(ds)


__all__ = ["Node", "content_root", "root_from_dataset", "children_from_bytes"]
