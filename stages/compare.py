"""Compare gates: is the new side worse than the old by more than a margin?

Users are assigned by hash, so the new side and the old are random groups of the same
traffic, and the difference of their event rates (errors per request, or requests slower
than a bound) measures the change itself, whatever the time of day or the load. A compare
gate reads per-side event and exposure counts over the current step so far and keeps an
anytime-valid confidence sequence (``stages.sequential``) for

    delta = rate(new) - rate(old)

Outcomes, with ``m`` the gate's ``worse_by``:

- the whole interval above ``m``: a regression beyond the margin -> the gate's
  ``on_regression`` level (rollback, or abort);
- the whole interval below ``m``: not worse than the margin -> ok;
- otherwise undecided -> hold, saying about how many more new-side requests it needs;
- too few new-side requests this step, or a sample-ratio mismatch (the observed share of
  exposures is not the step's percent, so the groups are not what the split says and the
  comparison means nothing) -> hold, never a rollback.

Each step is a segment: its split is its own, so its counts are its own, and it adds its
inverse-variance weight to the evidence of the steps before it (``Evidence``): after a
step back the evidence of the wider step is still there. The variance of each segment is
taken where the null hypothesis is tight (rates ``p`` and ``p + m``), so a side with no
events yet is not read as certain.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from statistics import NormalDist

from stages import sequential
from stages.plan import Comparison

# The sample-ratio check: a mismatch must be significant and large enough to matter.
SRM_P = 0.001
# The worse rates the exact regression test mixes over: reference + k * margin.
_REGRESSION_GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
# ``user_spread`` is given for a 1 % group against the rest; the gap's variance goes as
# 1 / (f (1 - f)) for a group of share f (docs/concepts.md, "Who is on each side").
_SPREAD_SHARE = 0.01


class Verdict(enum.StrEnum):
    REGRESSION = "regression"
    NOT_WORSE = "not_worse"
    UNDECIDED = "undecided"
    WAITING = "waiting"  # too little traffic this step
    ASSIGNMENT = "assignment_unhealthy"  # sample-ratio mismatch


@dataclass(frozen=True, slots=True)
class Side:
    events: float
    exposures: float

    @property
    def rate(self) -> float:
        return self.events / self.exposures if self.exposures > 0 else math.nan


@dataclass(frozen=True, slots=True)
class Evidence:
    """A compare gate's evidence: what finished steps contributed (``weighted``,
    ``information``) and the current step's latest contribution, folded in when the
    step changes. ``margin`` is the one it was gathered for: weights depend on it."""

    margin: float
    weighted: float = 0.0
    information: float = 0.0
    log_e: float = 0.0  # the exact regression test's log e-value, product over steps
    # Sum over the later start steps j (2 .. the gate's planned segments) of the product
    # of e-values from j to the last finished step: the restarted tests, so a regression
    # that begins at a wider step is not diluted by the healthy steps before it
    # (``_restarted_log_e``); the start at the first step is ``log_e``.
    later_sum: float = 0.0
    planned: int = 0  # the gate's segments in the plan, as the last reading counted them
    segments: int = 0
    step_weighted: float = 0.0
    step_information: float = 0.0
    step_log_e: float = 0.0
    # Sum over finished steps of information x the step's allowance for who is on each
    # side (``user_spread``): the pooled interval widens by the weighted mean.
    allowance_weighted: float = 0.0
    step_allowance_weighted: float = 0.0
    # The step (1-based, counting this run's segments) whose reading first showed a
    # regression; 0: none yet. A shown regression stays shown: the e-process crossed
    # 1/alpha, and an anytime-valid test may stop there, so a quieter reading at a
    # narrower step after the step back is no evidence that the change recovered.
    regressed_at: int = 0

    def with_step(self, stats: CompareStats) -> Evidence:
        shown = self.regressed_at or (
            self.segments + 1 if stats.verdict is Verdict.REGRESSION else 0
        )
        return replace(
            self,
            step_weighted=stats.step_weighted,
            step_information=stats.step_information,
            step_log_e=stats.step_log_e,
            step_allowance_weighted=stats.step_information * stats.step_allowance,
            regressed_at=shown,
            planned=stats.planned,
        )

    def folded(self) -> Evidence:
        """The current step ends: its contribution joins the finished ones."""
        if self.step_information <= 0:
            return replace(
                self,
                step_weighted=0.0,
                step_information=0.0,
                step_log_e=0.0,
                step_allowance_weighted=0.0,
            )
        return Evidence(
            margin=self.margin,
            weighted=self.weighted + self.step_weighted,
            information=self.information + self.step_information,
            log_e=self.log_e + self.step_log_e,
            later_sum=_later_starts(self.later_sum, self.segments + 1, self.planned)
            * math.exp(min(self.step_log_e, 700.0)),
            planned=self.planned,
            segments=self.segments + 1,
            allowance_weighted=self.allowance_weighted + self.step_allowance_weighted,
            regressed_at=self.regressed_at,
        )


@dataclass(frozen=True, slots=True)
class CompareStats:
    """Everything a person needs to check a compare reading by hand."""

    verdict: Verdict
    new: Side  # this step
    old: Side
    margin: float
    alpha: float  # this gate's share of the rollout's false-rollback budget
    estimate: float | None  # delta over every step so far
    low: float | None  # the anytime-valid interval for delta
    high: float | None
    statistic: float | None  # z of (estimate - margin)
    needed: float | None  # about how many more new-side requests decide, if it stays
    share: float | None  # observed new share of exposures this step
    expected_share: float | None  # the step's percent, where it means a share
    srm_p: float | None
    step_weighted: float = 0.0
    step_information: float = 0.0
    step_log_e: float = 0.0
    log_e: float = 0.0  # the exact regression test, every step so far
    segments: int = 0  # earlier steps whose evidence is included
    min_samples: float = 0.0
    pooled: bool = False  # estimate and interval cover the earlier steps too
    # How far who is on each side can move delta by chance (``user_spread`` at this
    # step's share), included in ``low``..``high``: this step's, and the one applied.
    step_allowance: float = 0.0
    allowance: float = 0.0
    regressed_at: int = 0  # an earlier reading showed a regression, at this step
    planned: int = 1  # the gate's segments in the plan (the restarted tests' weights)


def evaluate(
    spec: Comparison,
    new: Side,
    old: Side,
    carried: Evidence | None,
    *,
    alpha: float,
    min_samples: float,
    expected_share: float | None,
    steps: int = 1,
) -> CompareStats:
    """The reading of one compare gate from this step's counts and earlier evidence;
    ``steps`` is how many segments the gate may gather in the plan (the steps it applies
    to: the restarted tests' weights, ``_restarted_log_e``)."""
    margin = spec.worse_by
    prior = carried if carried is not None and carried.margin == margin else Evidence(margin)
    share, srm_p = _sample_ratio(new, old, expected_share)
    half = _test_alpha(spec, alpha)
    allowance = user_allowance(spec.user_spread, _group_share(expected_share, share), half, margin)
    step = _Step(0.0, 0.0, 0.0, allowance)
    if _mismatch(share, srm_p, expected_share, spec.srm_tolerance):
        unless: Verdict | None = Verdict.ASSIGNMENT
    elif (
        new.exposures < max(min_samples, 1)
        or old.exposures <= 0
        or (weight := _segment_information(new, old, margin)) <= 0
    ):
        unless = Verdict.WAITING
    else:
        unless = None
        log_e = log_e_regression(new, old.rate + margin + allowance, _scale(margin))
        step = _Step(weight * (new.rate - old.rate), weight, log_e, allowance)
    return _pooled(spec, new, old, prior, step, unless, alpha, min_samples, share, srm_p,
                   expected_share, steps)  # fmt: skip


def _test_alpha(spec: Comparison, alpha: float) -> float:
    # With a user spread, half the budget is for the requests (the sequential test) and
    # half for who is on each side (the allowance).
    return alpha / 2 if spec.user_spread > 0 else alpha


@dataclass(frozen=True, slots=True)
class _Step:
    weighted: float
    information: float
    log_e: float
    allowance: float


def user_allowance(spread: float, share: float | None, alpha: float, margin: float) -> float:
    """How much wider than the margin the interval must stay clear of, for who is in a
    random group of users (``share`` of them): the chance gap between the group and the
    rest is below z * ``spread`` (scaled from a 1 % group to this share) but for
    ``alpha``, and a change that does nothing is rolled back only when the gap passes
    the margin, so the margin already absorbs that much of it. The gap is drawn once per
    step and fixed while the step lasts, so one bound holds at every look; the test of
    the requests takes the rest of the budget.

    What this protects is a change that does nothing (docs/concepts.md, "Who is on each
    side"): one already near the margin may be rolled back when its group also drew the
    users with more errors."""
    if spread <= 0 or share is None or not 0 < share < 1:
        return 0.0
    scale = math.sqrt(_SPREAD_SHARE * (1 - _SPREAD_SHARE) / (share * (1 - share)))
    return max(0.0, NormalDist().inv_cdf(1 - alpha) * spread * scale - margin)


def _group_share(expected: float | None, measured: float | None) -> float | None:
    # The users' share is the step's percent; a regional step has none, and there the
    # measured share of requests stands in for it.
    return expected if expected is not None and 0 < expected < 1 else measured


def _pooled(
    spec: Comparison,
    new: Side,
    old: Side,
    prior: Evidence,
    step: _Step,
    unless: Verdict | None,
    alpha: float,
    min_samples: float,
    share: float | None,
    srm_p: float | None,
    expected_share: float | None,
    steps: int,
) -> CompareStats:
    """Pool this step's contribution with the earlier steps' and read the interval, at
    the part of the gate's budget ``alpha`` the requests' test has (``_test_alpha``).
    ``unless`` (waiting, assignment) wins over an undecided pooled interval."""
    level = _test_alpha(spec, alpha)
    margin = spec.worse_by
    weighted = prior.weighted + step.weighted
    information = prior.information + step.information
    log_e = _restarted_log_e(prior, step.log_e, steps)
    estimate = low = high = statistic = needed = None
    verdict = unless or Verdict.WAITING
    pooled = False
    allowance = 0.0
    if information > 0:
        scales = sequential.taus(_scale(margin))
        allowance = (prior.allowance_weighted + step.information * step.allowance) / information
        interval = _widened(
            sequential.confidence_sequence(weighted, information, level, scales), allowance
        )
        if (
            prior.segments
            and step.information > 0
            and interval.low <= margin
            and step.weighted > margin * step.information  # this step's own estimate
        ):
            # A regression may begin at this step: its own interval may show it where
            # the pooled one, diluted by healthy steps before, does not yet.
            alone = _widened(
                sequential.confidence_sequence(step.weighted, step.information, level, scales),
                step.allowance,
            )
            if alone.low > margin:
                weighted, information, interval = step.weighted, step.information, alone
                allowance = step.allowance
        pooled = information > step.information
        estimate, low, high = weighted / information, interval.low, interval.high
        statistic = (estimate - margin) * math.sqrt(information)
        verdict = _verdict(interval, margin, log_e, level, unless, prior.regressed_at)
        if verdict is Verdict.UNDECIDED:
            distance = abs(estimate - margin) - allowance
            needed = (
                _needed(new, step, distance, information, level, scales) if distance > 0 else None
            )
    return CompareStats(
        verdict, new, old, margin, alpha, estimate, low, high, statistic, needed,
        share, expected_share, srm_p, step.weighted, step.information, step.log_e, log_e,
        prior.segments, min_samples, pooled, step.allowance, allowance, prior.regressed_at,
        max(1, steps),
    )  # fmt: skip


def _widened(interval: sequential.Interval, allowance: float) -> sequential.Interval:
    if allowance <= 0:
        return interval
    return sequential.Interval(interval.low - allowance, interval.high + allowance)


def _verdict(
    interval: sequential.Interval,
    margin: float,
    log_e: float,
    alpha: float,
    unless: Verdict | None,
    regressed_at: int = 0,
) -> Verdict:
    if unless is Verdict.ASSIGNMENT:
        return Verdict.ASSIGNMENT  # the groups are not what the split says: no verdict
    if regressed_at or (interval.low > margin and log_e >= math.log(1 / alpha)):
        return Verdict.REGRESSION
    if interval.high < margin and unless is None:
        return Verdict.NOT_WORSE  # never from earlier steps alone: this step must show it
    return unless or Verdict.UNDECIDED


def _needed(
    new: Side,
    step: _Step,
    distance: float,
    information: float,
    alpha: float,
    scales: tuple[float, ...],
) -> float | None:
    total = sequential.information_needed(distance, information, alpha, scales)
    if total is None or step.information <= 0 or new.exposures <= 0:
        return None
    per_request = step.information / new.exposures
    return max(0.0, math.ceil((total - information) / per_request))


def _restarted_log_e(prior: Evidence, step_log_e: float, steps: int) -> float:
    """log of the weighted mean, over every step j the test could have started at, of
    the product of the steps' e-values from j on (1 for a start not reached yet). Each
    product is a test martingale and the weights are fixed by the plan before any data,
    so the mean is an e-process too: Ville's bound holds for it, and a regression that
    begins at a wider step is not diluted by the steps before it.

    The weights: half on the first step, the other half split evenly over the later
    steps the gate applies to (none past them: after a step back the earlier starts go
    on). A change is the same code at every step, so a regression nearly always shows
    from the first step, and there requests are fewest: what a weight costs is
    ``log(1/w)`` of evidence, paid in requests, and a 1 % canary pays for each of them
    a hundred times slower than a 50 % step. Uniform weights over all of a 12-step plan
    cost ``log 12`` = 2.5 at the first step; these cost ``log 2`` = 0.7 there and, over
    the 6 steps the example plan's compare gates apply to, ``log 10`` = 2.3 later.

    It only ever takes the rollback: the intervals are a further condition, which can
    only make rollbacks rarer."""
    planned = max(1, steps)
    first = prior.log_e + step_log_e
    if planned == 1:
        return first
    later = _later_starts(prior.later_sum, prior.segments + 1, planned)
    terms = [math.log(0.5) + first]
    if later > 0:
        terms.append(math.log(0.5 / (planned - 1)) + math.log(later) + step_log_e)
    return sequential.log_mean_exp(terms, 1)


def _later_starts(later_sum: float, segment: int, planned: int) -> float:
    """The sum of the later starts' products up to ``segment`` (1-based), before its own
    e-value: a start at ``segment`` joins with a product of 1 when it has a weight."""
    return later_sum + (1.0 if 2 <= segment <= planned else 0.0)


def log_e_regression(new: Side, reference: float, scale: float) -> float:
    """The log e-value against "the new side's rate is at most ``reference``" (the old
    side's rate plus the margin), exact for independent requests however few: the mean
    over a grid of worse rates of the binomial likelihood ratio. Each term is a test
    martingale in the requests while the rate is at most ``reference``, so the mean is
    one too and Ville's inequality bounds the chance it ever reaches ``1/alpha``.

    The normal interval alone is too eager on a few events: a Poisson tail is heavier
    than a normal one (measured in tests/unit/test_compare.py), so a regression needs
    both this and the interval."""
    n, x = new.exposures, min(new.events, new.exposures)
    if n <= 0:
        return 0.0
    r = min(max(reference, 0.5 / n), 1 - 1e-12)
    terms = []
    for k in _REGRESSION_GRID:
        worse = r + k * scale
        if worse >= 1:
            break
        terms.append(x * math.log(worse / r) + (n - x) * math.log((1 - worse) / (1 - r)))
    if not terms:
        return 0.0
    return sequential.log_mean_exp(terms, len(_REGRESSION_GRID))


def _segment_information(new: Side, old: Side, margin: float) -> float:
    """1 / variance of ``rate(new) - rate(old)``, at the rates where the null is tight:
    ``p`` on the old side and ``p + margin`` on the new, ``p`` fitted to both sides."""
    total = new.exposures + old.exposures
    floor = 0.5 / total  # half an event: never a variance of exactly 0
    p_old = (old.events + new.events - new.exposures * margin) / total
    p_old = min(max(p_old, floor), 1 - margin - floor) if margin < 1 else floor
    p_new = min(max(p_old + margin, floor), 1 - floor)
    variance = p_new * (1 - p_new) / new.exposures + p_old * (1 - p_old) / old.exposures
    return 1 / variance if variance > 0 else 0.0


def _scale(margin: float) -> float:
    # The effect of interest: the margin, or a tenth of a point for a margin of 0.
    return margin if margin > 0 else 0.001


def _sample_ratio(
    new: Side, old: Side, expected: float | None
) -> tuple[float | None, float | None]:
    total = new.exposures + old.exposures
    if total <= 0:
        return None, None
    share = new.exposures / total
    if expected is None or not 0 < expected < 1:
        return share, None
    p = sequential.chi_square_p(
        (new.exposures, old.exposures), (expected * total, (1 - expected) * total)
    )
    return share, p


def _mismatch(
    share: float | None, p: float | None, expected: float | None, tolerance: float
) -> bool:
    if share is None or p is None or expected is None:
        return False
    # Relative to the smaller side's share, where the noise of who is in it shows: the
    # new side up to 50 %, the old one above (a bake's 1 % holdout against 99 % new).
    return p < SRM_P and abs(share - expected) > tolerance * min(expected, 1 - expected)


def describe(stats: CompareStats, on_regression: str, *, guardrail: bool = False) -> str:
    """One sentence: ``new 0.42 % vs old 0.18 % errors, +0.24 pp (interval +0.05..+0.43)
    > 0.10 pp -> rollback; 1,212 vs 23,900 requests``."""
    counts = f"{_count(stats.new.exposures)} vs {_count(stats.old.exposures)} requests"
    rates = f"new {_percent(stats.new.rate)} vs old {_percent(stats.old.rate)}"
    if stats.verdict is Verdict.ASSIGNMENT:
        expected = _percent(stats.expected_share or 0)
        return (
            f"assignment unhealthy: the new side has {_percent(stats.share or 0)} of "
            f"exposures, the step serves {expected} (p={stats.srm_p:.1g}); no verdict; {counts}"
        )
    if stats.estimate is None or stats.low is None or stats.high is None:
        return (
            f"waiting for traffic: {_count(stats.new.exposures)} of "
            f"{_count(max(stats.min_samples, 1))} new-side requests this step"
        )
    spread = f", of which ±{stats.allowance * 100:.2f} for who is on each side"
    interval = (
        f"{_points(stats.estimate)} pp (interval {_points(stats.low)}..{_points(stats.high)}"
        f"{spread if stats.allowance > 0 else ''})"
    )
    if stats.pooled:
        steps = stats.segments + 1
        rates, interval = f"this step {rates}", f"over {steps} steps {interval}"
    margin = f"{abs(stats.margin) * 100:.2f} pp"
    match stats.verdict:
        case Verdict.REGRESSION if stats.regressed_at and stats.low <= stats.margin:
            tail = (
                f"includes {margin}, but an earlier step of this run showed a regression "
                f"beyond it -> {on_regression} (until a retry)"
            )
        case Verdict.REGRESSION:
            tail = f"> {margin} -> {on_regression}"
        case Verdict.NOT_WORSE:
            tail = f"< {margin} -> ok"
        case Verdict.WAITING:
            tail = f"undecided; waiting for traffic this step ({_count(stats.new.exposures)} of "
            tail += f"{_count(max(stats.min_samples, 1))} new-side requests)"
        case _ if guardrail:
            tail = f"includes {margin}: no regression shown -> ok (requires: no_regression)"
        case _ if stats.needed is None and stats.allowance > 0:
            tail = (
                f"includes {margin} -> hold; who is on each side could explain the gap at "
                "this step's size, more requests alone may not decide it"
            )
        case _:
            more = f"about {_count(stats.needed)} more" if stats.needed is not None else "more"
            tail = f"includes {margin} -> hold, needs {more} new-side requests"
    return f"{rates}, {interval} {tail}; {counts}"


def _percent(rate: float) -> str:
    return "n/a" if math.isnan(rate) else f"{rate * 100:.2f} %"


def _points(delta: float) -> str:
    if math.isinf(delta):
        return "-inf" if delta < 0 else "+inf"
    return f"{delta * 100:+.2f}"


def _count(number: float) -> str:
    return f"{number:,.0f}"
