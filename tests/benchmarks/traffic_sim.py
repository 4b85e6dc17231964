"""A seeded simulation of hash-assigned per-user traffic, read by a plan's gates the way
Prometheus would answer them, and driven through the real ``stages`` decisions.

The model (every choice here is also printed in docs/benchmarks.md):

- Users: a fixed population of ``USERS`` ids ``user-0`` .. ``user-19999``, placed with the
  product's own bucketing (``flags.bucketing.bucket`` with the plan's salt), so widening a
  step keeps its users on the new side. Per run, each user draws an error propensity
  from Beta(``PROPENSITY_A``, ``PROPENSITY_B``) (mean 0.5 %) and a request-rate weight from
  Gamma(``WEIGHT_SHAPE``, 1) (some users are heavy). A side's error probability is the
  request-weighted mean propensity of its users (plus the regression on the new side);
  its share of requests is its users' share of weight. Users are grouped into the
  bucket ranges between the plan's step percents, so a step's new side is a union of
  groups.
- Traffic: ``PEAK_RPS`` requests/s at 15:00, ``NIGHT_RPS`` at 03:00 (a cosine day), from a
  random time of day per run. Requests per group and scrape interval are Poisson,
  errors binomial; a regression of +d pp adds errors to the new side's requests with
  probability d/(1-p), so the new side's error probability is p + d.
- Latency: lognormal, median ``LATENCY_MEDIAN_MS``, sigma such that the true p99 is
  ``OLD_P99_MS``; the latency scenario scales the new side so its true p99 is +100 ms.
  Each request lands in one of the demo service's buckets (controller/demo/service.py
  ``LATENCY_BUCKETS_MS``) plus +Inf.
- Scrapes every ``SCRAPE_S`` seconds, 5 s after each minute's check instant, produce
  cumulative counters per side: ``memory_operation_total{variant,status}``,
  ``memory_operation_latency_ms_bucket{variant,le}`` and ``circuit_breaker_open_total``,
  which stays 0 (nothing in this model trips a breaker). Counters start at 0 at t0.
- Checks every plan interval from t0 + interval: each gate's queries (query, baseline,
  samples) are evaluated by ``tests.benchmarks.promql_sim`` over the counters, turned
  into a ``GateReading`` by the real ``stages.gates.classify``, and the real
  ``stages.transitions.tick`` (``decide`` then ``apply``, as the scheduler and
  ``Rollouts.record_decision`` do) moves the state. The state starts ``running`` at the
  level's step, started at t0. A decision takes effect on the next scrape interval.
- A run ends when the rollout reaches the 50 % step, ends rolled_back or paused, or
  after ``HORIZON`` (stuck).

Speed: traffic is drawn a day at a time for every group at once; gate values are
computed for all check instants of a day at once, and recomputed from the next scrape
only when the serving percent changes. Only decide/apply run per check.
Gate kinds are read by a function per kind (``READERS``), so a new kind plugs in.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
from numpy.typing import NDArray

from controller.demo.service import LATENCY_BUCKETS_MS
from controller.gates.reading import query_variables
from flags.bucketing import bucket, percent_to_units
from stages.compare import Side
from stages.decisions import Decision, Pause, RollBack, StepBack
from stages.gates import classify, compare_reading
from stages.plan import Gate, Plan
from stages.query_templates import render_query
from stages.state import GateReading, RolloutState, Status, serving
from stages.transitions import tick
from tests.benchmarks import promql_sim
from tests.benchmarks.promql_sim import Array, Labels, Scrapes

USERS = 20_000
PROPENSITY_A, PROPENSITY_B = 0.5, 99.5  # Beta: mean 0.5 %
WEIGHT_SHAPE = 0.5  # Gamma shape: coefficient of variation 1.41
PEAK_RPS, NIGHT_RPS = 50.0, 10.0
PEAK_HOUR = 15.0
SCRAPE_S = 15.0
SCRAPE_PHASE_S = 5.0  # a scrape lands 5 s after each check instant
LATENCY_MEDIAN_MS = 40.0
OLD_P99_MS = 120.0
LATENCY_SHIFT_MS = 100.0
HORIZON = timedelta(days=30)
WARMUP = timedelta(hours=1)  # counters run this long before t0, the previous step served
STOP_PERCENT = 50.0
Z99 = 2.3263478740408408  # the standard normal's 99th percentile
DAY_S = 86_400.0
T0 = datetime(2026, 1, 5, tzinfo=UTC)  # the clock decisions see; time of day is simulated

LEVELS = {1.0: "1%", 5.0: "5%", 25.0: "25%"}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    error_pp: float = 0.0  # added to the new side's error probability, in pp
    latency: bool = False  # the new side's true p99 is OLD_P99_MS + LATENCY_SHIFT_MS

    @property
    def healthy(self) -> bool:
        return self.error_pp == 0 and not self.latency


SCENARIOS = (
    Scenario("healthy"),
    Scenario("+0.2 pp errors", error_pp=0.2),
    Scenario("+1 pp errors", error_pp=1.0),
    Scenario("+5 pp errors", error_pp=5.0),
    Scenario("p99 +100 ms", latency=True),
)


@dataclass(frozen=True, slots=True)
class RunResult:
    end: str  # reached_50 | rolled_back | paused | stuck
    end_reason: str
    end_percent: float
    first_rollback_s: float | None  # from t0 to the first step back / abort decision
    first_rollback_by: str  # "gate (abort)" of that decision, "" if none
    first_rollback_percent: float | None  # the step's percent when it was decided
    bad_requests: int  # new-side requests while the new side was bad (0 when healthy)
    new_share: float  # new-side share of requests during the first step
    checks: int
    decisions: tuple[str, ...] = field(default=())


# --- the latency model ---------------------------------------------------------------------

SIGMA = math.log(OLD_P99_MS / LATENCY_MEDIAN_MS) / Z99
BOUNDS = (*[float(b) for b in LATENCY_BUCKETS_MS], math.inf)
LE_LABELS = (*[f"{b:g}" for b in LATENCY_BUCKETS_MS], "+Inf")


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def bin_probabilities(median_ms: float) -> Array:
    """The chance of a request landing in each bucket (not cumulative), +Inf last."""
    cdf = [_normal_cdf(math.log(b / median_ms) / SIGMA) for b in BOUNDS[:-1]]
    return np.diff(np.array([0.0, *cdf, 1.0]))


OLD_BINS = bin_probabilities(LATENCY_MEDIAN_MS)
# Scaling the lognormal keeps its shape: the p99 moves by the same factor as the median.
NEW_MEDIAN_MS = LATENCY_MEDIAN_MS * (OLD_P99_MS + LATENCY_SHIFT_MS) / OLD_P99_MS
NEW_BINS = bin_probabilities(NEW_MEDIAN_MS)


# --- the population ------------------------------------------------------------------------


@cache
def user_buckets(salt: str) -> NDArray[np.int64]:
    return np.array([bucket(salt, f"user-{i}") for i in range(USERS)], dtype=np.int64)


def group_edges(plan: Plan) -> tuple[float, ...]:
    """The percents a step can serve up to the stop, as group boundaries: 0 .. 100."""
    percents = {s.percent for s in plan.steps if 0 < s.percent < STOP_PERCENT}
    return (0.0, *sorted(percents), STOP_PERCENT, 100.0)


@dataclass(frozen=True, slots=True)
class Population:
    share: Array  # each group's share of requests
    error_p: Array  # each group's request-weighted error probability


def draw_population(rng: np.random.Generator, plan: Plan) -> Population:
    propensity = rng.beta(PROPENSITY_A, PROPENSITY_B, USERS)
    weight = rng.gamma(WEIGHT_SHAPE, 1.0, USERS)
    units = [percent_to_units(p) for p in group_edges(plan)]
    buckets = user_buckets(plan.salt or plan.flag)
    group = np.searchsorted(np.array(units[1:-1]), buckets, side="right")
    groups = len(units) - 1
    total = np.bincount(group, weights=weight, minlength=groups)
    errors = np.bincount(group, weights=weight * propensity, minlength=groups)
    return Population(share=total / total.sum(), error_p=errors / total)


def new_groups(plan: Plan, percent: float) -> int:
    """How many groups, from the lowest buckets up, a step at ``percent`` serves new."""
    units = percent_to_units(percent)
    edges = [percent_to_units(p) for p in group_edges(plan)]
    return sum(1 for hi in edges[1:] if hi <= units)


# --- traffic -------------------------------------------------------------------------------


def requests_per_second(time_of_day_s: Array) -> Array:
    phase = 2 * math.pi * (time_of_day_s / 3600 - PEAK_HOUR) / 24
    mid, swing = (PEAK_RPS + NIGHT_RPS) / 2, (PEAK_RPS - NIGHT_RPS) / 2
    return mid + swing * np.cos(phase)


@dataclass(frozen=True, slots=True)
class DayDraws:
    """One day of scrape intervals, per group: columns ok, errors, then the latency bins."""

    old: NDArray[np.int64]  # (groups, scrapes, 2 + bins) as served by the old side
    new: NDArray[np.int64]  # the same requests as the new side would serve them


def draw_day(
    rng: np.random.Generator, pop: Population, scenario: Scenario, start_s: float, scrapes: int
) -> DayDraws:
    mid = start_s + SCRAPE_S * (np.arange(scrapes) + 0.5)
    expected = requests_per_second(mid % DAY_S) * SCRAPE_S
    requests = rng.poisson(pop.share[:, None] * expected[None, :])
    errors = rng.binomial(requests, pop.error_p[:, None])
    extra_p = scenario.error_pp / 100 / (1 - pop.error_p)
    extra = rng.binomial(requests - errors, np.minimum(extra_p, 1.0)[:, None])
    old_bins = rng.multinomial(requests, OLD_BINS)
    new_bins = rng.multinomial(requests, NEW_BINS) if scenario.latency else old_bins
    old = np.concatenate([(requests - errors)[..., None], errors[..., None], old_bins], axis=2)
    new_errors = errors + extra
    new = np.concatenate(
        [(requests - new_errors)[..., None], new_errors[..., None], new_bins], axis=2
    )
    return DayDraws(old, new)


# --- counters ------------------------------------------------------------------------------

COLUMNS = 2 + len(BOUNDS)


class Counters:
    """Cumulative counters per side at every scrape, computed as far as needed."""

    def __init__(self, scrapes: int) -> None:
        self.times = SCRAPE_PHASE_S + SCRAPE_S * np.arange(scrapes, dtype=np.float64)
        self.cum = {side: np.zeros((scrapes, COLUMNS)) for side in ("new", "old")}

    def fill(self, draws: DayDraws, day_start: int, start: int, stop: int, served: int) -> None:
        """Scrapes ``start`` .. ``stop - 1`` (of the day beginning at ``day_start``), the
        first ``served`` groups on the new side."""
        lo, hi = start - day_start, stop - day_start
        increments = {
            "new": draws.new[:served, lo:hi].sum(axis=0),
            "old": draws.old[served:, lo:hi].sum(axis=0),
        }
        for side, inc in increments.items():
            before = self.cum[side][start - 1] if start > 0 else np.zeros(COLUMNS)
            self.cum[side][start:stop] = before + np.cumsum(inc, axis=0)

    def scrapes(self, upto: int) -> Scrapes:
        series: dict[tuple[str, Labels], Array] = {}
        for side, cum in self.cum.items():
            view = cum[:upto]
            series[("memory_operation_total", _labels(variant=side, status="ok"))] = view[:, 0]
            series[("memory_operation_total", _labels(variant=side, status="error"))] = view[:, 1]
            cumulative = np.cumsum(view[:, 2:], axis=1)
            for i, le in enumerate(LE_LABELS):
                key = ("memory_operation_latency_ms_bucket", _labels(variant=side, le=le))
                series[key] = cumulative[:, i]
            key = ("memory_operation_latency_ms_count", _labels(variant=side))
            series[key] = cumulative[:, -1]
            series[("circuit_breaker_open_total", _labels(variant=side))] = np.zeros(upto)
        return Scrapes(self.times[:upto], series)


def _labels(**labels: str) -> Labels:
    return frozenset(labels.items())


# --- reading gates -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateValues:
    """A gate's inputs at every check instant of a block."""

    value: Array
    baseline: Array | None
    samples: Array | None


