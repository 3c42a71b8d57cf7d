"""Radiation Dose SR extraction: one event per irradiation event, totals as a summary, RDSR quirks and dedupe."""

from datetime import datetime, timedelta, timezone

import pytest
from pydicom import uid as sop
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from agent.dicom import Extraction, extract
from agent.pseudonym import make_ref
from tests.dicom_factory import (
    TEST_SECRET, DoseEvent, DoseTotals, acquisition_event, fluoro_event, make_context, make_ct_dose_report,
    make_cumulative_rdsrs, make_dx, make_rdsr, roundtrip,
)

CTX = make_context()


def events_of(*events: DoseEvent, **kwargs):
    return extract(make_rdsr(list(events), **kwargs), CTX).events


def only_event(event: DoseEvent, **kwargs):
    (extracted,) = events_of(event, **kwargs)
    return extracted


@pytest.mark.parametrize("read", [lambda ds: ds, roundtrip], ids=["in-memory", "from-bytes"])
def test_one_event_per_irradiation_event_plus_summary(read):
    extraction = extract(read(make_rdsr([acquisition_event(), fluoro_event(), acquisition_event()])), CTX)
    acquisition, fluoro, _ = extraction.events
    assert [e.irradiation_type for e in extraction.events] == ["acquisition", "fluoroscopy", "acquisition"]
    assert {e.source for e in extraction.events} == {"rdsr"}
    assert (acquisition.kvp, acquisition.tube_current_ma, acquisition.exposure_time_ms) == (75.0, 250.0, 40.0)
    assert (acquisition.exposure_mas, acquisition.dap_gy_m2, acquisition.dose_rp_gy) == (10.0, 0.000123, 0.00056)
    assert (acquisition.sid_mm, acquisition.protocol, acquisition.body_part) == (1150.0, "Abdomen AP", "Abdomen")
    assert acquisition.view == "antero-posterior"
    assert acquisition.acquired_at == datetime(2024, 1, 5, 10, 15, 30, tzinfo=timezone(timedelta(hours=1)))
    assert (fluoro.kvp, fluoro.tube_current_ma, fluoro.pulses, fluoro.exposure_mas) == (72.0, 13.0, 120, None)
    assert extraction.summary.events_count == 3
    assert extraction.payloads() == (*extraction.events, extraction.summary)


def test_summary_totals_and_irradiation_period():
    totals = DoseTotals(dap_total=("57.9", "dGy.cm2"), fluoro_time=("480000", "ms"), frames=12,
                        acquisition_dose_rp_total=("1.5", "mGy"), acquisition_time=("2.5", "s"))
    summary = extract(make_rdsr([acquisition_event()], totals=totals), CTX).summary
    assert (summary.dap_total_gy_m2, summary.fluoro_time_total_s, summary.radiographic_frames_total) == (
        0.000579, 480.0, 12)
    assert (summary.acquisition_dose_rp_total_gy, summary.acquisition_time_total_s) == (0.0015, 2.5)
    assert (summary.fluoro_dap_total_gy_m2, summary.acquisition_dap_total_gy_m2, summary.dose_rp_total_gy) == (
        0.000456, 0.000123, 0.00266)
    assert summary.irradiation_started_at.isoformat() == "2024-01-05T10:10:00+01:00"
    assert summary.irradiation_ended_at.isoformat() == "2024-01-05T10:30:00+01:00"
    assert summary.study_ref and summary.schema_ == "xray.dose-summary/1"


def test_biplane_totals_are_summed_over_planes():
    plane_a = DoseTotals(dap_total=("0.0001", "Gy.m2"), frames=3, plane=("113620", "DCM", "Plane A"))
    plane_b = DoseTotals(dap_total=("0.0002", "Gy.m2"), frames=4, plane=("113621", "DCM", "Plane B"))
    summary = extract(make_rdsr([acquisition_event()], totals=[plane_a, plane_b]), CTX).summary
    assert summary.dap_total_gy_m2 == pytest.approx(0.0003)
    assert summary.radiographic_frames_total == 7


def test_report_without_accumulated_data_still_summarises_events():
    summary = extract(make_rdsr([acquisition_event()], totals=None), CTX).summary
    assert (summary.events_count, summary.dap_total_gy_m2) == (1, None)


@pytest.mark.parametrize("dap, gy_m2", [(("12.3", "dGy.cm2"), 0.000123), (("0.000123", "Gym2"), 0.000123),
                                        (("123", "cGy.cm2"), 0.000123), (("1230", "mGy.cm2"), 0.000123),
                                        (("123", "uGy.m2"), 0.000123), (("5", "furlong.acre"), None)])
def test_dap_unit_variants(dap, gy_m2):
    assert only_event(acquisition_event(dap=dap)).dap_gy_m2 == gy_m2


def test_dose_rp_sent_in_mgy():
    assert only_event(acquisition_event(dose_rp=("2.1", "mGy"))).dose_rp_gy == 0.0021


def test_exposure_spelled_uas():
    assert only_event(acquisition_event(exposure=("10000", "uAs"))).exposure_mas == 10.0


def test_retired_exposure_time_code_is_accepted():
    assert only_event(acquisition_event(exposure_time_code="113735")).exposure_time_ms == 40.0


def test_empty_measured_value_sequence_gives_null():
    event = only_event(acquisition_event(empty=("122130", "113733")))
    assert (event.dap_gy_m2, event.kvp, event.dose_rp_gy) == (None, None, 0.00056)


