"""Irradiation events and accumulated totals of a projection X-Ray Radiation Dose SR (TID 10001, events TID 10003).

Pure functions of the report's content tree (srtree.Node: built once per report, from the raw bytes or from pydicom's
data set) and of the data set's header. Concepts are matched by (code value, coding scheme designator), never by code
meaning: vendors vary the meaning text ("Total Number Of Radiographic Frames"). Units are read from each measured
value and converted explicitly (units.py); a measurement in an unknown unit gives null, not a guess.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from pydicom import Dataset
from pydicom import uid as sop

from agent.dicom import materials, units
from agent.dicom.attributes import read_text, value_warning
from agent.dicom.srtree import Node, content_root

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
ANODE_TARGET_MATERIAL = dcm("111632")  # CID 10016 value
FILTER_MATERIAL = dcm("113757")  # inside X-Ray Filters (113771), CID 10006 value
PULSE_WIDTH = dcm("113793")  # per pulse, or one value for all pulses
NUMBER_OF_PULSES = dcm("113768")
IRRADIATION_DURATION = dcm("113742")
ACCUMULATED_AGD = dcm("111637")  # Accumulated Average Glandular Dose, per breast (TID 10005), Laterality child
PLANES = {dcm("113620"): "A", dcm("113621"): "B", dcm("113622"): "single"}  # CID 10003

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
    # Mammography (TID 10003 with the mammography rows; PS3.16 DCM codes as in pydicom's PS3.16 concept tables):
    Measure("average_glandular_dose_mgy", (dcm("111631"),), units.dose_to_mgy, _first),
    Measure("compression_thickness_mm", (dcm("111633"),), units.distance_to_mm, _first),
    Measure("compression_force_n", (dcm("111647"),), units.force_to_n, _first),
    Measure("hvl_mm_al", (dcm("111634"),), units.distance_to_mm, _first),
)
PULSE_MEASURES = (  # read to derive an exposure time the report does not state
    Measure("pulse_widths_ms", (PULSE_WIDTH,), units.time_to_ms, list),
    Measure("irradiation_duration_ms", (IRRADIATION_DURATION,), units.time_to_ms, _first),
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



Index = dict[Code, list[Node]]


def concept(item: Node) -> Code | None:
    """The concept name code of a content item."""
    return item.concept


def is_dose_report(ds: Dataset) -> bool:
    """True when the document title is X-Ray Radiation Dose Report (113701, DCM)."""
    from agent.dicom.attributes import code_of, read_items  # the title is a header attribute, read by pydicom

    names = read_items(ds, "ConceptNameCodeSequence")
    return bool(names) and code_of(names[0]) == DOSE_REPORT_TITLE


def report_root(ds: Dataset) -> Node:
    """The report's content tree, built once (srtree.content_root: raw bytes when kept, else pydicom's reading)."""
    return content_root(ds)


def containers(root: Node, code: Code) -> list[Node]:
    """All content items of concept `code` (e.g. every irradiation event container), in document order; one nested
    in another of the same concept is part of it, not another one."""
    found: list[Node] = []

    def visit(node: Node) -> None:  # recursion over children lists: SR trees are a few levels deep (MAX_DEPTH)
        for child in node.children:
            if child.concept == code:
                found.append(child)
            elif child.children:
                visit(child)

    visit(root)
    return found


def concept_index(node: Node) -> Index:
    """Every content item below `node`, by concept, in document order."""
    return _index(node)


def _index(container: Node) -> Index:
    by_concept: Index = defaultdict(list)

    def visit(node: Node) -> None:
        for child in node.children:
            if child.concept:
                by_concept[child.concept].append(child)
            if child.children:
                visit(child)

    visit(container)
    return by_concept


# Technique quantities that cannot be 0 for an irradiation that happened (see image.PLACEHOLDER_ZERO_FIELDS); dose
# quantities are left out here: a report computes them, and a very short fluoro event may round to 0.
PLACEHOLDER_ZERO_FIELDS = frozenset({"kvp", "tube_current_ma", "exposure_time_ms", "exposure_mas", "sid_mm",
                                     "exposure_index", "target_exposure_index"})


def measured_values(item: Node) -> list[tuple[Decimal, tuple[str | None, str | None]]]:
    """(number, (unit code value, unit meaning)) of a NUM item; an empty Measured Value Sequence gives []."""
    return item.numbers


def _converted(measure: Measure, value: Decimal, unit: tuple[str | None, str | None]) -> float | int | None:
    # The unit's code value is authoritative; its meaning is a fallback for vendors that put the spelling there.
    converted = measure.convert(value, unit[0])
    return converted if converted is not None or unit[1] is None else measure.convert(value, unit[1])


def measure_value(by_concept: Index, measure: Measure, warnings: list[dict] | None = None) -> object:
    """The value of one measure: the first preferred code that yields values, per-pulse values combined.

    A value present but unusable gives null and, with `warnings`, an entry: "unparseable" (a Numeric Value holding
    no number: Node.unreadable), "unknown unit" (or a negative value), "placeholder zero" (PLACEHOLDER_ZERO_FIELDS)."""
    problem = None
    for code in measure.codes:
        items = by_concept.get(code, [])
        unreadable = [text for item in items for text in item.unreadable]
        measured = [(number, unit) for item in items for number, unit in measured_values(item)]
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


_NODE_FIELDS = {"UID": "uid", "DateTime": "datetime", "TextValue": "text"}


def _first_text(by_concept: Index, code: Code, keyword: str) -> str | None:
    attribute = _NODE_FIELDS[keyword]
    return next((text for item in by_concept.get(code, []) if (text := getattr(item, attribute))), None)


def _first_code(by_concept: Index, code: Code) -> tuple[Code | None, str | None]:
    for item in by_concept.get(code, []):
        if item.code is not None or item.code_meaning is not None:
            return item.code, item.code_meaning
    return None, None


def _label(by_concept: Index, code: Code) -> str | None:
    """A CODE item's meaning or a TEXT item's value (for labels such as protocol, region, view)."""
    return _first_code(by_concept, code)[1] or _first_text(by_concept, code, "TextValue")


def event_identity(ds: Dataset, by_concept: Index, ordinal: int) -> str:
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


def _laterality(by_concept: Index) -> str | None:
    for code in materials.LATERALITY_CONCEPTS:
        side = materials.laterality_of_code(_first_code(by_concept, code)[0])
        if side:
            return side
    return None


def _filter_materials(by_concept: Index) -> str | None:
    terms = [materials.material_of_code(item.code) for item in by_concept.get(FILTER_MATERIAL, [])]
    return "\\".join(dict.fromkeys(term for term in terms if term)) or None


def _times(count: int | None, value: float) -> float:
    return float(Decimal(str(count)) * Decimal(str(value)))


def derived_technique(by_concept: Index, values: dict[str, object]) -> list[str]:
    """Fill exposure time (and then mAs) the report does not state, from its pulses; returns the fields derived.

    time = sum of per-pulse widths (113793), or number of pulses (113768) x the one pulse width; without pulse
    widths, the Irradiation Duration (113742). mAs = that time x the (mean) tube current."""
    if values["exposure_time_ms"] is not None:
        return []
    widths = measure_value(by_concept, PULSE_MEASURES[0]) or []
    pulses = values.get("pulses")
    if len(widths) > 1:
        time_ms = math.fsum(widths)
    elif len(widths) == 1 and pulses:
        time_ms = _times(pulses, widths[0])
    else:
        time_ms = measure_value(by_concept, PULSE_MEASURES[1])
    if time_ms is None:
        return []
    values["exposure_time_ms"] = time_ms
    derived = ["exposure_time_ms"]
    if values["exposure_mas"] is None and values["tube_current_ma"] is not None:
        values["exposure_mas"] = float(Decimal(str(time_ms)) * Decimal(str(values["tube_current_ma"])) / 1000)
        derived.append("exposure_mas")
    return derived


def event_exposure(ds: Dataset, container: Node, ordinal: int) -> dict[str, object]:
    """The canonical exposure values of one irradiation event container, its DT string and identity (in clear)."""
    by_concept = _index(container)
    warnings: list[dict] = []
    values: dict[str, object] = {measure.field: measure_value(by_concept, measure, warnings)
                                 for measure in EVENT_MEASURES}
    if values["deviation_index"] is None:  # IEC 62494-1
        values["deviation_index"] = units.deviation_index(values["exposure_index"], values["target_exposure_index"])
    derived = derived_technique(by_concept, values)
    event_type = _first_code(by_concept, IRRADIATION_EVENT_TYPE)[0]
    return {
        **values,
        "protocol": _label(by_concept, ACQUISITION_PROTOCOL),
        "body_part": _label(by_concept, TARGET_REGION),
        "view": _label(by_concept, IMAGE_VIEW),
        "irradiation_type": IRRADIATION_TYPES.get(event_type) if event_type else None,
        "anode_target_material": materials.material_of_code(_first_code(by_concept, ANODE_TARGET_MATERIAL)[0]),
        "filter_material": _filter_materials(by_concept),
        "laterality": _laterality(by_concept),
        # 111636 Entrance Exposure at RP: air kerma at the reference point, without backscatter (PS3.16 DCM)
        "entrance_dose_quantity": "incident_air_kerma_rp" if values["entrance_dose_mgy"] is not None else None,
        "derived": derived or None,
        "acquired_dt": _first_text(by_concept, DATETIME_STARTED, "DateTime"),
        "identity": event_identity(ds, by_concept, ordinal),
        "view_code": "/".join(_first_code(by_concept, IMAGE_VIEW)[0] or ()) or None,  # meanings vary by vendor
        "warnings": warnings,
    }


def event_containers(root: Node) -> list[Node]:
    """The irradiation event containers (113706) of the report, in document order."""
    return containers(root, EVENT_CONTAINER)


def report_events(ds: Dataset, root: Node | None = None) -> list[dict[str, object]]:
    """One exposure dict per irradiation event (113706) of the report, in document order."""
    root = report_root(ds) if root is None else root
    return [event_exposure(ds, container, ordinal) for ordinal, container in enumerate(event_containers(root))]


def _add(values: list[float | int]) -> float | int:
    return sum(values) if all(isinstance(value, int) for value in values) else math.fsum(values)


def _plane_totals(plane: Index) -> dict[str, float | int | None]:
    return {measure.field: measure_value(plane, measure) for measure in TOTAL_MEASURES}


def accumulated_totals(ds: Dataset, root: Node | None = None) -> dict[str, object] | None:
    """The accumulated totals, summed over planes (one 113702 container each); None if the report has none.

    With more than one plane, `by_plane` keeps each plane's own totals ({"A": {...}, "B": {...}}; CID 10003)."""
    root = report_root(ds) if root is None else root
    planes = [_index(container) for container in containers(root, ACCUMULATED_CONTAINER)]
    if not planes:
        return None
    per_plane = [_plane_totals(plane) for plane in planes]
    totals: dict[str, object] = {}
    for measure in TOTAL_MEASURES:
        present = [values[measure.field] for values in per_plane if values[measure.field] is not None]
        totals[measure.field] = _add(present) if present else None
    if len(planes) > 1:
        names = [PLANES.get(_first_code(plane, ACQUISITION_PLANE)[0], f"plane {n + 1}") for n, plane in
                 enumerate(planes)]
        if len(set(names)) == len(names):  # two containers naming one plane cannot be told apart: sum only
            totals["by_plane"] = dict(zip(names, per_plane))
    totals["average_glandular_dose_mgy_by_laterality"] = accumulated_agd(root)
    return totals


def accumulated_agd(root: Node) -> dict[str, float] | None:
    """Accumulated Average Glandular Dose per breast (111637 with its Laterality, TID 10005), mGy; None if absent."""
    by_side: dict[str, float] = {}
    for item in containers(root, ACCUMULATED_AGD):
        side = _laterality(_index(item))
        value = measure_value({ACCUMULATED_AGD: [item]}, Measure("agd", (ACCUMULATED_AGD,), units.dose_to_mgy,
                                                                  _first))
        if side and value is not None and side not in by_side:
            by_side[side] = value
    return by_side or None


def irradiation_period(ds: Dataset, root: Node | None = None) -> tuple[str | None, str | None]:
    """DT strings of Start and End of X-Ray Irradiation (113809, 113810), direct children of the report."""
    root = report_root(ds) if root is None else root
    by_concept: Index = defaultdict(list)
    for item in root.children:
        if item.concept in (START_OF_IRRADIATION, END_OF_IRRADIATION):
            by_concept[item.concept].append(item)
    return _first_text(by_concept, START_OF_IRRADIATION, "DateTime"), _first_text(by_concept, END_OF_IRRADIATION,
                                                                                    "DateTime")
