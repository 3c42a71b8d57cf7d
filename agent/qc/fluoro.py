"""Fluoroscopy QC: the maximum air-kerma rate and the accuracy of the unit's air-kerma displays (21 CFR 1020.32),
with kVp and HVL judged by the radiographic analyses (agent/qc/beam.py, hvl.py).

During continuous fluoroscopy a meter reports a rate, or an integrated air kerma over each interval (the rate is
then air kerma / interval). Each such sample is an exposure of the session, but a sample is not the measurement:
the automatic brightness control settles the tube output over the first seconds. `stable_runs` groups the samples
into runs (a gap above limits.fluoro_run_gap_s starts a new run), drops the samples within limits.fluoro_settle_s of
a run's first one, and takes the mean of the rest as the run's rate once they agree within
limits.fluoro_stability_fraction. The limits and their paragraphs: limits.CITATIONS["fluoro_*"].
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from typing import NamedTuple

from agent.qc.beam import kvp_accuracy
from agent.qc.criteria import fmt, judged, lacking, pending, result
from agent.qc.hvl import hvl
from agent.qc.limits import QcLimits
from agent.qc.models import Criterion, QcExposure, TestResult


def sample_rate_mgy_per_min(exp: QcExposure) -> float | None:
    """An exposure's air-kerma rate, mGy/min: the meter's rate, else air kerma (µGy) over its integration time (ms):
    µGy/ms x 60 000 ms/min / 1000 µGy/mGy = 60 x µGy/ms."""
    if exp.air_kerma_rate_mgy_per_min is not None:
        return exp.air_kerma_rate_mgy_per_min
    if exp.air_kerma_ugy is not None and exp.exposure_time_ms:
        return 60.0 * exp.air_kerma_ugy / exp.exposure_time_ms
    return None


class Run(NamedTuple):
    """One run of continuous fluoroscopy: its exposure numbers (from 1), the settled ones, and the stable rate."""

    numbers: tuple[int, ...]
    settled: tuple[int, ...]
    rates_mgy_per_min: tuple[float, ...]   # of the settled samples
    rate_mgy_per_min: float | None         # mean of the settled samples once stable, else None
    reason: str | None                     # why there is no stable rate yet
    high_level: bool


def stable_runs(exposures: Sequence[QcExposure], limits: QcLimits) -> list[Run]:
    """The runs of the session's samples, in order (see the module docstring). A sample without a time cannot be
    placed in a run: it is a run of its own, with no settle time applied."""
    runs: list[list[tuple[int, QcExposure]]] = []
    for number, exp in enumerate(exposures, 1):
        if runs:
            prev = runs[-1][-1][1]
            same_mode = bool(prev.high_level_control) == bool(exp.high_level_control)
            if (same_mode and exp.measured_at is not None and prev.measured_at is not None
                    and (exp.measured_at - prev.measured_at).total_seconds() <= limits.fluoro_run_gap_s):
                runs[-1].append((number, exp))
                continue
        runs.append([(number, exp)])
    return [_run(group, limits) for group in runs]


def _run(group: list[tuple[int, QcExposure]], limits: QcLimits) -> Run:
    first = group[0][1].measured_at
    settled = [(n, e) for n, e in group if first is None or e.measured_at is None
               or (e.measured_at - first).total_seconds() >= limits.fluoro_settle_s]
    numbers = tuple(n for n, _ in group)
    high = bool(group[0][1].high_level_control)
    rates = [sample_rate_mgy_per_min(e) for _, e in settled]
    if any(r is None for r in rates):
        return Run(numbers, tuple(n for n, _ in settled), (), None, "a settled sample has no air-kerma rate", high)
    need = limits.fluoro_min_settled_samples
    if len(rates) < need:
        return Run(numbers, tuple(n for n, _ in settled), tuple(rates), None,
                   f"{len(rates)} sample(s) after the {fmt(limits.fluoro_settle_s)} s settle time, {need} needed: "
                   "keep the beam on", high)
    mean = statistics.fmean(rates)
    spread = (max(rates) - min(rates)) / mean if mean > 0 else 0.0
    if spread > limits.fluoro_stability_fraction:
        return Run(numbers, tuple(n for n, _ in settled), tuple(rates), None,
                   f"not stable: settled samples spread {fmt(100 * spread)} % (> "
                   f"{fmt(100 * limits.fluoro_stability_fraction)} %)", high)
    return Run(numbers, tuple(n for n, _ in settled), tuple(rates), mean, None, high)


def _subject(run: Run) -> str:
    first, last = run.numbers[0], run.numbers[-1]
    return f"exposure {first}" if first == last else f"exposures {first}-{last}"


def fluoro_max_air_kerma_rate(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """Per run: the stable air-kerma rate <= 88 mGy/min (normal mode) or <= 176 mGy/min (high-level control active,
    exposure technique `high_level_control` = 1), measured at the geometry of 1020.32(d) (recorded as
    limits.fluoro_measurement_point). Image recording (cine, DSA) is excepted by the regulation: do not record it in
    this test."""
    criteria = [_rate_criterion(run, limits) for run in stable_runs(exposures, limits)]
    return result("fluoro_max_air_kerma_rate", exposures, limits, criteria)


def _rate_criterion(run: Run, limits: QcLimits) -> Criterion:
    limit = (limits.fluoro_max_air_kerma_rate_high_level_mgy_per_min if run.high_level
             else limits.fluoro_max_air_kerma_rate_mgy_per_min)
    mode = "high-level control" if run.high_level else "normal mode"
    rule = (f"stable AKR (mean of samples after {fmt(limits.fluoro_settle_s)} s, spread <= "
            f"{fmt(100 * limits.fluoro_stability_fraction)} %) <= {fmt(limit)} mGy/min in {mode}")
    inputs: dict = {"mode": mode, "samples": len(run.numbers), "settled_samples": len(run.settled),
                    "settled_rates_mgy_per_min": list(run.rates_mgy_per_min),
                    "measurement_point": limits.fluoro_measurement_point or None}
    if run.rate_mgy_per_min is None:
        return pending("fluoro_air_kerma_rate", _subject(run), inputs, "<=", "mGy/min", rule, run.reason or "")
    inputs["sd_mgy_per_min"] = statistics.stdev(run.rates_mgy_per_min) if len(run.rates_mgy_per_min) > 1 else None
    return judged("fluoro_air_kerma_rate", _subject(run), inputs, run.rate_mgy_per_min, limit, "<=", "mGy/min", rule)


def fluoro_display_accuracy(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """The unit's displayed air-kerma rate (per run, against the stable measured rate) and displayed cumulative air
    kerma (against the meter's air kerma summed over the run): |displayed - measured| / measured <= 0.35 over the
    range from 6 mGy/min and 100 mGy up (21 CFR 1020.32(k)(6)); below those minimums the limit does not apply. The
    displayed values are typed in, or taken from the dose report (technique `displayed_*`), on any exposure of the
    run (the last one given counts). The meter's values are compared as measured: the chamber must be at the unit's
    reference point for its displays (no inverse-square or backscatter correction is applied here)."""
    criteria: list[Criterion] = []
    for run in stable_runs(exposures, limits):
        group = [exposures[n - 1] for n in run.numbers]
        shown_rate = next((e.displayed_air_kerma_rate_mgy_per_min for e in reversed(group)
                           if e.displayed_air_kerma_rate_mgy_per_min is not None), None)
        shown_kerma = next((e.displayed_air_kerma_mgy for e in reversed(group)
                            if e.displayed_air_kerma_mgy is not None), None)
        if shown_rate is None and shown_kerma is None:
            criteria.append(pending("fluoro_display_accuracy", _subject(run), {}, "abs<=", "1",
                                    "(displayed - measured) / measured", "enter the displayed air-kerma rate or "
                                    "cumulative air kerma (or send the dose report)"))
            continue
        if shown_rate is not None:
            criteria.append(_display(f"{_subject(run)}: air-kerma rate", shown_rate, run.rate_mgy_per_min,
                                     "mgy_per_min", limits.fluoro_display_min_rate_mgy_per_min, limits,
                                     run.reason))
        if shown_kerma is not None:
            kerma = [e.air_kerma_ugy for e in group]
            total = None if any(k is None for k in kerma) else sum(kerma) / 1000.0  # µGy -> mGy
            why = lacking(group, "air_kerma_ugy", "air kerma reading", run.numbers) if total is None else None
            criteria.append(_display(f"{_subject(run)}: cumulative air kerma", shown_kerma, total, "mgy",
                                     limits.fluoro_display_min_air_kerma_mgy, limits, why))
    return result("fluoro_display_accuracy", exposures, limits, criteria)


def _display(subject: str, shown: float, measured: float | None, unit_key: str, minimum: float,
             limits: QcLimits, why: str | None) -> Criterion:
    tol = limits.fluoro_display_tolerance_fraction
    unit = "mGy/min" if unit_key == "mgy_per_min" else "mGy"
    rule = f"|displayed - measured| / measured <= {fmt(tol)}, for values of {fmt(minimum)} {unit} and above"
    inputs: dict = {f"displayed_{unit_key}": shown, f"measured_{unit_key}": measured}
    if measured is None:
        return pending("fluoro_display_accuracy", subject, inputs, "abs<=", "1", rule, why or "no measurement")
    if measured == 0:
        return pending("fluoro_display_accuracy", subject, inputs, "abs<=", "1", rule, "measured value is zero")
    crit = judged("fluoro_display_accuracy", subject, inputs, (shown - measured) / measured, tol, "abs<=", "1", rule)
    if measured < minimum:
        crit = crit.model_copy(update={"passed": None, "applies": False,
                                       "reason": f"below {fmt(minimum)} {unit}, where the accuracy limit starts"})
    return crit


SETTINGS = ("set_kvp", "set_ma", "set_mas", "set_time_ms", "filtration_mm_al", "sid_mm", "field_area_cm2")


def collapse_runs(exposures: Sequence[QcExposure], limits: QcLimits) -> tuple[list[QcExposure], list[Run]]:
    """One exposure per run of continuous fluoroscopy, for the radiographic analyses: its settings are the last
    value given on any exposure of the run (typed once per run); its measured kV and HVL are the means over the
    settled samples; its air kerma is the stable rate as µGy per second of beam (samples integrate over intervals
    of different lengths, so their air kerma cannot be compared; the rate can). A run without a stable rate has no
    air kerma; a quantity a settled sample lacks (or its meter flagged) is left out of the run."""
    out = []
    runs = stable_runs(exposures, limits)
    for run in runs:
        group = [exposures[n - 1] for n in run.numbers]
        settled = [exposures[n - 1] for n in run.settled]
        values: dict = {}
        for attr in SETTINGS:
            given = [getattr(e, attr) for e in group if getattr(e, attr) is not None]
            values[attr] = given[-1] if given else None
        for attr in ("kvp", "hvl_mm_al"):
            measured = [getattr(e, attr) for e in settled]
            values[attr] = statistics.fmean(measured) if measured and None not in measured else None
        values["air_kerma_ugy"] = None if run.rate_mgy_per_min is None else run.rate_mgy_per_min * 1000.0 / 60.0
        excluded: dict[str, list[str]] = {}
        for e in settled:
            for key, flags in e.excluded.items():
                excluded.setdefault(key, []).extend(f for f in flags if f not in excluded.get(key, []))
        out.append(QcExposure(**values, measured_at=group[0].measured_at, excluded=excluded,
                              technique_confirmed=all(e.technique_confirmed for e in group)))
    return out, runs


def _per_run(test_type: str, analysis, exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """`analysis` over the collapsed runs, its 'exposure k' subjects and reasons renamed to the run's exposures."""
    collapsed, runs = collapse_runs(exposures, limits)
    res = analysis(collapsed, limits)

    def run_name(match: re.Match) -> str:
        k = int(match.group(1))
        return f"run {k} ({_subject(runs[k - 1])})" if 1 <= k <= len(runs) else match.group(0)

    def rename(text: str | None) -> str | None:
        return None if text is None else re.sub(r"\bexposure (\d+)\b", run_name, text)
    criteria = tuple(c.model_copy(update={"subject": rename(c.subject), "reason": rename(c.reason)})
                     for c in res.criteria)
    note = "; ".join(f"run {k}: {r.reason}" for k, r in enumerate(runs, 1) if r.reason)
    reason = rename(res.reason) if res.reason else None
    if res.verdict == "incomplete" and note and reason and "air kerma" in reason:
        reason = f"{reason} ({note})"
    return res.model_copy(update={"test_type": test_type, "criteria": criteria, "reason": reason,
                                  "n_exposures": len(exposures)})


def fluoro_kvp(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """kVp accuracy in fluoroscopy: the radiographic analysis (beam.kvp_accuracy) per run, the run's measured kV the
    mean over its settled samples (the ABC changes the kV while it settles)."""
    return _per_run("fluoro_kvp", kvp_accuracy, exposures, limits)


def fluoro_hvl(exposures: Sequence[QcExposure], limits: QcLimits) -> TestResult:
    """HVL in fluoroscopy: the 1020.30(m)(1) table analysis (hvl.hvl) per run: a meter's HVL, or the attenuation
    series of runs with added aluminium (filtration_mm_al typed on any exposure of the run) from their stable
    rates."""
    return _per_run("fluoro_hvl", hvl, exposures, limits)
