"""What each QC test needs, what each instrument measures, which readings are valid measurements.

Three pure tables and the functions over them:
- TEST_QUANTITIES: the measured quantities a test type needs (each group: any one of its keys will do).
- DRIVER_QUANTITIES: the QC quantities a built-in driver measures; a profile-driven instrument measures its profile's
  field names. A test is refused when its instruments cannot measure what it needs (an area monitor's dose rate is no
  kVp), with a message naming what is missing.
- Fitness: a quantity an instrument reports at a resolution unfit for QC is never used (the DIAMENTOR's irradiation
  time is whole seconds: it must not feed the timer test, where exposures last 2-500 ms).
- Validity flags: a reading the meter itself flags (outside the filter's kV range, over range, an error code, an
  integrator/amplifier fault) is not a measurement; the flagged quantities are excluded and the criterion that needed
  them is `invalid` (agent/qc/criteria.py). Alarm states of an area monitor (the dose rate is high) are statements
  about the radiation, not about the reading, and do not invalidate it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

KV_KEYS = frozenset({"kvp", "kvp_avg", "kvp_max", "kvp_ppv"})

# Per test type: groups of quantities, each group satisfied by any one of its keys.
TEST_QUANTITIES: dict[str, tuple[tuple[str, ...], ...]] = {
    "reproducibility": (("air_kerma_ugy",),),
    "linearity_ma": (("air_kerma_ugy",),),
    "linearity_mas": (("air_kerma_ugy",),),
    "kvp_accuracy": (("kvp",),),
    "timer_accuracy": (("exposure_time_ms",),),
    # HVL read from a meter, or computed from air kerma behind added aluminium (agent/qc/hvl.py); the kV for the
    # table is the measured one when a kV meter is in the session, else the indicated one (recorded as such).
    "hvl": (("hvl_mm_al", "air_kerma_ugy"),),
    "dap_agreement": (("dap_gy_m2", "air_kerma_ugy"),),
    # Fluoroscopy: a rate meter's rate, or air kerma over each integration interval (with its time).
    "fluoro_max_air_kerma_rate": (("air_kerma_rate_mgy_per_min", "air_kerma_ugy"),),
    "fluoro_display_accuracy": (("air_kerma_rate_mgy_per_min", "air_kerma_ugy"),),
    "fluoro_kvp": (("kvp",),),
    "fluoro_hvl": (("hvl_mm_al", "air_kerma_ugy"),),
    # Mammography: the phantom's entrance air kerma (its AGD may also come from the image's DICOM).
    "mammo_phantom_dose": (("air_kerma_ugy",),),
    "mammo_kvp": (("kvp",),),
    "mammo_hvl": (("hvl_mm_al", "air_kerma_ugy"),),
    "mammo_output_reproducibility": (("air_kerma_ugy",),),
    # AEC: the detector-side air kerma (the images' exposure index comes from DICOM).
    "aec_reproducibility": (("air_kerma_ugy",),),
    "aec_thickness_tracking": (("air_kerma_ugy",),),
}
# Quantities a test uses when an instrument gives them, beyond what it needs (the measured kV for the HVL table).
OPTIONAL_QUANTITIES: dict[str, tuple[str, ...]] = {
    "hvl": ("kvp",), "fluoro_hvl": ("kvp",), "mammo_hvl": ("kvp",), "mammo_phantom_dose": ("hvl_mm_al", "kvp"),
    "fluoro_max_air_kerma_rate": ("exposure_time_ms",), "fluoro_display_accuracy": ("exposure_time_ms",),
}
QUANTITY_LABELS = {"air_kerma_ugy": "air kerma", "kvp": "kVp", "exposure_time_ms": "exposure time",
                   "hvl_mm_al": "HVL", "dap_gy_m2": "DAP", "air_kerma_rate_mgy_per_min": "air-kerma rate"}

DRIVER_QUANTITIES: dict[str, frozenset[str]] = {
    "victoreen_4000m": frozenset({"kvp", "air_kerma_ugy", "exposure_time_ms"}),
    "ptw_diamentor": frozenset({"dap_gy_m2"}),  # its exposure_time_ms is whole seconds: see UNFIT
    "ludlum_375": frozenset(),  # an area monitor: dose rate only, no exposure quantity
}
# (driver, quantity) -> why the quantity is never used for QC.
UNFIT: dict[tuple[str, str], str] = {
    ("ptw_diamentor", "exposure_time_ms"): "whole-second irradiation time, too coarse for exposure timing",
}

INFORMATIONAL_FLAGS = frozenset({"audio", "monitor", "high_alarm", "low_alarm", "alarm"})
# Flags that concern only some quantities of a reading; any other flag concerns all of them.
FLAG_SCOPE: dict[str, frozenset[str]] = {
    "kvp_outside_filter_range": KV_KEYS,
    "filter_position_unknown": KV_KEYS,
}


def fit(driver: str, quantity: str) -> bool:
    """Whether this driver's `quantity` may be used by the QC analyses."""
    return (driver, quantity) not in UNFIT


def measures(driver: str, profile_fields: Iterable[str] = ()) -> frozenset[str]:
    """The QC quantities an instrument measures: the built-in driver's, or a profile's field names."""
    if driver in DRIVER_QUANTITIES:
        return DRIVER_QUANTITIES[driver]
    return frozenset(q for q in profile_fields if fit(driver, q))


def missing_quantities(test_type: str, measured: Iterable[str]) -> list[str]:
    """The needed quantities (one label per unmet group) that the instruments do not measure."""
    have = set(measured)
    return [" or ".join(QUANTITY_LABELS.get(q, q) for q in group)
            for group in TEST_QUANTITIES.get(test_type, ()) if not have & set(group)]


def needed(test_type: str) -> frozenset[str]:
    """Every quantity a test type needs (any of each group)."""
    return frozenset(q for group in TEST_QUANTITIES.get(test_type, ()) for q in group)


def used(test_type: str) -> frozenset[str]:
    """Every quantity a test type uses: needed ones and the optional ones."""
    return needed(test_type) | frozenset(OPTIONAL_QUANTITIES.get(test_type, ()))


def invalidating(flags: Iterable[str]) -> list[str]:
    """The flags that make a reading (or part of it) invalid, sorted."""
    return sorted(set(flags) - INFORMATIONAL_FLAGS)


def excluded_by_flags(quantities: Mapping[str, float], flags: Iterable[str]) -> dict[str, list[str]]:
    """quantity -> the flags that exclude it, for every quantity of a reading its flags invalidate."""
    out: dict[str, list[str]] = {}
    for flag in invalidating(flags):
        for key in FLAG_SCOPE.get(flag, quantities.keys()):
            if key in quantities:
                out.setdefault(key, []).append(flag)
    return out
