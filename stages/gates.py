"""Classifying one gate reading: the value a query returned, against the gate's thresholds.

Pure: the adapter (``controller.gates.prometheus``) fetches the numbers; this decides
what they mean.
Non-finite numbers are never ok evidence: NaN is no data; ±Inf is compared with the
thresholds (an infinite error rate rolls back) and is no data when it crosses none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from stages import bake, compare
from stages.compare import Side
from stages.plan import Gate, Stage, Step
from stages.state import GateReading, Outcome, RolloutState

_OUTCOME_BY_PREFIX = {
    "abort": Outcome.ABORT,
    "rollback": Outcome.ROLLBACK,
    "hold": Outcome.HOLD,
}


@dataclass(frozen=True, slots=True)
class Classification:
    outcome: Outcome
    compared: float | None  # the value checked: ``value - baseline`` for a relative gate
    threshold: str | None  # the threshold crossed, e.g. "rollback_above"
    threshold_value: float | None


def classify(
    gate: Gate,
    value: float | None,
    baseline: float | None = None,
    samples: float | None = None,
) -> Classification:
    """What one evaluation of ``gate`` means; the worst threshold crossed wins."""
    if _missing(value) or _missing_baseline(gate, baseline) or _too_few_samples(gate, samples):
        return Classification(Outcome.NO_DATA, None, None, None)
    assert value is not None  # for mypy: _missing() has ruled None out
    compared = value - baseline if gate.baseline is not None and baseline is not None else value
    if math.isnan(compared):  # inf - inf: no comparison means anything
        return Classification(Outcome.NO_DATA, None, None, None)
    for name, threshold in gate.thresholds().items():
        if _crossed(name, compared, threshold):
            outcome = _OUTCOME_BY_PREFIX[name.split("_", 1)[0]]
            return Classification(outcome, compared, name, threshold)
    if _infinite_input(gate, value, baseline, samples):
        # An infinite error rate or count may cross a threshold, but is never evidence
        # that all is well: a division by zero is not a healthy service.
        return Classification(Outcome.NO_DATA, None, None, None)
    return Classification(Outcome.OK, compared, None, None)


def describe(gate: Gate, classification: Classification) -> str:
    """Short text for a person: ``0.031 > rollback_above 0.01`` or ``ok (0.002)``."""
    c = classification
    if c.outcome is Outcome.NO_DATA:
        return "no data"
    if c.compared is None:
        return str(c.outcome)
    shown = _number(c.compared)
    relative = " vs baseline" if gate.baseline is not None else ""
    if c.threshold is None or c.threshold_value is None:
        return f"{c.outcome} ({shown}{relative})"
    sign = ">" if c.threshold.endswith("_above") else "<"
    return f"{shown}{relative} {sign} {c.threshold} {_number(c.threshold_value)}"


def _missing(number: float | None) -> bool:
    return number is None or math.isnan(number)


def _missing_baseline(gate: Gate, baseline: float | None) -> bool:
    return gate.baseline is not None and _missing(baseline)


def _too_few_samples(gate: Gate, samples: float | None) -> bool:
    # Too little traffic is not evidence either way.
    if gate.samples is None:
        return False
    return samples is None or math.isnan(samples) or samples < gate.min_samples


def _infinite_input(
    gate: Gate, value: float, baseline: float | None, samples: float | None
) -> bool:
    used = [value]
    if gate.baseline is not None and baseline is not None:
        used.append(baseline)
    if gate.samples is not None and samples is not None:
        used.append(samples)
    return any(math.isinf(x) for x in used)


def _crossed(name: str, compared: float, threshold: float) -> bool:
    # Strict on purpose: a threshold of 0 means "any at all", and equality is not a breach.
    if name.endswith("_above"):
        return compared > threshold
    return compared < threshold


def _number(x: float) -> str:
    return f"{x:.4g}"


def compare_reading(
    gate: Gate,
    new: Side,
    old: Side,
    state: RolloutState,
    at: datetime,
    *,
    query: str = "",
    duration_ms: float = 0.0,
) -> GateReading:
    """One reading of a compare gate from per-side counts over the current step: the
    verdict of ``stages.compare`` with the evidence the state keeps from earlier steps.
    The shell (and the decision benchmark) fetch the counts; this says what they mean."""
    assert gate.compare is not None, "a compare gate"
    spec = gate.compare
    step = state.plan.steps[state.step]
    stats = compare.evaluate(
        spec,
        new,
        old,
        state.evidence.get(gate.name),
        alpha=state.plan.compare_alpha(),
        min_samples=gate.min_samples,
        # In a bake the old side is the holdout: the new side's share is its complement.
        expected_share=bake.expected_share(state) or expected_share(step),
        steps=bake.segments(state.plan, gate.name),
    )
    outcome = _COMPARE_OUTCOMES[stats.verdict]
    if stats.verdict is compare.Verdict.UNDECIDED and spec.requires == "no_regression":
        outcome = Outcome.OK  # a guardrail: no regression shown, and enough traffic read
    if outcome is Outcome.ROLLBACK and spec.on_regression == "abort":
        outcome = Outcome.ABORT
    return GateReading(
        gate=gate.name,
        outcome=outcome,
        at=at,
        query=query,
        value=None if math.isnan(new.rate) else new.rate,
        baseline=None if math.isnan(old.rate) else old.rate,
        samples=new.exposures,
        threshold="worse_by" if outcome.severity >= Outcome.ROLLBACK.severity else None,
        threshold_value=spec.worse_by,
        duration_ms=duration_ms,
        compare=stats,
    )


def expected_share(step: Step) -> float | None:
    """The new side's expected share of exposures, where the split says it: canary and
    graduated steps. A regional step adds whole regions, whose share nobody knows here."""
    if step.stage not in (Stage.CANARY, Stage.GRADUATED) or step.regions:
        return None
    share = step.percent / 100
    return share if 0 < share < 1 else None


_COMPARE_OUTCOMES = {
    compare.Verdict.REGRESSION: Outcome.ROLLBACK,
    compare.Verdict.NOT_WORSE: Outcome.OK,
    compare.Verdict.UNDECIDED: Outcome.HOLD,
    compare.Verdict.WAITING: Outcome.HOLD,
    compare.Verdict.ASSIGNMENT: Outcome.HOLD,
}
