"""The regulation's own mechanics, with worked examples.

HVL: the examples printed under the HVL table as the states reproduce 21 CFR 1020.30(m)(1) (Illinois 32 IAC 360
Table B, footnote 1: "in the column entitled 'Other X-ray Systems' operated at 20 kVp and 95 kVp, the minimum HVL
required would be 0.2 and 2.6 millimeters of aluminum"), the dental intraoral column (Arizona R9-7-605 Table I) and
the mammography rule kVp/100. Linearity and timer: the published formulas (1020.31(c): |X1 - X2| <= 0.10 (X1 + X2);
timer +-(10 % + 1 ms)) worked by hand in the comments; the numbers of a published procedure's filled-in example could
not be retrieved here, so these are hand calculations of the same formulas.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.qc import QcExposure, QcLimits, QcLimitsError, analyse, hvl_minimum, limits_from_mapping
from agent.qc.hvl import hvl_from_attenuation
from agent.qc.limits import HVL_MIN_CFR_DENTAL_INTRAORAL, HVL_MIN_CFR_PRE_2006

US = QcLimits()
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def test_hvl_footnote_examples_pre_2006_column():
    assert hvl_minimum(HVL_MIN_CFR_PRE_2006, 20).mm_al == pytest.approx(0.2)  # extrapolated below 30 kVp
    assert hvl_minimum(HVL_MIN_CFR_PRE_2006, 95).mm_al == pytest.approx(2.6)  # interpolated 90..100 kVp


def test_hvl_dental_intraoral_column_chosen_per_unit():
    dental = QcLimits(hvl_min_table_mm_al="cfr_dental_intraoral")
    assert dental.hvl_min_table_mm_al == HVL_MIN_CFR_DENTAL_INTRAORAL
    # A 65 kV intraoral unit needs 1.5 mm Al (the "other" 2006 column would ask 1.65).
    crit = analyse("hvl", [QcExposure(kvp=65, hvl_mm_al=1.5)], dental).criteria[0]
    assert crit.passed is True and crit.limit == pytest.approx(1.5) and crit.source == "federal"
    assert analyse("hvl", [QcExposure(kvp=65, hvl_mm_al=1.5)], US).verdict == "fail"


def test_hvl_mammography_kvp_over_100_and_the_optional_upper_bound():
    mammo = QcLimits(hvl_rule="mammography", mammography_target_filter="Mo/Mo")
    # 28 kVp: minimum 0.28 mm Al, upper 0.28 + 0.12 = 0.40.
    res = analyse("hvl", [QcExposure(kvp=28, hvl_mm_al=0.32)], mammo)
    assert [(c.name, c.limit, c.passed) for c in res.criteria] == [
        ("hvl_minimum", pytest.approx(0.28), True), ("hvl_maximum", pytest.approx(0.40), True)]
    assert analyse("hvl", [QcExposure(kvp=28, hvl_mm_al=0.27)], mammo).verdict == "fail"
    assert analyse("hvl", [QcExposure(kvp=28, hvl_mm_al=0.41)], mammo).verdict == "fail"


def test_hvl_from_an_attenuation_series_worked_example():
    # Open beam 1000 µGy; 2 mm Al 620 µGy; 3 mm Al 480 µGy. Half = 500 is between 620 and 480:
    # HVL = 2 + (3 - 2) ln(2 x 620 / 1000) / ln(620 / 480) = 2 + 0.215111 / 0.255933 = 2.8405 mm Al.
    assert hvl_from_attenuation({0.0: 1000, 2.0: 620, 3.0: 480}).hvl_mm_al == pytest.approx(2.8405, abs=1e-4)
    shots = [QcExposure(set_kvp=80, filtration_mm_al=t, air_kerma_ugy=k)
             for t, k in ((0, 1000), (0, 1000), (2, 620), (3, 480))]
    crit = analyse("hvl", shots, US).criteria[0]
    # No kV meter: the indicated 80 kV is used for the minimum (2.9 mm Al) and said so -> 2.84 < 2.9 fails.
    assert crit.inputs["kv_basis"].startswith("indicated") and crit.limit == pytest.approx(2.9)
    assert crit.passed is False
    assert "add thicker aluminium" in analyse("hvl", shots[:3], US).criteria[0].reason


def test_linearity_worked_example_and_the_pair_conditions():
    # 10 mAs: 1000 µGy -> X1 = 0.100 mGy/mAs; 20 mAs: 2100 µGy -> X2 = 0.105: |X1 - X2| = 0.005 <= 0.10 x 0.205.
    at = lambda mas, k, s=0: QcExposure(set_kvp=70, set_mas=mas, air_kerma_ugy=k,  # noqa: E731
                                        measured_at=T0 + timedelta(seconds=s))
    crit = analyse("linearity_mas", [at(10, 1000), at(20, 2100)], US).criteria[0]
    assert crit.passed is True and crit.value == pytest.approx(0.005 / 0.205) and crit.source == "federal"
    # 10 and 25 mAs are 2.5x apart: no 1020.31(c) pair -> incomplete, not pass/fail.
    res = analyse("linearity_mas", [at(10, 1000), at(25, 9000)], US)
    assert res.verdict == "incomplete" and "2.5x apart" in res.reason
    # Stations measured 2 hours apart: outside the time window -> incomplete.
    res = analyse("linearity_mas", [at(10, 1000), at(20, 2100, 7200)], US)
    assert res.verdict == "incomplete" and "7200 s" in res.reason


def test_timer_two_to_thirty_ms_worked_examples():
    # 2 ms: limit 0.2 + 1 = 1.2 ms; 3.1 ms measured = +1.1 -> pass. 20 ms: limit 3 ms; 23.5 -> +3.5 -> fail.
    res = analyse("timer_accuracy", [QcExposure(set_time_ms=2, exposure_time_ms=3.1),
                                     QcExposure(set_time_ms=20, exposure_time_ms=23.5)], US)
    assert [c.passed for c in res.criteria] == [True, False]
    assert res.criteria[0].source == "manufacturer"


def test_kv_quantity_is_named_in_the_criterion():
    crit = analyse("kvp_accuracy", [QcExposure(set_kvp=80, kvp=81)], QcLimits(kv_quantity="practical_peak"))
    assert crit.criteria[0].inputs["kv_quantity"] == "practical peak voltage (PPV)"
    assert "practical peak voltage" in crit.criteria[0].rule


def test_no_verdict_is_federal_unless_its_limit_is():
    tighter = QcLimits(reproducibility_max_cv=0.04)
    shots = [QcExposure(set_kvp=80, set_mas=10, air_kerma_ugy=k) for k in [100.0] * 10]
    assert analyse("reproducibility", shots, tighter).criteria[0].source == "local"
    assert analyse("reproducibility", shots, US).criteria[0].source == "federal"
    with pytest.raises(QcLimitsError, match="sources.coefficient_of_variation = 'federal' but reproducibility_max_cv"):
        limits_from_mapping({"reproducibility_max_cv": 0.04, "sources": {"coefficient_of_variation": "federal"}})
    state = QcLimits(kvp_tolerance_fraction=0.10, sources={"kvp_accuracy": "state"})
    assert analyse("kvp_accuracy", [QcExposure(set_kvp=80, kvp=81)], state).criteria[0].source == "state"


def test_dap_agreement_value_and_rule_say_the_same_thing():
    # DICOM 0.3e-5 vs meter 1e-4: deviation -0.97; the rule names the signed deviation and bounds its magnitude.
    crit = analyse("dap_agreement", [QcExposure(dap_gy_m2=1e-4, dicom_dap_gy_m2=0.3e-5)], US).criteria[0]
    assert crit.value == pytest.approx(-0.97) and crit.comparison == "abs<=" and crit.passed is False
    assert crit.rule.startswith("deviation = (DICOM DAP - reference DAP) / reference DAP; |deviation| <= 0.35")
