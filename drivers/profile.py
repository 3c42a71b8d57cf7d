"""Instrument profiles: a serial instrument described as data (TOML), so an engineer can add one without code.

A profile gives serial parameters, request/response or push, framing (terminator, fixed length or N-line records),
named fields by regular expression (type, unit, scale, implied decimals), an optional checksum, error-reply patterns,
and init/poll command scripts. Frames are decoded as latin-1 (one character per byte), so patterns can match binary.
Unknown keys are errors. See config/profiles/*.toml for examples.
"""

from __future__ import annotations

import math
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.checksums import CHECKSUMS, decode_check
from drivers.framing import FixedLengthFramer, Framer, MultiLineFramer, TerminatorFramer
from drivers.reading import ErrorReply, FrameError
from drivers.settings import PollSettings
from drivers.units import implied_decimals, to_canonical


@lru_cache(maxsize=512)
def rx(pattern: str) -> re.Pattern[str]:
    """Compiled pattern (profiles are validated at load, so this does not fail at run time)."""
    return re.compile(pattern)


def _valid_regex(pattern: str) -> str:
    try:
        rx(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from exc
    return pattern


def _valid_bytes(text: str) -> str:
    try:
        latin1(text)
    except UnicodeEncodeError as exc:
        raise ValueError(f"{text!r} has characters that are not single bytes (use \\u00XX escapes)") from exc
    return text


def latin1(text: str) -> bytes:
    """Profile strings -> bytes on the wire (TOML escapes like \\r, \\u0002 give control bytes)."""
    return text.encode("latin-1")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has inf and nan


class FramingSpec(_Spec):
    """How bytes become frames."""

    kind: Literal["terminator", "fixed_length", "lines"] = "terminator"
    terminator: str = "\r\n"
    start: str = Field("", description="Start marker; bytes before it are dropped (terminator, fixed_length).")
    length: int = Field(0, ge=0, description="fixed_length: bytes per frame.")
    lines: int = Field(1, ge=1, description="lines: lines per record.")
    first_line: str = Field("", description="lines: regex a record's first line matches (resynchronises).")
    max_frame_bytes: int = Field(4096, ge=1, le=1_000_000)

    @field_validator("first_line")
    @classmethod
    def _regex(cls, value: str) -> str:
        return _valid_regex(value)

    @field_validator("terminator", "start")
    @classmethod
    def _bytes(cls, value: str) -> str:
        return _valid_bytes(value)

    @model_validator(mode="after")
    def _consistent(self) -> FramingSpec:
        if self.kind == "fixed_length" and self.length < 1:
            raise ValueError("fixed_length framing needs length >= 1")
        if self.kind != "fixed_length" and not self.terminator:
            raise ValueError(f"{self.kind} framing needs a terminator")
        return self

    def make(self) -> Framer:
        """A fresh framer."""
        if self.kind == "fixed_length":
            return FixedLengthFramer(self.length, start=latin1(self.start))
        if self.kind == "lines":
            return MultiLineFramer(self.lines, latin1(self.terminator), first_line=latin1(self.first_line),
                                   max_frame=self.max_frame_bytes)
        return TerminatorFramer(latin1(self.terminator), start=latin1(self.start), max_frame=self.max_frame_bytes)


class ChecksumSpec(_Spec):
    """`pattern` splits a frame into the checked `data` and the transmitted `check` (named groups)."""

    kind: Literal["none", "sum8", "xor8", "crc16_modbus"] = "none"
    pattern: str = r"(?s)^(?P<data>.*)\*(?P<check>[0-9A-Fa-f]{2})$"
    encoding: Literal["hex", "decimal", "binary_le", "binary_be"] = "hex"

    @field_validator("pattern")
    @classmethod
    def _groups(cls, value: str) -> str:
        if not {"data", "check"} <= set(rx(_valid_regex(value)).groupindex):
            raise ValueError("checksum pattern needs named groups 'data' and 'check'")
        return value


class FieldSpec(_Spec):
    """A named value: the regex's group 'value' (or group 1) -> number (x 10**group 'exponent', if the regex has
    one) -> x scale -> canonical unit of the name."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Canonical name with its unit: air_kerma_ugy, kvp.")
    regex: str
    type: Literal["float", "int"] = "float"
    unit: str = Field("", description="Unit as sent (mGy, mR, s, cGy*cm2...); converted to the name's unit.")
    scale: float = 1.0
    implied_decimals: int = Field(0, ge=0, le=9)
    optional: bool = False

    @field_validator("regex")
    @classmethod
    def _one_group(cls, value: str) -> str:
        if rx(_valid_regex(value)).groups < 1:
            raise ValueError(f"field regex {value!r} needs a capture group (or a group named 'value')")
        return value

    @model_validator(mode="after")
    def _unit_fits_name(self) -> FieldSpec:
        if self.unit:
            to_canonical(self.name, 1.0, self.unit)  # raises ValueError: unknown unit, or name/unit mismatch
        return self


class FlagSpec(_Spec):
    """A flag set on the reading when `regex` matches the record."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    regex: str

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str) -> str:
        return _valid_regex(value)


