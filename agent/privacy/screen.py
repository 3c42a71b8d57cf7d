"""The free-text screen: one pure rule that removes patient identifiers from a label before it is published or stored.

Free text reaches the agent in labels a person types at the modality: ER and portable workflows put the patient's name
or record number into the protocol name or series description, and stations get renamed per case. The structured
identifiers of the same object (Patient's Name, Patient ID, Other Patient IDs, Accession Number, birth date) tell
what to look for, so the rule is exact for the object at hand and leaves clinical words alone.

The rule, applied to `text` with the object's `Identifiers`:
1. The text is normalized first (`normalize`: NFKC, so full-width letters and digits are plain ones; every dash is
   "-"; invisible format characters such as zero-width spaces and soft hyphens are dropped). Tokens are the maximal
   runs of letters and digits, with the combining marks that follow them (so "Thorax^Zebedee_PA" is Thorax, Zebedee,
   PA); the text between tokens (spaces, punctuation) is kept. Comparison ignores case, accents and the Cyrillic and
   Greek letters that look like Latin ones (`fold`).
2. A token is removed when it equals an identifier component, or contains one of at least CONTAINS_MIN_CHARS
   characters ("ZebedeeThorax"), or, when it has a digit, is a fragment of at least FRAGMENT_MIN_CHARS characters of
   an identifier component that has digits ("7Q447" of Patient ID "7Q4471150"). Shorter components only match
   whole tokens: a surname "Ann" must not remove "scANNing". Runs of tokens are read as one too, so a separator
   typed inside an identifier does not hide it: a run whose gaps are short (at most GAP_MAX_CHARS) is removed when
   its letters and digits, joined, equal a component or are a fragment of a number-bearing one ("Z e b e d e e",
   "AB-12-CD"); a run joined by single punctuation marks ("Zebe-dee_Thorax") also when it contains a long component.
3. Unless `keep_numbers` (serial numbers, model names), a token holding a run of NUMBER_RUN_MIN_DIGITS or more digits
   is removed (a record or accession number the object does not carry; digits in groups joined by single spaces or
   dashes count together, "1234 5678", "12 34 56 78"; a single digit is a count), and so is anything date-like
   (1958-03-17, 17.03.1958, 17/3/58, 17 3 1958, 03/1958, 17 Mar 1958, March 17, 1958): dates identify together with
   the other fields.
4. Separators left dangling where tokens were removed are tidied; what remains is the screened label (normalized),
   or None when nothing clinical is left. A label from which nothing was removed is returned exactly as sent. The
   rule is applied again to its own tidied result until nothing more goes (tidying can bring the parts of an
   identifier together).

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
GAP_MAX_CHARS = 3  # separators this short between tokens may hide an identifier typed in parts ("AB 12 CD")
RUN_MAX_CHARS = 64
NUMBER_GAPS = frozenset(" -")  # digit groups these join are one number ("1234 5678"); "7.5" is a decimal

TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
MONTHS = ("jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|april|june|july|august|"
          "september|october|november|december|janv|fev|mars|avr|mai|juin|juil|aout|dez|okt|mrz|maerz|maart|mei|"
          "abr|dic|giu|lug|ott")  # not "set", "gen", "ago": English words in protocol names
_MONTH = rf"(?:{MONTHS})\.?"
DATE_LIKE = re.compile(
    r"(?<![^\W_])(?:"
    r"(?<!\d[./-])\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"  # 1958-03-17, 17.03.1958, 17/3/58; not "5-01.01" of "L4-5-..."
    r"|(?<!\d[./-])\d{1,2}[./-](?:19|20)\d{2}"  # 03/1958; not "5-2000" of "L4-5-2000-01-01"
    r"|(?:19|20)\d{2}[./-]\d{1,2}"  # 1958-03
    r"|\d{1,2} \d{1,2} (?:19|20)\d{2}|(?:19|20)\d{2} \d{1,2} \d{1,2}"  # 17 3 1958, 1958 3 17
    rf"|\d{{1,2}}(?:st|nd|rd|th)?[ ./-]*{_MONTH}[ ./-]*(?:\d{{2,4}})?"  # 17 Mar 1958, 17-mar-58, 17Mar
    rf"|{_MONTH}[ ./-]*\d{{1,2}}(?:st|nd|rd|th)?,?[ ./-]*(?:\d{{2,4}})?"  # March 17, 1958
    rf"|{_MONTH}[ ./-]*(?:19|20)\d{{2}}"  # Mar 1958
    r")(?![^\W_])", re.IGNORECASE | re.UNICODE)
NUMBER_RUN = re.compile(rf"\d{{{NUMBER_RUN_MIN_DIGITS},}}")


# Letters that read as Latin ones but NFKD does not fold: Cyrillic and Greek look-alikes (a label "Zеbеdее" with
# Cyrillic е reads as the Latin name) and Latin letters with a stroke. Keys are casefolded; a letter whose capital and
# small forms look like different Latin letters (Greek ν, Ν) maps to one of them. Not the whole Unicode confusables
# list (UTS #39): the letters of the scripts a look-alike name is written with in practice.
LOOK_ALIKES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "і": "i", "ј": "j", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ү": "y",
    "α": "a", "β": "b", "ε": "e", "ζ": "z", "η": "h", "ι": "i", "κ": "k", "μ": "m", "ν": "n", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "y", "χ": "x", "ϲ": "c",
    "ı": "i", "ø": "o", "ł": "l", "đ": "d", "ħ": "h", "ɑ": "a",
})
SLASHES = "\u2044\u2215\u29f8"  # fraction slash, division slash, big solidus


def normalize(text: str) -> str:
    """`text` as the screen reads it: NFKC (full-width and styled letters and digits become plain ones), every dash
    (Unicode category Pd, and the minus sign) "-", slash look-alikes "/", invisible format characters (category Cf:
    zero-width spaces and joiners, soft hyphens, direction marks) dropped."""
    if text.isascii():
        return text
    out = []
    for char in unicodedata.normalize("NFKC", text):
        category = unicodedata.category(char)
        if category == "Cf":
            continue
        out.append("-" if category == "Pd" or char == "\u2212" else "/" if char in SLASHES else char)
    return "".join(out)


def token_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each token of `text`: a maximal run of letters and digits with the combining marks that follow
    (a mark inside "Zeb\u0301edee" does not cut the name in two)."""
    if text.isascii():
        return [match.span() for match in TOKEN.finditer(text)]
    spans, start = [], None
    for index, char in enumerate(text):
        if char.isalnum() or (start is not None and unicodedata.category(char).startswith("M")):
            start = index if start is None else start
        elif start is not None:
            spans.append((start, index))
            start = None
    if start is not None:
        spans.append((start, len(text)))
    return spans


