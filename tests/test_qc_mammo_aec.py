"""Mammography (21 CFR 900.12(e)(5); ACR DM QC manual) and AEC QC analyses against worked examples computed by hand
in the comments."""

from __future__ import annotations

import pytest

from agent.qc import QcExposure, QcLimits, QcLimitsError, analyse, limits_from_mapping
from agent.qc.mammo import agd_from_entrance_kerma

US = QcLimits()
# Conversion rows for the tests only: (HVL mm Al, mGy AGD per mGy entrance air kerma). A site takes its rows from a
# published table for its phantom; these are round numbers so the arithmetic below is checkable by hand.
TABLE = ((0.30, 0.20), (0.40, 0.25), (0.50, 0.30))


# ---------------------------------------------------------------- phantom dose

def test_reported_agd_is_judged_against_3_mgy_federal():
    res = analyse("mammo_phantom_dose", [QcExposure(air_kerma_ugy=6000.0, dicom_agd_mgy=1.6)], US)
    reported = res.criteria[0]
    assert reported.value == 1.6 and reported.limit == 3.0 and reported.passed and reported.source == "federal"
    assert "900.12" in reported.citation
    # No conversion table configured: the computed AGD says so, and the verdict waits for it.
    assert res.verdict == "incomplete" and "mammo_agd_conversion" in res.reason


def test_acr_dm_phantom_named_limit_is_2_mgy_and_not_federal():
    acr = limits_from_mapping({"mammo_phantom_dose_limit_mgy": "acr_dm_phantom"})
    res = analyse("mammo_phantom_dose", [QcExposure(air_kerma_ugy=6000.0, dicom_agd_mgy=2.1)], acr)
    assert res.criteria[0].limit == 2.0 and res.criteria[0].passed is False and res.verdict == "fail"
    assert res.criteria[0].source == "local"
    with pytest.raises(QcLimitsError, match="mammo_phantom_dose_limit_mgy"):
        limits_from_mapping({"mammo_phantom_dose_limit_mgy": "acr"})


def test_computed_agd_interpolates_the_conversion_table():
    # HVL 0.35 between 0.30 (0.20) and 0.40 (0.25): factor 0.225; 8.0 mGy entrance kerma x 0.225 = 1.8 mGy <= 3.
    assert agd_from_entrance_kerma(8.0, 0.35, TABLE) == pytest.approx(1.8)
    assert agd_from_entrance_kerma(8.0, 0.60, TABLE) is None  # outside: no extrapolation
    limits = QcLimits(mammo_agd_conversion=TABLE, mammo_agd_conversion_source="test rows")
    res = analyse("mammo_phantom_dose", [QcExposure(air_kerma_ugy=8000.0, hvl_mm_al=0.35)], limits)
    assert res.verdict == "pass" and res.criteria[0].value == pytest.approx(1.8)
    assert res.criteria[0].inputs["conversion_factor"] == pytest.approx(0.225)
    # 14 mGy x 0.225 = 3.15 mGy > 3.0: fails.
    res = analyse("mammo_phantom_dose", [QcExposure(air_kerma_ugy=14000.0, dicom_hvl_mm_al=0.35)], limits)
    assert res.verdict == "fail" and res.criteria[0].inputs["hvl_basis"] == "reported by the modality"


def test_conversion_table_rows_must_increase():
    with pytest.raises(QcLimitsError, match="mammo_agd_conversion"):
        limits_from_mapping({"mammo_agd_conversion": [[0.4, 0.25], [0.3, 0.2]]})


# ---------------------------------------------------------------- kVp, HVL, output

def test_mammo_kvp_accuracy_and_reproducibility():
    # 28 kV set; measured 28.5, 28.3, 28.6, 28.2: mean 28.4, (28.4 - 28) / 28 = 0.0143 <= 0.05;
    # s = sqrt((0.01 + 0.01 + 0.04 + 0.04) / 3) = 0.1826, C = 0.1826 / 28.4 = 0.00643 <= 0.02.
    exps = [QcExposure(set_kvp=28, kvp=k) for k in (28.5, 28.3, 28.6, 28.2)]
    res = analyse("mammo_kvp", exps, US)
    acc, rep = res.criteria
    assert acc.name == "mammo_kvp_accuracy" and acc.value == pytest.approx(0.4 / 28)
    assert rep.name == "mammo_kvp_reproducibility" and rep.value == pytest.approx(0.18257 / 28.4, rel=1e-4)
    assert res.verdict == "pass"
    # 29.5 kV measured at 28 set: 5.4 % > 5 %.
    assert analyse("mammo_kvp", [QcExposure(set_kvp=28, kvp=29.5)] * 4, US).verdict == "fail"


def test_mammo_hvl_uses_kvp_over_100_and_the_target_filter_bound():
    # 28 kV measured: minimum 0.28 mm Al; Mo/Rh upper bound 0.28 + 0.19 = 0.47 mm Al.
    limits = QcLimits(mammography_target_filter="Mo/Rh")
    res = analyse("mammo_hvl", [QcExposure(set_kvp=28, kvp=28.0, hvl_mm_al=0.40)], limits)
    assert res.test_type == "mammo_hvl" and res.verdict == "pass"
    assert [c.limit for c in res.criteria] == pytest.approx([0.28, 0.47])
    assert analyse("mammo_hvl", [QcExposure(set_kvp=28, kvp=28.0, hvl_mm_al=0.27)], limits).verdict == "fail"
    assert analyse("mammo_hvl", [QcExposure(set_kvp=28, kvp=28.0, hvl_mm_al=0.50)], limits).verdict == "fail"


