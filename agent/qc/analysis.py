"""The QC analyses by test type, and `analyse`, the one entry point a session calls after each exposure.

Each analysis is a pure function of the exposures so far and the limits; it never raises for missing or degenerate
data (n = 1, zero mAs, a reading without DICOM DAP, values whose arithmetic overflows) but answers "incomplete"
with the reason, so the page can show a
verdict as soon as one can be computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agent.qc.aec import aec_reproducibility, aec_thickness_tracking
from agent.qc.beam import dap_agreement, kvp_accuracy, timer_accuracy
from agent.qc.fluoro import fluoro_display_accuracy, fluoro_hvl, fluoro_kvp, fluoro_max_air_kerma_rate
from agent.qc.criteria import OUT_OF_NUMERIC_RANGE, result
from agent.qc.hvl import hvl
from agent.qc.limits import QcLimits
from agent.qc.mammo import mammo_hvl, mammo_kvp, mammo_output_reproducibility, mammo_phantom_dose
from agent.qc.models import TEST_TYPES, QcExposure, TestResult
from agent.qc.output import linearity_ma, linearity_mas, reproducibility

Analysis = Callable[[Sequence[QcExposure], QcLimits], TestResult]

ANALYSES: dict[str, Analysis] = {
    "reproducibility": reproducibility,
    "linearity_ma": linearity_ma,
    "linearity_mas": linearity_mas,
    "kvp_accuracy": kvp_accuracy,
    "timer_accuracy": timer_accuracy,
    "hvl": hvl,
    "dap_agreement": dap_agreement,
    "fluoro_max_air_kerma_rate": fluoro_max_air_kerma_rate,
    "fluoro_display_accuracy": fluoro_display_accuracy,
    "fluoro_kvp": fluoro_kvp,
    "fluoro_hvl": fluoro_hvl,
    "mammo_phantom_dose": mammo_phantom_dose,
    "mammo_kvp": mammo_kvp,
    "mammo_hvl": mammo_hvl,
    "mammo_output_reproducibility": mammo_output_reproducibility,
    "aec_reproducibility": aec_reproducibility,
    "aec_thickness_tracking": aec_thickness_tracking,
}
assert set(ANALYSES) == set(TEST_TYPES), "every test type needs an analysis"


def analyse(test_type: str, exposures: Sequence[QcExposure], limits: QcLimits | None = None) -> TestResult:
    """Verdict of `test_type` over the exposures so far (in session order), with US limits unless given."""
    try:
        analysis = ANALYSES[test_type]
    except KeyError:
        raise ValueError(f"unknown QC test type {test_type!r}; one of {', '.join(TEST_TYPES)}") from None
    limits = limits if limits is not None else QcLimits()
    try:
        return analysis(tuple(exposures), limits)
    except ArithmeticError:  # a sum or mean of finite values overflowed (math.fsum, statistics)
        return result(test_type, tuple(exposures), limits, reason=OUT_OF_NUMERIC_RANGE)
