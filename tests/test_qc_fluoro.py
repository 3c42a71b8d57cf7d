"""Fluoroscopy QC analyses (21 CFR 1020.32) against worked examples computed by hand in the comments.

The limits: AKR <= 88 mGy/min in normal mode, <= 176 mGy/min with the high-level control active; displayed AKR and
cumulative air kerma within +-35 % from 6 mGy/min and 100 mGy up. A rate is the mean of a run's samples after the
settle time, not any one sample.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.qc import QcExposure, QcLimits, analyse
from agent.qc.fluoro import sample_rate_mgy_per_min, stable_runs

US = QcLimits()
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def run(rates, start_s=0.0, every_s=1.0, **extra):
    """Samples of one run of continuous fluoroscopy: each 1 s of integrated air kerma at the given rate (mGy/min):
    µGy in 1000 ms = rate x 1000 / 60."""
    return [QcExposure(air_kerma_ugy=r * 1000 / 60, exposure_time_ms=1000.0, set_kvp=80,
                       measured_at=T0 + timedelta(seconds=start_s + i * every_s), **extra) for i, r in enumerate(rates)]


def test_rate_of_a_sample_is_air_kerma_over_its_interval():
    # 1466.7 µGy in 1000 ms = 1.4667 µGy/ms x 60 = 88.0 mGy/min.
    exp = QcExposure(air_kerma_ugy=1466.6667, exposure_time_ms=1000.0)
    assert sample_rate_mgy_per_min(exp) == pytest.approx(88.0, rel=1e-6)
    assert sample_rate_mgy_per_min(QcExposure(air_kerma_rate_mgy_per_min=50.0, air_kerma_ugy=1.0,
                                              exposure_time_ms=1.0)) == 50.0


def test_the_ramp_before_the_settle_time_is_not_the_measurement():
    # Samples at 0, 1, 2, 3, 4, 5 s; settle 3 s drops 0-2 s (the brightness control ramping from 40 to 80); the
    # settled 3-5 s samples 80, 81, 79 have mean 80.0 and spread 2/80 = 2.5 % <= 5 %: 80 <= 88 passes.
    res = analyse("fluoro_max_air_kerma_rate", run([40, 60, 90, 80, 81, 79]), US)
    assert res.verdict == "pass", res
    crit = res.criteria[0]
    assert crit.value == pytest.approx(80.0) and crit.limit == 88.0 and crit.source == "federal"
    assert crit.inputs["settled_samples"] == 3 and crit.inputs["samples"] == 6
    assert "1020.32" in crit.citation


def test_a_rate_above_88_fails_in_normal_mode_and_passes_with_high_level_control():
    # Settled samples 100, 100, 100 mGy/min: 100 > 88 fails in normal mode; <= 176 with high-level control.
    assert analyse("fluoro_max_air_kerma_rate", run([50, 100, 100, 100, 100, 100]), US).verdict == "fail"
    high = analyse("fluoro_max_air_kerma_rate", run([50, 100, 100, 100, 100, 100], high_level_control=1), US)
    assert high.verdict == "pass" and high.criteria[0].limit == 176.0


def test_exactly_at_the_limit_passes_and_just_above_fails():
    assert analyse("fluoro_max_air_kerma_rate", run([88] * 6), US).verdict == "pass"
    assert analyse("fluoro_max_air_kerma_rate", run([88.01] * 6), US).verdict == "fail"


def test_an_unstable_run_is_incomplete_not_judged():
    # Settled samples 70, 90, 80: spread 20/80 = 25 % > 5 %.
    res = analyse("fluoro_max_air_kerma_rate", run([40, 60, 70, 70, 90, 80]), US)
    assert res.verdict == "incomplete" and "not stable" in res.reason


def test_too_few_samples_after_settling_is_incomplete():
    res = analyse("fluoro_max_air_kerma_rate", run([40, 60, 80, 80]), US)  # one settled sample, two needed
    assert res.verdict == "incomplete" and "keep the beam on" in res.reason


def test_a_gap_starts_a_new_run_each_judged_on_its_own():
    # Run 1 at 0-5 s (settled 80) and run 2 at 20-25 s (settled 95): the second fails.
    res = analyse("fluoro_max_air_kerma_rate", run([80] * 6) + run([95] * 6, start_s=20), US)
    assert [c.subject for c in res.criteria] == ["exposures 1-6", "exposures 7-12"]
    assert [c.passed for c in res.criteria] == [True, False] and res.verdict == "fail"
    assert len(stable_runs(run([80] * 6) + run([95] * 6, start_s=20), US)) == 2


def test_a_changed_limit_is_no_longer_federal():
    res = analyse("fluoro_max_air_kerma_rate", run([80] * 6), QcLimits(fluoro_max_air_kerma_rate_mgy_per_min=50))
    assert res.verdict == "fail" and res.criteria[0].source == "local"


def test_display_accuracy_rate_and_cumulative():
    # Settled rate 80 mGy/min; displayed 100: (100 - 80) / 80 = 0.25 <= 0.35 passes. Cumulative: 12 samples of
    # 1 s at 600 mGy/min = 10 mGy per sample, 120 mGy in all; displayed 170: (170 - 120) / 120 = 0.4167 > 0.35 fails.
    samples = run([80] * 6)
    samples[-1] = samples[-1].model_copy(update={"displayed_air_kerma_rate_mgy_per_min": 100.0})
    res = analyse("fluoro_display_accuracy", samples, US)
    assert res.verdict == "pass" and res.criteria[0].value == pytest.approx(0.25)
    big = run([600] * 12)
    big[0] = big[0].model_copy(update={"displayed_air_kerma_mgy": 170.0})
    res = analyse("fluoro_display_accuracy", big, US)
    crit = [c for c in res.criteria if "cumulative" in c.subject][0]
    assert crit.inputs["measured_mgy"] == pytest.approx(120.0)
    assert crit.value == pytest.approx(50 / 120) and crit.passed is False and res.verdict == "fail"


def test_display_accuracy_below_the_regulation_minimum_does_not_apply():
    # 5 mGy/min measured is below the 6 mGy/min where 1020.32(k)(6) starts: shown, not judged.
    samples = run([5] * 6)
    samples[0] = samples[0].model_copy(update={"displayed_air_kerma_rate_mgy_per_min": 9.0})
    res = analyse("fluoro_display_accuracy", samples, US)
    assert res.criteria[0].applies is False and res.verdict == "incomplete"


def test_display_accuracy_waits_for_the_displayed_values():
    res = analyse("fluoro_display_accuracy", run([80] * 6), US)
    assert res.verdict == "incomplete" and "displayed" in res.reason


def test_fluoro_kvp_and_hvl_reuse_the_radiographic_analyses():
    exps = [QcExposure(set_kvp=80, kvp=81.0)] * 3
    res = analyse("fluoro_kvp", exps, US)
    assert res.test_type == "fluoro_kvp" and res.verdict == "pass"
    # HVL 3.0 mm Al at 80 kV measured: the 2006 table says 2.9: passes.
    res = analyse("fluoro_hvl", [QcExposure(set_kvp=80, kvp=80.0, hvl_mm_al=3.0)], US)
    assert res.test_type == "fluoro_hvl" and res.verdict == "pass" and res.criteria[0].limit == pytest.approx(2.9)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

RATE = st.floats(min_value=1.0, max_value=500.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(ramp=st.lists(RATE, min_size=3, max_size=3), level=RATE,
       noise=st.lists(st.floats(min_value=-0.02, max_value=0.02), min_size=2, max_size=8))
def test_property_the_ramp_never_changes_the_measurement(ramp, level, noise):
    # Samples 1 s apart, settle 3 s: the first three (whatever they are) are never the measurement; the stable rate
    # is the mean of the rest, and it is judged against the normal-mode limit.
    settled = [level * (1 + n) for n in noise]
    res = analyse("fluoro_max_air_kerma_rate", run(ramp + settled), US)
    [crit] = res.criteria
    assert crit.inputs["settled_samples"] == len(settled)
    assert crit.value == pytest.approx(sum(settled) / len(settled), rel=1e-3)
    assert res.verdict == ("pass" if crit.value <= 88.0 * (1 + 1e-9) else "fail")


def samples(rates, start_s, interval_ms=1000.0, kv=(80.0,), **technique):
    """One run: samples `interval_ms` long (1 s apart) at these rates (mGy/min); kV per sample cycles through kv;
    the technique on the last sample only (typed once per run)."""
    out = [QcExposure(air_kerma_ugy=r * interval_ms / 60.0, exposure_time_ms=interval_ms, kvp=kv[i % len(kv)],
                      measured_at=T0 + timedelta(seconds=start_s + i)) for i, r in enumerate(rates)]
    out[-1] = out[-1].model_copy(update=technique)
    return out


def test_fluoro_kvp_is_judged_on_the_settled_samples_of_each_run():
    # kV 70, 74, 78 while settling, then 80.4, 80.6, 80.5: mean 80.5 at 80 set (typed on the last sample only):
    # 0.5 / 80 = 0.625 % <= 5 %. The ramp's 70 kV alone would be 12.5 % off.
    exps = [e.model_copy(update={"kvp": kv}) for e, kv in zip(samples([50] * 6, 0), (70, 74, 78, 80.4, 80.6, 80.5))]
    exps[-1] = exps[-1].model_copy(update={"set_kvp": 80.0})
    res = analyse("fluoro_kvp", exps, US)
    assert res.verdict == "pass" and res.n_exposures == 6
    assert res.criteria[0].value == pytest.approx(0.5 / 80)


def test_fluoro_hvl_from_the_stable_rates_of_runs_behind_aluminium():
    # Runs at 0, 2 and 4 mm Al with stable rates 80, 50 and 38 mGy/min; the 2 mm run sampled in 500 ms intervals
    # (its samples' air kerma is half as large, its rate is not). Half of 80 lies between 2 mm (50) and 4 mm (38):
    # HVL = 2 + 2 ln(2 x 50 / 80) / ln(50 / 38) = 2 + 2 x 0.22314 / 0.27444 = 3.626 mm Al >= 2.9 at 80 kV measured.
    exps = (samples([80] * 6, 0, filtration_mm_al=0.0, set_kvp=80.0)
            + samples([50] * 6, 20, interval_ms=500.0, filtration_mm_al=2.0, set_kvp=80.0)
            + samples([38] * 6, 40, filtration_mm_al=4.0, set_kvp=80.0))
    res = analyse("fluoro_hvl", exps, US)
    crit = res.criteria[0]
    assert res.verdict == "pass" and crit.value == pytest.approx(3.626, abs=1e-3)
    assert crit.limit == pytest.approx(2.9) and crit.inputs["kv_basis"] == "measured"


def test_per_run_reasons_name_the_runs_exposures():
    # Run 1 (exposures 1-6) has its indicated kV; run 2 (exposures 7-12) has none yet.
    exps = samples([50] * 6, 0, set_kvp=80.0) + samples([50] * 6, 20)
    res = analyse("fluoro_kvp", exps, US)
    assert res.verdict == "incomplete" and "run 2 (exposures 7-12)" in res.reason, res.reason


def test_limits_config_errors_name_the_key():
    from agent.qc import QcLimitsError, limits_from_mapping

    with pytest.raises(QcLimitsError, match="qc.limits.fluoro_settle_s"):
        limits_from_mapping({"fluoro_settle_s": -1})
    with pytest.raises(QcLimitsError, match="high_level_mgy_per_min is below"):
        limits_from_mapping({"fluoro_max_air_kerma_rate_high_level_mgy_per_min": 50})
