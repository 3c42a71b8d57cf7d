"""Fuzz over the network: thousands of malformed or truncated objects sent to the running agent's C-STORE SCP.

The corpus is built fresh in every run from two sources:
- hypothesis-generated data sets, encoded element by element by this file (so element lengths, VRs, sequence items and
  delimiters can be wrong on purpose), in a transfer syntax that may not be the one the file meta declares;
- byte mutations of valid factory objects (every one with fresh UIDs): truncation, flipped bytes, corrupted element
  lengths and VRs, broken item/delimiter tags, garbage after the meta, trailing garbage, cut/duplicated/spliced chunks,
  and a wrong transfer syntax or SOP class in the meta.
tests/raw_scu.py sends every file's bytes as they are over real associations (several processes in parallel, hundreds
of objects per association). What must hold:
- every object gets a status (no association ends without one), only from the agent's named set, and never
  Out of Resources (the outbox has room: 0xA700 here would mean an unexpected error in the handler);
- the SCP stays up: a valid object sent afterwards by storescu is answered Success and its event is published;
- nothing acknowledged is lost, and nothing else is published: extraction is pure, so this test runs the agent's own
  `read_headers` + `extract` on the same bytes with the agent's site secret to compute the msg_ids each Success'd
  object must produce, and checks they all reach the subscriber. The same local run must also agree with the agent's
  status for every object (Success exactly when extraction succeeds), which is what makes the expectation trustworthy.
"""

from __future__ import annotations

import io
import random
import re
import shutil
import struct
import subprocess
import sys
import tomllib
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID, ComprehensiveSRStorage, ComputedRadiographyImageStorage, CTImageStorage,
    DeflatedExplicitVRLittleEndian, DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation, DigitalXRayImageStorageForProcessing, EnhancedSRStorage,
    ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless,
    SecondaryCaptureImageStorage, XRayAngiographicImageStorage, XRayRadiationDoseSRStorage,
    XRayRadiofluoroscopicImageStorage, generate_uid,
)
from pynetdicom.dsutils import split_dataset

from agent.dicom import statuses
from agent.dicom.extract import ExtractContext, ExtractionError, extract
from agent.dicom.scp import read_headers
from agent.pseudonym import load_secret
from tests import dicom_factory as factory
from tests.realparts import REPO, Subscriber, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODALITY_AET, AGENT_AET = "FUZZ_SCU", "XRAYAGENT"
HYPOTHESIS_OBJECTS = 900
MUTANT_OBJECTS = 1500
SENDERS = 4  # raw_scu processes in parallel, one association each
RNG_SEED = 20240105

SOP_CLASSES = [DigitalXRayImageStorageForPresentation, DigitalXRayImageStorageForProcessing,
               ComputedRadiographyImageStorage, DigitalMammographyXRayImageStorageForPresentation,
               XRayAngiographicImageStorage, XRayRadiofluoroscopicImageStorage, XRayRadiationDoseSRStorage,
               EnhancedSRStorage, ComprehensiveSRStorage, CTImageStorage, SecondaryCaptureImageStorage]
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
            JPEGBaseline8Bit, RLELossless]
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
VRS = [b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OW", b"PN",
       b"SH", b"SL", b"SQ", b"SS", b"ST", b"TM", b"UI", b"UL", b"UN", b"US", b"UT", b"UC", b"OF", b"SV"]
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


