"""Patient-level cumulative dose: a patient's studies in this room and their totals, summed over a sliding window.
Plain data and pure functions; the monitor owns the lock and the history file keeps the rows (patient_studies).

The patient is only ever the keyed ref of the Patient ID (agent.dicom.patient.patient_ref). Worked example (rule:
Ka,r above 5 Gy over 60 days): studies of 2.0 Gy on 1 March, 1.5 Gy on 20 March and 2.0 Gy on 25 April give totals
2.0, 3.5 and 5.5 Gy: the third study crosses the level and the alert names all three studies. A fourth study on
10 May (the 1 March study now outside the window: 3.5 + its own) crosses nothing new unless it takes the total from
at or below 5 Gy to above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DAY_S = 86400.0
QUANTITIES = {"study_dap_gy_m2": "patient_dap_gy_m2", "study_dose_rp_gy": "patient_dose_rp_gy",
              "study_fluoro_time_s": "patient_fluoro_time_s"}


@dataclass
class PatientStudy:
    at: float  # the study's first exposure, epoch seconds
    totals: dict[str, float]  # study quantity -> value (agent.dose.state.TOTALS)


@dataclass
class PatientState:
    studies: dict[str, PatientStudy] = field(default_factory=dict)  # study_ref -> its totals
    shared: bool = False  # too many studies for one person: not summed (the monitor says why, once)

    @classmethod
    def loaded(cls, rows) -> PatientState:
        """From the history's (study_ref, at, dap, dose, fluoro s) rows."""
        return cls({ref: PatientStudy(at, {"study_dap_gy_m2": dap or 0.0, "study_dose_rp_gy": dose or 0.0,
                                           "study_fluoro_time_s": fluoro or 0.0})
                    for ref, at, dap, dose, fluoro in rows})

    def update(self, study_ref: str, at: float, totals: dict[str, float]) -> None:
        known = self.studies.get(study_ref)
        self.studies[study_ref] = PatientStudy(min(at, known.at) if known else at, dict(totals))

    def in_window(self, until: float, window_days: int) -> list[str]:
        """The study refs that began in (until - window, until], oldest first."""
        since = until - window_days * DAY_S
        return [ref for ref, s in sorted(self.studies.items(), key=lambda item: (item[1].at, item[0]))
                if since < s.at <= until]

    def window_totals(self, refs: list[str], quantity: str, without: str | None = None) -> dict[str, float]:
        """{patient quantity: the study quantity summed over `refs`} (leaving `without` out)."""
        return {QUANTITIES[quantity]: math.fsum(self.studies[r].totals.get(quantity, 0.0) for r in refs
                                                if r != without)}
