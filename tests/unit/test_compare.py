"""The compare gate's statistics: its error rate under repeated looks stays within its
budget, it has power on known cases, and its verdicts say what they saw.

The error-rate tests are seeded Monte Carlo loops: each run draws requests look by look
(binomial errors per side, hash-like split) and reads the gate at *every* look, as the
controller does each interval; a run counts as a false rollback if any look says
regression. Budgets are set high (5 %) so a few hundred runs can measure them; the same
loop with a repeated fixed-horizon z-test shows what the anytime-valid test prevents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np
import pytest

from stages import compare, sequential
from stages.compare import Evidence, Side, Verdict, describe, evaluate
from stages.plan import Comparison

ALPHA = 0.05
SPEC = Comparison(events="e", exposures="x", worse_by=0.001)


@dataclass(frozen=True)
class Traffic:
    p_old: float
    delta: float  # p_new - p_old
    share: float  # the new side's share of requests
    per_look: float  # requests per look, both sides
    looks: int


def _draw(traffic: Traffic, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    n_new = rng.poisson(traffic.per_look * traffic.share, traffic.looks)
    n_old = rng.poisson(traffic.per_look * (1 - traffic.share), traffic.looks)
    x_new = rng.binomial(n_new, traffic.p_old + traffic.delta)
    x_old = rng.binomial(n_old, traffic.p_old)
    return tuple(np.cumsum(a) for a in (n_new, x_new, n_old, x_old))


def first_verdicts(traffic: Traffic, runs: int, seed: int, spec: Comparison = SPEC) -> dict:
    """Per run, the first decided verdict over repeated looks (or none)."""
    rng = np.random.default_rng(seed)
    out = {Verdict.REGRESSION: 0, Verdict.NOT_WORSE: 0, "looks": []}
    for _ in range(runs):
        n_new, x_new, n_old, x_old = _draw(traffic, rng)
        for k in range(traffic.looks):
            stats = evaluate(
                spec,
                Side(float(x_new[k]), float(n_new[k])),
                Side(float(x_old[k]), float(n_old[k])),
                None,
                alpha=ALPHA,
                min_samples=0,
                expected_share=traffic.share,
            )
            if stats.verdict in (Verdict.REGRESSION, Verdict.NOT_WORSE):
                out[stats.verdict] += 1
                out["looks"].append(k + 1)
                break
    return out


def naive_z_rollbacks(traffic: Traffic, runs: int, seed: int) -> int:
    """The mistake the issue measured: a one-sided 95 % z-test of delta > margin at
    every look. Same traffic, same looks."""
    rng = np.random.default_rng(seed)
    rolled = 0
    for _ in range(runs):
        n_new, x_new, n_old, x_old = _draw(traffic, rng)
        with np.errstate(divide="ignore", invalid="ignore"):
            p1, p0 = x_new / n_new, x_old / n_old
            se = np.sqrt(p1 * (1 - p1) / n_new + p0 * (1 - p0) / n_old)
            z = (p1 - p0 - SPEC.worse_by) / se
        rolled += bool(np.any(np.nan_to_num(z, nan=0.0, posinf=0.0) > 1.645))
    return rolled


def _upper(rate: float, runs: int) -> float:
    # What a true rate of ``rate`` can show in ``runs`` runs, 3 standard errors up.
    return rate + 3 * math.sqrt(rate * (1 - rate) / runs)


# The null at its edge: the new side is worse by exactly the margin.
NULL_CASES = {
    "1 % canary, 0.5 % errors, few events": Traffic(0.005, 0.001, 0.01, 100, 400),
    "5 % canary, 2 % errors": Traffic(0.02, 0.001, 0.05, 300, 250),
    "25 %, 0.5 % errors": Traffic(0.005, 0.001, 0.25, 600, 200),
    "50 %, 5 % errors, many events": Traffic(0.05, 0.001, 0.5, 2000, 150),
}


@pytest.mark.parametrize("traffic", NULL_CASES.values(), ids=NULL_CASES.keys())
def test_under_repeated_looks_false_rollbacks_stay_within_the_budget(traffic: Traffic) -> None:
    runs = 250
    found = first_verdicts(traffic, runs, seed=7)
    assert found[Verdict.REGRESSION] / runs <= _upper(ALPHA, runs), found


def test_a_repeated_fixed_horizon_test_on_the_same_traffic_breaks_its_level() -> None:
    # The control: the loop above can see a broken test. The new side worse by exactly
    # the margin (not beyond it), looked at 400 times: a one-sided 5 % z-test "rolls
    # back" far more than 5 % of the runs.
    traffic = Traffic(0.02, 0.001, 0.05, 200, 400)
    runs = 200
    naive = naive_z_rollbacks(traffic, runs, seed=3) / runs
    ours = first_verdicts(traffic, runs, seed=3)[Verdict.REGRESSION] / runs
    assert naive > 3 * ALPHA, naive
    assert ours <= _upper(ALPHA, runs)


def test_a_healthy_canary_is_never_rolled_back_and_is_shown_not_worse() -> None:
    traffic = Traffic(0.005, 0.0, 0.25, 4000, 300)
    runs = 100
    found = first_verdicts(traffic, runs, seed=11)
    assert found[Verdict.REGRESSION] == 0
    assert found[Verdict.NOT_WORSE] >= 0.95 * runs


@pytest.mark.parametrize(
    ("traffic", "within"),
    [
        # +5 pp at 1 %: a few hundred new-side requests decide it.
        (Traffic(0.005, 0.05, 0.01, 3000, 200), 60),
        # +1 pp at 5 %.
        (Traffic(0.005, 0.01, 0.05, 3000, 300), 150),
        # +0.2 pp at 25 %, twice the margin: needs many requests, but gets there.
        (Traffic(0.005, 0.002, 0.25, 20000, 300), 300),
    ],
    ids=["+5pp at 1%", "+1pp at 5%", "+0.2pp at 25%"],
)
def test_power_regressions_beyond_the_margin_are_caught(traffic: Traffic, within: int) -> None:
    runs = 60
    found = first_verdicts(traffic, runs, seed=5)
    assert found[Verdict.REGRESSION] >= 0.95 * runs, found
    assert float(np.median(found["looks"])) <= within


def _stats(
    new: Side,
    old: Side,
    carried: Evidence | None = None,
    spec: Comparison = SPEC,
    **kw: object,
):
    args = {"alpha": 0.01, "min_samples": 0.0, "expected_share": 0.05}
    args.update(kw)
    return evaluate(spec, new, old, carried, **args)  # type: ignore[arg-type]


def test_below_the_minimum_sample_it_waits_and_says_how_far_it_is() -> None:
    stats = _stats(Side(9, 120), Side(20, 2280), min_samples=500)
    assert stats.verdict is Verdict.WAITING
    assert describe(stats, "rollback") == (
        "waiting for traffic: 120 of 500 new-side requests this step"
    )


def test_undecided_holds_and_says_how_many_more_requests_it_needs() -> None:
    stats = _stats(Side(30, 5000), Side(540, 95000))
    assert stats.verdict is Verdict.UNDECIDED
    assert stats.needed is not None and stats.needed > 0
    text = describe(stats, "rollback")
    assert text.startswith("new 0.60 % vs old 0.57 %, +0.03 pp (interval ")
    assert f"needs about {stats.needed:,.0f} more new-side requests" in text


def test_a_regression_reads_as_one_sentence_with_counts_interval_and_action() -> None:
    stats = _stats(Side(51, 1212), Side(43, 23900))
    assert stats.verdict is Verdict.REGRESSION
    assert stats.low is not None and stats.low > SPEC.worse_by
    text = describe(stats, "rollback")
    assert text.startswith("new 4.21 % vs old 0.18 %, +4.03 pp (interval +")
    assert text.endswith("> 0.10 pp -> rollback; 1,212 vs 23,900 requests")


def test_a_skewed_split_holds_as_assignment_unhealthy_and_never_rolls_back() -> None:
    # The step serves 5 %, but the new side has 20 % of exposures, and looks terrible:
    # the groups are not what the split says, so the comparison means nothing.
    stats = _stats(Side(800, 20000), Side(400, 80000))
    assert stats.verdict is Verdict.ASSIGNMENT
    assert describe(stats, "rollback").startswith(
        "assignment unhealthy: the new side has 20.00 % of exposures, the step serves 5.00 %"
    )


def test_a_share_within_tolerance_is_not_a_mismatch() -> None:
    # 7 % against 5 %: significant with this much traffic, but within 50 % of it.
    stats = _stats(Side(140, 70000), Side(1860, 930000))
    assert stats.verdict is not Verdict.ASSIGNMENT


def test_evidence_from_a_wider_step_is_kept_after_a_step_back() -> None:
    wide = _stats(Side(60, 1000), Side(50, 9000), expected_share=0.1)
    assert wide.verdict is Verdict.REGRESSION
    kept = Evidence(SPEC.worse_by).with_step(wide).folded()
    # At the narrower step nothing was read yet: the regression still stands.
    narrow = _stats(Side(0, 0), Side(0, 0), kept)
    assert narrow.verdict is Verdict.REGRESSION
    assert narrow.segments == 1


def test_a_shown_regression_stays_shown_at_a_narrower_step_that_looks_quiet() -> None:
    # A regression shown at a wide step (by that step alone), then a step back where
    # the narrower step reads as healthy as can be: the test had rejected, and a quiet
    # narrower step is no evidence the change got better. It stays until a retry.
    # Three steps in the plan: the restarted test at the second step has its weight.
    healthy = _stats(Side(50, 100_000), Side(500, 900_000), expected_share=0.1, steps=3)
    kept = Evidence(SPEC.worse_by).with_step(healthy).folded()
    wide = _stats(Side(120, 20_000), Side(60, 60_000), kept, expected_share=0.25, steps=3)
    assert wide.verdict is Verdict.REGRESSION
    kept = kept.with_step(wide).folded()
    assert kept.regressed_at == 2
    narrow = _stats(Side(2, 5_000), Side(500, 95_000), kept, expected_share=0.05, steps=3)
    assert narrow.verdict is Verdict.REGRESSION
    assert narrow.low is not None and narrow.low <= SPEC.worse_by  # not by itself
    assert "an earlier step of this run showed a regression" in describe(narrow, "rollback")
    # A retry clears the evidence: a fresh Evidence decides from its own readings.
    assert _stats(Side(2, 5_000), Side(500, 95_000), None).verdict is not Verdict.REGRESSION


def test_earlier_evidence_alone_never_says_not_worse() -> None:
    wide = _stats(Side(50, 100000), Side(500, 900000), expected_share=0.1)
    assert wide.verdict is Verdict.NOT_WORSE
    kept = Evidence(SPEC.worse_by).with_step(wide).folded()
    # Below the gate's minimum sample this step shows nothing yet: it waits.
    assert _stats(Side(0, 10), Side(0, 190), kept, min_samples=100).verdict is Verdict.WAITING


def test_evidence_for_another_margin_is_not_reused() -> None:
    wide = _stats(Side(60, 1000), Side(50, 9000), expected_share=0.1)
    kept = Evidence(0.05).with_step(wide).folded()
    assert _stats(Side(0, 0), Side(0, 0), kept).verdict is Verdict.WAITING


def test_no_events_on_either_side_is_not_certainty() -> None:
    # Zero errors on both sides of a small sample: no decision either way (the variance
    # is taken at the margin, never 0).
    assert _stats(Side(0, 400), Side(0, 7600)).verdict is Verdict.UNDECIDED


# --- the confidence sequence itself ----------------------------------------------------


def test_the_boundary_is_where_the_mixture_reaches_one_over_alpha() -> None:
    scales = sequential.taus(0.001)
    for information in (1e2, 1e4, 1e6, 1e8):
        b = sequential.boundary(information, 0.01, scales)
        assert sequential.log_mixture(b, information, scales) == pytest.approx(
            math.log(100), abs=1e-6
        )


def test_a_gaussian_random_walk_leaves_the_sequence_at_most_alpha_of_the_time() -> None:
    # The boundary's own guarantee, checked on the model it is built on: increments of
    # mean 0 and variance 1 per unit of information, 2,000 looks per run.
    rng = np.random.default_rng(1)
    scales = sequential.taus(0.05)
    looks = np.arange(1, 2001, dtype=float)
    half = np.array([sequential.boundary(v, ALPHA, scales) for v in looks])
    runs = 1000
    walks = np.cumsum(rng.standard_normal((runs, looks.size)), axis=1)
    left = np.any(np.abs(walks) > half, axis=1).mean()
    assert left <= _upper(ALPHA, runs)


def test_more_information_narrows_the_interval() -> None:
    scales = sequential.taus(0.001)
    widths = [sequential.confidence_sequence(0.0, v, 0.01, scales).high for v in (1e3, 1e5, 1e7)]
    assert widths[0] > widths[1] > widths[2] > 0


def test_information_needed_is_where_the_half_width_reaches_the_distance() -> None:
    scales = sequential.taus(0.001)
    needed = sequential.information_needed(0.0005, 1e5, 0.01, scales)
    assert needed is not None and needed > 1e5
    half = sequential.confidence_sequence(0.0, needed, 0.01, scales).high
    assert half <= 0.0005 * 1.001
    assert sequential.information_needed(0.0, 1e5, 0.01, scales) is None


def test_chi_square_two_cells() -> None:
    assert sequential.chi_square_p((50, 50), (50, 50)) == pytest.approx(1.0)
    # 3.84 is the 95 % point of chi-square with one degree of freedom.
    assert sequential.chi_square_p((59.8, 40.2), (50, 50)) == pytest.approx(0.05, abs=0.002)


def _walk_steps(
    shares: tuple[float, ...],
    deltas: tuple[float, ...],
    looks: int | tuple[int, ...],
    rng: np.random.Generator,
) -> Verdict | None:
    """One rollout through several steps (segments), evidence carried between them;
    the first decided regression, or None."""
    carried = Evidence(SPEC.worse_by)
    per_step = looks if isinstance(looks, tuple) else (looks,) * len(shares)
    for share, delta, looks in zip(shares, deltas, per_step, strict=True):
        traffic = Traffic(0.005, delta, share, 400, looks)
        n_new, x_new, n_old, x_old = _draw(traffic, rng)
        for k in range(looks):
            stats = evaluate(
                SPEC,
                Side(float(x_new[k]), float(n_new[k])),
                Side(float(x_old[k]), float(n_old[k])),
                carried,
                alpha=ALPHA,
                min_samples=0,
                expected_share=share,
                steps=len(shares),
            )
            if stats.verdict is Verdict.REGRESSION:
                return stats.verdict
        carried = carried.with_step(stats).folded()
    return None


def test_across_steps_with_evidence_carried_false_rollbacks_stay_within_the_budget() -> None:
    rng = np.random.default_rng(21)
    runs = 150
    shares = (0.01, 0.05, 0.25, 0.5)
    rolled = sum(
        _walk_steps(shares, (0.001,) * 4, 60, rng) is Verdict.REGRESSION for _ in range(runs)
    )
    assert rolled / runs <= _upper(ALPHA, runs)


def test_a_regression_that_begins_at_a_wider_step_is_not_diluted_by_the_healthy_ones() -> None:
    # Healthy at 5 and 25 % for long, then +0.4 pp at 50 % (a load-bound failure): the
    # evidence pooled over all steps stays below the margin, but the restarted test sees
    # the new step on its own. Measured on this loop: 28 of 30 caught with restarts, 1 of
    # 30 with the product of the steps' e-values alone.
    rng = np.random.default_rng(4)
    runs = 30
    caught = sum(
        _walk_steps((0.05, 0.25, 0.5), (0.0, 0.0, 0.004), (1500, 1500, 150), rng)
        is Verdict.REGRESSION
        for _ in range(runs)
    )
    assert caught >= 0.8 * runs


# --- who is on each side: users differ, and the split assigns users -------------------------

POPULATION = 2_000  # users; a 5 % group is 100 of them
GROUP_SHARE = 0.05
HALF_POINT = Comparison(events="e", exposures="x", worse_by=0.0005)


def _population(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # The decision benchmark's model: error propensity Beta(0.5, 99.5) (mean 0.5 %),
    # request weight Gamma(0.5) (some users are heavy).
    return rng.beta(0.5, 99.5, POPULATION), rng.gamma(0.5, 1.0, POPULATION)


def _side_rates(rng: np.random.Generator) -> tuple[float, float, float]:
    """A random group's and the rest's request-weighted error rates, and the group's
    share of requests."""
    p, w = _population(rng)
    group = rng.random(POPULATION) < GROUP_SHARE
    rate = lambda m: float(w[m] @ p[m] / w[m].sum())  # noqa: E731
    return rate(group), rate(~group), float(w[group].sum() / w.sum())


def _spread_at_one_percent(seed: int, draws: int = 3000) -> float:
    """The gap's standard deviation for a change that does nothing, measured at the
    group's share and stated for a 1 % group, as a plan declares ``user_spread``."""
    rng = np.random.default_rng(seed)
    gaps = [a - b for a, b, _ in (_side_rates(rng) for _ in range(draws))]
    f = GROUP_SHARE
    return float(np.std(gaps)) * math.sqrt(f * (1 - f) / (0.01 * 0.99))


