"""Image-header extraction (CR, DX, MG, XA, RF), dispatch, identity/dedupe and the quirks of the reference doc."""

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import BaseModel
from pydicom import Dataset, dcmread
from pydicom import uid as sop
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from agent.dicom import ExtractContext, Extraction, ExtractionError, extract
from agent.payloads.exposure import DoseSummary, ExposureEvent
from agent.pseudonym import make_ref
from tests.dicom_factory import (
    RECEIVED_AT, TEST_SECRET, acquisition_event, fluoro_event, make_context, make_cr, make_ct_dose_report, make_dx,
    make_dx_pair, make_mg, make_non_exposure, make_rdsr, make_rf, make_xa, roundtrip,
)

CTX = make_context()
BERLIN_WINTER = timezone(timedelta(hours=1))


def one_event(ds: Dataset, ctx: ExtractContext = CTX) -> ExposureEvent:
    extraction = extract(ds, ctx)
    assert len(extraction.events) == 1 and extraction.summary is None
    return extraction.events[0]


@pytest.mark.parametrize("read", [lambda ds: ds, roundtrip], ids=["in-memory", "from-bytes"])
def test_dx_worked_values(read):
    event = one_event(read(make_dx()))
    assert (event.source, event.modality, event.irradiation_type) == ("image", "DX", "acquisition")
    assert (event.manufacturer, event.model, event.station_name, event.device_serial) == (
        "ACME Medical", "RadMaster 500", "XR-ROOM-3", "SN-42-0815")
    assert (event.body_part, event.view, event.protocol) == ("CHEST", "PA", "Thorax PA")
    assert event.kvp == 125.0
    assert event.exposure_mas == 1.04  # ExposureInuAs 1040 wins over the rounded Exposure = 1
    assert event.exposure_time_ms == 6.5  # ExposureTimeInuS 6500 over ExposureTime 6
    assert event.tube_current_ma == 160.0  # XRayTubeCurrentInuA over XRayTubeCurrent
    assert event.dap_gy_m2 == 9.23e-7  # 0.0923 dGy·cm²
    assert (event.entrance_dose_mgy, event.exposure_index, event.target_exposure_index) == (0.085, 310.0, 250.0)
    assert (event.deviation_index, event.sid_mm, event.pulses, event.dose_rp_gy) == (0.93, 1800.0, None, None)
    assert event.acquired_at == datetime(2024, 1, 5, 10, 15, 30, 250000, tzinfo=BERLIN_WINTER)
    assert event.received_at == RECEIVED_AT and event.ts == RECEIVED_AT
    assert (event.site, event.room, event.patient_age_years, event.patient_sex) == ("site-1", "room-3", 65, "F")


def test_exposure_in_uas_preferred_over_mas():
    assert one_event(make_dx(exposure_uas=12500, exposure_mas=12)).exposure_mas == 12.5


def test_falls_back_to_less_precise_tags():
    event = one_event(make_dx(exposure_uas=None, exposure_time_us=None, tube_current_ua=None))
    assert (event.exposure_mas, event.exposure_time_ms, event.tube_current_ma) == (1.0, 6.0, 160.0)


@pytest.mark.parametrize("read", [lambda ds: ds, roundtrip], ids=["in-memory", "from-bytes"])
def test_decimals_in_integer_string_quirk(read):
    ds = make_dx(exposure_uas=None, exposure_time_us=None, raw={"Exposure": b"40.196", "ExposureTime": b"161.3 "})
    event = one_event(read(ds))
    assert (event.exposure_mas, event.exposure_time_ms) == (40.196, 161.3)


def test_value_longer_than_its_vr_allows_quirk():
    event = one_event(roundtrip(make_dx(raw={"ImageAndFluoroscopyAreaDoseProduct": b"0.092300000000000000"})))
    assert event.dap_gy_m2 == 9.23e-7


def test_sid_sent_in_dm_quirk():
    assert one_event(make_dx(sid_mm="18")).sid_mm == 1800.0


def test_missing_dates_quirk():
    event = one_event(roundtrip(make_dx(acquisition_dt=None)))
    assert event.acquired_at is None


def test_acquisition_time_falls_back_to_content_time():
    event = one_event(make_dx(acquisition_dt=None, content_dt="20240105101532"))
    assert event.acquired_at == datetime(2024, 1, 5, 10, 15, 32, tzinfo=BERLIN_WINTER)


def test_timezone_offset_from_utc_wins_over_site_zone():
    event = one_event(make_dx(timezone_offset="-0500"))
    assert event.acquired_at.utcoffset() == timedelta(hours=-5)
    assert event.acquired_at.isoformat() == "2024-01-05T10:15:30.250000-05:00"


def test_datetime_with_its_own_offset():
    event = one_event(make_xa(acquisition_dt="20240105101530+0200"))
    assert event.acquired_at.isoformat() == "2024-01-05T10:15:30+02:00"


