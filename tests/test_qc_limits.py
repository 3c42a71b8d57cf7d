"""QC limits: US defaults match ../shared/reference/qc-limits.md; a jurisdiction's TOML overrides them; typos fail."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.qc import (HVL_MIN_CFR_PRE_2006, QcExposure, QcLimits, QcLimitsError, analyse, limits_from_mapping,
                      limits_from_toml)

# Copied by hand from qc-limits.md, 21 CFR 1020.30(m) Table 1, post-2006 "other X-ray systems" column.
REFERENCE_HVL_2006 = [(30, 0.3), (40, 0.4), (50, 0.5), (51, 1.3), (60, 1.5), (70, 1.8), (71, 2.5), (80, 2.9),
                      (90, 3.2), (100, 3.6), (110, 3.9), (120, 4.3), (130, 4.7), (140, 5.0), (150, 5.4)]
REFERENCE_HVL_PRE_2006_FROM_51 = [(51, 1.2), (60, 1.3), (70, 1.5), (71, 2.1), (80, 2.3), (90, 2.5), (100, 2.7),
                                  (110, 3.0), (120, 3.2), (130, 3.5), (140, 3.8), (150, 4.1)]

WASHINGTON = """
[qc.limits]
jurisdiction = "Washington (WAC 246-225-090)"
reproducibility_method = "range"        # 4 exposures, Emax - Emin <= 10 % of the mean
reproducibility_max_range_fraction = 0.10
reproducibility_min_exposures = 4
kvp_tolerance_fraction = 0.10           # e.g. Utah R313-28-56 uses +-10 % kVp
hvl_min_table_mm_al = "cfr_pre_2006"
"""


def test_defaults_are_the_us_reference_values():
    lim = QcLimits()
    assert lim.reproducibility_method == "cv"
    assert lim.reproducibility_max_cv == 0.05                  # 1020.31(b)(1)
    assert lim.reproducibility_min_exposures == 10             # 1020.31(b)(2): 10 consecutive exposures
    assert lim.reproducibility_max_span_s == 3600              # ... within 1 hour
    assert lim.linearity_max_coefficient == 0.10               # 1020.31(c)
    assert lim.kvp_tolerance_fraction == 0.05
    assert lim.timer_tolerance_fraction == 0.10
    assert (lim.timer_min_set_time_ms, lim.timer_tolerance_ms) == (0, 1.0)  # 10 % + 1 ms, short times judged
    assert lim.dap_tolerance_fraction == 0.35                  # displayed dose indication +-35 %
    assert [tuple(row) for row in lim.hvl_min_table_mm_al] == REFERENCE_HVL_2006
    assert "21 CFR" in lim.jurisdiction


def test_pre_2006_table_matches_the_reference():
    assert [tuple(row) for row in HVL_MIN_CFR_PRE_2006 if row[0] >= 51] == REFERENCE_HVL_PRE_2006_FROM_51


def test_a_jurisdiction_toml_overrides_and_keeps_the_rest():
    lim = limits_from_toml(WASHINGTON)
    assert lim.jurisdiction.startswith("Washington")
    assert (lim.reproducibility_method, lim.reproducibility_max_range_fraction) == ("range", 0.10)
    assert lim.reproducibility_min_exposures == 4
    assert lim.kvp_tolerance_fraction == 0.10
    assert lim.hvl_min_table_mm_al == HVL_MIN_CFR_PRE_2006
    assert lim.linearity_max_coefficient == 0.10 and lim.dap_tolerance_fraction == 0.35  # not overridden


def test_the_overridden_limits_drive_the_analysis():
    # Washington: 4 exposures 95, 105, 100, 100 µGy: range 10 = 10 % of the mean 100 -> pass (<= includes equality);
    # the federal rule would still want 10 exposures.
    exposures = [QcExposure(set_kvp=80, set_mas=10, air_kerma_ugy=k) for k in (95, 105, 100, 100)]
    washington = analyse("reproducibility", exposures, limits_from_toml(WASHINGTON))
    assert washington.verdict == "pass" and washington.jurisdiction.startswith("Washington")
    assert washington.criteria[0].name == "range_fraction" and washington.criteria[0].value == pytest.approx(0.10)
    assert analyse("reproducibility", exposures).verdict == "incomplete"


def test_explicit_hvl_rows_from_toml():
    lim = limits_from_toml("[qc.limits]\nhvl_min_table_mm_al = [[50, 1.5], [100, 2.5]]\n")
    assert lim.hvl_min_table_mm_al == ((50, 1.5), (100, 2.5))


def test_absent_table_gives_defaults_and_other_table_paths_work():
    assert limits_from_toml("[site]\nid = 'x'\n") == QcLimits()
    other = limits_from_toml("[rooms.qc]\ndap_tolerance_fraction = 0.3\n", table="rooms.qc")
    assert other.dap_tolerance_fraction == 0.3


def test_unknown_key_fails_naming_it():
    with pytest.raises(QcLimitsError) as err:
        limits_from_toml("[qc.limits]\nreproducibility_max_cvv = 0.05\n")
    assert "qc.limits.reproducibility_max_cvv: unknown key" in str(err.value)


def test_a_percent_typed_for_a_fraction_fails_naming_the_key():
    with pytest.raises(QcLimitsError, match=r"qc\.limits\.kvp_tolerance_fraction: .*less than 1"):
        limits_from_toml("[qc.limits]\nkvp_tolerance_fraction = 5\n")


@pytest.mark.parametrize("raw, key", [
    ({"reproducibility_method": "range"}, "needs reproducibility_max_range_fraction"),
    ({"reproducibility_min_exposures": 1}, "reproducibility_min_exposures"),
    ({"hvl_min_table_mm_al": [[60, 1.5], [50, 1.3]]}, "increasing kV"),
    ({"hvl_min_table_mm_al": "cfr_1990"}, "unknown HVL table"),
    ({"hvl_min_table_mm_al": [[60, 1.5]]}, "hvl_min_table_mm_al"),
])
def test_invalid_values_fail_with_the_key(raw, key):
    with pytest.raises(QcLimitsError, match=key):
        limits_from_mapping(raw)


def test_invalid_toml_is_a_limits_error():
    with pytest.raises(QcLimitsError, match="not valid TOML"):
        limits_from_toml("[qc.limits\n")


def test_limits_are_frozen():
    with pytest.raises(ValidationError):
        QcLimits().reproducibility_max_cv = 0.1  # type: ignore[misc]