# ---- Part 10 assembly ----------------------------------------------------------------------------------------------
def meta_bytes(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    """Preamble, prefix and a valid file meta group naming this SOP class, instance and transfer syntax."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_instance
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + fp.getvalue()


def part10(meta: bytes, body: bytes) -> bytes:
    """Meta + data set. A data set starting with a group 0002 tag would be read as more meta by any sender (the
    C-STORE carries no meta: the sender takes SOP class and transfer syntax from it), so that one byte is changed."""
    if body[:2] == b"\x02\x00":
        body = b"\x03" + body[1:]
    return meta + body


def split_part10(data: bytes) -> tuple[int, bytes]:
    """(offset of the data set, data set bytes) of a factory file: after the meta group (its group length says)."""
    group_length = struct.unpack_from("<I", data, 132 + 8)[0]
    offset = 132 + 12 + group_length
    return offset, data[offset:]


# ---- hypothesis: data sets encoded element by element ----------------------------------------------------------------
@dataclass(frozen=True)
class El:
    """One element to encode: value bytes, or items (lists of El) for a sequence; lengths may lie on purpose."""

    tag: int
    vr: bytes
    value: bytes = b""
    items: tuple = ()
    length: int | None = None  # None: the true length
    undefined: bool = False  # SQ/item with undefined length and delimiters
    drop_delimiter: bool = False


def encode_elements(elements, implicit: bool, little: bool) -> bytes:
    order = "<" if little else ">"
    out = bytearray()
    for el in elements:
        group, element = el.tag >> 16, el.tag & 0xFFFF
        if el.items or el.vr == b"SQ":
            value = b""
            for item in el.items:
                body = encode_elements(item, implicit, little)
                item_len = 0xFFFFFFFF if el.undefined else len(body)
                value += struct.pack(order + "HHI", 0xFFFE, 0xE000, item_len) + body
                if el.undefined and not el.drop_delimiter:
                    value += struct.pack(order + "HHI", 0xFFFE, 0xE00D, 0)
            if el.undefined and not el.drop_delimiter:
                value += struct.pack(order + "HHI", 0xFFFE, 0xE0DD, 0)
            length = 0xFFFFFFFF if el.undefined else len(value)
        else:
            value, length = el.value, len(el.value)
        if el.length is not None:
            length = el.length
        out += struct.pack(order + "HH", group, element)
        if implicit:
            out += struct.pack(order + "I", length & 0xFFFFFFFF)
        elif el.vr in LONG_VRS:
            out += el.vr + b"\0\0" + struct.pack(order + "I", length & 0xFFFFFFFF)
        else:
            out += el.vr + struct.pack(order + "H", length & 0xFFFF)
        out += value
    return bytes(out)


HEADER_KEYWORDS = [
    "Modality", "StudyInstanceUID", "SeriesInstanceUID", "IrradiationEventUID", "KVP", "Exposure", "ExposureInuAs",
    "ExposureTime", "ExposureTimeInuS", "XRayTubeCurrent", "XRayTubeCurrentInuA", "ImageAndFluoroscopyAreaDoseProduct",
    "EntranceDoseInmGy", "ExposureIndex", "TargetExposureIndex", "DeviationIndex", "DistanceSourceToDetector",
    "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "ContentDate", "ContentTime", "TimezoneOffsetFromUTC",
    "PatientAge", "PatientBirthDate", "StudyDate", "PatientSex", "BodyPartExamined", "ViewPosition", "ProtocolName",
    "RadiationSetting", "Manufacturer", "SpecificCharacterSet", "AcquisitionNumber", "PresentationIntentType",
    "NumberOfFrames", "Rows", "Columns", "BitsAllocated",
]
SR_CODES = [("113706", "DCM"), ("113702", "DCM"), ("113769", "DCM"), ("111526", "DCM"), ("113721", "DCM"),
            ("113701", "DCM"), ("113733", "DCM"), ("113734", "DCM"), ("113736", "DCM"), ("122130", "DCM"),
            ("113738", "DCM"), ("113824", "DCM"), ("113722", "DCM"), ("44491008", "SCT"), ("113611", "DCM")]
values = st.one_of(
    st.sampled_from([b"81", b"12.5", b"1e999", b"nan", b"-3", b"", b"20240105", b"101530.25", b"+0100", b"045Y",
                     b"1.2.3.4", b"1.2.840.10008.5.1.4.1.1.88.67", b"\xff\xfe", b"0" * 70, b"DX ", b"CHEST"]),
    st.binary(max_size=40))


def tag_of(keyword: str) -> int:
    return tag_for_keyword(keyword)


def uid_element(keyword: str, draw) -> list[El]:
    choice = draw(st.sampled_from(["valid", "valid", "valid", "absent", "empty", "junk"]))
    if choice == "absent":
        return []
    value = {"valid": generate_uid().encode() + b"\0", "empty": b"", "junk": draw(st.binary(max_size=70))}[choice]
    return [El(tag_of(keyword), b"UI", value if len(value) % 2 == 0 else value + b"\0")]


@st.composite
def plain_element(draw) -> El:
    kind = draw(st.sampled_from(["header", "header", "header", "random"]))
    if kind == "header":
        keyword = draw(st.sampled_from(HEADER_KEYWORDS))
        tag = tag_of(keyword)
        vr = dictionary_VR(tag).split(" or ")[0].encode()
    else:
        tag = draw(st.one_of(st.integers(0, 0xFFFFFFFF), st.sampled_from(
            [0x00020010, 0x00080005, 0x7FE00010, 0xFFFEE000, 0xFFFEE0DD, 0x00091001, 0xFFFCFFFC, 0x00000000])))
        vr = draw(st.sampled_from(VRS + [b"XX", b"\0\0", b"sq"]))
    if draw(st.integers(0, 9)) == 0:
        vr = draw(st.sampled_from(VRS))  # the wrong VR for a known keyword
    length = draw(st.one_of(st.none(), st.none(), st.none(), st.none(), st.none(), st.none(),
                            st.sampled_from([0, 1, 3, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF]),
                            st.integers(0, 300)))
    return El(tag, vr, draw(values), length=length)


@st.composite
def content_item(draw, depth: int = 0) -> list[El]:
    """An SR content item with a known concept, maybe a measured value, maybe nested content."""
    code, scheme = draw(st.sampled_from(SR_CODES))
    name = [El(0x00080100, b"SH", code.encode() + (b" " if len(code) % 2 else b"")),
            El(0x00080102, b"SH", scheme.encode() + (b" " if len(scheme) % 2 else b""))]
    item = [El(0x0040A043, b"SQ", items=(name,), undefined=draw(st.booleans()))]
    if draw(st.booleans()):
        unit = [El(0x00080100, b"SH", draw(st.sampled_from([b"kV", b"mA", b"ms", b"Gy", b"Gy.m2", b"uA.s", b"?"])))]
        measured = [El(0x004008EA, b"SQ", items=(unit,)), El(0x0040A30A, b"DS", draw(values))]
        item.append(El(0x0040A300, b"SQ", items=(measured,), undefined=draw(st.booleans())))
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        children = tuple(draw(st.lists(content_item(depth + 1), max_size=3)))
        item.append(El(0x0040A730, b"SQ", items=children, undefined=draw(st.booleans()),
                       drop_delimiter=draw(st.integers(0, 5)) == 0))
    item.sort(key=lambda el: el.tag)
    return item


@st.composite
def fuzz_object(draw) -> tuple[bytes, str]:
    """A Part 10 file whose data set hypothesis composed; returns (bytes, description)."""
    sop_class = draw(st.sampled_from(SOP_CLASSES))
    elements = uid_element("SOPInstanceUID", draw)
    if draw(st.integers(0, 5)):
        elements.append(El(0x00080016, b"UI", sop_class.encode() + (b"\0" if len(sop_class) % 2 else b"")))
    elements += uid_element("StudyInstanceUID", draw)
    elements += draw(st.lists(plain_element(), max_size=25))
    if draw(st.booleans()):  # SR-like content: a document title and content items
        elements.append(El(0x0040A043, b"SQ", items=([El(0x00080100, b"SH", b"113701"),
                                                      El(0x00080102, b"SH", b"DCM ")],)))
        elements.append(El(0x0040A730, b"SQ", items=tuple(draw(st.lists(content_item(), max_size=6))),
                           undefined=draw(st.booleans())))
    if draw(st.integers(0, 4)):
        elements.sort(key=lambda el: el.tag)
    encoding = draw(st.sampled_from([ExplicitVRLittleEndian] * 4 + [ImplicitVRLittleEndian] * 2 +
                                    [ExplicitVRBigEndian]))
    declared = encoding if draw(st.integers(0, 3)) else draw(st.sampled_from(SYNTAXES))
    body = encode_elements(elements, encoding == ImplicitVRLittleEndian, encoding != ExplicitVRBigEndian)
    if declared == DeflatedExplicitVRLittleEndian and draw(st.integers(0, 4)):
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush()
    sop_uid = generate_uid()
    return part10(meta_bytes(sop_class, sop_uid, declared), body), (
        f"hypothesis: {len(elements)} elements, encoded {UID(encoding).name}, declared {UID(declared).name}")


def hypothesis_corpus(count: int) -> list[tuple[bytes, str]]:
    """`count` generated objects (derandomized: the same structures every run)."""
    found: list[tuple[bytes, str]] = []

    @settings(max_examples=count, database=None, derandomize=True, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(fuzz_object())
    def collect(obj):
        found.append(obj)

    collect()
    return found


# ---- byte mutations of valid factory objects --------------------------------------------------------------------
SEEDS = [
    ("dx", lambda: factory.make_dx()),
    ("dx-implicit-private", lambda: factory.make_dx(transfer_syntax=ImplicitVRLittleEndian, private_tags=True)),
    ("cr", lambda: factory.make_cr()),
    ("mg", lambda: factory.make_mg()),
    ("xa-3-frames", lambda: factory.make_xa(frames=3)),
    ("rdsr", lambda: factory.make_rdsr([factory.acquisition_event(), factory.fluoro_event()])),
    ("rdsr-implicit", lambda: factory.make_rdsr([factory.acquisition_event()],
                                                transfer_syntax=ImplicitVRLittleEndian)),
    ("ct", lambda: factory.make_non_exposure("CT")),
]


def header_offsets(body: bytes, implicit: bool) -> list[tuple[int, int]]:
    """(offset of the length field, its size) of element headers found anywhere in `body`, nested ones included."""
    found = []
    for i in range(0, len(body) - 8, 2):
        group = body[i] | body[i + 1] << 8
        if group == 0xFFFE and body[i + 2:i + 4] in (b"\x00\xe0", b"\x0d\xe0", b"\xdd\xe0"):
            found.append((i + 4, 4))  # item and delimiter tags
        elif implicit:
            if group % 2 == 0 and 0x0008 <= group <= 0x7FE0 and body[i + 2] % 2 == 0:
                found.append((i + 4, 4))
        elif body[i + 4:i + 6] in LONG_VRS:
            found.append((i + 8, 4))
        elif body[i + 4:i + 6] in VRS and 0x0008 <= group <= 0x7FE0:
            found.append((i + 6, 2))
    return found


class Mutator:
    """Byte-level mutations of a Part 10 file's data set, and of what its meta declares."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def mutate(self, data: bytes, other: bytes, implicit: bool) -> tuple[bytes, str]:
        rng = self.rng
        meta_end, body = split_part10(data)
        meta = data[:meta_end]
        done = []
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
            op = rng.choice(["truncate", "flip", "length", "length", "vr", "item", "garbage_after_meta",
                             "trailing_garbage", "cut", "duplicate", "splice", "syntax", "sop_class", "garbage_body",
                             "empty"])
            body, meta = getattr(self, op)(body, meta, other, implicit)
            done.append(op)
        return part10(meta, body), "mutant: " + "+".join(done)

    def truncate(self, body, meta, other, implicit):
        return body[:self.rng.randrange(len(body) + 1)], meta

    def flip(self, body, meta, other, implicit):
        data = bytearray(body)
        for _ in range(self.rng.choice([1, 2, 4, 8, 32])):
            if data:
                data[self.rng.randrange(len(data))] ^= self.rng.randrange(1, 256)
        return bytes(data), meta

    def length(self, body, meta, other, implicit):
        headers = header_offsets(body, implicit)
        if not headers:
            return self.flip(body, meta, other, implicit)
        at, size = self.rng.choice(headers)
        old = int.from_bytes(body[at:at + size], "little")
        new = self.rng.choice([0, 1, old + 1, old - 1, old + 2, old * 2, 0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF,
                               self.rng.randrange(1 << (8 * size))]) % (1 << (8 * size))
        return body[:at] + new.to_bytes(size, "little") + body[at + size:], meta

    def vr(self, body, meta, other, implicit):
        headers = [(at, size) for at, size in header_offsets(body, False) if body[at - 2:at] in VRS + [b"\0\0"]
                   or body[at - 4:at - 2] in LONG_VRS]
        if not headers:
            return self.flip(body, meta, other, implicit)
        at, size = self.rng.choice(headers)
        vr_at = at - 2 if size == 2 else at - 4
        new = self.rng.choice(VRS + [b"XX", b"\0\0", b"ob", bytes([self.rng.randrange(256), self.rng.randrange(256)])])
        return body[:vr_at] + new + body[vr_at + 2:], meta

    def item(self, body, meta, other, implicit):
        spots = [i for i in range(0, len(body) - 4, 2) if body[i:i + 2] == b"\xfe\xff"]
        if not spots:
            return self.flip(body, meta, other, implicit)
        at = self.rng.choice(spots)
        new = self.rng.choice([b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0", b"\xfe\xff\xdd\xe0", b"\xfe\xff\x00\x00",
                               b"\x00\x00\x00\x00"])
        return body[:at] + new + body[at + 4:], meta

    def garbage_after_meta(self, body, meta, other, implicit):
        return self.rng.randbytes(self.rng.randrange(1, 64)) + body, meta

    def trailing_garbage(self, body, meta, other, implicit):
        return body + self.rng.randbytes(self.rng.randrange(1, 200)), meta

    def cut(self, body, meta, other, implicit):
        if len(body) < 2:
            return body, meta
        a = self.rng.randrange(len(body))
        b = min(len(body), a + self.rng.choice([1, 2, 4, 8, 64, 512]))
        return body[:a] + body[b:], meta

    def duplicate(self, body, meta, other, implicit):
        if len(body) < 2:
            return body, meta
        a = self.rng.randrange(len(body))
        chunk = body[a:a + self.rng.choice([8, 12, 64, 300])]
        at = self.rng.randrange(len(body))
        return body[:at] + chunk + body[at:], meta

    def splice(self, body, meta, other, implicit):
        _, other_body = split_part10(other)
        return body[:self.rng.randrange(len(body) + 1)] + other_body[self.rng.randrange(len(other_body) + 1):], meta

    def syntax(self, body, meta, other, implicit):
        return body, self._meta(meta, syntax=self.rng.choice(SYNTAXES))

    def sop_class(self, body, meta, other, implicit):
        return body, self._meta(meta, sop_class=self.rng.choice(SOP_CLASSES))

    def garbage_body(self, body, meta, other, implicit):
        return self.rng.randbytes(self.rng.randrange(0, 600)), meta

    def empty(self, body, meta, other, implicit):
        return b"", meta

    @staticmethod
    def _meta(meta: bytes, sop_class: str | None = None, syntax: str | None = None) -> bytes:
        info = dcmread(io.BytesIO(meta)).file_meta
        return meta_bytes(sop_class or info.MediaStorageSOPClassUID, info.MediaStorageSOPInstanceUID,
                          syntax or info.TransferSyntaxUID)


GENERATED_UID = re.compile(rb"1\.2\.826\.0\.1\.3680043\.8\.498\.[0-9.]+")  # pydicom's generate_uid()


def fresh_uids(data: bytes, rng: random.Random) -> bytes:
    """The object with every generated UID replaced by a new one of the same length (so no element length changes):
    a new object, with its own msg_ids, for the cost of a regex instead of building it again."""
    renamed = {}
    for uid in set(GENERATED_UID.findall(data)):
        prefix_len = len(b"1.2.826.0.1.3680043.8.498.")
        digits = str(rng.randrange(1, 10)) + "".join(str(rng.randrange(10)) for _ in range(len(uid) - prefix_len - 1))
        renamed[uid] = uid[:prefix_len] + digits.encode()
    return GENERATED_UID.sub(lambda match: renamed[match.group(0)], data)


def mutant_corpus(count: int, rng: random.Random) -> list[tuple[bytes, str]]:
    mutator = Mutator(rng)
    templates = [(name, factory.to_bytes(build())) for name, build in SEEDS]
    corpus = []
    for i in range(count):
        name, template = templates[i % len(templates)]
        data, how = mutator.mutate(fresh_uids(template, rng), rng.choice(templates)[1], "implicit" in name)
        corpus.append((data, f"{how} of {name}"))
    return corpus


# ---- what the agent must have done ------------------------------------------------------------------------------
def local_outcome(path: Path, ctx: ExtractContext) -> tuple[bool, set[str]]:
    """(interpretable, msg_ids): the agent's own header reading and extraction run here on the bytes it received.

    The sender takes the transfer syntax and SOP class/instance UIDs from the file meta, and the agent rebuilds its file
    meta from those (pynetdicom's event.file_meta); so does this function."""
    meta, offset = split_dataset(path)
    body = path.read_bytes()[offset:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # the agent's checked read, with the SOP class the C-STORE request carries (the sender takes it from meta)
            ds = read_headers(io.BytesIO(body), UID(meta.TransferSyntaxUID), meta.MediaStorageSOPClassUID)
            file_meta = FileMetaDataset()
            file_meta.MediaStorageSOPClassUID = meta.MediaStorageSOPClassUID
            file_meta.MediaStorageSOPInstanceUID = meta.MediaStorageSOPInstanceUID
            file_meta.TransferSyntaxUID = meta.TransferSyntaxUID
            ds.file_meta = file_meta
        except Exception:  # noqa: BLE001 - the agent answers Cannot Understand for these
            return False, set()
        try:
            return True, {payload.msg_id for payload in extract(ds, ctx).payloads()}
        except ExtractionError:
            return False, set()


def send_all(port: int, paths: list[Path], workdir: Path) -> dict[Path, str]:
    """Send every file over SENDERS parallel associations; path -> status text as raw_scu printed it."""
    chunks = [paths[k::SENDERS] for k in range(SENDERS)]
    procs = []
    for k, chunk in enumerate(chunks):
        listing = workdir / f"send-{k}.txt"
        listing.write_text("\n".join(map(str, chunk)) + "\n")
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.raw_scu", str(port), AGENT_AET, MODALITY_AET,
                                       "--list", str(listing)], cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    statuses_by_path: dict[Path, str] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"raw_scu failed ({proc.returncode}): {err[-3000:]}"
        for line in out.splitlines():
            path, status = line.rsplit(" ", 1)
            assert Path(path) not in statuses_by_path, f"two statuses for {path}"
            statuses_by_path[Path(path)] = status
    return statuses_by_path


@pytest.fixture
def fuzz_agent(broker, subscriber, agent_factory):
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk's storescu is not installed; scripts/test.sh installs it (apt-get install dcmtk)")
    agent = agent_factory(broker.port, dicom={"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET]})
    wait_for(lambda: "DICOM listener" in agent.log(), 15, "DICOM listener up")
    agent.dicom_port = tomllib.loads(agent.config.read_text())["dicom"]["port"]
    return agent


def exposure_ids(sub: Subscriber) -> set[str]:
    return {m.json()["msg_id"] for m in sub.snapshot() if m.topic.endswith(("/exposure", "/dose-summary"))}


def test_malformed_objects_over_the_network(fuzz_agent, subscriber, tmp_path):
    corpus = hypothesis_corpus(HYPOTHESIS_OBJECTS) + mutant_corpus(MUTANT_OBJECTS, random.Random(RNG_SEED))
    folder = tmp_path / "corpus"
    folder.mkdir()
    described: dict[Path, str] = {}
    for i, (data, how) in enumerate(corpus):
        path = folder / f"{i:05d}.dcm"
        path.write_bytes(data)
        described[path] = how
    paths = list(described)
    assert len(paths) >= 2000

    answered = send_all(fuzz_agent.dicom_port, paths, tmp_path)

    # every object got a status, from the agent's named set, and the handler never failed unexpectedly
    missing = [p for p in paths if p not in answered]
    assert not missing, f"{len(missing)} objects were never reported by the sender, e.g. {missing[:3]}"
    counts = Counter(answered.values())
    no_status = {p: s for p, s in answered.items() if not s.startswith("0x")}
    assert not no_status, (f"objects without a status ({Counter(no_status.values())}): " +
                           "; ".join(f"{p.name} ({described[p]}): {s}" for p, s in list(no_status.items())[:5]))
    named = {f"0x{code:04X}" for code in statuses.NAMES}
    assert set(counts) <= named, f"statuses outside the agent's named set: {counts}"
    refused = [p for p, s in answered.items() if s == f"0x{statuses.OUT_OF_RESOURCES:04X}"]
    assert not refused, (f"{len(refused)} answered Out of Resources with an outbox that has room (an unexpected "
                         f"error in the handler): {[described[p] for p in refused[:5]]}")
    assert "unexpected error" not in fuzz_agent.log() and "Traceback" not in fuzz_agent.log()

    # the SCP is still up: a valid object afterwards is answered Success and published
    valid = folder / "valid-after.dcm"
    valid.write_bytes(factory.to_bytes(factory.make_dx(kvp="99")))
    after = subprocess.run(["storescu", "-v", "-aet", MODALITY_AET, "-aec", AGENT_AET, "127.0.0.1",
                            str(fuzz_agent.dicom_port), str(valid)], capture_output=True, text=True, timeout=60)
    assert after.returncode == 0 and "Received Store Response (Success)" in after.stdout + after.stderr, after.stderr

    # the agent's answers agree with its own extraction run here, and every Success'd object's payloads arrive
    key = load_secret(fuzz_agent.config.parent / "site.key")
    ctx = ExtractContext(site="test-site", room="xr-01", secret=key)
    expected: dict[str, Path] = {}  # msg_id -> an acknowledged object that yields it
    disagreements = []
    success_with_events = 0
    for path, status in answered.items():
        interpretable, msg_ids = local_outcome(path, ctx)
        success = status == f"0x{statuses.SUCCESS:04X}"
        if success != interpretable:
            disagreements.append(f"{path.name} ({described[path]}): agent {status}, local extraction "
                                 f"{'succeeds' if interpretable else 'fails'}")
        if success:
            expected.update(dict.fromkeys(msg_ids, path))
            success_with_events += bool(msg_ids)
    assert not disagreements, f"{len(disagreements)} disagreements: " + "; ".join(disagreements[:5])
    expected.update(dict.fromkeys(local_outcome(valid, ctx)[1], valid))
    try:
        wait_for(lambda: expected.keys() <= exposure_ids(subscriber), 60, "every acknowledged object's payloads")
    except AssertionError:
        lost = {expected[m] for m in expected.keys() - exposure_ids(subscriber)}
        raise AssertionError(f"{len(lost)} of {counts['0x0000']} acknowledged objects were not (fully) published, "
                             f"e.g. " + "; ".join(f"{p.name} ({described.get(p, 'valid')})" for p in
                                                 sorted(lost)[:5])) from None
    published = exposure_ids(subscriber)
    assert published <= expected.keys(), f"{len(published - expected.keys())} published payloads no acknowledged " \
                                         "object explains"

    # the corpus did what it is for: many failures, and enough Success'd objects with events that losses would show
    assert counts["0x0000"] >= 300 and success_with_events >= 200, counts
    assert counts[f"0x{statuses.CANNOT_UNDERSTAND:04X}"] >= 500, counts
    quarantine = list((fuzz_agent.config.parent / "quarantine").glob("*.dcm"))
    assert 0 < len(quarantine) <= 500  # dicom.quarantine_max_files: bounded however many arrive
    print(f"\n{len(paths)} objects: {dict(counts)}; {success_with_events} Success'd with events, "
          f"{len(expected)} msg_ids published")