def _heterogeneous_rollbacks(spec: Comparison, runs: int, seed: int) -> int:
    """Runs where a change that does nothing is rolled back at any of 60 looks: the
    groups' own rates differ (fixed per run), requests are binomial on top."""
    rng = np.random.default_rng(seed)
    rolled = 0
    for _ in range(runs):
        p_new, p_old, share = _side_rates(rng)
        n_new, x_new, n_old, x_old = _draw(Traffic(p_old, p_new - p_old, share, 20_000, 60), rng)
        for k in range(60):
            stats = evaluate(
                spec,
                Side(float(x_new[k]), float(n_new[k])),
                Side(float(x_old[k]), float(n_old[k])),
                None,
                alpha=ALPHA,
                min_samples=0,
                expected_share=GROUP_SHARE,
            )
            if stats.verdict is Verdict.REGRESSION:
                rolled += 1
                break
    return rolled


def test_treating_requests_as_independent_rolls_back_changes_that_do_nothing() -> None:
    # The control: a random 100 of 2,000 heterogeneous users differ from the rest by
    # more than a 0.05 pp margin often enough, and 1.2 million requests see it.
    runs = 200
    rolled = _heterogeneous_rollbacks(HALF_POINT, runs, seed=21)
    assert rolled / runs > 3 * ALPHA, rolled