@dataclass(frozen=True, slots=True)
class CompareValues:
    """A compare gate's per-side counts over the step so far at every check of a block."""

    new_events: Array
    new_exposures: Array
    old_events: Array
    old_exposures: Array


@dataclass(frozen=True, slots=True)
class ReadContext:
    """What a gate reader may look at: the counters so far and where the step began."""

    scrapes: Scrapes
    at: Array  # check instants, seconds since the counters began
    variables: Mapping[str, str]
    step_start_s: float  # on the same clock


Values = GateValues | CompareValues
GateReader = Callable[[Gate, ReadContext], Values]
ReadingMaker = Callable[[Gate, Values, int, datetime, RolloutState], GateReading]


@cache
def _parsed(query: str) -> promql_sim.Node:
    return promql_sim.parse(query)


def _query(template: str | None, ctx: ReadContext) -> Array | None:
    if template is None:
        return None
    node = _parsed(render_query(template, ctx.variables))
    return promql_sim.instant_value(promql_sim.evaluate(node, ctx.scrapes, ctx.at), ctx.at)


def _per_side(template: str, gate: Gate, ctx: ReadContext) -> tuple[Array, Array]:
    """(new, old) of a per-side count query; a side without a series counts 0, as the
    shell's ``_counts_by_side`` does."""
    spec = gate.compare
    assert spec is not None
    node = _parsed(render_query(template, ctx.variables))
    vector = promql_sim.evaluate(node, ctx.scrapes, ctx.at, since=ctx.step_start_s)
    if isinstance(vector, float):
        raise promql_sim.UnsupportedQuery("a compare count must be a vector by side")
    by_side = {dict(labels).get(spec.by): values for labels, values in vector.items()}
    zero = np.zeros(ctx.at.shape)
    return tuple(  # type: ignore[return-value]
        np.nan_to_num(by_side.get(side, zero), nan=0.0) for side in (spec.new, spec.old)
    )


