"""Mammography: glandular dose, compression, target/filter, HVL and laterality from MG images of two vendors' styles and
from 2D and tomosynthesis dose reports; the accumulated glandular dose per breast in the dose summary.

Every expected value is read from the object independently (pydicom attribute access or a walk of its content tree
here), never from the agent's readers.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from pydicom import Dataset

from agent.dicom import extract
from tests.dicom_factory import (
    MAMMOGRAPHY_PROCEDURE, MATERIALS, SIDES, DoseTotals, acquisition_event, make_context, make_dx, make_mg,
    make_rdsr, roundtrip,
)

CTX = make_context()


def hologic_style() -> Dataset:
    """Image Laterality, Organ Dose in dGy, Entrance Dose in mGy, W/Rh, force and thickness on the image."""
    return make_mg(laterality="L", extra={"OrganDose": "0.0123", "BodyPartThickness": "52", "CompressionForce": "118.2",
                                          "AnodeTargetMaterial": "TUNGSTEN", "FilterMaterial": "RHODIUM",
                                          "HalfValueLayer": "0.52"})


def ge_style() -> Dataset:
    """No Image Laterality but series Laterality, Entrance Dose derivation IAK, Mo/Mo, lower case and British
    spelling of a second filter."""
    ds = make_mg(laterality=None, entrance_dose_mgy="5.4",
                 extra={"Laterality": "R", "OrganDose": "0.0145", "BodyPartThickness": "48", "CompressionForce": "95",
                        "AnodeTargetMaterial": "molybdenum", "FilterMaterial": ["MOLYBDENUM", "ALUMINIUM"],
                        "HalfValueLayer": "0.38", "EntranceDoseDerivation": "IAK"})
    return ds


def the_event(ds: Dataset):
    (event,) = extract(roundtrip(ds), CTX).events
    return event


@pytest.mark.parametrize("build", [hologic_style, ge_style], ids=["hologic-style", "ge-style"])
def test_mammography_image_fields_match_the_header(build):
    ds = build()
    event = the_event(ds)
    assert event.modality == "MG"
    assert event.average_glandular_dose_mgy == pytest.approx(float(ds.OrganDose) * 100)  # dGy -> mGy
    assert event.compression_thickness_mm == float(ds.BodyPartThickness)
    assert event.compression_force_n == float(ds.CompressionForce)
    assert event.hvl_mm_al == float(ds.HalfValueLayer)
    assert event.anode_target_material == str(ds.AnodeTargetMaterial).upper()
    filters = [ds.FilterMaterial] if isinstance(ds.FilterMaterial, str) else list(ds.FilterMaterial)
    assert event.filter_material == "\\".join(str(f).upper().replace("ALUMINIUM", "ALUMINUM") for f in filters)
    assert event.laterality == (ds.get("ImageLaterality") or ds.get("Laterality"))
    assert event.purpose == "clinical"


def test_entrance_dose_quantity_follows_the_header():
    hologic, ge = the_event(hologic_style()), the_event(ge_style())
    assert (hologic.entrance_dose_mgy, hologic.entrance_dose_quantity) == (6.1, "entrance_surface_dose")
    assert (ge.entrance_dose_mgy, ge.entrance_dose_quantity) == (5.4, "incident_air_kerma")


def test_unpaired_laterality_and_radiograph_organ_dose_are_not_mammography_values():
    unpaired = the_event(make_mg(laterality="U"))
    assert unpaired.laterality is None
    dx = the_event(make_dx(extra={"OrganDose": "0.02", "BodyPartThickness": "210"}))
    assert (dx.average_glandular_dose_mgy, dx.compression_thickness_mm) == (None, None)


# ---- dose reports (TID 10003 mammography rows, TID 10005 accumulation) -------------------------------------------
def content_items(ds: Dataset):
    """Every content item of the report, depth first (pydicom's own reading)."""
    stack = list(reversed(ds.ContentSequence))
    while stack:
        item = stack.pop()
        yield item
        stack.extend(reversed(item.get("ContentSequence", [])))


def numbers(ds: Dataset, code: str) -> list[Decimal]:
    return [Decimal(str(value)) for item in content_items(ds)
            if item.ConceptNameCodeSequence[0].CodeValue == code
            for measured in item.MeasuredValueSequence
            for value in (measured.NumericValue if measured["NumericValue"].VM > 1 else [measured.NumericValue])]


def mammo_event(**kwargs):
    values = dict(kind="acquisition", protocol="R MLO", target_region=("76752008", "SCT", "Breast"), view=None,
                  dap=None, dose_rp=None, kvp=("28", "kV"), tube_current=("120", "mA"), exposure_time=("1200", "ms"),
                  exposure=("144000", "uA.s"), sid=("660", "mm"), entrance_exposure=("7.25", "mGy"),
                  agd=("1.42", "mGy"), compression_thickness=("55", "mm"), compression_force=("102", "N"),
                  hvl=("0.51", "mm"), anode=MATERIALS["TUNGSTEN"], filters=(MATERIALS["SILVER"],),
                  laterality=SIDES["R"])
    return acquisition_event(**{**values, **kwargs})


def mammo_report(events, **kwargs):
    totals = DoseTotals(dap_total=None, fluoro_dap_total=None, acquisition_dap_total=None, dose_rp_total=None,
                        fluoro_time=None, frames=len(events),
                        accumulated_agd=((SIDES["L"], ("2.45", "mGy")), (SIDES["R"], ("1.42", "mGy"))))
    return make_rdsr(events, totals=totals, procedure=MAMMOGRAPHY_PROCEDURE, model="Mammo 3D", **kwargs)


def test_mammography_2d_report_fields_match_the_report():
    ds = mammo_report([mammo_event()])
    extraction = extract(roundtrip(ds), CTX)
    (event,) = extraction.events
    assert (event.modality, event.source) == ("MG", "rdsr")
    assert event.average_glandular_dose_mgy == float(numbers(ds, "111631")[0])
    assert event.compression_thickness_mm == float(numbers(ds, "111633")[0])
    assert event.compression_force_n == float(numbers(ds, "111647")[0])
    assert event.hvl_mm_al == float(numbers(ds, "111634")[0])
    assert (event.entrance_dose_mgy, event.entrance_dose_quantity) == (float(numbers(ds, "111636")[0]),
                                                                       "incident_air_kerma_rp")
    assert (event.anode_target_material, event.filter_material, event.laterality) == ("TUNGSTEN", "SILVER", "R")
    assert (event.kvp, event.tube_current_ma, event.exposure_time_ms) == (28.0, 120.0, 1200.0)
    assert event.exposure_mas == float(numbers(ds, "113736")[0]) / 1000
    assert event.derived is None
    by_side = {item.ContentSequence[0].ConceptCodeSequence[0].CodeValue: Decimal(item.MeasuredValueSequence[0]
               .NumericValue) for item in content_items(ds) if item.ConceptNameCodeSequence[0].CodeValue == "111637"}
    assert extraction.summary.average_glandular_dose_mgy_by_laterality == {
        "L": float(by_side[SIDES["L"][0]]), "R": float(by_side[SIDES["R"][0]])}
    assert extraction.summary.modality == "MG"


def test_tomosynthesis_report_sums_per_pulse_exposure_and_averages_per_pulse_technique():
    pulses = 15
    kv = [f"{30 + (n % 3) * 0.5:.1f}" for n in range(pulses)]
    ma = [f"{150 + n}" for n in range(pulses)]
    uas = [f"{4000 + 25 * n}" for n in range(pulses)]
    ms = [f"{26.5 + 0.1 * n:.1f}" for n in range(pulses)]
    event = mammo_event(kind="rotational", protocol="L CC Tomo", laterality=SIDES["L"], kvp=(kv, "kV"),
                        tube_current=(ma, "mA"), exposure=(uas, "uA.s"), exposure_time=(ms, "ms"), pulses=pulses,
                        anode=MATERIALS["TUNGSTEN"], filters=(MATERIALS["ALUMINUM"],))
    ds = mammo_report([event])
    (extracted,) = extract(roundtrip(ds), CTX).events
    assert extracted.pulses == pulses and extracted.laterality == "L" and extracted.modality == "MG"
    assert extracted.kvp == pytest.approx(math.fsum(float(v) for v in numbers(ds, "113733")) / pulses)
    assert extracted.tube_current_ma == pytest.approx(math.fsum(float(v) for v in numbers(ds, "113734")) / pulses)
    assert extracted.exposure_mas == pytest.approx(math.fsum(float(v) for v in numbers(ds, "113736")) / 1000)
    assert extracted.exposure_time_ms == pytest.approx(math.fsum(float(v) for v in numbers(ds, "113824")))
    assert (extracted.filter_material, extracted.derived) == ("ALUMINUM", None)


def test_a_mammography_report_without_the_procedure_code_is_still_mg():
    ds = make_rdsr([mammo_event()], procedure=("113704", "DCM", "Projection X-Ray"))
    assert {event.modality for event in extract(ds, CTX).events} == {"MG"}
