"""What the monitor remembers of each study between objects: its distinct exposures (for repeats and for summing the
study's dose) and the largest totals its dose reports gave. Plain data and functions; the monitor owns the lock.
"""

from __future__ import annotations

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
                          event.dose_rp_gy, repeat_of)


@dataclass
class StudyState:
    exposures: dict[str, StoredExposure] = field(default_factory=dict)  # event_ref -> exposure, in order received
    reported_dap_gy_m2: float = 0.0
    reported_dose_rp_gy: float = 0.0
    touched: float = 0.0  # time.monotonic() of the last object of the study

    @classmethod
    def loaded(cls, exposures: Sequence[StoredExposure], dap: float, dose: float) -> StudyState:
        """From the history file (labels stored as sent: normalise them)."""
        for e in exposures:
            e.body_part, e.view, e.protocol = norm(e.body_part), norm(e.view), norm(e.protocol)
        return cls({e.event_ref: e for e in exposures}, dap, dose)

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

    def report(self, dap_total: float | None, dose_total: float | None) -> None:
        self.reported_dap_gy_m2 = max(self.reported_dap_gy_m2, dap_total or 0.0)
        self.reported_dose_rp_gy = max(self.reported_dose_rp_gy, dose_total or 0.0)

    def totals(self) -> tuple[int, dict[str, float]]:
        """(distinct exposures, {study_dap_gy_m2, study_dose_rp_gy}): the larger of the sum over distinct exposures
        and the totals the study's reports stated."""
        dap = math.fsum(e.dap_gy_m2 or 0.0 for e in self.exposures.values())
        dose = math.fsum(e.dose_rp_gy or 0.0 for e in self.exposures.values())
        return len(self.exposures), {"study_dap_gy_m2": max(dap, self.reported_dap_gy_m2),
                                     "study_dose_rp_gy": max(dose, self.reported_dose_rp_gy)}

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
