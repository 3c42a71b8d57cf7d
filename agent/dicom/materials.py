"""Coded and written values of mammography and beam-quality attributes, as DICOM defined terms.

- Anode target and filter materials: the defined terms of Anode Target Material (0018,1191) and Filter Material
  (0018,7050), PS3.3 C.8.7.10 / C.8.11.5 (MOLYBDENUM, RHODIUM, TUNGSTEN, ALUMINUM, COPPER, NIOBIUM, EUROPIUM, LEAD;
  SILVER, TIN and TANTALUM are written the same way, by the element name, where the list in the edition at hand could
  not be checked). Reports code them with CID 10016 (anode) / CID 10006 (filter) SNOMED codes, mapped here by code
  value (SCT and the retired SRT values, as pydicom's PS3.16 tables give them), never by meaning.
- Laterality: L, R or B. Headers: Image Laterality (0020,0062) L/R/B (U = unpaired: no side) or Laterality
  (0020,0060) L/R; reports: the Laterality concept (SCT 272741003 / SRT G-C171) with CID 6022 values.
"""

from __future__ import annotations

Code = tuple[str, str]

MATERIAL_CODES: dict[Code, str] = {}
for _name, _sct, _srt in (("MOLYBDENUM", "71128006", "C-15000"), ("RHODIUM", "59801003", "C-16700"),
                          ("TUNGSTEN", "26194003", "C-16400"), ("SILVER", "41967008", "C-13700"),
                          ("ALUMINUM", "12503006", "C-12000"), ("COPPER", "66925006", "C-12700"),
                          ("LEAD", "88488004", "C-13200"), ("TIN", "12597001", "C-13900"),
                          ("TANTALUM", "45215009", "C-15600"), ("NIOBIUM", "767776000", None),
                          ("EUROPIUM", "767775001", None)):
    MATERIAL_CODES[(_sct, "SCT")] = _name
    if _srt:
        MATERIAL_CODES[(_srt, "SRT")] = _name
MATERIAL_TERMS = frozenset(MATERIAL_CODES.values())
SPELLINGS = {"ALUMINIUM": "ALUMINUM", "MO": "MOLYBDENUM", "RH": "RHODIUM", "W": "TUNGSTEN", "AG": "SILVER",
             "AL": "ALUMINUM", "CU": "COPPER"}  # British spelling and element symbols seen in headers

LATERALITY_CONCEPTS = frozenset({("272741003", "SCT"), ("G-C171", "SRT")})
LATERALITY_CODES: dict[Code, str] = {
    ("80248007", "SCT"): "L", ("T-04030", "SRT"): "L", ("7771000", "SCT"): "L", ("G-A101", "SRT"): "L",
    ("73056007", "SCT"): "R", ("T-04020", "SRT"): "R", ("24028007", "SCT"): "R", ("G-A100", "SRT"): "R",
    ("63762007", "SCT"): "B", ("T-04080", "SRT"): "B", ("51440002", "SCT"): "B", ("G-A102", "SRT"): "B",
}
HEADER_LATERALITIES = frozenset({"L", "R", "B"})


def material_term(text: str | None) -> str | None:
    """A header's material value(s) as defined terms, "\\"-joined in order; unknown words are kept upper case."""
    if not text:
        return None
    words = [word.strip().upper() for word in text.split("\\") if word.strip()]
    terms = [SPELLINGS.get(word, word) for word in words]
    return "\\".join(dict.fromkeys(terms)) or None


def material_of_code(code: Code | None) -> str | None:
    """The defined term of a CID 10016 / CID 10006 code, or None for a code not in those groups."""
    return MATERIAL_CODES.get(code) if code else None


def header_laterality(text: str | None) -> str | None:
    """L/R/B from a header value; U (unpaired) and anything else is no side."""
    value = (text or "").strip().upper()
    return value if value in HEADER_LATERALITIES else None


def laterality_of_code(code: Code | None) -> str | None:
    """L/R/B of a CID 6022 code (breast or generic side)."""
    return LATERALITY_CODES.get(code) if code else None