@pytest.mark.parametrize("style", ["items", "multivalue"])
def test_per_pulse_value_lists(style):
    event = only_event(fluoro_event(per_pulse=style, kvp=(["70", "72", "77"], "kV"),
                                    exposure_time=(["5", "6", "7"], "ms"), exposure=(["100", "200", "300"], "uA.s")))
    assert (event.kvp, event.exposure_time_ms, event.exposure_mas) == (73.0, 18.0, 0.6)  # kV mean; ms, mAs sum


def test_average_tube_current_when_no_tube_current():
    event = only_event(acquisition_event(tube_current=None, average_tube_current=("321", "mA")))
    assert event.tube_current_ma == 321.0
    both = only_event(acquisition_event(average_tube_current=("321", "mA")))
    assert both.tube_current_ma == 250.0


def test_code_meanings_are_ignored():
    kwargs = {"study_uid": "1.2.826.0.1.77.1", "sop_uid": "1.2.826.0.1.77.2"}
    events = [acquisition_event(uid="1.2.826.0.1.77.3"), fluoro_event(uid="1.2.826.0.1.77.4")]
    plain = extract(make_rdsr(events, **kwargs), CTX)
    scrambled = extract(make_rdsr(events, scramble_meanings=True, **kwargs), CTX)
    assert scrambled.summary == plain.summary
    assert [e.model_dump(exclude={"body_part", "view"}) for e in scrambled.events] == [
        e.model_dump(exclude={"body_part", "view"}) for e in plain.events]  # labels are meanings, so they change


def test_legacy_srt_fluoroscopy_code():
    event = only_event(fluoro_event(fluoro_code=("P5-06000", "SRT", "Fluoroscopy")))
    assert event.irradiation_type == "fluoroscopy"


def test_exposure_index_and_entrance_exposure_with_computed_deviation_index():
    event = only_event(acquisition_event(exposure_index="310", target_exposure_index="250",
                                         entrance_exposure=("0.085", "mGy")))
    assert (event.exposure_index, event.target_exposure_index, event.deviation_index) == (310.0, 250.0, 0.93)
    assert event.entrance_dose_mgy == 0.085


def test_deviation_index_as_sent():
    event = only_event(acquisition_event(exposure_index="310", target_exposure_index="250", deviation_index="-0.4"))
    assert event.deviation_index == -0.4


def test_event_time_zone_from_header_offset():
    event = only_event(acquisition_event(), timezone_offset="+0530")
    assert event.acquired_at.isoformat() == "2024-01-05T10:15:30+05:30"


def test_implicit_vr_and_private_tags():
    kwargs = {"study_uid": "1.2.826.0.1.78.1", "sop_uid": "1.2.826.0.1.78.2"}
    events = [acquisition_event(uid="1.2.826.0.1.78.3")]
    plain = extract(make_rdsr(events, **kwargs), CTX)
    quirky = extract(roundtrip(make_rdsr(events, transfer_syntax=ImplicitVRLittleEndian, private_tags=True, **kwargs)),
                     CTX)
    assert quirky == plain


def test_cumulative_report_resent_repeats_earlier_msg_ids():
    events = [acquisition_event(), fluoro_event(), acquisition_event(), fluoro_event()]
    first, second = (extract(roundtrip(ds), CTX) for ds in make_cumulative_rdsrs(events, counts=(2, 4)))
    first_ids, second_ids = [e.msg_id for e in first.events], [e.msg_id for e in second.events]
    assert second_ids[:2] == first_ids and len(set(second_ids)) == 4
    assert first.summary.msg_id != second.summary.msg_id


def test_same_report_received_twice_repeats_every_msg_id():
    events, study = [acquisition_event(), fluoro_event()], generate_uid()
    first, again = (extract(make_rdsr(events, study_uid=study), CTX) for _ in range(2))  # new SOP Instance UIDs
    assert [p.msg_id for p in first.payloads()] == [p.msg_id for p in again.payloads()]


def test_event_msg_id_depends_on_the_irradiation_event_uid_and_content_not_the_study():
    event = acquisition_event(uid="1.2.826.0.1.79.1")
    in_one_study, in_another = only_event(event), only_event(event, study_uid=generate_uid())
    assert in_one_study.msg_id == in_another.msg_id
    assert in_one_study.event_ref == make_ref(TEST_SECRET, "event", "1.2.826.0.1.79.1\x1e20240105101530")


def test_image_and_rdsr_views_of_one_exposure_share_event_ref_not_msg_id():
    image_event = extract(make_dx(irradiation_event_uid="1.2.826.0.1.80.1"), CTX).events[0]
    rdsr_event = only_event(acquisition_event(uid="1.2.826.0.1.80.1"))
    assert image_event.event_ref == rdsr_event.event_ref and image_event.msg_id != rdsr_event.msg_id


def test_missing_event_uid_falls_back_to_start_time_within_the_study():
    events = [acquisition_event(uid=None), fluoro_event(uid=None, started="20240105102000")]
    first, second = (extract(ds, CTX) for ds in make_cumulative_rdsrs(events, counts=(1, 2)))
    assert first.events[0].msg_id == second.events[0].msg_id != second.events[1].msg_id


def test_enhanced_sr_dose_report_is_read():
    events = events_of(acquisition_event(), sop_class_uid=sop.EnhancedSRStorage)
    assert len(events) == 1 and events[0].dap_gy_m2 == 0.000123


def test_enhanced_sr_with_another_title_is_not_a_dose_report():
    ds = make_rdsr([acquisition_event()], sop_class_uid=sop.EnhancedSRStorage,
                   title=("126000", "DCM", "Imaging Measurement Report"))
    assert extract(ds, CTX) == Extraction()


def test_ct_dose_report_gives_empty_extraction():
    extraction = extract(roundtrip(make_ct_dose_report()), CTX)
    assert extraction.payloads() == ()
    assert extraction.not_for_room == "CT dose report: not an X-ray room object"
