"""The free-text screen: one pure rule that removes patient identifiers from a label before it is published or stored.

Free text reaches the agent in labels a person types at the modality: ER and portable workflows put the patient's name
or record number into the protocol name or series description, and stations get renamed per case. The structured
identifiers of the same object (Patient's Name, Patient ID, Other Patient IDs, Accession Number, birth date) tell
what to look for, so the rule is exact for the object at hand and leaves clinical words alone.

The rule, applied to `text` with the object's `Identifiers`:
1. Tokens are the maximal runs of letters and digits (so "Thorax^Zebedee_PA" is Thorax, Zebedee, PA); the text
   between tokens (spaces, punctuation) is kept. Comparison ignores case and accents.
2. A token is removed when it equals an identifier component, or contains one of at least CONTAINS_MIN_CHARS
   characters ("ZebedeeThorax"), or, when it has a digit, is a fragment of at least FRAGMENT_MIN_CHARS characters of
   an identifier component that has digits ("7Q447" of Patient ID "7Q4471150"). Shorter components only match
   whole tokens: a surname "Ann" must not remove "scANNing".
3. Unless `keep_numbers` (serial numbers, model names), a token holding a run of NUMBER_RUN_MIN_DIGITS or more digits
   is removed (a record or accession number the object does not carry), and so is anything date-like (1958-03-17,
   17.03.1958, 17/3/58, 03/1958, 17 Mar 1958, March 17, 1958): dates identify together with the other fields.
4. Separators left dangling where tokens were removed are tidied; what remains is the screened label, or None when
   nothing clinical is left.

`screen` reports whether anything was removed; it never returns or logs the removed text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

CONTAINS_MIN_CHARS = 4  # components this long are removed inside longer tokens too
FRAGMENT_MIN_CHARS = 4  # a token this long cut out of a number-bearing identifier is removed
COMPONENT_MIN_CHARS = 2  # single letters (initials) identify no one and would remove "L", "R", "A"
NUMBER_RUN_MIN_DIGITS = 5

TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
MONTHS = ("jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|april|june|july|august|"
          "september|october|november|december|janv|fev|mars|avr|mai|juin|juil|aout|dez|okt|mrz|maerz|maart|mei|"
          "abr|dic|giu|lug|ott")  # not "set", "gen", "ago": English words in protocol names
_MONTH = rf"(?:{MONTHS})\.?"
DATE_LIKE = re.compile(
    r"(?<![^\W_])(?:"
    r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"  # 1958-03-17, 17.03.1958, 17/3/58
    r"|\d{1,2}[./-](?:19|20)\d{2}|(?:19|20)\d{2}[./-]\d{1,2}"  # 03/1958, 1958-03
    rf"|\d{{1,2}}(?:st|nd|rd|th)?[ ./-]*{_MONTH}[ ./-]*(?:\d{{2,4}})?"  # 17 Mar 1958, 17-mar-58, 17Mar
    rf"|{_MONTH}[ ./-]*\d{{1,2}}(?:st|nd|rd|th)?,?[ ./-]*(?:\d{{2,4}})?"  # March 17, 1958
    rf"|{_MONTH}[ ./-]*(?:19|20)\d{{2}}"  # Mar 1958
    r")(?![^\W_])", re.IGNORECASE | re.UNICODE)
NUMBER_RUN = re.compile(rf"\d{{{NUMBER_RUN_MIN_DIGITS},}}")


def fold(text: str) -> str:
    """Case- and accent-insensitive form of `text` (NFKD, combining marks dropped, casefolded)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


@dataclass(frozen=True)
class Identifiers:
    """The components of one object's patient identifiers, folded; build with `Identifiers.of`."""

    components: frozenset[str] = frozenset()
    # Derived once, for the token checks: components long enough to match inside a token, and those with digits.
    _long: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    _numbered: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_long", tuple(c for c in self.components if len(c) >= CONTAINS_MIN_CHARS))
        # components are runs of letters and digits: one that is not all letters has a digit
        object.__setattr__(self, "_numbered", tuple(c for c in self.components if not c.isalpha()))

    @classmethod
    def of(cls, values: Iterable[str | None], birth_dates: Iterable[str | None] = ()) -> "Identifiers":
        """Components of identifier `values` (names, ids, accession numbers: each token, and each value with its
        separators removed) and of `birth_dates` (DICOM DA, YYYYMMDD: written in their usual spellings)."""
        parts: set[str] = set()
        for value in values:
            if not value:
                continue
            tokens = [fold(token) for token in TOKEN.findall(value)]
            parts.update(tokens)
            parts.add("".join(tokens))  # "ACC-88123-XZ" typed as "ACC88123XZ"
        for date in birth_dates:
            parts.update(date_spellings(date))
        return cls(frozenset(part for part in parts if len(part) >= COMPONENT_MIN_CHARS))

    def __bool__(self) -> bool:
        return bool(self.components)


def date_spellings(date: str | None) -> set[str]:
    """A DICOM date (YYYYMMDD) as it may be typed without separators: 19580317, 17031958, 03171958, 580317, 170358,
    031758 (tokens: "17.03.1958" is matched by the date-like rule, "17031958" here as an identifier component)."""
    digits = re.sub(r"\D", "", date or "")
    if len(digits) != 8:
        return set()
    year, month, day = digits[:4], digits[4:6], digits[6:]
    short = year[2:]
    return {year + month + day, day + month + year, month + day + year, short + month + day, day + month + short,
            month + day + short}


@dataclass(frozen=True)
class Screened:
    """The screened label (None when nothing was left) and whether the screen removed anything."""

    text: str | None
    changed: bool


def _identifying(token: str, ids: Identifiers) -> bool:
    folded = fold(token)
    if folded in ids.components or any(component in folded for component in ids._long):
        return True
    return (len(folded) >= FRAGMENT_MIN_CHARS and not folded.isalpha()  # a token has letters and digits only
            and any(folded in component for component in ids._numbered))


def _tidy(text: str) -> str | None:
    """Tidy the separators left where tokens were removed: an emptied bracket goes, a run of separators holding a
    space becomes one space, other runs their first character; None when no letter or digit is left."""
    kept = re.sub(r"\(\s*\)|\[\s*\]", " ", text)
    kept = re.sub(r"[\s^_/\\|,;:.-]*\s[\s^_/\\|,;:.-]*", " ", kept)
    kept = re.sub(r"([\^_/\\|,;:.-])[\^_/\\|,;:.-]+", r"\1", kept)
    kept = kept.strip(" ^_/\\|,;:.-")
    return kept if TOKEN.search(kept) else None


@lru_cache(maxsize=4096)  # a dose report repeats its labels in every irradiation event
def screen(text: str | None, ids: Identifiers, *, keep_numbers: bool = False) -> Screened:
    """Apply the module's rule to one label. Pure; `text` None gives Screened(None, False)."""
    if not text:
        return Screened(text or None, False)
    spans: list[tuple[int, int]] = []
    if not keep_numbers:
        spans += [match.span() for match in DATE_LIKE.finditer(text)]
    for match in TOKEN.finditer(text):
        token = match.group()
        if _identifying(token, ids) or (not keep_numbers and NUMBER_RUN.search(token)):
            spans.append(match.span())
    if not spans:
        return Screened(text, False)
    removed = bytearray(len(text))
    for start, end in spans:
        removed[start:end] = b"\x01" * (end - start)
    kept = "".join(" " if removed[i] else char for i, char in enumerate(text))
    return Screened(_tidy(kept), True)
