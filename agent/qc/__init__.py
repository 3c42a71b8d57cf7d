"""QC test analysis: pure functions from a test's exposures and the configured limits to a verdict.

No I/O here: sessions, storage, the web page and publishing build on these.
"""

from agent.qc.analysis import ANALYSES, analyse
from agent.qc.beam import dap_agreement, kvp_accuracy, timer_accuracy
from agent.qc.hvl import hvl, hvl_minimum
from agent.qc.limits import (HVL_MIN_CFR_2006, HVL_MIN_CFR_PRE_2006, HVL_TABLES, QcLimits, QcLimitsError,
                             limits_from_mapping, limits_from_toml)
from agent.qc.models import TEST_TYPES, Criterion, QcExposure, TestResult, TestType
from agent.qc.output import linearity_ma, linearity_mas, reproducibility

__all__ = [
    "ANALYSES", "HVL_MIN_CFR_2006", "HVL_MIN_CFR_PRE_2006", "HVL_TABLES", "TEST_TYPES", "Criterion", "QcExposure",
    "QcLimits", "QcLimitsError", "TestResult", "TestType", "analyse", "dap_agreement", "hvl", "hvl_minimum",
    "kvp_accuracy", "limits_from_mapping", "limits_from_toml", "linearity_ma", "linearity_mas", "reproducibility",
    "timer_accuracy",
]
