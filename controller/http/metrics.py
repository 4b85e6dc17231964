"""The controller's own ``/metrics``, for Prometheus and the dashboards in ``dashboards/``.

Each app has its own ``CollectorRegistry`` (tests build many apps in one process). State
that lives in the database (rollout status, latest gate evaluations) is read at scrape
time by a collector, so it is right on every replica whatever changed it; counts that
only this process knows (transitions it recorded, evaluations it answered, scheduler
passes) are per process, as Prometheus counters are.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send

from controller.api.evaluation import EvaluationCounts
from controller.auth import Permission, require
from controller.notify.webhooks import WebhookCollector
from controller.read_models import LatestGate
from controller.runtime import Runtime, RuntimeDep
from stages.state import ACTIVE_STATUSES, Outcome, RolloutState, Status, serving

log = logging.getLogger(__name__)

# One evaluation request in this many is timed: a clock read and a histogram update on
# every request would cost more than the evaluation itself.
LATENCY_SAMPLE_EVERY = 64
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_EVALUATION_PATHS = ("/api/v1/evaluate/", "/ofrep/v1/evaluate/")


class ControllerMetrics:
    """The registry of one app and the instruments that code outside it updates."""

    def __init__(self, runtime: Runtime, counts: EvaluationCounts) -> None:
        self.registry = CollectorRegistry()
        self.transitions = Counter(
            "rollout_transitions",
            "Transitions this process recorded: the controller's decisions and people's "
            "actions, by rollout and action.",
            ("rollout", "action"),
            registry=self.registry,
        )
        self.evaluation_latency = Histogram(
            "rollout_evaluation_latency_seconds",
            f"Time to answer a flag evaluation request (native and OFREP), in this process; "
            f"sampled: only 1 in {LATENCY_SAMPLE_EVERY} requests is timed.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(StateCollector(runtime, counts))
        self.registry.register(
            WebhookCollector(runtime.outbox, lambda: runtime.webhook_worker, runtime.clock)
        )

    def transition(self, rollout: str, action: str) -> None:
        self.transitions.labels(rollout=rollout, action=action).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class StateCollector(Collector):
    """Reads rollouts, latest gate evaluations, evaluation counts and the scheduler at
    scrape time: two queries, whatever the number of rollouts."""

    def __init__(self, runtime: Runtime, counts: EvaluationCounts) -> None:
        self._runtime = runtime
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        store_up = GaugeMetricFamily(
            "rollout_store_up",
            "1 if this scrape could read rollouts and gate evaluations from the database; "
            "0 if not (the rollout and gate metrics are then missing from the scrape).",
        )
        try:
            families = self._from_store()
        except OperationalError as exc:
            # The database is down: rollout_store_up says so; no stack trace per scrape.
            log.warning("metrics: the database is unavailable: %s", type(exc).__name__)
            families = []
            store_up.add_metric([], 0)
        except Exception:
            log.exception("metrics: reading the store failed")
            families = []
            store_up.add_metric([], 0)
        else:
            store_up.add_metric([], 1)
        yield store_up
        yield from families
        yield self._evaluations()
        yield from self._scheduler()
        yield from self._snapshot()

    def _from_store(self) -> list[Metric]:
        status = GaugeMetricFamily(
            "rollout_status",
            "1 for the rollout's current status, 0 for every other status.",
            labels=("rollout", "status"),
        )
        step = GaugeMetricFamily(
            "rollout_step", "The plan step the rollout is at, 1-based.", labels=("rollout",)
        )
        percent = GaugeMetricFamily(
            "rollout_percent",
            "Percent of users the rollout serves the new variant now (0 while its flag's "
            "kill switch is on).",
            labels=("rollout",),
        )
        threshold = GaugeMetricFamily(
            "rollout_gate_threshold",
            "Each threshold of each gate of an active rollout, from its plan (a gate with a "
            "baseline compares value minus baseline with it).",
            labels=("rollout", "gate", "threshold"),
        )
        rollouts, gates = self._runtime.read_models.rollout_gauges()
        for rollout in rollouts:
            name, state = rollout.name, rollout.state
            for s in Status:
                status.add_metric([name, s.value], 1 if s is state.status else 0)
            step.add_metric([name], state.step + 1)
            # A disabled flag gives everyone its default, whatever the step says.
            percent.add_metric([name], _served_percent(state) if rollout.flag_enabled else 0.0)
            if state.status in ACTIVE_STATUSES:
                _add_thresholds(threshold, name, state)
        return [status, step, percent, threshold, *_gate_families(gates)]

    def _evaluations(self) -> Metric:
        family = CounterMetricFamily(
            "rollout_flag_evaluations",
            "Flag evaluations this process answered (native and OFREP) or SDKs reported to it, "
            "by flag and variant.",
            labels=("flag", "variant"),
        )
        for flag, variants in self._counts.by_flag().items():
            for variant, count in variants.items():
                family.add_metric([flag, variant], count)
        return family

    def _snapshot(self) -> Iterable[Metric]:
        holder = self._runtime.snapshots
        revision = GaugeMetricFamily(
            "rollout_snapshot_revision",
            "The database revision of the flag snapshot this process evaluates with.",
        )
        revision.add_metric([], holder.current.revision)
        yield revision
        age = holder.age_seconds()
        if age is not None:
            family = GaugeMetricFamily(
                "rollout_snapshot_age_seconds",
                "Seconds since the database last confirmed this process's flag snapshot "
                "(grows while the database is unreachable).",
            )
            family.add_metric([], age)
            yield family

    def _scheduler(self) -> Iterable[Metric]:
        scheduler = self._runtime.scheduler
        if scheduler is None:  # an API-only replica: no scheduler metrics at all
            return
        lag = GaugeMetricFamily(
            "rollout_scheduler_lag_seconds",
            "How late the scheduler's last pass started, beyond its tick.",
        )
        lag.add_metric([], scheduler.last_pass_lag)
        yield lag
        passes = CounterMetricFamily(
            "rollout_scheduler_passes", "Scheduler passes this process has run."
        )
        passes.add_metric([], scheduler.passes)
        yield passes
        if scheduler.last_pass_at is not None:
            last = GaugeMetricFamily(
                "rollout_scheduler_last_pass_timestamp_seconds",
                "When the scheduler's last pass started (Unix time).",
            )
            last.add_metric([], scheduler.last_pass_at.timestamp())
            yield last
        late = GaugeMetricFamily(
            "rollout_scheduler_check_lateness_seconds",
            "How late recent checks started after they were due (up to a tick is normal),"
            " by quantile over the last 4,096 checks.",
            labels=["quantile"],
        )
        for q, value in scheduler.lateness_quantiles((0.5, 0.99, 1.0)).items():
            late.add_metric([f"{q:g}"], value)
        yield late
        in_flight, _ = scheduler.in_flight()
        busy = GaugeMetricFamily(
            "rollout_scheduler_checks_in_flight", "Checks queued or running now."
        )
        busy.add_metric([], in_flight)
        yield busy
        slow = GaugeMetricFamily(
            "rollout_scheduler_slow_rollouts",
            "Rollouts whose last check was slow or read an error: they wait in the slow lane.",
        )
        slow.add_metric([], scheduler.slow_rollouts())
        yield slow
        failing = GaugeMetricFamily(
            "rollout_scheduler_failing_rollouts",
            "Rollouts whose last check raised (an error for that rollout alone; paused"
            " after 3 in a row).",
        )
        failing.add_metric([], len(scheduler.failing()))
        yield failing


def _add_thresholds(family: GaugeMetricFamily, rollout: str, state: RolloutState) -> None:
    for gate in state.plan.gates:
        for name, limit in gate.thresholds().items():
            family.add_metric([rollout, gate.name, name], limit)


def _served_percent(state: RolloutState) -> float:
    return float(serving(state).percent)


def _gate_families(rows: list[LatestGate]) -> list[Metric]:
    labels = ("rollout", "gate")
    value = GaugeMetricFamily(
        "rollout_gate_value",
        "The gate query's value at its latest evaluation (NaN when it had none).",
        labels=labels,
    )
    baseline = GaugeMetricFamily(
        "rollout_gate_baseline",
        "The gate's baseline query at its latest evaluation, for gates that have one "
        "(NaN when it had no value).",
        labels=labels,
    )
    outcome = GaugeMetricFamily(
        "rollout_gate_outcome",
        "1 for the outcome of the gate's latest evaluation, 0 for every other outcome.",
        labels=(*labels, "outcome"),
    )
    evaluated = GaugeMetricFamily(
        "rollout_gate_last_evaluation_timestamp_seconds",
        "When the gate was last evaluated (Unix time).",
        labels=labels,
    )
    for row in rows:
        key = [row.rollout, row.gate]
        value.add_metric(key, math.nan if row.value is None else row.value)
        if row.baseline is not None:
            baseline.add_metric(key, row.baseline)
        for o in Outcome:
            outcome.add_metric([*key, o.value], 1 if o.value == row.outcome else 0)
        evaluated.add_metric(key, row.at.timestamp())
    return [value, baseline, outcome, evaluated]


class SampledLatency:
    """ASGI middleware timing 1 in ``every`` evaluation requests; every other request
    pays a path check and a counter step."""

    def __init__(self, app: ASGIApp, histogram: Histogram, every: int = LATENCY_SAMPLE_EVERY):
        self.app = app
        self._histogram = histogram
        self._every = every
        self._seen = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith(_EVALUATION_PATHS)
            or next(self._seen) % self._every
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self._histogram.observe(time.perf_counter() - started)


def install(app: FastAPI, runtime: Runtime, counts: EvaluationCounts, *, public: bool) -> None:
    """``/metrics`` on ``app``: a viewer's token (or better), or none if ``public``."""
    metrics = ControllerMetrics(runtime, counts)
    app.state.metrics = metrics
    runtime.rollouts.on_transition = metrics.transition
    app.add_middleware(SampledLatency, histogram=metrics.evaluation_latency)

    def scraper(request: Request, runtime: RuntimeDep) -> None:
        if not public:
            principal = runtime.tokens.authenticate(request.headers.get("authorization"))
            require(principal, Permission.READ)

    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", response_class=Response, dependencies=[Depends(scraper)])
    def scrape() -> Response:
        """Prometheus text exposition of the controller's own metrics."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
