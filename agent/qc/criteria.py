"""Building blocks shared by the analyses: inclusive limit comparison, criterion constructors, the verdict rule."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from agent.qc.limits import CITATIONS, QcLimits
from agent.qc.models import Comparison, Criterion, InputValue, QcExposure, TestResult, TestType
from agent.qc.quantities import QUANTITY_LABELS, needed

# Every limit is inclusive ("no greater than", "not differ by more than", "within"), but a ratio that is exactly at the
# limit on paper can come out 1 ulp above it in binary floating point (|0.11 - 0.09| / 0.20 = 0.10000000000000002).
# Meter readings carry 3-5 significant digits, so a relative slack of 1e-9 cannot turn a real failure into a pass.
REL_SLACK = 1e-9

# Every input is finite (models.QcExposure refuses NaN and inf), but sums, products and ratios of finite values
# overflow (1e308 + 1e308) or blow up (a typed-in 1e-320 mAs as divisor). Such a criterion is not a measurement.
OUT_OF_NUMERIC_RANGE = ("a value is out of numeric range (an overflow, or a division by a value near zero): check "
                        "the typed-in technique and the readings")


def within(value: float, limit: float, comparison: Comparison) -> bool:
    """`value` meets `limit` under `comparison`, equality included (with REL_SLACK for float rounding)."""
    slack = REL_SLACK * max(abs(limit), abs(value))
    if comparison == "<=":
        return value <= limit + slack
    if comparison == ">=":
        return value >= limit - slack
    return abs(value) <= limit + slack


def fmt(x: float) -> str:
    """A number for a reason or rule text: 4 significant digits, no trailing zeros."""
    return f"{x:.4g}"


def judged(name: str, subject: str, inputs: dict[str, InputValue], value: float, limit: float,
           comparison: Comparison, unit: str, rule: str) -> Criterion:
    """A criterion that can be decided now (pending when a computed number is not finite)."""
    if not (math.isfinite(value) and math.isfinite(limit)) or _non_finite(inputs):
        return pending(name, subject, inputs, comparison, unit, rule, OUT_OF_NUMERIC_RANGE, value, limit)
    return Criterion(name=name, subject=subject, inputs=inputs, value=value, limit=limit, comparison=comparison,
                     unit=unit, rule=rule, passed=within(value, limit, comparison))


def pending(name: str, subject: str, inputs: dict[str, InputValue], comparison: Comparison, unit: str, rule: str,
            reason: str, value: float | None = None, limit: float | None = None) -> Criterion:
    """A criterion that cannot be decided yet; `reason` says why (shown to the technologist). Non-finite numbers
    are left out (null), so the criterion is always valid JSON."""
    if _non_finite(inputs):
        inputs = {key: _finite_or_none(v) for key, v in inputs.items()}
    value, limit = _finite_or_none(value), _finite_or_none(limit)
    return Criterion(name=name, subject=subject, inputs=inputs, value=value, limit=limit, comparison=comparison,
                     unit=unit, rule=rule, passed=None, reason=reason)


def _finite_or_none(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def _non_finite(inputs: dict[str, InputValue]) -> bool:
    return any(isinstance(v, float) and not math.isfinite(v) or
               isinstance(v, list) and any(isinstance(x, float) and not math.isfinite(x) for x in v)
               for v in inputs.values())


def lacking(exposures: Sequence[QcExposure], attr: str, what: str,
            numbers: Sequence[int] | None = None) -> str | None:
    """'exposures 2, 5 have no <what>' for the exposures whose `attr` is None; None if all have it. Exposures are
    numbered from 1 in session order, or by `numbers` when given (a subset of the session)."""
    numbers = numbers or range(1, len(exposures) + 1)
    if attr.startswith("set_") or attr == "mas":
        waiting = [str(n) for n, exp in zip(numbers, exposures)
                   if getattr(exp, attr) is None and not exp.technique_confirmed]
        if waiting:
            return (f"exposure{'s' if len(waiting) > 1 else ''} {', '.join(waiting)}: the DICOM technique is not "
                    f"confirmed yet (confirm or correct it)")
    flagged = [f"exposure {n}: {what} flagged by the meter ({', '.join(exp.excluded[attr])})"
               for n, exp in zip(numbers, exposures) if getattr(exp, attr) is None and attr in exp.excluded]
    if flagged:
        return "; ".join(flagged)
    numbers = [str(n) for n, exp in zip(numbers, exposures) if getattr(exp, attr) is None]
    if not numbers:
        return None
    if len(numbers) == 1:
        return f"exposure {numbers[0]} has no {what}"
    return f"exposures {', '.join(numbers)} have no {what}"


def unconfirmed(exposures: Sequence[QcExposure]) -> str | None:
    """Why a test that needs the indicated technique held constant cannot be judged yet: DICOM-proposed techniques
    not confirmed."""
    waiting = [str(n) for n, exp in enumerate(exposures, 1) if not exp.technique_confirmed]
    if not waiting:
        return None
    return (f"exposure{'s' if len(waiting) > 1 else ''} {', '.join(waiting)}: the DICOM technique is not confirmed "
            f"yet (confirm or correct it)")


def station_key(value: float) -> float:
    """Station identity: 6 significant digits, so 10 mAs typed in and 10.000000001 from mA x time group together."""
    return float(f"{value:.6g}")


def verdict(criteria: Iterable[Criterion], reason: str | None) -> tuple[str, str | None]:
    """fail if an applicable criterion failed; invalid if one rests on a reading its meter flagged; incomplete if
    `reason` is given, one cannot be decided, or none applies; else pass. Returns (verdict, reason unless pass/fail)."""
    applicable = [c for c in criteria if c.applies]
    if any(c.passed is False for c in applicable):
        return "fail", None
    invalid = [c for c in applicable if c.invalid]
    if invalid:
        return "invalid", "; ".join(f"{c.subject}: {c.reason}" for c in invalid)
    if reason:
        return "incomplete", reason
    undecided = [c for c in applicable if c.passed is None]
    if undecided:
        return "incomplete", "; ".join(f"{c.subject}: {c.reason}" for c in undecided)
    if not applicable:
        return "incomplete", "no criterion applies to these exposures"
    return "pass", None


def flagged_readings(test_type: TestType, exposures: Sequence[QcExposure]) -> list[Criterion]:
    """One `invalid` criterion per exposure whose needed quantity was excluded because the meter flagged it."""
    uses = needed(test_type)
    out = []
    for number, exp in enumerate(exposures, 1):
        bad = {key: flags for key, flags in exp.excluded.items() if key in uses}
        if not bad:
            continue
        text = "; ".join(f"{QUANTITY_LABELS.get(k, k)} flagged {', '.join(f)}" for k, f in sorted(bad.items()))
        out.append(Criterion(
            name="reading_validity", subject=f"exposure {number}",
            inputs={f"flags_{key}": ", ".join(flags) for key, flags in sorted(bad.items())}, value=None, limit=None,
            comparison="<=", unit="1", rule="a reading its meter flagged (out of range, error, fault) is not a "
            "measurement", passed=None, invalid=True, reason=f"{text}: repeat the exposure with the meter in range"))
    return out


def result(test_type: TestType, exposures: Sequence[QcExposure], limits: QcLimits,
           criteria: Sequence[Criterion] = (), reason: str | None = None) -> TestResult:
    """The TestResult of `criteria`; `reason` makes it incomplete for a cause that concerns the whole test."""
    if not exposures and reason is None:
        reason = "no exposures yet"
    criteria = [c.model_copy(update={"source": limits.source_of(c.name), "citation": CITATIONS.get(c.name)})
                for c in (*criteria, *flagged_readings(test_type, exposures))]
    outcome, why = verdict(criteria, reason)
    return TestResult(test_type=test_type, verdict=outcome, reason=why, criteria=tuple(criteria),
                      n_exposures=len(exposures), jurisdiction=limits.jurisdiction)