def fold(text: str) -> str:
    """Case-, accent- and look-alike-insensitive form of `text` (NFKD, combining marks and format characters
    dropped, casefolded, LOOK_ALIKES mapped)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(char for char in decomposed
                   if not unicodedata.combining(char) and unicodedata.category(char) not in ("Cf", "Mn"))
    return kept.casefold().translate(LOOK_ALIKES)


@dataclass(frozen=True)
class Identifiers:
    """The components of one object's patient identifiers, folded; build with `Identifiers.of`."""

    components: frozenset[str] = frozenset()
    # Derived once, for the token checks: components long enough to match inside a token, and those with digits.
    _long: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    _numbered: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    _longest: int = field(init=False, repr=False, compare=False, default=0)
    # The same, for fast search: one pattern of the long components, the number-bearing ones joined by NUL (a token
    # has no NUL, so "token in blob" is "token in one of them").
    _long_re: re.Pattern | None = field(init=False, repr=False, compare=False, default=None)
    _numbered_blob: str = field(init=False, repr=False, compare=False, default="")
    _blob: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        # a run longer than any identifier value (LO and PN component groups hold 64 characters, PS3.5 6.2) cannot
        # equal one: this bounds the runs read, whatever a malformed object carries
        object.__setattr__(self, "_longest", min(max(map(len, self.components), default=0), RUN_MAX_CHARS))
        object.__setattr__(self, "_long", tuple(c for c in self.components if len(c) >= CONTAINS_MIN_CHARS))
        # components are runs of letters and digits: one that is not all letters has a digit
        object.__setattr__(self, "_numbered", tuple(c for c in self.components if not c.isalpha()))
        if self._long:
            longest_first = sorted(self._long, key=len, reverse=True)
            object.__setattr__(self, "_long_re", re.compile("|".join(map(re.escape, longest_first))))
        object.__setattr__(self, "_numbered_blob", "\x00".join(self._numbered))
        object.__setattr__(self, "_blob", "\x00".join(self.components))

    @classmethod
    def of(cls, values: Iterable[str | None], birth_dates: Iterable[str | None] = ()) -> "Identifiers":
        """Components of identifier `values` (names, ids, accession numbers: each token, and each value with its
        separators removed) and of `birth_dates` (DICOM DA, YYYYMMDD: written in their usual spellings)."""
        parts: set[str] = set()
        for value in values:
            if not value:
                continue
            value = normalize(value)
            tokens = [fold(value[start:end]) for start, end in token_spans(value)]
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