class CommandSpec(_Spec):
    """One command of an init or poll script."""

    send: str = Field(min_length=1)
    expect: str = Field("", description="Regex the reply must match; empty = any reply.")
    timeout_s: float | None = Field(None, gt=0, description="Reply timeout (default: the profile's "
                                    "reply_timeout_s); for reply = false, the pause after sending.")
    reply: bool = True
    parse: bool = Field(True, description="Poll script: take the fields from this reply.")

    @field_validator("expect")
    @classmethod
    def _regex(cls, value: str) -> str:
        return _valid_regex(value)

    @field_validator("send")
    @classmethod
    def _bytes(cls, value: str) -> str:
        return _valid_bytes(value)


class EmulatorReply(_Spec):
    """Emulator: the frames (cycled) sent in answer to one command."""

    command: str
    frames: tuple[str, ...] = Field(min_length=1)


class EmulatorSpec(_Spec):
    """What the profile emulator sends: example replies (request/response) or pushed frames."""

    replies: tuple[EmulatorReply, ...] = ()
    push: tuple[str, ...] = ()
    push_interval_s: float = Field(1.0, gt=0)
    error_frame: str = ""


class Profile(PollSettings):
    """A whole instrument. Serial parameters are the DriverSettings fields at the top level of the TOML."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    mode: Literal["request_response", "push"] = "push"
    silence_timeout_s: float = Field(10.0, gt=0, description="push: silence counted as a timeout.")
    framing: FramingSpec = FramingSpec()
    checksum: ChecksumSpec = ChecksumSpec()
    fields: tuple[FieldSpec, ...] = Field(min_length=1)
    flags: tuple[FlagSpec, ...] = ()
    ignore: tuple[str, ...] = Field((), description="Frames matching any of these are skipped (headers, prompts).")
    error_patterns: tuple[str, ...] = Field((), description="Regexes of error replies; group 'code' names it.")
    errors: dict[str, str] = Field({}, description="Error code -> name.")
    init: tuple[CommandSpec, ...] = ()
    poll: tuple[CommandSpec, ...] = ()
    accumulating: tuple[str, ...] = Field((), description="Fields the meter integrates (a running total until "
                                          "reset, e.g. a dosimeter's integrated dose): an exposure is their increase.")
    emulator: EmulatorSpec | None = None

    @field_validator("ignore", "error_patterns")
    @classmethod
    def _regexes(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_valid_regex(v) for v in values)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate field names in {names}")
        unknown = sorted(set(self.accumulating) - set(names))
        if unknown:
            raise ValueError(f"accumulating names {unknown}, which are not fields ({names})")
        if self.mode == "request_response" and not any(c.reply and c.parse for c in self.poll):
            raise ValueError("request_response profiles need a poll command whose reply is parsed")
        return self


def load_profile(path: str | Path, **overrides: Any) -> Profile:
    """Read a profile TOML; `overrides` (port, instrument_id...) win over the file. Raises on unknown keys."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    return Profile.model_validate({**data, **overrides})


def error_in(profile: Profile, text: str) -> None:
    """Raise ErrorReply if text is an error reply of this profile."""
    for pattern in profile.error_patterns:
        match = rx(pattern).search(text)
        if match:
            code = match.groupdict().get("code") or match.group(0)
            raise ErrorReply(code, profile.errors.get(code, "error"))


def checked_text(spec: ChecksumSpec, frame: bytes) -> str:
    """Verify the checksum and return the data part (the whole frame when there is no checksum)."""
    text = frame.decode("latin-1")
    if spec.kind == "none":
        return text
    match = rx(spec.pattern).match(text)
    if not match:
        raise FrameError("frame does not fit the checksum pattern")
    data, sent = latin1(match["data"]), decode_check(latin1(match["check"]), spec.encoding, spec.kind)
    if CHECKSUMS[spec.kind](data) != sent:
        raise FrameError(f"{spec.kind} mismatch: computed {CHECKSUMS[spec.kind](data):#x}, sent {sent:#x}")
    return match["data"]


def field_value(spec: FieldSpec, text: str) -> float | None:
    """The field's value in canonical units, or None if its regex does not match."""
    match = rx(spec.regex).search(text)
    if not match:
        return None
    groups = match.re.groupindex
    raw = match["value"] if "value" in groups else match.group(1)
    if spec.implied_decimals:
        value = implied_decimals(raw, spec.implied_decimals)
    else:
        value = float(int(raw.strip())) if spec.type == "int" else float(raw)
    if "exponent" in groups:  # mantissa and exponent sent as separate fields (PTW UNIDOS `2.6;E-3`)
        value *= 10.0 ** int(match["exponent"])
    if not math.isfinite(value):
        raise FrameError(f"field {spec.name}: not a finite number {raw!r}")
    value *= spec.scale
    return to_canonical(spec.name, value, spec.unit) if spec.unit else value


def record(profile: Profile, text: str) -> tuple[dict[str, float], set[str]]:
    """Fields and flags of one record. Raises FrameError if a required field is missing (no half readings)."""
    quantities = {}
    for spec in profile.fields:
        value = field_value(spec, text)
        if value is None and not spec.optional:
            raise FrameError(f"field {spec.name} not found")
        if value is not None:
            quantities[spec.name] = value
    flags = {f.name for f in profile.flags if rx(f.regex).search(text)}
    return quantities, flags


def is_ignored(profile: Profile, text: str) -> bool:
    """True for frames the profile says to skip."""
    return any(rx(p).search(text) for p in profile.ignore)

