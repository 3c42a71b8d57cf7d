"""What the monitor remembers of each study between objects: its distinct exposures (for repeats and for summing the
study's dose) and the largest totals its dose reports gave. Plain data and functions; the monitor owns the lock.

Counting one irradiation once: a study with a dose report takes its totals from the report (the largest each report
stated: a cumulative report only grows), and where the report gives no total, from the sum of the report's own
events; image headers count only in studies without a report. Each irradiation event is one entry (by event_ref), so
an image's DAP, which is its whole event's, is never summed over the event's images or over its image and report
views.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Sequence

from agent.dose.history import StoredExposure
from agent.payloads.exposure import ExposureEvent


def norm(text: str | None) -> str | None:
    """Labels compare case-insensitively, ignoring surrounding blanks."""
    return None if text is None else text.strip().lower()


def event_time(event: ExposureEvent) -> float:
    """The exposure's time for windows and periods: acquisition, else receipt (epoch seconds)."""
    return (event.acquired_at or event.received_at).timestamp()


def stored(event: ExposureEvent, repeat_of: str | None) -> StoredExposure:
    """The memory of one exposure: labels normalised for comparison, dose values as sent."""
    return StoredExposure(event.event_ref, event_time(event), norm(event.body_part), norm(event.view),
                          norm(event.protocol), event.modality, event.irradiation_type, event.dap_gy_m2,
                          event.dose_rp_gy, repeat_of, event.source, fluoro_time_s(event))


def fluoro_time_s(event: ExposureEvent) -> float | None:
    """A fluoroscopy event's duration, s (its exposure time); None for acquisitions."""
    if event.irradiation_type != "fluoroscopy" or event.exposure_time_ms is None:
        return None
    return event.exposure_time_ms / 1000


TOTALS = ("study_dap_gy_m2", "study_dose_rp_gy", "study_fluoro_time_s")


def report_totals(summary) -> tuple[dict[str, float | None], dict[str, dict[str, float | None]]]:
    """A DoseSummary's totals and, for a biplane report, its per-plane totals (by_plane, when the payload has it),
    in the study quantities' names."""
    def of(values) -> dict[str, float | None]:
        get = values.get if isinstance(values, dict) else lambda name: getattr(values, name, None)
        return {"study_dap_gy_m2": get("dap_total_gy_m2"), "study_dose_rp_gy": get("dose_rp_total_gy"),
                "study_fluoro_time_s": get("fluoro_time_total_s")}
    planes = vars(summary).get("by_plane") or {}
    return of(summary), {str(plane): of(values) for plane, values in planes.items()}


def _larger(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class StudyState:
    exposures: dict[str, StoredExposure] = field(default_factory=dict)  # event_ref -> exposure, in order received
    reported: dict[str, float | None] | None = None  # the largest totals the study's reports gave; None: no report
    planes: dict[str, dict[str, float | None]] = field(default_factory=dict)  # per plane, the same
    touched: float = 0.0  # time.monotonic() of the last object of the study

    @classmethod
    def loaded(cls, exposures: Sequence[StoredExposure], report: tuple | None) -> StudyState:
        """From the history file (labels stored as sent: normalise them); report: (dap, dose, fluoro s, planes JSON)."""
        for e in exposures:
            e.body_part, e.view, e.protocol = norm(e.body_part), norm(e.view), norm(e.protocol)
        state = cls({e.event_ref: e for e in exposures})
        if report is not None:
            state.reported = dict(zip(TOTALS, report[:3]))
            state.planes = json.loads(report[3]) if report[3] else {}
        return state

    def add(self, event: ExposureEvent, repeat_of: str | None) -> None:
        """Remember an exposure; a second view of a known one (image and RDSR) only fills missing dose values."""
        known = self.exposures.get(event.event_ref)
        if known is None:
            self.exposures[event.event_ref] = stored(event, repeat_of)
            return
        if known.dap_gy_m2 is None:
            known.dap_gy_m2 = event.dap_gy_m2
        if known.dose_rp_gy is None:
            known.dose_rp_gy = event.dose_rp_gy
        if known.fluoro_time_s is None:
            known.fluoro_time_s = fluoro_time_s(event)
        if event.source == "rdsr":
            known.source = "rdsr"

    def report(self, totals: dict[str, float | None], planes: dict[str, dict[str, float | None]]) -> None:
        """A dose report's totals (study quantity -> value), per plane too; each kept at its largest."""
        self.reported = {q: _larger((self.reported or {}).get(q), totals.get(q)) for q in TOTALS}
        for plane, values in planes.items():
            mine = self.planes.setdefault(plane, {})
            for q in TOTALS:
                mine[q] = _larger(mine.get(q), values.get(q))

    def report_row(self) -> tuple:
        """(dap, dose, fluoro s, planes JSON) for the history file."""
        reported = self.reported or {}
        return (*(reported.get(q) for q in TOTALS), json.dumps(self.planes, sort_keys=True) if self.planes else None)

    def totals(self) -> tuple[int, dict[str, float]]:
        """(distinct exposures, {study_dap_gy_m2, study_dose_rp_gy, study_fluoro_time_s}): with a dose report, its
        totals (else the sum of its own events); without one, the sum over the distinct exposures."""
        events = list(self.exposures.values())
        if self.reported is not None:
            events = [e for e in events if e.source == "rdsr"]
        sums = {"study_dap_gy_m2": math.fsum(e.dap_gy_m2 or 0.0 for e in events),
                "study_dose_rp_gy": math.fsum(e.dose_rp_gy or 0.0 for e in events),
                "study_fluoro_time_s": math.fsum(e.fluoro_time_s or 0.0 for e in events)}
        if self.reported is not None:
            sums = {q: v if self.reported.get(q) is None else self.reported[q] for q, v in sums.items()}
        return len(self.exposures), sums

    def first_at(self) -> float | None:
        return min((e.at for e in self.exposures.values()), default=None)

    def repeated(self, event: ExposureEvent, key: Sequence[str], window_s: float) -> str | None:
        """The event_ref of the latest earlier exposure whose key fields equal the event's, acquired at most
        window_s before it (ties: the one received last); fluoroscopy never counts; None if none."""
        values = [norm(getattr(event, name)) for name in key]
        if any(v is None for v in values):
            return None
        at, best, best_rank = event_time(event), None, None
        for index, e in enumerate(self.exposures.values()):
            if (e.event_ref == event.event_ref or e.irradiation_type == "fluoroscopy" or not at - window_s <= e.at <= at
                    or [getattr(e, name) for name in key] != values):
                continue
            if best_rank is None or (e.at, index) > best_rank:
                best, best_rank = e.event_ref, (e.at, index)
        return best