def _identifying(folded: str, ids: Identifiers) -> bool:
    """Rule 2 for one folded token."""
    if folded in ids.components or (ids._long_re is not None and ids._long_re.search(folded)):
        return True
    return (len(folded) >= FRAGMENT_MIN_CHARS and not folded.isalpha()  # a token has letters and digits only
            and folded in ids._numbered_blob)


def _run_identifying(joined: str, compound: bool, ids: Identifiers) -> str | None:
    """Rule 2 for the joined letters and digits of a run of tokens (`compound`: joined by single punctuation):
    "whole" when the run is an identifier or a fragment of one, "contains" when it holds one, else None."""
    if len(joined) < FRAGMENT_MIN_CHARS:
        return None
    if joined in ids.components or (not joined.isalpha() and joined in ids._numbered_blob):
        return "whole"
    return "contains" if compound and ids._long_re is not None and ids._long_re.search(joined) else None


def _group(token: str) -> bool:
    """A group of a number typed in groups: two digits or more ("2" of "0000 2 views" is a count)."""
    return len(token) >= 2 and token.isdigit()


def _runs(text: str, spans: list[tuple[int, int]], folded: list[str], ids: Identifiers,
          keep_numbers: bool) -> list[tuple[int, int, bool]]:
    """(first, last, whole) token indexes of the shortest runs of two or more tokens that identify (rule 2), or are
    a number in groups (rule 3); `whole` is False for a run that only contains an identifier component."""
    runs = []
    for first in range(len(spans) - 1):
        joined, compound = folded[first], True
        before = text[spans[first - 1][1]:spans[first][0]] if first else " "
        glued = len(before) == 1 and not before.isspace()  # "5" of "L4-5" is part of a word, not a number's start
        digits = len(joined) if _group(joined) and not glued else -1  # -1: the run is not digit groups
        for last in range(first + 1, len(spans)):
            gap = text[spans[last - 1][1]:spans[last][0]]
            if len(gap) > GAP_MAX_CHARS or len(joined) - len(folded[first]) > ids._longest + GAP_MAX_CHARS:
                break
            compound = compound and len(gap) == 1 and not gap.isspace()
            joined += folded[last]
            grouped = digits >= 0 and _group(folded[last]) and gap in NUMBER_GAPS
            digits = digits + len(folded[last]) if grouped else -1
            if digits < 0 and not compound and joined not in ids._blob:
                break  # no longer part of any identifier (nor will a longer run be), and no number
            if not keep_numbers and digits >= NUMBER_RUN_MIN_DIGITS:
                runs.append((first, last, True))
                break
            if kind := _run_identifying(joined, compound, ids):
                runs.append((first, last, kind == "whole"))
                break
            if digits < 0 and not ids:
                break
    return runs


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
    blanked = _screen_once(normalize(text), ids, keep_numbers)
    if blanked is None:
        return Screened(text, False)
    screened = _tidy(blanked)
    while screened is not None and (blanked := _screen_once(screened, ids, keep_numbers)) is not None:
        screened = _tidy(blanked)  # each pass removes at least one token: this ends
    return Screened(screened, True)


def _screen_once(text: str, ids: Identifiers, keep_numbers: bool) -> str | None:
    """`text` (normalized) with the spans to remove blanked, or None when nothing is to be removed."""
    spans: list[tuple[int, int]] = []
    if not keep_numbers:
        spans += [match.span() for match in DATE_LIKE.finditer(text)]
    tokens = token_spans(text)
    folded = [fold(text[start:end]) for start, end in tokens]
    hits = {index for index, token in enumerate(folded)
            if _identifying(token, ids) or (not keep_numbers and NUMBER_RUN.search(token))}
    runs, single = _runs(text, tokens, folded, ids, keep_numbers), frozenset(hits)
    for first, last, whole in runs:  # a run that contains a component goes only when nothing shorter in it does:
        inner = any(first <= index <= last for index in single) or any(  # "Chest-Zebe-dee" keeps "Chest"
            (f, l) != (first, last) and first <= f and l <= last for f, l, _ in runs)
        if whole or not inner:  # an identifier or a number goes whole: "2000-01-01" with the birth year in it
            hits.update(range(first, last + 1))
    spans += [tokens[index] for index in hits]
    if not spans:
        return None
    kept, position = [], 0
    for start, end in sorted(spans):
        start = max(start, position)
        if end > start:
            kept += [text[position:start], " " * (end - start)]
            position = end
    return "".join(kept) + text[position:]