def test_site_zone_applies_when_object_has_none():
    event = one_event(make_dx(), make_context(timezone="America/New_York"))
    assert event.acquired_at.isoformat() == "2024-01-05T10:15:30.250000-05:00"


def test_empty_sequences_quirk():
    ds = make_dx(body_part=None, view=None, protocol=None,
                 extra={"AnatomicRegionSequence": [], "ViewCodeSequence": [], "PerformedProtocolCodeSequence": []})
    event = one_event(roundtrip(ds))
    assert (event.body_part, event.view, event.protocol) == (None, None, None)


def test_coded_body_part_and_view_when_no_strings():
    region, view = Dataset(), Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "51185008", "SCT", "Chest"
    view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning = "399348003", "SCT", "postero-anterior"
    event = one_event(make_dx(body_part=None, view=None,
                              extra={"AnatomicRegionSequence": [region], "ViewCodeSequence": [view]}))
    assert (event.body_part, event.view) == ("Chest", "postero-anterior")


def test_private_tags_and_implicit_vr_quirks():
    plain = one_event(make_dx(sop_uid="1.2.3.4", irradiation_event_uid="1.2.3.5", study_uid="1.2.3.6"))
    quirky = one_event(roundtrip(make_dx(sop_uid="1.2.3.4", irradiation_event_uid="1.2.3.5", study_uid="1.2.3.6",
                                         private_tags=True, transfer_syntax=ImplicitVRLittleEndian)))
    assert quirky == plain


def test_deviation_index_computed_when_absent():
    assert one_event(make_dx(deviation_index=None)).deviation_index == 0.93  # 10·log10(310/250)
    assert one_event(make_dx(deviation_index=None, target_exposure_index=None)).deviation_index is None


def test_vendor_exposure_indicator_is_not_an_exposure_index():
    event = one_event(make_cr())  # Sensitivity (S value) 200, no IEC EI
    assert event.exposure_index is None and event.deviation_index is None


def test_cr_values():
    event = one_event(make_cr())
    assert (event.modality, event.kvp, event.exposure_mas, event.exposure_time_ms) == ("CR", 81.0, 5.0, 20.0)
    assert event.dap_gy_m2 is None


def test_mg_values():
    event = one_event(make_mg())
    assert (event.modality, event.kvp, event.exposure_mas, event.entrance_dose_mgy) == ("MG", 29.0, 85.0, 6.1)
    assert (event.body_part, event.view, event.sid_mm) == ("BREAST", "CC", 650.0)


@pytest.mark.parametrize("frames", [1, 10])
def test_xa_single_and_multi_frame_give_one_event(frames):
    event = one_event(roundtrip(make_xa(frames=frames)))
    assert (event.modality, event.irradiation_type, event.kvp, event.dap_gy_m2) == ("XA", "acquisition", 78.0, 0.000123)
    assert event.acquired_at == datetime(2024, 1, 5, 10, 15, 30, 250000, tzinfo=BERLIN_WINTER)


def test_rf_fluoro_store_is_fluoroscopy():
    event = one_event(make_rf())
    assert (event.modality, event.irradiation_type, event.exposure_time_ms) == ("RF", "fluoroscopy", 15000.0)


def test_enhanced_xa_reads_shared_functional_groups():
    acquisition, shared = Dataset(), Dataset()
    acquisition.KVP, acquisition.XRayTubeCurrentInmA, acquisition.ExposureInmAs = "82", 410.5, 28.7
    shared.FrameAcquisitionSequence = [acquisition]
    ds = make_xa(sop_class_uid=sop.EnhancedXAImageStorage, kvp=None, tube_current_ma=None,
                 extra={"SharedFunctionalGroupsSequence": [shared]})
    event = one_event(roundtrip(ds))
    assert (event.kvp, event.tube_current_ma, event.exposure_mas) == (82.0, 410.5, 28.7)


def test_processing_and_presentation_share_msg_id():
    processing, presentation = make_dx_pair()
    first, second = one_event(processing), one_event(roundtrip(presentation))
    assert first.msg_id == second.msg_id and first.event_ref == second.event_ref


def test_pair_without_irradiation_event_uid_uses_acquisition_fallback():
    processing, presentation = make_dx_pair(share_irradiation_uid=False)
    assert one_event(processing).msg_id == one_event(presentation).msg_id


def test_distinct_exposures_of_one_study_get_distinct_msg_ids():
    study = generate_uid()
    first = make_dx(study_uid=study, irradiation_event_uid=None, acquisition_dt="20240105101530")
    later = make_dx(study_uid=study, irradiation_event_uid=None, acquisition_dt="20240105101545")
    lateral = make_dx(study_uid=study, irradiation_event_uid=None, acquisition_dt="20240105101530", view="LL")
    assert len({one_event(ds).msg_id for ds in (first, later, lateral)}) == 3


def test_without_uid_or_precise_time_each_image_is_its_own_exposure():
    processing, presentation = make_dx_pair(share_irradiation_uid=False, acquisition_dt="202401051015")
    assert one_event(processing).msg_id != one_event(presentation).msg_id


