"""Pure helpers of QC sessions: the set technique of a DICOM exposure event, nearest-in-time matching, the increase of
an accumulating meter, and the measured values of an exposure from its readings."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TypeVar

from agent.payloads.exposure import ExposureEvent
from agent.qc.quantities import excluded_by_flags, fit

T = TypeVar("T")

# The set technique of an exposure: what the analyses call set_* plus the DAP the modality reported.
TECHNIQUE_KEYS = ("set_kvp", "set_ma", "set_mas", "set_time_ms", "filtration_mm_al", "sid_mm", "field_area_cm2",
                  "dicom_dap_gy_m2", "high_level_control", "displayed_air_kerma_rate_mgy_per_min",
                  "displayed_air_kerma_mgy", "dicom_agd_mgy", "dicom_hvl_mm_al", "dicom_exposure_index",
                  "compression_thickness_mm", "phantom_thickness_mm")
# What the modality measured or displayed (not a setting): used whether or not the technique is confirmed.
MODALITY_KEYS = frozenset({"dicom_dap_gy_m2", "displayed_air_kerma_rate_mgy_per_min", "displayed_air_kerma_mgy",
                           "dicom_agd_mgy", "dicom_hvl_mm_al", "dicom_exposure_index"})
# Reading quantities the analyses use (QcExposure's measured fields, same names as the drivers' keys).
MEASURED_KEYS = ("kvp", "air_kerma_ugy", "exposure_time_ms", "hvl_mm_al", "dap_gy_m2", "air_kerma_rate_mgy_per_min")
# Quantities a meter shows as a running total until reset: a DAP meter adds every exposure to its display (the
# DIAMENTOR's M reply is the accumulated DAP and irradiation time). An exposure's value is the increase.
ACCUMULATING: dict[str, frozenset[str]] = {"ptw_diamentor": frozenset({"dap_gy_m2", "exposure_time_ms"})}


def utc_iso(at: datetime) -> str:
    """UTC ISO 8601 with microseconds always written, so stored times sort as text."""
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    """The inverse of utc_iso (any ISO 8601 with offset)."""
    return datetime.fromisoformat(text)


def event_technique(event: ExposureEvent) -> dict[str, float]:
    """The set technique an exposure event reports (only the values it has)."""
    values = {"set_kvp": event.kvp, "set_ma": event.tube_current_ma, "set_mas": event.exposure_mas,
              "set_time_ms": event.exposure_time_ms, "sid_mm": event.sid_mm, "dicom_dap_gy_m2": event.dap_gy_m2,
              "dicom_exposure_index": event.exposure_index,
              # Dose (RP) of a fluoroscopy dose report: the cumulative air kerma the unit displays, Gy -> mGy.
              "displayed_air_kerma_mgy": None if event.dose_rp_gy is None else event.dose_rp_gy * 1000.0,
              # Mammography fields, when the exposure event carries them (image Organ Dose / the dose report).
              "dicom_agd_mgy": getattr(event, "average_glandular_dose_mgy", None),
              "dicom_hvl_mm_al": getattr(event, "hvl_mm_al", None),
              "compression_thickness_mm": getattr(event, "compression_thickness_mm", None),
              "target_filter": target_filter(getattr(event, "anode_target_material", None),
                                             getattr(event, "filter_material", None))}
    return {key: value for key, value in values.items() if value is not None}


# DICOM Anode Target Material (0018,1191) and Filter Material (0018,7050) defined terms -> element symbols.
ELEMENTS = {"MOLYBDENUM": "Mo", "RHODIUM": "Rh", "TUNGSTEN": "W", "ALUMINUM": "Al", "ALUMINIUM": "Al",
            "SILVER": "Ag", "COPPER": "Cu"}


def target_filter(target: str | None, filter_: str | None) -> str | None:
    """'Mo/Rh' from the anode target and filter materials (defined terms or symbols, any case); None unless both
    are known. A multi-valued filter (e.g. 'ALUMINUM\\RHODIUM') is not one filter: None."""
    def symbol(value: str | None) -> str | None:
        if not isinstance(value, str) or "\\" in value:
            return None
        text = value.strip()
        return ELEMENTS.get(text.upper()) or (text.capitalize() if text.capitalize() in ELEMENTS.values() else None)
    t, f = symbol(target), symbol(filter_)
    return f"{t}/{f}" if t and f else None


def event_device(event: ExposureEvent) -> dict[str, str]:
    """The X-ray unit that made the exposure, as its DICOM names it (only the values it has)."""
    values = {"manufacturer": event.manufacturer, "model": event.model, "serial_number": event.device_serial,
              "station_name": event.station_name}
    return {key: value for key, value in values.items() if value}


def event_time(event: ExposureEvent) -> datetime:
    """When the exposure was made: the modality's acquisition time, else when the agent received the object."""
    return event.acquired_at if event.acquired_at is not None else event.received_at


