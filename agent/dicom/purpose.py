"""Whether an exposure was made on a patient (`clinical`) or for quality control (`qc`): phantom and flat-field
exposures must not enter dose monitoring, repeat counts or summaries.

An object is `qc` when it says so: Quality Control Image (0028,0300) YES or BOTH (PS3.3 C.7.6.1, "a quality control
or phantom image"), or a "not a patient" pattern (dicom.not_a_patient; case-insensitive regular expressions) matches its
patient name or ID, study or series description, protocol, or a dose report event's acquisition protocol. The intake
also marks as `qc` the exposures received while a QC session of the room is open (agent/qc). Only the outcome is
published: the matched text never leaves this module.

The patterns are compiled by RE2 (google-re2, as dose-rule patterns): the texts come from the modality, and a pattern
such as (a+)+b would hold Python's backtracking engine for minutes on a long name, stalling every C-STORE. RE2 has
no lookaround or backreferences; a pattern using them is a config error naming dicom.not_a_patient.
"""

from __future__ import annotations

from functools import lru_cache

from pydicom import Dataset

from agent.dicom.attributes import read_text

# "(?:^|[^a-z])" stands where a word must begin (RE2 has no lookbehind); matching is case-insensitive.
DEFAULT_NOT_A_PATIENT = (
    r"(?:^|[^a-z])phantom", r"flat[ _-]?field", r"(?:^|[^a-z])qc(?:$|[^a-z])", r"quality[ _-]?control",
    r"(?:^|[^a-z])calibrat", r"(?:^|[^a-z])constancy",
)
TEXT_FIELDS = ("PatientName", "PatientID", "StudyDescription", "SeriesDescription", "ProtocolName")
QC_IMAGE_VALUES = frozenset({"YES", "BOTH"})


@lru_cache(maxsize=32)
def compiled(patterns: tuple[str, ...]):
    """One case-insensitive RE2 alternation of the patterns (None when there are none); ValueError naming a pattern
    RE2 cannot compile."""
    if not patterns:
        return None
    import re2  # google-re2: linear-time matching

    from agent.dose.rules import _re2_options

    for pattern in patterns:
        try:
            re2.compile(pattern, _re2_options())
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise ValueError(f"{pattern!r} is not an RE2 regular expression: {reason} (no lookaround or "
                             "backreferences)") from None
    return re2.compile("|".join(f"(?:{pattern})" for pattern in patterns), _re2_options())


def matches(text: str | None, patterns: tuple[str, ...]) -> bool:
    """True when any pattern is found in text."""
    regex = compiled(patterns)
    return bool(text and regex is not None and regex.search(text))


def object_purpose(ds: Dataset, patterns: tuple[str, ...]) -> str:
    """"qc" for an object flagged or named as quality control, else "clinical"."""
    if (read_text(ds, "QualityControlImage") or "").upper() in QC_IMAGE_VALUES:
        return "qc"
    return "qc" if any(matches(read_text(ds, keyword), patterns) for keyword in TEXT_FIELDS) else "clinical"


def event_purpose(object_level: str, protocol: str | None, patterns: tuple[str, ...]) -> str:
    """An event is qc when its object is, or its own protocol label says so."""
    return "qc" if object_level == "qc" or matches(protocol, patterns) else "clinical"