def test_with_the_user_spread_changes_that_do_nothing_stay_within_the_budget() -> None:
    runs = 200
    spread = _spread_at_one_percent(seed=22)
    spec = replace(HALF_POINT, user_spread=spread)
    rolled = _heterogeneous_rollbacks(spec, runs, seed=21)
    assert rolled / runs <= _upper(ALPHA, runs), (rolled, spread)


def test_the_allowance_shrinks_as_the_group_grows() -> None:
    z = NormalDist().inv_cdf(0.975)
    at = {f: compare.user_allowance(0.001, f, 0.025, 0.0) for f in (0.01, 0.05, 0.25, 0.5)}
    assert at[0.01] == pytest.approx(z * 0.001)
    assert at[0.01] > at[0.05] > at[0.25] > at[0.5] > 0
    # The gap's variance goes as 1 / (f (1 - f)).
    assert at[0.25] / at[0.01] == pytest.approx(math.sqrt(0.01 * 0.99 / (0.25 * 0.75)))
    assert compare.user_allowance(0.0, 0.01, 0.025, 0.0) == 0.0
    assert compare.user_allowance(0.001, None, 0.025, 0.0) == 0.0
    # The margin absorbs what it can: a gap within it rolls back nothing that does
    # nothing, so only the rest widens the interval, and a wide group needs none.
    assert compare.user_allowance(0.001, 0.01, 0.025, 0.001) == pytest.approx(z * 0.001 - 0.001)
    assert compare.user_allowance(0.001, 0.25, 0.025, 0.001) == 0.0