def nearest(at: datetime, candidates: Iterable[tuple[T, datetime]], window_s: float) -> T | None:
    """The candidate whose time is nearest to `at`, within ± window_s (inclusive); the earlier one on a tie."""
    best: tuple[float, datetime, T] | None = None
    for item, when in candidates:
        gap = abs((when - at).total_seconds())
        if gap <= window_s and (best is None or (gap, when) < (best[0], best[1])):
            best = (gap, when, item)
    return None if best is None else best[2]


def increments(driver: str, quantities: Mapping[str, float], totals: Mapping[str, float],
               accumulating: frozenset[str] | None = None, flags: Iterable[str] = ()
               ) -> tuple[dict[str, float], dict[str, float | None], bool]:
    """For an accumulating meter: (increase per key since `totals`, the new totals, whether this reading is an
    exposure). Not an exposure: nothing increased, or no previous total is known (the first reading after the agent
    first met the meter only sets the baseline: its total may hold exposures made before). A total that went down
    means the meter was reset: the whole value is the increase. Other meters: ({}, {}, True). `accumulating`: the
    integrated quantities of this instrument when its driver does not say (a profile's `accumulating` list).
    A total the meter flagged (over range, error) or that is not finite is no total: its increase is reported (the
    reading stays an exposure, excluded by its flags) but the baseline is forgotten (None in the new totals), so the
    next valid total only sets it again; kept, it read as a reset and the next total became a phantom exposure."""
    keys = (ACCUMULATING.get(driver, frozenset()) | (accumulating or frozenset())) & set(quantities)
    if not keys:
        return {}, {}, True
    new_totals: dict[str, float | None] = {key: float(quantities[key]) for key in keys}
    bad = excluded_by_flags(new_totals, flags)
    if not all(key in totals for key in keys):
        return {}, {key: None if key in bad or not math.isfinite(v) else v for key, v in new_totals.items()}, False
    grown = {key: value - totals[key] if value >= totals[key] else value for key, value in new_totals.items()}
    new_totals = {key: None if key in bad or not math.isfinite(v) else v for key, v in new_totals.items()}
    return grown, new_totals, any(value > 0 for value in grown.values())


def measured(readings: Sequence[Mapping]) -> dict[str, float]:
    """Measured values of one exposure from its readings (dicts with `driver`, `quantities`, `increments`, `flags`),
    each from the first reading that has it as a valid, fit value: callers order readings by the session's
    instrument list. A quantity the meter flagged, or one its instrument measures unfitly (agent/qc/quantities.py),
    is never used."""
    return measured_and_excluded(readings)[0]


def excluded(readings: Sequence[Mapping]) -> dict[str, list[str]]:
    """Quantity -> the meter's flags that excluded it, for each quantity of the exposure no valid reading gave."""
    return measured_and_excluded(readings)[1]


def measured_and_excluded(readings: Sequence[Mapping]) -> tuple[dict[str, float], dict[str, list[str]]]:
    """(measured values, excluded quantities with their flags): see measured() and excluded()."""
    out: dict[str, float] = {}
    flagged: dict[str, list[str]] = {}
    for reading in readings:
        values = {**reading["quantities"], **(reading.get("increments") or {})}
        bad = excluded_by_flags(values, reading.get("flags") or ())
        for key in MEASURED_KEYS:
            value = values.get(key)
            if key in out or value is None or not math.isfinite(value) or not fit(reading.get("driver", ""), key):
                continue
            if key in bad:
                flagged.setdefault(key, [])
                flagged[key] += [f for f in bad[key] if f not in flagged[key]]
                continue
            out[key] = value
    return out, {key: flags for key, flags in flagged.items() if key not in out}
