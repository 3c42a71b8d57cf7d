"""The site's privacy policy applied to extracted values: which payload fields are free text and how they are
published (`privacy.free_text`), and how precisely times are published (`privacy.time_resolution`). Pure.

Free-text fields (FREE_TEXT_FIELDS) are the labels a person or a vendor typed: every one of them passes the screen
(agent.privacy.screen) with the object's own identifiers before it leaves extraction, whatever its source. A code
meaning from a standard scheme (SNOMED CT, DCM, LOINC) is controlled vocabulary and passes the screen unchanged; the
meaning of a private or local code is screened like any text, so the rule needs no knowledge of the source.

Modes:
- "screened" (default): the screen removes identifier components, long numbers and dates; a value it changed is
  listed in the payload's `warnings` as {"field": name, "reason": "screened"} (never with the removed text).
- "catalog": `protocol` and `station_name` are published only when they match (case- and space-insensitively) a name
  of the site's list (privacy.known_protocols / privacy.known_stations), else as "other" with
  {"field": name, "reason": "not-in-catalog"}; the other free-text fields are screened.
- "verbatim": as sent (the behaviour before screening), for sites whose policy allows it; check-config warns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from agent.privacy.screen import Identifiers, fold, screen

FreeTextMode = Literal["screened", "catalog", "verbatim"]
TimeResolution = Literal["exact", "minute", "hour", "day"]

# Payload field -> keep_numbers. Equipment identity (model, serial number) legitimately holds long numbers; the
# clinical labels do not, so a record number or date typed into them goes.
FREE_TEXT_FIELDS: dict[str, bool] = {
    "protocol": False, "body_part": False, "view": False, "station_name": False, "modality": False,
    "manufacturer": True, "model": True, "device_serial": True,
    # Defined terms (MOLYBDENUM, ...) when the vendor sends them; an unknown word is kept, so it is screened too.
    "anode_target_material": False, "filter_material": False,
}
CATALOG_FIELDS = ("protocol", "station_name")
OTHER = "other"
SCREENED, NOT_IN_CATALOG = "screened", "not-in-catalog"
# Published times coarsened by privacy.time_resolution (ts too: on intake payloads it is the receipt time).
TIME_FIELDS = ("acquired_at", "received_at", "irradiation_started_at", "irradiation_ended_at", "ts")


def catalog_key(name: str) -> str:
    """How catalog names compare: case, accents and runs of spaces ignored."""
    return re.sub(r"\s+", " ", fold(name)).strip()


@dataclass(frozen=True)
class TextPolicy:
    """How free-text fields are published: the mode and, for "catalog", the site's known names (catalog keys)."""

    mode: FreeTextMode = "screened"
    known_protocols: frozenset[str] = frozenset()
    known_stations: frozenset[str] = frozenset()

    @classmethod
    def of(cls, mode: FreeTextMode = "screened", known_protocols: Iterable[str] = (),
           known_stations: Iterable[str] = ()) -> "TextPolicy":
        return cls(mode, frozenset(map(catalog_key, known_protocols)), frozenset(map(catalog_key, known_stations)))

    def _catalog(self, name: str) -> frozenset[str]:
        return self.known_protocols if name == "protocol" else self.known_stations

    def apply(self, values: Mapping[str, object], ids: Identifiers) -> tuple[dict[str, object], list[dict[str, str]]]:
        """`values` with each free-text field published as the mode says, and the warnings for the payload.

        Fields not in FREE_TEXT_FIELDS pass unchanged; None stays None."""
        out, warnings = dict(values), []
        if self.mode == "verbatim":
            return out, warnings
        for name, keep_numbers in FREE_TEXT_FIELDS.items():
            text = out.get(name)
            if not isinstance(text, str):
                continue
            if self.mode == "catalog" and name in CATALOG_FIELDS:
                if catalog_key(text) not in self._catalog(name):
                    out[name] = OTHER
                    warnings.append({"field": name, "reason": NOT_IN_CATALOG})
                continue
            result = screen(text, ids, keep_numbers=keep_numbers)
            if result.changed:
                out[name] = result.text
                warnings.append({"field": name, "reason": SCREENED})
        return out, warnings


def coarsen(moment: datetime | None, resolution: TimeResolution) -> datetime | None:
    """`moment` truncated to the minute, hour or day in its own offset (a day starts at local midnight); "exact"
    returns it unchanged."""
    if moment is None or resolution == "exact":
        return moment
    moment = moment.replace(second=0, microsecond=0)
    if resolution in ("hour", "day"):
        moment = moment.replace(minute=0)
    if resolution == "day":
        moment = moment.replace(hour=0)
    return moment


def coarsen_times(payload, resolution: TimeResolution):
    """A copy of a payload (pydantic model) with its TIME_FIELDS coarsened; the payload itself when "exact"."""
    if resolution == "exact":
        return payload
    update = {name: coarsen(getattr(payload, name), resolution) for name in TIME_FIELDS
              if isinstance(getattr(payload, name, None), datetime)}
    return payload.model_copy(update=update) if update else payload