def test_re_extraction_is_deterministic():
    ds = make_dx()
    assert extract(ds, CTX) == extract(roundtrip(ds), CTX)


def test_refs_are_keyed_hashes_of_the_uids():
    ds = make_dx(irradiation_event_uid="1.2.826.0.1.99.1", study_uid="1.2.826.0.1.99.2")
    event = one_event(ds)
    # the identity key (the UID) with the acquisition second: a repeated UID at another time is another exposure
    assert event.event_ref == make_ref(TEST_SECRET, "event", "1.2.826.0.1.99.1\x1e20240105101530")
    assert event.study_ref == make_ref(TEST_SECRET, "study", "1.2.826.0.1.99.2")
    assert one_event(ds, make_context(secret=b"another-site-secret-0123456789")).msg_id != event.msg_id


@pytest.mark.parametrize("kind", ["CT", "SC", "PR"])
def test_valid_objects_without_projection_exposure_give_empty_extraction(kind):
    assert extract(make_non_exposure(kind), CTX) == Extraction()
    assert Extraction().payloads() == ()


def test_missing_sop_instance_uid_is_an_extraction_error():
    ds = make_dx()
    del ds.SOPInstanceUID
    with pytest.raises(ExtractionError, match="SOP Instance UID") as error:
        extract(ds, CTX)
    assert error.value.reason == "missing SOP Instance UID"


def test_dispatch_on_modality_when_sop_class_missing():
    ds = make_dx()
    del ds.SOPClassUID
    del ds.file_meta.MediaStorageSOPClassUID
    assert one_event(ds).modality == "DX"
    del ds.Modality
    with pytest.raises(ExtractionError):
        extract(ds, CTX)


def test_not_a_dataset_is_an_extraction_error():
    with pytest.raises(ExtractionError):
        extract(b"DICM", CTX)


@pytest.mark.parametrize("overrides", [{"secret": b"short"}, {"received_at": datetime(2024, 1, 5)},
                                       {"timezone": "Mars/Olympus_Mons"}])
def test_context_rejects_bad_configuration(overrides):
    with pytest.raises(ValueError):
        make_context(**overrides)


def test_event_json_has_exactly_the_canonical_fields():
    payload = one_event(make_dx()).model_dump(by_alias=True)
    assert set(payload) == {
        "schema", "msg_id", "site", "room", "ts", "source", "modality", "manufacturer", "model", "station_name",
        "device_serial", "acquired_at", "received_at", "body_part", "view", "protocol", "kvp", "tube_current_ma",
        "exposure_time_ms", "exposure_mas", "dap_gy_m2", "entrance_dose_mgy", "dose_rp_gy", "exposure_index",
        "target_exposure_index", "deviation_index", "sid_mm", "pulses", "irradiation_type", "study_ref", "patient_ref",
        "event_ref", "patient_age_years", "patient_sex", "repeat_of", "supersedes", "warnings",
        # optional additions of xray.exposure/1: mammography, derived technique, purpose, patient size
        "entrance_dose_quantity", "derived", "average_glandular_dose_mgy", "compression_thickness_mm",
        "compression_force_n", "anode_target_material", "filter_material", "hvl_mm_al", "laterality", "purpose",
        "patient_weight_kg", "patient_size_m"}
    assert payload["schema"] == "xray.exposure/1" and ExposureEvent.KIND == "exposure"


BUILDERS = {"cr": make_cr, "dx": make_dx, "dx-processing": lambda: make_dx_pair()[0], "mg": make_mg, "xa": make_xa,
            "rf": make_rf, "implicit-vr": lambda: make_dx(transfer_syntax=ImplicitVRLittleEndian, private_tags=True),
            "rdsr": lambda: make_rdsr([acquisition_event(), fluoro_event()]), "ct-dose-report": make_ct_dose_report,
            "ct": make_non_exposure}


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
def test_every_builder_writes_a_part10_file(build, tmp_path):
    ds = build()
    ds.save_as(tmp_path / "object.dcm", enforce_file_format=True)
    written = dcmread(tmp_path / "object.dcm")
    assert written.SOPInstanceUID == ds.SOPInstanceUID
    assert written.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


@pytest.mark.parametrize("model", [ExposureEvent, DoseSummary])
def test_every_payload_field_is_described(model: type[BaseModel]):
    assert [name for name, info in model.model_fields.items() if not info.description] == []


def test_binary_value_with_a_length_its_vr_does_not_allow_quirk():
    # Entrance Dose (0040,0302) is US in dGy: 2 bytes. 3 bytes cannot be read, and cost only that field.
    good = one_event(make_dx(entrance_dose_mgy=None, raw={"EntranceDose": b"\x03\x00"}))
    broken = one_event(make_dx(entrance_dose_mgy=None, raw={"EntranceDose": b"\x03\x00\x01"}))
    assert (good.entrance_dose_mgy, broken.entrance_dose_mgy, broken.kvp) == (300.0, None, 125.0)