def read_compare_gate(gate: Gate, ctx: ReadContext) -> CompareValues:
    spec = gate.compare
    assert spec is not None
    new_events, old_events = _per_side(spec.events, gate, ctx)
    new_exposures, old_exposures = _per_side(spec.exposures, gate, ctx)
    return CompareValues(new_events, new_exposures, old_events, old_exposures)


def compare_gate_reading(
    gate: Gate, values: Values, i: int, now: datetime, state: RolloutState
) -> GateReading:
    assert isinstance(values, CompareValues)
    new = Side(float(values.new_events[i]), float(values.new_exposures[i]))
    old = Side(float(values.old_events[i]), float(values.old_exposures[i]))
    return compare_reading(gate, new, old, state, now)


def read_threshold_gate(gate: Gate, ctx: ReadContext) -> GateValues:
    value = _query(gate.query, ctx)
    assert value is not None
    return GateValues(value, _query(gate.baseline, ctx), _query(gate.samples, ctx))


def _number(values: Array | None, i: int) -> float | None:
    return None if values is None else float(values[i])


def threshold_reading(
    gate: Gate, values: Values, i: int, now: datetime, state: RolloutState
) -> GateReading:
    assert isinstance(values, GateValues)
    value, baseline = _number(values.value, i), _number(values.baseline, i)
    samples = _number(values.samples, i)
    c = classify(gate, value, baseline, samples)
    return GateReading(
        gate=gate.name,
        outcome=c.outcome,
        at=now,
        query=gate.query,
        value=value,
        baseline=baseline,
        samples=samples,
        threshold=c.threshold,
        threshold_value=c.threshold_value,
    )