def test_mammo_output_reproducibility():
    # 1000, 1040, 960, 1000 µGy: mean 1000, s = sqrt(3200 / 3) = 32.66, C = 0.0327 <= 0.05.
    exps = [QcExposure(set_kvp=28, set_mas=100, air_kerma_ugy=k) for k in (1000, 1040, 960, 1000)]
    res = analyse("mammo_output_reproducibility", exps, US)
    assert res.verdict == "pass" and res.criteria[0].value == pytest.approx(0.03266, rel=1e-3)
    # 1000, 1100, 900, 1000: s = 81.65, C = 0.0816 > 0.05.
    exps = [QcExposure(set_kvp=28, set_mas=100, air_kerma_ugy=k) for k in (1000, 1100, 900, 1000)]
    assert analyse("mammo_output_reproducibility", exps, US).verdict == "fail"


# ---------------------------------------------------------------- AEC

def test_aec_reproducibility_on_detector_air_kerma():
    # 2.0, 2.1, 1.9, 2.0 µGy: C = 0.0816 / 2.0 = 0.0408 <= 0.05.
    exps = [QcExposure(set_kvp=81, air_kerma_ugy=k) for k in (2.0, 2.1, 1.9, 2.0)]
    res = analyse("aec_reproducibility", exps, US)
    assert res.verdict == "pass" and res.criteria[0].inputs["quantity"] == "detector air kerma"
    assert res.criteria[0].value == pytest.approx(0.040825, rel=1e-4) and res.criteria[0].source == "local"


def test_aec_reproducibility_falls_back_to_the_exposure_index():
    exps = [QcExposure(set_kvp=81, dicom_exposure_index=ei) for ei in (400, 404, 396, 402)]
    res = analyse("aec_reproducibility", exps, US)
    assert res.criteria[0].inputs["quantity"] == "exposure index"
    assert res.criteria[0].value == pytest.approx(0.008530, rel=1e-3)


def test_aec_thickness_tracking():
    # Means 2.0 (100 mm), 2.2 (150 mm), 1.9 (200 mm): overall 2.0333; deviations -0.0164, +0.0820, -0.0656: all
    # within +-0.10. With 2.4 at 200 mm instead: overall 2.2, 100 mm at (2.0 - 2.2) / 2.2 = -0.0909 passes.
    exps = [QcExposure(phantom_thickness_mm=t, air_kerma_ugy=k)
            for t, k in ((100, 2.0), (100, 2.0), (150, 2.2), (200, 1.9))]
    res = analyse("aec_thickness_tracking", exps, US)
    assert res.verdict == "pass"
    assert [c.value for c in res.criteria] == pytest.approx([-0.016393, 0.081967, -0.065574], rel=1e-4)
    # 1.5 at 200 mm: overall 1.9, (1.5 - 1.9) / 1.9 = -0.2105 fails.
    exps[-1] = QcExposure(phantom_thickness_mm=200, air_kerma_ugy=1.5)
    assert analyse("aec_thickness_tracking", exps, US).verdict == "fail"
    one = analyse("aec_thickness_tracking", exps[:2], US)
    assert one.verdict == "incomplete" and "two or more phantom thicknesses" in one.reason


def test_mammo_hvl_upper_bound_from_the_images_target_filter():
    from agent.qc.matching import target_filter

    # DICOM defined terms or symbols; a multi-valued filter is not one filter.
    assert target_filter("MOLYBDENUM", "RHODIUM") == "Mo/Rh" and target_filter("w", "rh") == "W/Rh"
    assert target_filter("TUNGSTEN", "ALUMINUM\\RHODIUM") is None and target_filter(None, "RHODIUM") is None
    # 28 kV, reported W/Rh: upper bound 0.28 + 0.30 = 0.58 mm Al; the configured one wins when set.
    exps = [QcExposure(set_kvp=28, kvp=28.0, hvl_mm_al=0.50, target_filter="W/Rh")]
    res = analyse("mammo_hvl", exps, US)
    assert [c.limit for c in res.criteria] == pytest.approx([0.28, 0.58]) and res.verdict == "pass"
    res = analyse("mammo_hvl", exps, QcLimits(mammography_target_filter="Mo/Mo"))
    assert res.criteria[1].limit == pytest.approx(0.40) and res.verdict == "fail"
    # Mixed or unknown target/filter: only the kVp/100 minimum.
    mixed = exps + [QcExposure(set_kvp=28, kvp=28.0, hvl_mm_al=0.50, target_filter="Mo/Rh")]
    assert len(analyse("mammo_hvl", mixed, US).criteria) == 2  # one minimum per exposure, no upper bound


from tests.qc_fixtures import event, make_qc, published, reading  # noqa: E402,F401 - fixtures


def test_a_dicom_target_filter_goes_through_the_session_record(make_qc, sink, box):
    # The exposure event of a mammography image with its anode target and filter (fields of the mammography
    # exposure event, read by name when present): the technique, the DICOM cross-check and the record carry 'Mo/Rh'.
    qc = make_qc()
    ref = qc.open_session("mammo_kvp", ["kvp-1"], "JQ")["ref"]
    mg = event(0, "mg-1", kvp=28.0, exposure_mas=100.0).model_copy(
        update={"anode_target_material": "MOLYBDENUM", "filter_material": "RHODIUM"})
    qc.recorder(sink.emit)(reading(0.5, kvp=28.3, air_kerma_ugy=6000.0, exposure_time_ms=800.0))
    qc.observe([mg])
    [exposure] = qc.session(ref)["exposures"]
    assert exposure["technique"]["target_filter"] == "Mo/Rh"
    assert exposure["technique"]["dicom_reported"]["target_filter"] == "Mo/Rh"
    qc.confirm_all(ref)
    qc.finish(ref)
    [record] = published(box, "/qc/session")
    assert record["exposures"][0]["technique"]["target_filter"] == "Mo/Rh"
