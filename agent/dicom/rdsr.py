"""Irradiation events and accumulated totals of a projection X-Ray Radiation Dose SR (TID 10001, events TID 10003).

Pure functions of a pydicom Dataset. Concepts are matched by (code value, coding scheme designator), never by code
meaning: vendors vary the meaning text ("Total Number Of Radiographic Frames"). Units are read from each measured
value and converted explicitly (units.py); a measurement in an unknown unit gives null, not a guess.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from pydicom import Dataset
from pydicom import uid as sop

from agent.dicom import units
from agent.dicom.attributes import code_of, read_items, read_numbers, read_text, value_warning

Code = tuple[str, str]


def dcm(value: str) -> Code:
    """A concept of the DICOM (DCM) coding scheme."""
    return (value, "DCM")


DOSE_SR_CLASSES = frozenset({sop.XRayRadiationDoseSRStorage, sop.EnhancedXRayRadiationDoseSRStorage})
# Older devices send the dose report as a generic SR; it counts when its document title is 113701.
GENERIC_SR_CLASSES = frozenset({sop.EnhancedSRStorage, sop.ComprehensiveSRStorage, sop.Comprehensive3DSRStorage})

DOSE_REPORT_TITLE = dcm("113701")  # X-Ray Radiation Dose Report (CT reports share it, but have no 113706 events)
EVENT_CONTAINER = dcm("113706")  # Irradiation Event X-Ray Data
ACCUMULATED_CONTAINER = dcm("113702")  # Accumulated X-Ray Dose Data, one per plane on a biplane system
IRRADIATION_EVENT_UID = dcm("113769")
DATETIME_STARTED = dcm("111526")
IRRADIATION_EVENT_TYPE = dcm("113721")
ACQUISITION_PROTOCOL = dcm("125203")
TARGET_REGION = dcm("123014")
IMAGE_VIEW = dcm("111031")
ACQUISITION_PLANE = dcm("113764")
START_OF_IRRADIATION = dcm("113809")
END_OF_IRRADIATION = dcm("113810")

IRRADIATION_TYPES = {  # CID 10002
    dcm("113611"): "acquisition",  # stationary
    dcm("113612"): "acquisition",  # stepping
    dcm("113613"): "acquisition",  # rotational
    ("44491008", "SCT"): "fluoroscopy",
    ("P5-06000", "SRT"): "fluoroscopy",  # the retired SNOMED-RT code, still sent by older devices
}


@dataclass(frozen=True)
class Measure:
    """Where a numeric field comes from: concept codes in order of preference, unit conversion, per-pulse combining."""

    field: str
    codes: tuple[Code, ...]
    convert: Callable[[Decimal, str | None], float | int | None]
    combine: Callable[[list], float | int]


def _unitless(value: Decimal, unit: str | None) -> float | None:
    return units.magnitude(value)


def _unitless_signed(value: Decimal, unit: str | None) -> float | None:
    return units.signed(value)


def _count(value: Decimal, unit: str | None) -> int | None:
    return units.count(value)


def _first(values: list) -> float | int:
    return values[0]


# Per-pulse value lists (several items of one concept, or a multi-valued Numeric Value): intensive quantities
# (kV, mA) are averaged, extensive ones (time, mAs) are summed over the pulses.
EVENT_MEASURES = (
    Measure("kvp", (dcm("113733"),), units.voltage_to_kv, statistics.fmean),
    Measure("tube_current_ma", (dcm("113734"), dcm("113767")), units.current_to_ma, statistics.fmean),
    Measure("exposure_time_ms", (dcm("113824"), dcm("113735")), units.time_to_ms, math.fsum),  # 113735: retired
    Measure("exposure_mas", (dcm("113736"),), units.charge_to_mas, math.fsum),
    Measure("dap_gy_m2", (dcm("122130"),), units.dap_to_gy_m2, _first),
    Measure("dose_rp_gy", (dcm("113738"),), units.dose_to_gy, _first),
    Measure("entrance_dose_mgy", (dcm("111636"),), units.dose_to_mgy, _first),
    Measure("exposure_index", (dcm("113845"),), _unitless, _first),
    Measure("target_exposure_index", (dcm("113846"),), _unitless, _first),
    Measure("deviation_index", (dcm("113847"),), _unitless_signed, _first),
    Measure("pulses", (dcm("113768"),), _count, _first),
    Measure("sid_mm", (dcm("113750"),), units.distance_to_mm, _first),
)
TOTAL_MEASURES = (
    Measure("dap_total_gy_m2", (dcm("113722"),), units.dap_to_gy_m2, _first),
    Measure("fluoro_dap_total_gy_m2", (dcm("113726"),), units.dap_to_gy_m2, _first),
    Measure("acquisition_dap_total_gy_m2", (dcm("113727"),), units.dap_to_gy_m2, _first),
    Measure("dose_rp_total_gy", (dcm("113725"),), units.dose_to_gy, _first),
    Measure("fluoro_dose_rp_total_gy", (dcm("113728"),), units.dose_to_gy, _first),
    Measure("acquisition_dose_rp_total_gy", (dcm("113729"),), units.dose_to_gy, _first),
    Measure("fluoro_time_total_s", (dcm("113730"),), units.time_to_s, _first),
    Measure("acquisition_time_total_s", (dcm("113855"),), units.time_to_s, _first),
    Measure("radiographic_frames_total", (dcm("113731"),), _count, _first),
)


def concept(item: Dataset) -> Code | None:
    """The concept name code of a content item."""
    names = read_items(item, "ConceptNameCodeSequence")
    return code_of(names[0]) if names else None


def is_dose_report(ds: Dataset) -> bool:
    """True when the document title is X-Ray Radiation Dose Report (113701, DCM)."""
    return concept(ds) == DOSE_REPORT_TITLE


def _descendants(item: Dataset, stop_at: Code | None = None) -> Iterator[Dataset]:
    """Content items below `item`, depth first; an item whose concept is `stop_at` is yielded but not entered."""
    stack = list(reversed(read_items(item, "ContentSequence")))
    while stack:
        child = stack.pop()
        yield child
        if stop_at is None or concept(child) != stop_at:
            stack.extend(reversed(read_items(child, "ContentSequence")))


def containers(ds: Dataset, code: Code) -> list[Dataset]:
    """All content items of concept `code` (e.g. every irradiation event container), in document order."""
    return [item for item in _descendants(ds, stop_at=code) if concept(item) == code]


def _index(container: Dataset) -> dict[Code, list[Dataset]]:
    by_concept: dict[Code, list[Dataset]] = defaultdict(list)
    for item in _descendants(container):
        code = concept(item)
        if code:
            by_concept[code].append(item)
    return by_concept


# Technique quantities that cannot be 0 for an irradiation that happened (see image.PLACEHOLDER_ZERO_FIELDS); dose
# quantities are left out here: a report computes them, and a very short fluoro event may round to 0.
PLACEHOLDER_ZERO_FIELDS = frozenset({"kvp", "tube_current_ma", "exposure_time_ms", "exposure_mas", "sid_mm",
                                     "exposure_index", "target_exposure_index"})


def measured_values(item: Dataset, unreadable: list[str] | None = None
                    ) -> list[tuple[Decimal, tuple[str | None, str | None]]]:
    """(number, (unit code value, unit meaning)) of a NUM item; an empty Measured Value Sequence gives []. The text of
    a Numeric Value that holds no number is appended to `unreadable`."""
    values = []
    for measured in read_items(item, "MeasuredValueSequence"):
        unit_items = read_items(measured, "MeasurementUnitsCodeSequence")
        unit = (read_text(unit_items[0], "CodeValue"), read_text(unit_items[0], "CodeMeaning")) if unit_items else (
            None, None)
        numbers = read_numbers(measured, "FloatingPointValue") or read_numbers(measured, "NumericValue")
        if not numbers and unreadable is not None and (text := read_text(measured, "NumericValue")):
            unreadable.append(text)
        values.extend((number, unit) for number in numbers)
    return values


def _converted(measure: Measure, value: Decimal, unit: tuple[str | None, str | None]) -> float | int | None:
    # The unit's code value is authoritative; its meaning is a fallback for vendors that put the spelling there.
    converted = measure.convert(value, unit[0])
    return converted if converted is not None or unit[1] is None else measure.convert(value, unit[1])


def measure_value(by_concept: dict[Code, list[Dataset]], measure: Measure, warnings: list[dict] | None = None
                  ) -> float | int | None:
    """The value of one measure: the first preferred code that yields values, per-pulse values combined.

    A value present but unusable gives null and, with `warnings`, an entry: "unparseable", "unknown unit" (or a
    negative value), "placeholder zero" (PLACEHOLDER_ZERO_FIELDS)."""
    problem = None
    for code in measure.codes:
        unreadable: list[str] = []
        measured = [(number, unit) for item in by_concept.get(code, [])
                    for number, unit in measured_values(item, unreadable)]
        if unreadable:
            problem = problem or ("unparseable", unreadable[0])
        values = [_converted(measure, number, unit) for number, unit in measured]
        values = [value for value in values if value is not None]
        if measured and not values:
            problem = problem or ("unknown unit", None)
        if values and measure.field in PLACEHOLDER_ZERO_FIELDS and not any(values):
            problem = problem or ("placeholder zero", None)
            continue
        if values:
            return measure.combine(values)
    if problem is not None and warnings is not None:
        warnings.append(value_warning(measure.field, *problem))
    return None


def _first_text(by_concept: dict[Code, list[Dataset]], code: Code, keyword: str) -> str | None:
    return next((text for item in by_concept.get(code, []) if (text := read_text(item, keyword))), None)


def _first_code(by_concept: dict[Code, list[Dataset]], code: Code) -> tuple[Code | None, str | None]:
    for item in by_concept.get(code, []):
        values = read_items(item, "ConceptCodeSequence")
        if values:
            return code_of(values[0]), read_text(values[0], "CodeMeaning")
    return None, None


def _label(by_concept: dict[Code, list[Dataset]], code: Code) -> str | None:
    """A CODE item's meaning or a TEXT item's value (for labels such as protocol, region, view)."""
    return _first_code(by_concept, code)[1] or _first_text(by_concept, code, "TextValue")


def event_identity(ds: Dataset, by_concept: dict[Code, list[Dataset]], ordinal: int) -> str:
    """The identity key of an irradiation event (hashed by the caller; extract.py adds the fingerprint of the
    recorded content, so events sharing a key but recording different exposures stay apart): the Irradiation Event
    UID; if a device omits it (it is mandatory): study UID + start time + plane, else the report's SOP Instance UID +
    position (then a re-sent report repeats the event under another msg_id)."""
    event_uid = _first_text(by_concept, IRRADIATION_EVENT_UID, "UID")
    if event_uid:
        return event_uid
    study_uid = read_text(ds, "StudyInstanceUID")
    started = _first_text(by_concept, DATETIME_STARTED, "DateTime")
    if study_uid and started:
        plane = _first_code(by_concept, ACQUISITION_PLANE)[0]
        return "\x1f".join(["started", study_uid, started, "/".join(plane or ())])
    return f"sop\x1f{read_text(ds, 'SOPInstanceUID')}\x1f{ordinal}"


def event_exposure(ds: Dataset, container: Dataset, ordinal: int) -> dict[str, object]:
    """The canonical exposure values of one irradiation event container, its DT string and identity (in clear)."""
    by_concept = _index(container)
    warnings: list[dict] = []
    values: dict[str, object] = {measure.field: measure_value(by_concept, measure, warnings)
                                 for measure in EVENT_MEASURES}
    if values["deviation_index"] is None:  # IEC 62494-1
        values["deviation_index"] = units.deviation_index(values["exposure_index"], values["target_exposure_index"])
    event_type = _first_code(by_concept, IRRADIATION_EVENT_TYPE)[0]
    return {
        **values,
        "protocol": _label(by_concept, ACQUISITION_PROTOCOL),
        "body_part": _label(by_concept, TARGET_REGION),
        "view": _label(by_concept, IMAGE_VIEW),
        "irradiation_type": IRRADIATION_TYPES.get(event_type) if event_type else None,
        "acquired_dt": _first_text(by_concept, DATETIME_STARTED, "DateTime"),
        "identity": event_identity(ds, by_concept, ordinal),
        "laterality": None,
        "view_code": "/".join(_first_code(by_concept, IMAGE_VIEW)[0] or ()) or None,  # meanings vary by vendor
        "warnings": warnings,
    }


def report_events(ds: Dataset) -> list[dict[str, object]]:
    """One exposure dict per irradiation event (113706) of the report, in document order."""
    return [event_exposure(ds, container, ordinal) for ordinal, container in enumerate(containers(ds, EVENT_CONTAINER))]


def _add(values: list[float | int]) -> float | int:
    return sum(values) if all(isinstance(value, int) for value in values) else math.fsum(values)


def accumulated_totals(ds: Dataset) -> dict[str, float | int | None] | None:
    """The accumulated totals, summed over planes (one 113702 container each); None if the report has none."""
    planes = [_index(container) for container in containers(ds, ACCUMULATED_CONTAINER)]
    if not planes:
        return None
    totals: dict[str, float | int | None] = {}
    for measure in TOTAL_MEASURES:
        per_plane = [value for plane in planes if (value := measure_value(plane, measure)) is not None]
        totals[measure.field] = _add(per_plane) if per_plane else None
    return totals


def irradiation_period(ds: Dataset) -> tuple[str | None, str | None]:
    """DT strings of Start and End of X-Ray Irradiation (113809, 113810), direct children of the report."""
    by_concept: dict[Code, list[Dataset]] = defaultdict(list)
    for item in read_items(ds, "ContentSequence"):
        code = concept(item)
        if code in (START_OF_IRRADIATION, END_OF_IRRADIATION):
            by_concept[code].append(item)
    return _first_text(by_concept, START_OF_IRRADIATION, "DateTime"), _first_text(by_concept, END_OF_IRRADIATION,
                                                                                    "DateTime")