# A function per gate kind: how to compute its inputs over a block, and how to turn one
# instant's inputs into a reading (the compare kind with the state's evidence).
READERS: dict[str, tuple[GateReader, ReadingMaker]] = {
    "threshold": (read_threshold_gate, threshold_reading),
    "compare": (read_compare_gate, compare_gate_reading),
}


def gate_kind(gate: Gate) -> str:
    return "compare" if getattr(gate, "compare", None) is not None else "threshold"


# --- one run -------------------------------------------------------------------------------


def seed_for(cell: str, run: int) -> np.random.SeedSequence:
    """Run ``run`` of ``cell``: the same on every machine and in every process."""
    return np.random.SeedSequence([zlib.crc32(cell.encode()), run])


def level_step(plan: Plan, percent: float) -> int:
    return next(i for i, s in enumerate(plan.steps) if s.percent == percent and s.percent > 0)


def is_rollback(decision: Decision) -> bool:
    if isinstance(decision, StepBack | RollBack):
        return True
    return isinstance(decision, Pause) and decision.reason.startswith(("abort", "rollback"))


def scrape_after(seconds: float) -> int:
    """The first scrape later than ``seconds`` (since the counters began)."""
    return int((seconds - SCRAPE_PHASE_S) // SCRAPE_S) + 1


def rollback_cause(reason: str) -> str:
    """``abort: error-rate: 0.07 > abort_above 0.05`` -> ``error-rate (abort)``."""
    parts = reason.split(": ")
    return f"{parts[1]} ({parts[0]})" if len(parts) > 2 else parts[0][:40]


class Run:
    """One seeded walk of a plan from a level's step.

    Counters begin ``WARMUP`` before t0 with the previous step served, so the first
    windows of the level's step hold what Prometheus would hold: the previous split.
    """

    def __init__(
        self, plan: Plan, scenario: Scenario, percent: float, seed: np.random.SeedSequence
    ):
        self.plan, self.scenario = plan, scenario
        self.rng = np.random.default_rng(seed)
        self.pop = draw_population(self.rng, plan)
        self.start_of_day_s = float(self.rng.uniform(0, DAY_S))
        self.interval_s = plan.interval.total_seconds()
        self.horizon = int(HORIZON.total_seconds() // self.interval_s)
        self.day_scrapes = int(DAY_S // SCRAPE_S)
        total = scrape_after(self.check_time(self.horizon)) + self.day_scrapes
        self.counters = Counters(total)
        self.days: dict[int, DayDraws] = {}
        self.filled = 0  # scrapes whose counters are computed
        step = level_step(plan, percent)
        self.t0_scrape = scrape_after(WARMUP.total_seconds())
        self._fill(self.t0_scrape, new_groups(plan, plan.steps[step - 1].percent))
        self.first_change: int | None = None  # the first scrape after the first transition
        self.first_by: str = ""
        self.first_percent: float | None = None
        self.state = RolloutState(
            plan=plan, status=Status.RUNNING, step=step, step_started_at=T0, started_at=T0,
            max_step_reached=step,
        )  # fmt: skip

    def check_time(self, check: int) -> float:
        """Seconds since the counters began."""
        return WARMUP.total_seconds() + check * self.interval_s

    def _draws(self, day: int) -> DayDraws:
        if day not in self.days:
            start = self.start_of_day_s + day * DAY_S
            self.days[day] = draw_day(self.rng, self.pop, self.scenario, start, self.day_scrapes)
            self.days.pop(day - 2, None)  # nothing recomputes that far back
        return self.days[day]

    def _fill(self, upto: int, served: int) -> None:
        """Counters up to scrape ``upto`` (exclusive), ``served`` groups new from here on."""
        while self.filled < upto:
            day = self.filled // self.day_scrapes
            stop = min(upto, (day + 1) * self.day_scrapes)
            self.counters.fill(self._draws(day), day * self.day_scrapes, self.filled, stop, served)
            self.filled = stop

    def _served_groups(self) -> int:
        return new_groups(self.plan, serving(self.state).percent)

    def _block(self, first_check: int) -> tuple[int, dict[str, Values]]:
        """Gate inputs for a day of checks from ``first_check``, the split as served now."""
        last_check = min(first_check + int(DAY_S // self.interval_s) - 1, self.horizon)
        checks = np.arange(first_check, last_check + 1, dtype=np.float64)
        at = WARMUP.total_seconds() + self.interval_s * checks
        upto = scrape_after(float(at[-1]))
        self._fill(upto, self._served_groups())
        start = self.state.step_started_at or T0
        now = T0 + timedelta(seconds=first_check * self.interval_s)
        variables = {**query_variables(self.state, now), "step_window": promql_sim.STEP_WINDOW}
        ctx = ReadContext(
            scrapes=self.counters.scrapes(upto),
            at=at,
            variables=variables,
            step_start_s=((start - T0) + WARMUP).total_seconds(),
        )
        values = {
            g.name: READERS[gate_kind(g)][0](g, ctx) for g in self.plan.gates_for(self.state.step)
        }
        return last_check, values

    def walk(self) -> RunResult:
        plan = self.plan
        first_rollback: float | None = None
        decisions: list[str] = []
        check, block_first, block_last = 0, 1, 0
        values: dict[str, Values] = {}
        end, reason = "stuck", ""
        while check < self.horizon:
            check += 1
            if check > block_last:
                block_first = check
                block_last, values = self._block(check)
            now = T0 + timedelta(seconds=check * self.interval_s)
            i = check - block_first
            readings = [
                READERS[gate_kind(g)][1](g, values[g.name], i, now, self.state)
                for g in plan.gates_for(self.state.step)
            ]
            before = self.state
            decision, self.state = tick(before, readings, now)
            if is_rollback(decision) and first_rollback is None:
                first_rollback = check * self.interval_s
                self.first_by = rollback_cause(decision.reason)
                self.first_percent = serving(before).percent
            if (self.state.step, self.state.status) != (before.step, before.status):
                decisions.append(f"{check * self.interval_s / 3600:.2f}h {type(decision).__name__}")
                # The served split changes from the next scrape: recompute from there.
                self.filled = scrape_after(self.check_time(check))
                if self.first_change is None:
                    self.first_change = self.filled
                block_last = check
            end, reason = self._end()
            if end != "running":
                break
        if end == "running":
            end, reason = "stuck", self.state.reason
        return self._result(end, reason, first_rollback, check, decisions)

    def _end(self) -> tuple[str, str]:
        state = self.state
        if state.status is Status.RUNNING and serving(state).percent >= STOP_PERCENT:
            return "reached_50", state.reason
        if state.status in (Status.ROLLED_BACK, Status.ABORTED):
            return "rolled_back", state.reason
        if state.status is Status.PAUSED:
            return "paused", state.reason
        return "running", ""

    def _result(
        self, end: str, reason: str, first_rollback: float | None, check: int, decisions: list[str]
    ) -> RunResult:
        upto = scrape_after(self.check_time(check))
        self._fill(upto, self._served_groups())
        new, old = (self.counters.cum[side][:, :2].sum(axis=1) for side in ("new", "old"))
        base = self.t0_scrape - 1
        # The new side's share of requests over the level's own step (before any move).
        first = min(upto, self.first_change or upto) - 1
        new_first, old_first = new[first] - new[base], old[first] - old[base]
        return RunResult(
            end=end,
            end_reason=reason,
            end_percent=serving(self.state).percent,
            first_rollback_s=first_rollback,
            first_rollback_by=self.first_by,
            first_rollback_percent=self.first_percent,
            bad_requests=0 if self.scenario.healthy else int(new[upto - 1] - new[base]),
            new_share=float(new_first / max(new_first + old_first, 1)),
            checks=check,
            decisions=tuple(decisions),
        )


def simulate(
    plan: Plan, scenario: Scenario, percent: float, seed: np.random.SeedSequence
) -> RunResult:
    return Run(plan, scenario, percent, seed).walk()


__all__ = [
    "LEVELS",
    "READERS",
    "SCENARIOS",
    "GateValues",
    "ReadContext",
    "RunResult",
    "Scenario",
    "seed_for",
    "simulate",
]
