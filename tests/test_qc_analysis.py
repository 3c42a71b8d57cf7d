"""QC analyses against worked examples computed by hand (in the comments), including the formulas' edge cases.

Boundaries: every rule is inclusive. 21 CFR 1020.31(b) "no greater than 0.05", 1020.31(c) "shall not differ by more
than 0.10 times their sum", kVp/timer/DAP "within ±x %", HVL "not less than" the table: a value exactly at the limit
passes, and a value just past it fails.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from agent.qc import ANALYSES, TEST_TYPES, Criterion, QcExposure, QcLimits, TestResult, analyse, hvl_minimum

US = QcLimits()


def shots(kerma, set_kvp=80, set_mas=10, **extra):
    """Exposures at one technique with these air kerma readings (µGy)."""
    return [QcExposure(set_kvp=set_kvp, set_mas=set_mas, air_kerma_ugy=k, **extra) for k in kerma]


def at(mas_kerma, set_kvp=70):
    """Exposures from (set mAs, air kerma µGy) pairs."""
    return [QcExposure(set_kvp=set_kvp, set_mas=m, air_kerma_ugy=k) for m, k in mas_kerma]


def only(result: TestResult) -> Criterion:
    assert len(result.criteria) == 1, result
    return result.criteria[0]


# ---------------------------------------------------------------- reproducibility, 21 CFR 1020.31(b)

def test_reproducibility_worked_example_passes():
    # mean 100; deviations 0 2 -2 1 -1 0 0 3 -3 0, squares sum 28; s = sqrt(28 / 9) = 1.7638; C = 0.017638 <= 0.05.
    res = analyse("reproducibility", shots([100, 102, 98, 101, 99, 100, 100, 103, 97, 100]), US)
    crit = only(res)
    assert res.verdict == "pass" and crit.passed is True
    assert crit.value == pytest.approx(0.0176383, rel=1e-5)
    assert crit.inputs["mean_ugy"] == 100 and crit.inputs["sd_ugy"] == pytest.approx(1.76383, rel=1e-5)
    assert crit.inputs["n"] == 10 and crit.limit == 0.05 and crit.comparison == "<="


def test_reproducibility_uses_the_sample_standard_deviation():
    # 5 x 95.2 and 5 x 104.8: mean 100, population sigma 4.8 (C 0.048 would pass), but the rule's s divides by
    # n - 1: s = 4.8 * sqrt(10 / 9) = 5.0596, C = 0.0506 > 0.05 -> fail.
    crit = only(analyse("reproducibility", shots([95.2, 104.8] * 5), US))
    assert crit.value == pytest.approx(0.050596, rel=1e-4)
    assert crit.passed is False


def test_reproducibility_exactly_at_the_limit_passes_just_above_fails():
    # 107.5, 92.5, 107.5, 92.5, 6 x 100: mean 100, squares 4 x 56.25 = 225, s = sqrt(225 / 9) = 5, C = 0.05 -> pass.
    at_limit = only(analyse("reproducibility", shots([107.5, 92.5] * 2 + [100] * 6), US))
    assert at_limit.value == pytest.approx(0.05) and at_limit.passed is True
    # 107.6 / 92.4: squares 4 x 57.76 = 231.04, s = 5.0666, C = 0.0507 -> fail.
    above = only(analyse("reproducibility", shots([107.6, 92.4] * 2 + [100] * 6), US))
    assert above.value == pytest.approx(0.050666, rel=1e-4) and above.passed is False


def test_reproducibility_n_1_is_incomplete_not_a_crash():
    res = analyse("reproducibility", shots([100]), US)
    crit = only(res)
    assert res.verdict == "incomplete" and crit.passed is None and crit.value is None
    assert "needs 10 exposures, 1 so far" in crit.reason and "needs 10 exposures" in res.reason


def test_reproducibility_below_the_compliance_count_shows_the_value_but_no_verdict():
    # 4 exposures: C is computable (mean 100, squares 4 + 4 + 0 + 0 = 8, s = sqrt(8 / 3) = 1.633, C = 0.01633),
    # but 1020.31(b)(2) bases compliance on 10; with min 4 configured the same 4 exposures pass.
    kerma = [102, 98, 100, 100]
    crit = only(analyse("reproducibility", shots(kerma), US))
    assert crit.passed is None and crit.value == pytest.approx(0.016330, rel=1e-4)
    assert crit.reason == "needs 10 exposures, 4 so far"
    assert analyse("reproducibility", shots(kerma), QcLimits(reproducibility_min_exposures=4)).verdict == "pass"


def test_reproducibility_zero_output_is_incomplete_with_reason():
    res = analyse("reproducibility", shots([0] * 10), US)
    assert res.verdict == "incomplete" and "mean air kerma is zero" in only(res).reason


def test_reproducibility_refuses_mixed_techniques():
    exposures = shots([100] * 9) + shots([200], set_mas=20)
    res = analyse("reproducibility", exposures, US)
    assert res.verdict == "incomplete" and res.criteria == ()
    assert res.reason == "set mAs differs between exposures (10, 20 mAs)"


def test_reproducibility_outside_one_hour_is_incomplete():
    t0 = datetime(2026, 5, 9, 8, 0, tzinfo=timezone.utc)
    exposures = [QcExposure(set_kvp=80, set_mas=10, air_kerma_ugy=100, measured_at=t0 + timedelta(minutes=7 * i))
                 for i in range(10)]  # 0 .. 63 minutes
    res = analyse("reproducibility", exposures, US)
    assert res.verdict == "incomplete" and "3780 s" in res.reason
    assert analyse("reproducibility", exposures[:9] + exposures[8:9], US).verdict == "pass"  # 56 min


def test_reproducibility_missing_kerma_names_the_exposure():
    exposures = shots([100, 100]) + [QcExposure(set_kvp=80, set_mas=10, kvp=80.2)]
    assert analyse("reproducibility", exposures, US).reason == "exposure 3 has no air kerma reading"


def test_reproducibility_range_method_boundary():
    # Washington: (Emax - Emin) <= 0.10 mean. 94.9, 105, 100, 100.1: mean 100, range 10.1 -> 0.101 -> fail.
    lim = QcLimits(reproducibility_method="range", reproducibility_max_range_fraction=0.10,
                   reproducibility_min_exposures=4)
    crit = only(analyse("reproducibility", shots([94.9, 105, 100, 100.1]), lim))
    assert crit.value == pytest.approx(0.101) and crit.passed is False
    assert crit.inputs["range_ugy"] == pytest.approx(10.1)


# ---------------------------------------------------------------- linearity, 21 CFR 1020.31(c)

def test_linearity_worked_example_passes():
    # 10 mAs: 1000 µGy -> X1 = 1.000 mGy / 10 mAs = 0.100 mGy/mAs; 20 mAs: 1900 µGy -> X2 = 0.095.
    # |X1 - X2| = 0.005 <= 0.10 x 0.195 = 0.0195; L = 0.005 / 0.195 = 0.02564.
    res = analyse("linearity_mas", at([(10, 1000), (20, 1900)]), US)
    crit = only(res)
    assert res.verdict == "pass" and crit.subject == "10 mAs vs 20 mAs"
    assert crit.inputs["x1_mgy_per_mas"] == pytest.approx(0.100)
    assert crit.inputs["x2_mgy_per_mas"] == pytest.approx(0.095)
    assert crit.inputs["difference_mgy_per_mas"] == pytest.approx(0.005)
    assert crit.inputs["limit_mgy_per_mas"] == pytest.approx(0.0195)
    assert crit.value == pytest.approx(0.025641, rel=1e-4) and crit.limit == 0.10


def test_linearity_fails():
    # X1 = 0.100, X2 = 2500 µGy / 20 mAs = 0.125: |diff| 0.025 > 0.10 x 0.225 = 0.0225; L = 0.1111 -> fail.
    res = analyse("linearity_mas", at([(10, 1000), (20, 2500)]), US)
    assert res.verdict == "fail" and only(res).value == pytest.approx(0.11111, rel=1e-4)


def test_linearity_exactly_at_the_limit_passes_just_above_fails():
    # X1 = 1100 µGy / 10 mAs = 0.11, X2 = 1800 / 20 = 0.09: |diff| 0.02 = 0.10 x 0.20: "not differ by more than"
    # includes equality -> pass (in binary floats L comes out 0.10000000000000002; the comparison allows for it).
    assert only(analyse("linearity_mas", at([(10, 1100), (20, 1800)]), US)).passed is True
    # X2 = 1799 / 20 = 0.08995: L = 0.02005 / 0.19995 = 0.100275 -> fail.
    assert only(analyse("linearity_mas", at([(10, 1100), (20, 1799)]), US)).passed is False


def test_linearity_stations_out_of_order_pair_adjacent_settings_and_average_per_station():
    # Taken 40, 10, 20, 10 mAs. Stations sorted: 10 (950, 1050 -> X = mean(0.095, 0.105) = 0.100), 20 (2500 -> 0.125),
    # 40 (4800 -> 0.120). Pairs: 10-20 L = 0.025 / 0.225 = 0.111 fail; 20-40 L = 0.005 / 0.245 = 0.0204 pass.
    res = analyse("linearity_mas", at([(40, 4800), (10, 950), (20, 2500), (10, 1050)]), US)
    assert [c.subject for c in res.criteria] == ["10 mAs vs 20 mAs", "20 mAs vs 40 mAs"]
    first, second = res.criteria
    assert first.inputs["x1_mgy_per_mas"] == pytest.approx(0.100) and first.inputs["air_kerma_1_ugy"] == [950, 1050]
    assert first.passed is False and second.passed is True and second.value == pytest.approx(0.020408, rel=1e-4)
    assert res.verdict == "fail"


def test_linearity_one_station_is_incomplete():
    res = analyse("linearity_mas", at([(10, 1000), (10, 1010)]), US)
    assert res.verdict == "incomplete"
    assert res.reason == "needs exposures at two adjacent mAs stations; only 10 mAs so far"
    assert analyse("linearity_mas", at([(10, 1000)]), US).verdict == "incomplete"  # n = 1


def test_linearity_minimum_exposures_per_station_when_configured():
    # With 2 per station required, 10 mAs has 2 and 20 mAs 1: L is shown (0.025641) but not judged yet.
    lim = QcLimits(linearity_min_exposures_per_station=2)
    crit = only(analyse("linearity_mas", at([(10, 1000), (10, 1000), (20, 1900)]), lim))
    assert crit.passed is None and crit.value == pytest.approx(0.025641, rel=1e-4)
    assert crit.reason == "needs 2 exposures per station (20 mAs has fewer)"


def test_linearity_zero_mas_is_incomplete_without_division_by_zero():
    res = analyse("linearity_mas", at([(0, 0), (10, 1000), (20, 2000)]), US)
    zero, normal = res.criteria
    assert zero.passed is None and "set mAs is zero at the 0 mAs station" in zero.reason
    assert normal.passed is True and res.verdict == "incomplete"


def test_linearity_no_output_at_both_stations_is_incomplete():
    res = analyse("linearity_mas", at([(10, 0), (20, 0)]), US)
    assert res.verdict == "incomplete" and "meter in the beam" in only(res).reason


def test_linearity_by_ma_at_constant_mas():
    # 100 mA x 100 ms = 10 mAs: 1000 µGy -> 0.100; 200 mA x 50 ms = 10 mAs: 960 -> 0.096. One mAs station but two mA
    # stations: L = 0.004 / 0.196 = 0.0204 -> pass.
    exposures = [QcExposure(set_kvp=70, set_ma=100, set_time_ms=100, air_kerma_ugy=1000),
                 QcExposure(set_kvp=70, set_ma=200, set_time_ms=50, air_kerma_ugy=960)]
    res = analyse("linearity_ma", exposures, US)
    assert only(res).subject == "100 mA vs 200 mA" and only(res).value == pytest.approx(0.020408, rel=1e-4)
    assert res.verdict == "pass"
    assert analyse("linearity_mas", exposures, US).verdict == "incomplete"


def test_linearity_zero_ma_station_is_incomplete():
    exposures = [QcExposure(set_kvp=70, set_ma=0, set_time_ms=100, air_kerma_ugy=0),
                 QcExposure(set_kvp=70, set_ma=100, set_time_ms=100, air_kerma_ugy=1000)]
    res = analyse("linearity_ma", exposures, US)
    assert res.verdict == "incomplete" and "zero" in only(res).reason


def test_linearity_needs_one_kv_and_the_technique():
    mixed = at([(10, 1000)], set_kvp=70) + at([(20, 2000)], set_kvp=80)
    assert analyse("linearity_mas", mixed, US).reason == "set kV differs between exposures (70, 80 kV)"
    no_mas = at([(10, 1000)]) + [QcExposure(set_kvp=70, air_kerma_ugy=2000)]
    assert "exposure 2 has no set mAs" in analyse("linearity_mas", no_mas, US).reason


# ---------------------------------------------------------------- kVp and timer accuracy

def kv(set_kvp, measured):
    return QcExposure(set_kvp=set_kvp, kvp=measured)


def test_kvp_per_station_sorted_with_boundary():
    # Taken 100, 60, 80, 80 kV. 60: 61.5 -> +2.5 % pass. 80: 84 and 84 -> (84 - 80) / 80 = +5 % exactly -> pass.
    # 100: 94.9 -> -5.1 % -> fail.
    res = analyse("kvp_accuracy", [kv(100, 94.9), kv(60, 61.5), kv(80, 84), kv(80, 84)], US)
    assert [c.subject for c in res.criteria] == ["60 kV", "80 kV", "100 kV"]
    assert [c.passed for c in res.criteria] == [True, True, False]
    assert res.criteria[1].value == pytest.approx(0.05) and res.criteria[1].inputs["measured_kv"] == [84, 84]
    assert res.criteria[2].inputs["deviation_kv"] == pytest.approx(-5.1)
    assert res.verdict == "fail"


def test_kvp_just_over_five_percent_fails():
    # (84.1 - 80) / 80 = 0.05125.
    assert only(analyse("kvp_accuracy", [kv(80, 84.1)], US)).passed is False


def test_kvp_station_average_and_missing_reading():
    # 80 kV: 82 and 86 -> mean 84 -> +5 % pass (an average; each reading is kept in inputs).
    assert only(analyse("kvp_accuracy", [kv(80, 82), kv(80, 86)], US)).passed is True
    res = analyse("kvp_accuracy", [kv(80, 82), QcExposure(set_kvp=80, air_kerma_ugy=100)], US)
    assert res.verdict == "incomplete" and only(res).reason == "exposure 2 has no measured kVp"
    assert analyse("kvp_accuracy", [QcExposure(kvp=80)], US).reason == "exposure 1 has no set kV"
    assert "zero" in only(analyse("kvp_accuracy", [kv(0, 0.5)], US)).reason


def test_timer_boundary_fraction_plus_absolute_part():
    # |mean - set| <= 10 % x set + 1 ms (IEC 60601-2-54 style): 100 ms: 111 -> 11 ms = 10 + 1 exactly -> pass;
    # 200 ms: 222 -> 22 ms > 21 ms -> fail.
    t = [QcExposure(set_time_ms=s, exposure_time_ms=m) for s, m in ((100, 111), (200, 222))]
    hundred, two_hundred = analyse("timer_accuracy", t, US).criteria
    assert (hundred.value, hundred.limit, hundred.unit) == (pytest.approx(11.0), pytest.approx(11.0), "ms")
    assert hundred.passed is True and two_hundred.passed is False


def test_timer_short_digital_exposures_are_judged_not_skipped():
    # 5 ms set: limit 0.5 + 1 = 1.5 ms; 6.4 ms measured (+1.4 ms) passes, 6.6 ms (+1.6 ms) fails. Under a bare
    # 10 % these would both fail (a timer reading at 0.1 ms resolution cannot do 0.5 ms), and skipping them hides
    # the exposures most digital rooms make.
    ok = only(analyse("timer_accuracy", [QcExposure(set_time_ms=5, exposure_time_ms=6.4)], US))
    bad = only(analyse("timer_accuracy", [QcExposure(set_time_ms=5, exposure_time_ms=6.6)], US))
    assert ok.applies and ok.passed is True and ok.limit == pytest.approx(1.5)
    assert bad.passed is False
    # A jurisdiction that exempts short times can still say so.
    lim = QcLimits(timer_min_set_time_ms=50)
    short = only(analyse("timer_accuracy", [QcExposure(set_time_ms=50, exposure_time_ms=80)], lim))
    assert short.applies is False and short.value == pytest.approx(30)


# ---------------------------------------------------------------- HVL, 21 CFR 1020.30(m) Table 1

def test_hvl_minimum_interpolates_between_rows():
    # 85 kV between 80 (2.9) and 90 (3.2): 2.9 + 0.3 x 5/10 = 3.05. 75 kV: 2.5 + 0.4 x 4/9 = 2.6778.
    assert hvl_minimum(US.hvl_min_table_mm_al, 85).mm_al == pytest.approx(3.05)
    assert hvl_minimum(US.hvl_min_table_mm_al, 75).mm_al == pytest.approx(2.67778, rel=1e-5)
    assert hvl_minimum(US.hvl_min_table_mm_al, 80) == (2.9, (80, 2.9), (80, 2.9))  # on a row: that row
    # The table jumps between 70 (1.8) and 71 kV (2.5); the reference allows interpolation: 70.5 -> 2.15.
    assert hvl_minimum(US.hvl_min_table_mm_al, 70.5).mm_al == pytest.approx(2.15)
    # Beyond the ends: linear extrapolation of the end rows (the table's footnote): 151 kV -> 5.44, 29 kV -> 0.29.
    assert hvl_minimum(US.hvl_min_table_mm_al, 151).mm_al == pytest.approx(5.44)
    assert hvl_minimum(US.hvl_min_table_mm_al, 29).mm_al == pytest.approx(0.29)


def test_hvl_between_rows_at_and_below_the_minimum():
    # Measured 85 kV: minimum 3.05 mm Al. 3.05 -> pass (not less than); 3.04 -> fail.
    res = analyse("hvl", [QcExposure(kvp=85, hvl_mm_al=3.05), QcExposure(kvp=85, hvl_mm_al=3.04)], US)
    ok, low = res.criteria
    assert ok.passed is True and low.passed is False and res.verdict == "fail"
    assert ok.limit == pytest.approx(3.05) and ok.comparison == ">=" and ok.unit == "mm Al"
    assert (ok.inputs["row_below_kv"], ok.inputs["row_above_kv"]) == (80, 90)


def test_hvl_uses_the_measured_kv_and_the_configured_table():
    # Set 80 but measured 85: the minimum is 3.05, so 3.0 fails although 3.0 >= 2.9 (the 80 kV row).
    assert analyse("hvl", [QcExposure(set_kvp=80, kvp=85, hvl_mm_al=3.0)], US).verdict == "fail"
    # Pre-2006 column at 85 kV: 2.3 + 0.2 x 0.5 = 2.4 -> 3.0 passes.
    pre = QcLimits(hvl_min_table_mm_al="cfr_pre_2006")
    assert only(analyse("hvl", [QcExposure(kvp=85, hvl_mm_al=3.0)], pre)).limit == pytest.approx(2.4)


def test_hvl_missing_values_are_incomplete_and_beyond_the_table_extrapolates():
    res = analyse("hvl", [QcExposure(kvp=85), QcExposure(hvl_mm_al=3.0), QcExposure(kvp=155, hvl_mm_al=6.0)], US)
    assert [c.reason for c in res.criteria] == ["no HVL reading", "no kV (measured or indicated)", None]
    assert res.criteria[2].limit == pytest.approx(5.6) and res.criteria[2].inputs["extrapolated"] == "yes"
    assert res.verdict == "incomplete"


# ---------------------------------------------------------------- DAP agreement

def test_dap_meter_boundary():
    # Meter 1.0e-4 Gy·m² (1 Gy·cm²); DICOM 1.35e-4 -> +35 % exactly -> pass; 1.36e-4 -> +36 % -> fail.
    res = analyse("dap_agreement", [QcExposure(dap_gy_m2=1e-4, dicom_dap_gy_m2=1.35e-4),
                                    QcExposure(dap_gy_m2=1e-4, dicom_dap_gy_m2=1.36e-4)], US)
    assert [c.passed for c in res.criteria] == [True, False]
    assert res.criteria[0].inputs["reference"] == "DAP meter" and res.criteria[0].value == pytest.approx(0.35)
    assert res.criteria[0].source == "manufacturer" and "35 %" in res.criteria[0].citation
    # A site's tighter limit is named "local": +26 % fails at 25 %.
    local = QcLimits(dap_local_tolerance_fraction=0.25)
    crit = only(analyse("dap_agreement", [QcExposure(dap_gy_m2=1e-4, dicom_dap_gy_m2=1.26e-4)], local))
    assert crit.passed is False and crit.source == "local"


def test_dap_from_air_kerma_times_field_area():
    # 1000 µGy x 100 cm² = 1e-3 Gy x 1e-2 m² = 1e-5 Gy·m²; DICOM 0.9e-5 -> -10 % -> pass.
    crit = only(analyse("dap_agreement", [QcExposure(air_kerma_ugy=1000, field_area_cm2=100,
                                                     dicom_dap_gy_m2=0.9e-5)], US))
    assert crit.inputs["reference_dap_gy_m2"] == pytest.approx(1e-5) and crit.value == pytest.approx(-0.10)
    assert crit.passed is True


def test_dap_meter_preferred_over_computed():
    crit = only(analyse("dap_agreement", [QcExposure(dap_gy_m2=2e-5, air_kerma_ugy=1000, field_area_cm2=100,
                                                     dicom_dap_gy_m2=2e-5)], US))
    assert crit.inputs["reference"] == "DAP meter" and crit.value == 0


def test_dap_missing_dicom_or_reference_is_incomplete():
    res = analyse("dap_agreement", [QcExposure(dap_gy_m2=1e-4), QcExposure(dicom_dap_gy_m2=1e-4),
                                    QcExposure(dap_gy_m2=0, dicom_dap_gy_m2=1e-4)], US)
    assert [c.reason for c in res.criteria] == ["the modality reported no DAP (DICOM)",
                                                "no DAP meter reading, nor air kerma and field area",
                                                "reference DAP is zero"]
    assert res.verdict == "incomplete"


# ---------------------------------------------------------------- dispatcher and models

def test_every_test_type_has_an_analysis_and_handles_none_and_one_exposure():
    one = QcExposure(set_kvp=80, set_mas=10, set_ma=100, set_time_ms=100, kvp=81, air_kerma_ugy=1000,
                     exposure_time_ms=101, hvl_mm_al=3.0, dap_gy_m2=1e-4)
    assert set(ANALYSES) == set(TEST_TYPES)
    for test_type in TEST_TYPES:
        empty = analyse(test_type, [], US)
        assert (empty.verdict, empty.reason, empty.n_exposures) == ("incomplete", "no exposures yet", 0)
        assert analyse(test_type, [one], US).n_exposures == 1


def test_incremental_use_gives_a_verdict_as_soon_as_it_can():
    # Linearity after each exposure: one station -> incomplete; second station -> pass; a bad third -> fail.
    taken, verdicts = [], []
    for exp in at([(10, 1000), (20, 1900), (40, 5000)]):
        taken.append(exp)
        verdicts.append(analyse("linearity_mas", taken).verdict)
    assert verdicts == ["incomplete", "pass", "fail"]


def test_unknown_test_type():
    with pytest.raises(ValueError, match="unknown QC test type 'linearity'; one of reproducibility"):
        analyse("linearity", [], US)


def test_default_limits_are_us():
    assert analyse("hvl", [QcExposure(kvp=85, hvl_mm_al=3.0)]).jurisdiction == US.jurisdiction


def test_result_round_trips_as_json_for_a_payload():
    res = analyse("linearity_mas", at([(10, 1000), (0, 0), (20, 1900)]), US)
    assert TestResult.model_validate_json(res.model_dump_json()) == res


def test_exposure_model():
    assert QcExposure(set_ma=200, set_time_ms=50).mas == 10.0
    assert QcExposure(set_mas=8, set_ma=200, set_time_ms=50).mas == 8  # the set mAs wins
    assert QcExposure(set_ma=200).mas is None
    for bad in ({"air_kerma_ugy": -1}, {"kvp": float("nan")}, {"kv": 80},
                {"measured_at": datetime(2026, 1, 1)}):  # naive time: the 1-hour window needs an offset
        with pytest.raises(ValidationError):
            QcExposure(**bad)
