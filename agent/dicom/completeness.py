"""Is a received data set complete? A linear walk over element headers to the end of the byte stream. Pure.

Why: pydicom reads a data set "as far as it goes" (a value cut part-way is returned short, the elements after it are
simply absent), so a C-STORE whose sender dropped mid-object, or a file still being copied, would otherwise be
interpreted and acknowledged: a kVp of "125" cut after two characters read as 12. Truncation leaves structural
evidence, and this walk finds it without decoding any value:
- every defined length must fit inside the stream (PS3.5 7.1: the value field follows the header, length bytes long);
- a sequence or item of undefined length must be closed by its delimitation item (PS3.5 7.5.1, 7.5.2): Sequence
  Delimitation Item (FFFE,E0DD), Item Delimitation Item (FFFE,E00D); encapsulated pixel data likewise ends with a
  Sequence Delimitation Item (PS3.5 A.4);
- no header may be cut (8 bytes; 12 for the explicit VRs with a 4-byte length, PS3.5 7.1.2).
Encodings: explicit and implicit VR little endian, explicit VR big endian (retired, PS3.5 A.3), and deflated explicit
VR little endian after inflating (PS3.5 A.5; an inflate stream without its final block is incomplete too). Inside an
undefined-length UN element the encoding is implicit VR little endian (PS3.5 6.2.2 note 4).

The walk reads headers only and skips every value by its length, so its cost grows with the number of elements, not
the bytes: the pixel data of an 18 MB image is one header.
"""

from __future__ import annotations

import struct
import zlib

UNDEFINED = 0xFFFFFFFF
# VRs whose explicit header has 2 reserved bytes and a 4-byte length (PS3.5 Table 7.1-1).
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
PREAMBLE, MAGIC = 128, b"DICM"
# Without a preamble a file must begin with the meta (group 0002) or a data set's first groups (0008, and the
# rare 0000/0004/0005 elements some writers keep), little or big endian: anything else is not DICOM at all.
BARE_STARTS = frozenset({b"\x02\x00", b"\x08\x00", b"\x00\x08", b"\x00\x00", b"\x04\x00", b"\x05\x00"})
TRANSFER_SYNTAX_TAG = 0x00020010
IMPLICIT_LE, EXPLICIT_LE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
EXPLICIT_BE, DEFLATED_LE = "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # Float, Double Float, Pixel Data
MAX_DEPTH = 64  # nesting beyond this is not a real object; also bounds the stack


class IncompleteObject(Exception):
    """The byte stream ends before the data set does; `reason` says where (no values, no identifiers)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason if reason.startswith("malformed") else f"incomplete object: {reason}"


def check_dataset(data: bytes | memoryview, transfer_syntax: str, offset: int = 0) -> bool:
    """Raise IncompleteObject unless the data set encoded in `data[offset:]` in `transfer_syntax` is complete;
    return whether it holds pixel data (top-level (7FE0,0008), (7FE0,0009) or (7FE0,0010)).

    A cut exactly between two elements leaves no structural trace (a data set has no total length): for images the
    caller requires the pixel data (Type 1 in the Image Pixel Module, PS3.3 C.7.6.3), which every sender writes last
    but for trailing padding, so an image cut anywhere before its pixel data is caught.

    Any transfer syntax other than implicit VR LE, explicit VR BE and deflated is explicit VR LE (PS3.5 A.4: every
    encapsulated syntax encodes its data set as explicit VR little endian)."""
    syntax = str(transfer_syntax or "").strip("\x00 ")
    if syntax == DEFLATED_LE:
        data = inflate(bytes(memoryview(data)[offset:]))
        offset = 0
    return _walk(memoryview(data), offset, implicit=syntax == IMPLICIT_LE, little=syntax != EXPLICIT_BE)


def check_file(data: bytes) -> tuple[str, bool]:
    """Check a Part 10 file (preamble and meta, PS3.10 7.1; also a bare meta or a bare data set): (the transfer
    syntax its data set was checked in, whether it holds pixel data); raises IncompleteObject, or ValueError for
    bytes that do not begin like DICOM at all."""
    offset = PREAMBLE + len(MAGIC) if data[PREAMBLE:PREAMBLE + len(MAGIC)] == MAGIC else 0
    if not offset and len(data) < PREAMBLE + len(MAGIC) and not data.strip(b"\x00"):
        raise IncompleteObject("file ends in its preamble")
    if not offset and data[:2] not in BARE_STARTS:
        raise ValueError("not a DICOM file: no DICM prefix and no data set start")  # junk, not a cut object
    if offset and len(data) == offset:
        raise IncompleteObject("nothing after the file preamble")
    syntax, offset = _meta(memoryview(data), offset)
    if syntax is None:  # no meta: guess the encoding as readers do (an explicit VR shows as two letters after the tag)
        syntax = EXPLICIT_LE if data[offset + 4:offset + 6].isalpha() else IMPLICIT_LE
    return syntax, check_dataset(data, syntax, offset)


def inflate(data: bytes) -> bytes:
    """A raw deflate stream (no zlib header, PS3.5 A.5) inflated; IncompleteObject when its final block is missing."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data) + inflater.flush()
    except zlib.error as exc:
        raise IncompleteObject(f"deflated stream unreadable ({exc})") from None
    if not inflater.eof:
        raise IncompleteObject("deflated stream ends before its final block")
    return out


