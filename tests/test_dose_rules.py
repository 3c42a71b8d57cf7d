"""Dose rule evaluation as pure functions, on tables of cases: DRL matching and levels, DI bands, cumulative
thresholds, percentiles; and the rules file / [dose] config validation."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.dicom.extract import extract
from agent.dose.evaluate import (DrlMatcher, MatchKey, alert_msg_id, crossed, di_band, di_finding, drl_findings,
                                 exposure_findings, in_age_band, percentile, to_alert)
from agent.dose.rules import DeviationIndexBands, DoseRules, DrlRule, load_rules
from agent.payloads.exposure import ExposureEvent
from tests import dicom_factory as factory
from tests.realparts import REPO

EXAMPLE_RULES = REPO / "config" / "dose-rules.example.toml"
BANDS = DeviationIndexBands()


def event(**values) -> ExposureEvent:
    base = {"msg_id": "m1", "site": "s", "room": "r", "source": "image", "modality": "DX",
            "received_at": datetime(2024, 1, 5, 9, 0, tzinfo=timezone.utc), "event_ref": "e1", "study_ref": "s1",
            "irradiation_type": "acquisition", "body_part": "CHEST", "view": "PA", "protocol": "Thorax PA",
            "patient_age_years": 50}
    return ExposureEvent(**{**base, **values})


# ---- deviation index bands ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("di, band", [
    (None, "unknown"),
    (3.01, "excessive"), (3.0, "over"),  # "DI > +3": exactly +3 is not excessive
    (2.99, "over"), (1.01, "over"), (1.0, "normal"),  # "+1..+3" is (1, 3]: exactly +1 is normal
    (0.0, "normal"), (-1.0, "normal"), (-1.01, "under"),  # "< -1"
    (-3.0, "under"), (-3.01, "excessively-under"), (-40.0, "excessively-under"), (40.0, "excessive"),
])
def test_di_band_limits_are_strict(di, band):
    assert di_band(di, BANDS) == band


@pytest.mark.parametrize("di, alert_band, ratio", [
    (3.5, "excessive", 10 ** 0.35), (3.0, None, None), (-3.0, None, None), (-3.2, "excessively-under", 10 ** -0.32),
    (2.0, None, None), (-2.0, None, None), (None, None, None),
])
def test_di_alerts_only_in_alerting_bands(di, alert_band, ratio):
    finding = di_finding(di, BANDS)
    if alert_band is None:
        assert finding is None
    else:
        assert finding.band == alert_band and finding.rule == f"deviation-index:{alert_band}"
        assert finding.ratio == pytest.approx(ratio)  # EI / EI_T
        assert finding.level == (3.0 if alert_band == "excessive" else -3.0)


def test_di_alert_bands_are_configurable():
    bands = DeviationIndexBands(alert=["over", "under"], over_above=0.5)
    assert di_finding(0.6, bands).band == "over"
    assert di_finding(-1.5, bands).band == "under"
    assert di_finding(3.5, bands) is None  # excessive, but not listed


@pytest.mark.parametrize("values", [
    {"over_above": 3.5},  # over above excessive
    {"under_below": 1.0},  # under not below over
    {"alert": ["normal"]},
])
def test_di_bands_must_be_ordered(values):
    with pytest.raises(ValueError):
        DeviationIndexBands(**values)


@pytest.mark.parametrize("ei, ei_t, sent_di, expected, band", [
    ("500", "250", None, round(10 * math.log10(2), 2), "excessive"),  # computed when the object carries no DI: 3.01
    ("400", "250", None, round(10 * math.log10(1.6), 2), "over"),
    ("500", "250", "-0.5", -0.5, "normal"),  # the device's own DI wins
    ("500", None, None, None, "unknown"),  # missing EI_T: no DI
    (None, "250", None, None, "unknown"),
])
def test_extraction_computes_di_when_absent(ei, ei_t, sent_di, expected, band):
    ds = factory.make_dx(exposure_index=ei, target_exposure_index=ei_t, deviation_index=sent_di)
    ev = extract(factory.roundtrip(ds), factory.make_context()).events[0]
    assert ev.deviation_index == expected
    assert di_band(ev.deviation_index, BANDS) == band


# ---- DRL levels --------------------------------------------------------------------------------------------------
CHEST = DrlRule(id="chest-pa", body_part="CHEST", view="PA", dap_gy_cm2=0.1, entrance_dose_mgy=0.4)


@pytest.mark.parametrize("dap, esd, quantities", [
    (0.99e-5, 0.3, []),
    (1.0e-5, 0.4, []),  # exactly at both levels: "above" is strict, no alert
    (1.01e-5, None, ["dap_gy_m2"]),
    (None, 0.41, ["entrance_dose_mgy"]),  # missing DAP: compared on entrance dose only
    (None, None, []),  # neither reported: nothing to compare
    (2.0e-5, 0.8, ["dap_gy_m2", "entrance_dose_mgy"]),
])
def test_drl_levels(dap, esd, quantities):
    findings = drl_findings(CHEST, dap, esd)
    assert [f.quantity for f in findings] == quantities
    for f in findings:
        assert f.ratio == pytest.approx(f.value / f.level) and f.rule == "chest-pa"


def test_level_equals_a_dap_sent_exactly_at_it():
    # 0.3 Gy·cm² must equal 3 dGy·cm² as extraction converts it (a plain float product differs in the last bit).
    rule = DrlRule(id="lat", body_part="CHEST", view="LL", dap_gy_cm2=0.3)
    ds = factory.make_dx(dap_dgy_cm2="3", view="LL")
    ev = extract(factory.roundtrip(ds), factory.make_context()).events[0]
    assert ev.dap_gy_m2 == rule.dap_gy_m2
    assert drl_findings(rule, ev.dap_gy_m2, None) == []


@pytest.mark.parametrize("age, age_min, age_max, inside", [
    (None, None, None, True), (None, 1, 5, False), (0, 0, 1, True), (1, 0, 1, False), (1, 1, 5, True),
    (4, 1, 5, True), (5, 1, 5, False), (16, 16, None, True), (15, 16, None, False), (90, None, 16, False),
])
def test_age_band_edges(age, age_min, age_max, inside):
    assert in_age_band(age, age_min, age_max) is inside


def _matcher(*rules: DrlRule, match: str = "glob") -> DrlMatcher:
    return DrlMatcher(DoseRules(drl=list(rules), match=match))


@pytest.mark.parametrize("fields, expected", [
    ({}, "paed-1-5"),
    ({"patient_age_years": 5}, "adult"),  # age_max is exclusive
    ({"patient_age_years": 0}, "adult"),  # no rule for under-ones: the unbanded rule applies
    ({"patient_age_years": None}, None),  # an exam with banded rules and no age: band unknown, never adult
    ({"body_part": "chest ", "view": "pa"}, "paed-1-5"),  # case and surrounding blanks do not matter
    ({"view": "AP"}, None),
    ({"body_part": None}, None),  # a criterion never matches a missing value
    ({"irradiation_type": "fluoroscopy"}, None),  # acquisitions only by default
    ({"irradiation_type": None}, None),
])
def test_first_matching_rule_applies(fields, expected):
    matcher = _matcher(
        DrlRule(id="paed-1-5", body_part="CHEST", view="PA", age_min=1, age_max=5, dap_gy_cm2=0.025),
        DrlRule(id="adult", body_part="CHEST", view="PA", dap_gy_cm2=0.1))
    rule = matcher.first(MatchKey.of(event(**{"patient_age_years": 3, **fields})))
    assert (rule.id if rule else None) == expected


@pytest.mark.parametrize("match, pattern, protocol, matches", [
    ("exact", "Thorax PA", "THORAX PA", True),
    ("exact", "Thorax PA", "Thorax PA 180cm", False),
    ("exact", "Thorax*", "Thorax PA", False),  # exact means exact: no wildcards
    ("glob", "*thorax*pa*", "XR THORAX PA 180", True),
    ("glob", "*thorax*pa*", "Thorax LAT", False),
    ("glob", "thorax?pa", "Thorax_PA", True),
    ("regex", r"(chest|thorax)\s*(pa|p\.a\.)", "CHEST P.A.", True),
    ("regex", r"chest", "chest pa", False),  # anchored at both ends
    ("regex", r"chest.*", "Chest\nPA", True),  # vendor text with a newline still matches .*
])
def test_protocol_matching_modes(match, pattern, protocol, matches):
    rule = DrlRule(id="r", protocol=pattern, match=match, dap_gy_cm2=1)
    found = _matcher(rule).first(MatchKey.of(event(protocol=protocol)))
    assert (found is not None) is matches


def test_file_wide_match_mode_and_rule_override():
    rules = DoseRules(match="regex", drl=[DrlRule(id="a", protocol="abd.*", dap_gy_cm2=1),
                                          DrlRule(id="b", protocol="*pelvis*", match="glob", dap_gy_cm2=1)])
    matcher = DrlMatcher(rules)
    assert matcher.first(MatchKey.of(event(protocol="Abdomen AP"))).id == "a"
    assert matcher.first(MatchKey.of(event(protocol="XR Pelvis AP"))).id == "b"


def test_exposure_findings_combine_drl_and_di():
    matcher = _matcher(CHEST)
    rules = DoseRules(drl=[CHEST])
    ev = event(dap_gy_m2=3e-5, deviation_index=3.4, patient_age_years=40)
    assert [(f.alert, f.quantity) for f in exposure_findings(ev, rules, matcher)] == [
        ("notification-level", "dap_gy_m2"), ("deviation-index", "deviation_index")]
    assert exposure_findings(event(dap_gy_m2=None, deviation_index=None), rules, matcher) == []


# ---- cumulative thresholds ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dose_rp, dap, found", [
    (2.99, 0.0, []),
    (3.0, 0.0, []),  # exactly at 3 Gy: not above
    (3.01, 0.0, [("ncrp168-notify-kar", 3.0)]),
    (4.0, 0.0, [("ncrp168-notify-kar", 3.0)]),  # exactly at the 4 Gy step: still the 3 Gy step
    (4.01, 0.0, [("ncrp168-notify-kar", 4.0)]),
    (5.5, 0.031, [("ncrp168-notify-kar", 5.0), ("ncrp168-srdl-kar", 5.0), ("ncrp168-notify-kap", 0.03)]),
    (0.0, 0.05, [("ncrp168-notify-kap", 0.04)]),  # exactly 500 Gy·cm²: the 400 step, no SRDL
    (0.0, 0.0501, [("ncrp168-notify-kap", 0.05), ("ncrp168-srdl-kap", 0.05)]),
])
def test_cumulative_thresholds_crossed(dose_rp, dap, found):
    findings = crossed({"study_dose_rp_gy": dose_rp, "study_dap_gy_m2": dap}, DoseRules().cumulative)
    assert [(f.rule, f.level) for f in findings] == [(r, pytest.approx(level)) for r, level in found]


# ---- alerts ------------------------------------------------------------------------------------------------------
def test_alert_ids_are_deterministic_and_carry_no_identifiers():
    ev = event(dap_gy_m2=3e-5, acquired_at=datetime(2024, 1, 5, 10, 0, tzinfo=timezone.utc))
    finding = drl_findings(CHEST, ev.dap_gy_m2, None)[0]
    first, again = to_alert(finding, ev), to_alert(finding, ev.model_copy(update={"msg_id": "rdsr-view"}))
    assert first.msg_id == again.msg_id == alert_msg_id("e1", finding)  # image and RDSR views: one alert
    assert first.msg_id != to_alert(finding, ev.model_copy(update={"event_ref": "e2"})).msg_id
    payload = first.model_dump(by_alias=True)
    assert payload["schema"] == "xray.dose-alert/1" and payload["value"] == 3e-5 and payload["level"] == 1e-5
    assert payload["ratio"] == pytest.approx(3) and payload["unit"] == "Gy·m²" and payload["event_ref"] == "e1"
    assert not {"patient_age_years", "patient_sex"} & payload.keys()


# ---- percentiles -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [[1.0], [3.0, 1.0], [1.0, 2.0, 3.0, 4.0], [5, 1, 4, 2, 3, 9, 7], [0.1] * 5])
def test_percentiles_match_the_inclusive_quartile_method(values):
    assert percentile(values, 50) == pytest.approx(statistics.median(values))
    q75 = statistics.quantiles(values, n=4, method="inclusive")[2] if len(values) > 1 else values[0]
    assert percentile(values, 75) == pytest.approx(q75)
    assert percentile([], 50) is None


# ---- the rules file and the [dose] config ------------------------------------------------------------------------
def test_example_rules_load_and_defaults_apply_without_a_file():
    rules = load_rules(EXAMPLE_RULES)
    assert len(rules.notification_level) >= 10
    assert [r.id for r in rules.notification_level][:1] == ["paed-chest-ap-pa-0-3m"]
    assert {t.quantity for t in rules.cumulative} == {"dose_rp_gy", "dap_gy_cm2", "fluoro_time_min"}
    assert rules.deviation_index == DeviationIndexBands()
    assert rules.diagnostic_reference_level and rules.audit.min_examinations == 20
    assert rules.patient_cumulative[0].window_days == 365
    default = load_rules(None)
    assert default.notification_level == [] and [t.id for t in default.cumulative][:3] == [
        "ncrp168-notify-kar", "ncrp168-notify-kar-plane", "ncrp168-srdl-kar"]


def test_example_rules_never_compare_a_percentile_with_a_drl():
    text = EXAMPLE_RULES.read_text().lower()
    assert "75th" not in text and "percentile" not in text and "[[drl]]" not in text.replace("called [[drl]]", "")


@pytest.mark.parametrize("text, needle", [
    ('[[drl]]\nid = "a"\nbody_part = "CHEST"\ndap_gy_cm2 = 0.1\n[[drl]]\nid = "a"\nbody_part = "X"\n'
     'dap_gy_cm2 = 1\n', "used twice"),
    ('[[drl]]\nid = "a"\nprotocol = "(unclosed"\nmatch = "regex"\ndap_gy_cm2 = 1\n', "bad pattern"),
    ('[[drl]]\nid = "a"\nbody_part = "CHEST"\ndap_gy_cm2 = 0.1\ndap_gycm2 = 1\n', "drl.0.dap_gycm2"),
    ('[[drl]]\nid = "a"\nbody_part = "CHEST"\n', "needs a level"),
    ('[[drl]]\nid = "a"\ndap_gy_cm2 = 1\n', "needs protocol or body_part"),
    ('[[drl]]\nid = "a"\nbody_part = "CHEST"\ndap_gy_cm2 = 1\nage_min = 5\nage_max = 5\n', "age_max"),
    ('[[drl]]\nid = "a"\nbody_part = "CHEST"\ndap_gy_cm2 = -1\n', "greater than 0"),
    ('[deviation_index]\nexcessive_above = 0.5\n', "over_above"),
    ('[repeats]\nkey = ["laterality"]\n', "repeats.key.0"),
    ("drl = [", "not valid TOML"),
])
def test_bad_rules_files_are_named(tmp_path, text, needle):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_rules(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def _config(tmp_path: Path, dose: str) -> Path:
    (tmp_path / "site.key").write_text("0123456789abcdef0123456789abcdef")
    path = tmp_path / "agent.toml"
    path.write_text(f'[site]\nid = "s"\nroom = "r"\nsecret_key_file = "site.key"\n[outbox]\npath = "state/o.db"\n'
                    f"[dose]\n{dose}")
    return path


def test_dose_section_resolves_paths_and_reads_the_rules(tmp_path):
    (tmp_path / "rules.toml").write_text(EXAMPLE_RULES.read_text())
    cfg = load_config(_config(tmp_path, 'rules_file = "rules.toml"\nsummary_at = "18:30"\nhistory_days = 30\n'))
    assert cfg.dose.enabled and cfg.dose.rules_file == tmp_path / "rules.toml"
    assert cfg.dose.summary_at.hour == 18 and cfg.dose.summary_at.minute == 30
    assert cfg.dose.state_file(cfg.outbox.path) == tmp_path / "state" / "dose.db"  # next to the outbox
    assert len(cfg.dose.rules().drl) == len(load_rules(EXAMPLE_RULES).drl)


@pytest.mark.parametrize("dose, needle", [
    ('rules_file = "missing.toml"\n', "cannot read dose rules"),
    ('summary_at = "25:00"\n', "dose.summary_at"),
    ("enabeld = true\n", "dose.enabeld: unknown key"),
])
def test_bad_dose_config_names_the_key(tmp_path, dose, needle):
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, dose))
    assert needle in str(err.value)


def test_check_rules_tool_lists_the_shipped_rules():
    result = subprocess.run([sys.executable, "-m", "agent.dose", "check-rules", str(EXAMPLE_RULES)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "notification level chest-pa: DAP Gy·cm² 0.1, ESD mGy 0.4" in result.stdout
    assert "notification level paed-chest-ap-pa-0-3m: band 0d-<3m DAP Gy·cm² 0.01" in result.stdout
    assert "cumulative ncrp168-srdl-kar: dose_rp_gy > 5" in result.stdout
    assert "cumulative ncrp168-notify-kar-plane: dose_rp_gy > 3, then every 1 (plane each)" in result.stdout
    assert "DRL drl-chest-pa (Chest PA): band 16y-<∞ median DAP per examination 0.1 Gy·cm²" in result.stdout
