"""Does a unit use one target exposure index for everything? Plain data; the monitor owns the lock.

The deviation index DI = 10·log10(EI / EI_T) (IEC 62494-1:2008, 3.3) only means something when the target EI_T is set
per body part and view (AAPM Report TG-116, 2009, section 5: targets are established per examination). A unit that
sends the same EI_T for every body part and view is running on a vendor default, and its DI bands are then
meaningless. Flagged once the unit has sent at least MIN_EXAMS different body part/view pairs, spanning at least two
body parts, all with one and the same EI_T.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_EXAMS = 3
MIN_BODY_PARTS = 2


def unit_key(manufacturer: str | None, model: str | None, serial: str | None, station: str | None) -> str | None:
    """The unit's name: manufacturer / model / serial (station name without a serial); None if nothing is known."""
    parts = [p.strip() for p in (manufacturer, model, serial or station) if p and p.strip()]
    return " / ".join(parts) or None


@dataclass
class UnitTargets:
    exams: dict[str, dict[tuple[str, str], set[float]]] = field(default_factory=dict)

    def add(self, unit: str | None, body_part: str | None, view: str | None, target: float | None) -> None:
        if unit is None or target is None or not body_part:
            return
        key = (body_part.strip().lower(), (view or "").strip().lower())
        self.exams.setdefault(unit, {}).setdefault(key, set()).add(round(float(target), 6))

    def uniform(self, unit: str | None) -> bool:
        """True when the unit has used one EI_T for at least MIN_EXAMS body part/view pairs of MIN_BODY_PARTS parts."""
        exams = self.exams.get(unit or "", {})
        if len(exams) < MIN_EXAMS or len({bp for bp, _ in exams}) < MIN_BODY_PARTS:
            return False
        return len(set().union(*exams.values())) == 1

    def uniform_units(self) -> list[str]:
        return sorted(u for u in self.exams if self.uniform(u))