def _meta(data: memoryview, offset: int) -> tuple[str | None, int]:
    """(transfer syntax UID, offset of the data set) after the group 0002 elements (always explicit VR LE)."""
    syntax, meta_end = None, None
    end = len(data)
    while offset + 8 <= end:
        group, element = struct.unpack_from("<HH", data, offset)
        if group != 0x0002:
            break
        vr = bytes(data[offset + 4:offset + 6])
        if vr in LONG_VRS:
            if offset + 12 > end:
                raise IncompleteObject("file meta header cut")
            length, header = struct.unpack_from("<I", data, offset + 8)[0], 12
        else:
            length, header = struct.unpack_from("<H", data, offset + 6)[0], 8
        if offset + header + length > end:
            raise IncompleteObject("file meta element cut")
        if element == 0 and length == 4:  # File Meta Information Group Length (0002,0000): where the meta ends
            meta_end = offset + header + 4 + struct.unpack_from("<I", data, offset + header)[0]
        if (group << 16 | element) == TRANSFER_SYNTAX_TAG:
            syntax = bytes(data[offset + header:offset + header + length]).decode("ascii", "replace").strip("\x00 ")
        offset += header + length
    if meta_end is not None and meta_end > end:
        raise IncompleteObject("file meta shorter than its group length")
    return syntax, offset


_EXPLICIT = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}  # group, element, VR, 2-byte length
_IMPLICIT = {True: struct.Struct("<HHI"), False: struct.Struct(">HHI")}  # group, element, 4-byte length
_LENGTH = {True: struct.Struct("<I"), False: struct.Struct(">I")}


def _walk(data: memoryview, pos: int, *, implicit: bool, little: bool) -> bool:
    """The walk: a stack of open containers (undefined-length sequences and items), each with its content's encoding.

    A stray delimiter where none is open is skipped (some writers add one after a defined-length sequence; readers
    tolerate it); only evidence that the stream ends before the data set does, or an item outside any sequence,
    raises. Precompiled structs, one unpack per header, the current container's state in locals (changed only on
    entering or leaving a container): about a microsecond per element."""
    end = len(data)
    top = (False, implicit, little)
    stack: list[tuple[bool, bool, bool]] = []  # (is_sequence, implicit, little) of each open container
    in_sequence = False
    head, explicit_head, long_length = _IMPLICIT[little], _EXPLICIT[little], _LENGTH[little]
    pixel_data = False
    while pos < end:
        if pos + 8 > end:
            raise IncompleteObject("element header cut")
        group, element, length = head.unpack_from(data, pos)
        if group == 0xFFFE:  # item and delimiters: tag + 4-byte length, no VR in any encoding (PS3.5 7.5)
            pos += 8
            if element == 0xE000 and in_sequence:  # Item
                if length == UNDEFINED:
                    _push(stack, (False, implicit, little))
                    in_sequence = False
                else:
                    pos += length
                    if pos > end:
                        raise IncompleteObject("item longer than the stream")
                continue
            if element == 0xE0DD and in_sequence or element == 0xE00D and stack and not in_sequence:
                stack.pop()  # Sequence / Item Delimitation Item
                in_sequence, implicit, little = stack[-1] if stack else top
                head, explicit_head, long_length = _IMPLICIT[little], _EXPLICIT[little], _LENGTH[little]
            elif element == 0xE000:
                raise IncompleteObject("malformed: an item outside any sequence")
            elif length:
                raise IncompleteObject("malformed: a delimiter with a length")
            continue
        if in_sequence:
            raise IncompleteObject("malformed: a sequence holds an element that is not an item")
        if group == 0x7FE0 and not stack and (group << 16 | element) in PIXEL_DATA_TAGS:
            pixel_data = True
        vr = None
        if implicit:
            pos += 8
        else:
            vr = explicit_head.unpack_from(data, pos)[2]
            if vr in LONG_VRS:
                if pos + 12 > end:
                    raise IncompleteObject("element header cut")
                length = long_length.unpack_from(data, pos + 8)[0]
                pos += 12
            else:
                length = explicit_head.unpack_from(data, pos)[3]
                pos += 8
        if length == UNDEFINED:  # a sequence, encapsulated pixel data, or UN holding an implicit VR LE sequence
            if vr == b"UN":
                implicit, little = True, True
                head, explicit_head, long_length = _IMPLICIT[True], _EXPLICIT[True], _LENGTH[True]
            _push(stack, (True, implicit, little))
            in_sequence = True
            continue
        pos += length
        if pos > end:
            raise IncompleteObject("value longer than the stream")
    if stack:
        raise IncompleteObject("sequence or item not closed")
    return pixel_data


def _push(stack: list, container: tuple[bool, bool, bool]) -> None:
    if len(stack) >= MAX_DEPTH:
        raise IncompleteObject("malformed: nesting too deep")
    stack.append(container)
