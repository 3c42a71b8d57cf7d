"""What a driver yields (Reading), what it counts (Counters), and how parsers say "bad frame" or "error reply"."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from types import MappingProxyType


class FrameError(ValueError):
    """A frame failed its checks (checksum, format, range): drop it, count it, keep reading."""


class ErrorReply(Exception):
    """The instrument answered with an error code, e.g. DIAMENTOR `E4` -> ErrorReply('E4', 'charge_overflow')."""

    def __init__(self, code: str, name: str) -> None:
        super().__init__(f"{code} {name}")
        self.code, self.name = code, name


@dataclass(frozen=True)
class Reading:
    """One complete measurement in canonical units (units are in the quantity names: `air_kerma_ugy`, `dap_gy_m2`).

    `series` holds per-pulse values such as the Victoreen's individual kV peaks. `raw` is the frame(s) as received,
    for audit. `monotonic` and `wall_utc` are when the reading was completed.
    """

    instrument_id: str
    quantities: Mapping[str, float]
    flags: frozenset[str] = frozenset()
    raw: bytes = b""
    monotonic: float = field(default_factory=time.monotonic)
    wall_utc: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    series: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read-only views so a Reading handed to another thread cannot be changed under it.
        object.__setattr__(self, "quantities", MappingProxyType(dict(self.quantities)))
        object.__setattr__(self, "series", MappingProxyType({k: tuple(v) for k, v in self.series.items()}))
        object.__setattr__(self, "flags", frozenset(self.flags))


def make_reading(instrument_id: str, quantities: Mapping[str, float], raw: bytes, flags: Iterable[str] = (),
                 series: Mapping[str, Iterable[float]] | None = None) -> Reading:
    """A Reading stamped now."""
    series = {k: tuple(v) for k, v in (series or {}).items()}
    return Reading(instrument_id, quantities, frozenset(flags), raw, series=series)


@dataclass
class Counters:
    """Per-driver counts of what happened on the line, for equipment status. `last_error` is the latest problem."""

    frames_ok: int = 0
    frames_bad: int = 0
    bytes_discarded: int = 0
    timeouts: int = 0
    error_replies: int = 0
    last_error: str = ""

    def snapshot(self) -> Counters:
        """A copy, safe to hand to another thread."""
        return replace(self)