def test_a_gross_regression_is_still_caught_through_the_allowance() -> None:
    spec = Comparison(events="e", exposures="x", worse_by=0.001, user_spread=0.0009)
    stats = _stats(Side(30, 500), Side(250, 50_000), spec=spec, expected_share=0.01)
    assert stats.verdict is Verdict.REGRESSION
    assert stats.allowance == pytest.approx(compare.user_allowance(0.0009, 0.01, 0.005, 0.001))
    assert stats.allowance > 0
    assert stats.alpha == 0.01  # the gate's whole budget is shown, not its halves
    assert "for who is on each side" in describe(stats, "rollback")


def test_the_allowance_holds_a_small_gap_a_small_group_could_have_by_chance() -> None:
    # +0.3 pp over 100,000 new-side requests: decided without the spread, and within
    # what a 1 % group of users can show by chance with it.
    new, old = Side(800, 100_000), Side(50_000, 10_000_000)
    plain = _stats(new, old, expected_share=0.01)
    spec = Comparison(events="e", exposures="x", worse_by=0.001, user_spread=0.0009)
    spread = _stats(new, old, spec=spec, expected_share=0.01)
    assert plain.verdict is Verdict.REGRESSION
    assert spread.verdict is Verdict.UNDECIDED
    assert spread.low is not None and spread.low <= SPEC.worse_by
