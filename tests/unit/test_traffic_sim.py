"""The decision-quality simulator itself: reproducible, splits traffic as the step says,
reads histograms as Prometheus does, and sees a gross regression."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from stages.planfile import parse_plan
from tests.benchmarks import promql_sim, traffic_sim
from tests.benchmarks.promql_sim import Scrapes, bucket_quantile
from tests.benchmarks.traffic_sim import SCENARIOS, Run, draw_population, new_groups, seed_for

PLAN = parse_plan(
    (Path(__file__).resolve().parents[1] / "benchmarks" / "plans" / "threshold.yaml").read_text()
)
PLUS_1PP, PLUS_5PP = SCENARIOS[2], SCENARIOS[3]
BOUNDS = np.array([1.0, 2.0, 4.0, math.inf])


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    first = traffic_sim.simulate(PLAN, PLUS_1PP, 5.0, seed_for("repro", 0))
    again = traffic_sim.simulate(PLAN, PLUS_1PP, 5.0, seed_for("repro", 0))
    other = traffic_sim.simulate(PLAN, PLUS_1PP, 5.0, seed_for("repro", 1))
    assert first == again
    assert (other.bad_requests, other.checks) != (first.bad_requests, first.checks)


@pytest.mark.parametrize("percent", [1.0, 5.0, 25.0])
def test_the_new_sides_share_of_requests_is_close_to_the_step_percent(percent: float) -> None:
    served = new_groups(PLAN, percent)
    shares = [
        draw_population(np.random.default_rng(seed), PLAN).share[:served].sum()
        for seed in range(30)
    ]
    # Users are hash-assigned and heavy users are rare: the mean share is the percent.
    assert np.mean(shares) == pytest.approx(percent / 100, rel=0.1)


def test_a_run_serves_its_level_to_about_that_share_of_requests() -> None:
    run = Run(PLAN, SCENARIOS[0], 25.0, seed_for("share", 0))
    start = run.t0_scrape
    run._fill(start + 5760, new_groups(PLAN, 25.0))
    new, old = (run.counters.cum[s][:, :2].sum(axis=1) for s in ("new", "old"))
    served_new = new[start + 5759] - new[start - 1]
    served_old = old[start + 5759] - old[start - 1]
    assert served_new / (served_new + served_old) == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize(
    ("q", "cumulative", "expected"),
    [
        (0.5, [10, 20, 30, 40], 2.0),  # rank 20 reaches the (1, 2] bucket's top
        (0.6, [10, 20, 30, 40], 2.8),  # rank 24: 4 of 10 into (2, 4] -> 2 + 2 * 0.4
        (0.1, [10, 20, 30, 40], 0.4),  # the first bucket starts at 0
        (0.75, [10, 20, 30, 40], 4.0),  # rank 30 is the (2, 4] bucket's count exactly
        (0.9, [10, 20, 30, 40], 4.0),  # rank 36 is in +Inf: the highest finite bound
        (0.99, [0, 0, 97, 100], 4.0),  # 3 % above 4: +Inf again, never more than 4
        (0.5, [0, 0, 0, 0], math.nan),  # no observations
    ],
)
def test_bucket_quantile_interpolates_as_prometheus_does(
    q: float, cumulative: list[float], expected: float
) -> None:
    got = bucket_quantile(q, BOUNDS, np.array([cumulative], dtype=float))[0]
    assert got == pytest.approx(expected, nan_ok=True)


def test_histogram_quantile_without_an_inf_bucket_is_nan() -> None:
    got = bucket_quantile(0.5, np.array([1.0, 2.0]), np.array([[1.0, 2.0]]))
    assert math.isnan(got[0])


def _linear_counters(per_second: dict[str, float], scrapes: int = 100) -> Scrapes:
    times = 5.0 + 15.0 * np.arange(scrapes)
    series = {
        ("m_bucket", frozenset({("le", le)})): 1000 + rate * times
        for le, rate in per_second.items()
    }
    return Scrapes(times, series)


def test_histogram_quantile_of_rates_through_the_query_path() -> None:
    # 1, 2, 3, 4 requests/s at or below 1, 2, 4, +Inf: rank 0.5 * 4 = 2 -> top of (1, 2].
    scrapes = _linear_counters({"1": 1.0, "2": 2.0, "4": 3.0, "+Inf": 4.0})
    node = promql_sim.parse("histogram_quantile(0.5, sum by (le) (rate(m_bucket[5m])))")
    at = np.array([600.0, 1200.0])
    got = promql_sim.instant_value(promql_sim.evaluate(node, scrapes, at), at)
    assert got == pytest.approx([2.0, 2.0])


def test_rate_extrapolates_to_the_window_and_stops_at_zero() -> None:
    times = 5.0 + 15.0 * np.arange(100)
    at = np.array([900.0])
    first = np.searchsorted(times, at - 300, side="right")
    last = np.searchsorted(times, at, side="right") - 1
    steady = promql_sim.extrapolated_rate(
        times, 1000 + 2 * times, first, last, at, 300, is_rate=True
    )
    assert steady == pytest.approx([2.0])
    # A counter that was 0 at the window's first sample: no extrapolation before it.
    fresh = np.where(times < 610, 0.0, 2 * (times - 605))
    got = promql_sim.extrapolated_rate(times, fresh, first, last, at, 300, is_rate=False)
    # 570 over the 285 s sampled; 10 s more to the window's end, none before 605.
    assert got == pytest.approx([570 * 295 / 285])


def test_a_plus_5pp_regression_at_1_percent_is_rolled_back() -> None:
    for run in range(3):
        result = traffic_sim.simulate(PLAN, PLUS_5PP, 1.0, seed_for("+5 pp @ 1%", run))
        assert result.first_rollback_s is not None
        assert result.end in ("rolled_back", "paused")
        assert result.end_percent <= 1.0


def test_a_compare_gate_reads_the_steps_counts_and_rolls_back_a_regression() -> None:
    sketch = Path(__file__).resolve().parents[1] / "benchmarks" / "plans" / "compare-sketch.yaml"
    plan = parse_plan(sketch.read_text())
    result = traffic_sim.simulate(plan, PLUS_1PP, 5.0, seed_for("compare +1 pp @ 5%", 0))
    assert result.first_rollback_by.startswith("errors-vs-old")
    assert result.end == "rolled_back"


def test_step_window_counts_are_the_increase_since_the_step_began() -> None:
    times = 5.0 + 15.0 * np.arange(100)
    series = {("m", frozenset({("variant", "new")})): 3.0 * np.arange(100)}
    query = f"sum by (variant) (increase(m[{promql_sim.STEP_WINDOW}]))"
    at = np.array([600.0, 900.0])
    got = promql_sim.evaluate(promql_sim.parse(query), Scrapes(times, series), at, since=300.0)
    assert isinstance(got, dict)
    # The last samples at or before 600 s and 900 s are scrapes 39 and 59; at 300 s, 19.
    assert got[frozenset({("variant", "new")})] == pytest.approx([3.0 * 20, 3.0 * 40])
