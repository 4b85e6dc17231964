"""The composition root: ``create_app(settings)`` builds everything once. Nothing
does I/O at import time."""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from controller import ui
from controller.api import (
    evaluation,
    flags,
    gates,
    health,
    impressions,
    plan_history,
    rollouts,
    tokens,
    webhooks,
)
from controller.auth import TokenRegistry
from controller.gates.prometheus import PrometheusAuth, PrometheusGates
from controller.http import docs_pages, metrics
from controller.http import errors as http_errors
from controller.http import openapi as api_docs
from controller.http.body_limit import BodySizeLimit
from controller.http.fastpath import EvaluationFastPath, FastPathApp
from controller.http.idempotency import Idempotency, IdempotencyKeys
from controller.http.rate_limit import RateLimit
from controller.jobs.scheduler import Scheduler
from controller.jobs.snapshot_refresh import SnapshotRefresher
from controller.notify.webhooks import DeliveryWorker
from controller.rollouts import parse_plan_input
from controller.runtime import Runtime
from controller.settings import Settings
from controller.snapshots import SnapshotHolder
from controller.storage.store import Store
from controller.ui.session import session_token_id
from stages.durations import parse_duration

log = logging.getLogger(__name__)

# The background loops stop within this after the server stops taking requests
# (uvicorn's own grace comes first: SIGTERM to exit stays under 10 s).
SHUTDOWN_SECONDS = 4.0


def prometheus_gates(settings: Settings) -> PrometheusGates:
    password = settings.prometheus_password
    auth = PrometheusAuth(
        bearer_token_file=settings.prometheus_bearer_token_file,
        username=settings.prometheus_username,
        password=password.get_secret_value() if password else None,
        password_file=settings.prometheus_password_file,
    )
    return PrometheusGates(
        settings.prometheus_url,
        timeout_seconds=settings.gate_timeout,
        max_answer_bytes=settings.gate_max_answer_bytes,
        auth=auth,
    )


def build_runtime(settings: Settings) -> Runtime:
    store = Store(settings.database_url)
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    runtime = Runtime(
        settings=settings,
        store=store,
        snapshots=SnapshotHolder(store),
        tokens=TokenRegistry(store, admin),
        gates=prometheus_gates(settings),
        replica_id=settings.replica_id or f"{socket.gethostname()}-{os.getpid()}",
    )
    if settings.scheduler:
        runtime.scheduler = Scheduler(
            store,
            runtime.rollouts,
            runtime.gates,
            runtime.leases,
            # The database's clock on PostgreSQL: holds and dwell as every replica sees them.
            store.now,
            tick_seconds=settings.scheduler_tick,
            retention=parse_duration(settings.gate_history_retention),
            workers=settings.scheduler_workers,
        )
    runtime.refresher = SnapshotRefresher(
        runtime.snapshots, runtime.tokens, interval=settings.snapshot_poll
    )
    if settings.webhooks:
        runtime.webhook_worker = DeliveryWorker(
            runtime.outbox,
            runtime.replica_id,
            runtime.clock,
            poll_seconds=settings.webhook_poll,
            retention=parse_duration(settings.webhook_retention),
        )
    return runtime


def apply_plan_files(runtime: Runtime, paths: Sequence[Path]) -> None:
    """Plans named on the command line, applied at start (idempotent, like ``apply``)."""
    for path in paths:
        text = path.read_text(encoding="utf-8")
        plan, source = parse_plan_input(text, None)
        result = runtime.rollouts.apply(plan, source, "serve --apply", runtime.clock())
        log.info("plan %s: rollout/%s %s", path, plan.rollout, result.outcome)
        for warning in result.warnings:
            log.warning("plan %s: %s", path, warning)


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    plan_files: Sequence[Path] = (),
) -> FastAPI:
    settings = settings or Settings()
    runtime = runtime or build_runtime(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Creates an empty database; refuses one behind this version unless told to upgrade.
        runtime.store.prepare_schema(upgrade=settings.db_upgrade)
        runtime.tokens.reload()
        runtime.snapshots.refresh()
        apply_plan_files(runtime, plan_files)
        if settings.admin_token is None:
            log.warning("ROLLOUT_ADMIN_TOKEN is not set: only tokens in the database work")
        if runtime.scheduler is not None:
            runtime.scheduler.start()
        if runtime.refresher is not None:
            runtime.refresher.start()
        if runtime.webhook_worker is not None:
            runtime.webhook_worker.start()
        try:
            yield
        finally:
            # All of it within SHUTDOWN_SECONDS, whatever hangs: what is still stuck
            # then is a daemon thread, and its lease is released or expires.
            end = time.monotonic() + SHUTDOWN_SECONDS
            if runtime.scheduler is not None:
                runtime.scheduler.stop(timeout=SHUTDOWN_SECONDS / 2)
            if runtime.webhook_worker is not None:
                runtime.webhook_worker.stop(timeout=max(0.1, end - time.monotonic()))
            if runtime.refresher is not None:
                runtime.refresher.stop(timeout=max(0.1, end - time.monotonic()))
            runtime.store.dispose()

    app = FastPathApp(
        title="rollout-controller",
        version="0.1.0",
        description="Progressive rollouts with feature flags and Prometheus gates.",
        lifespan=lifespan,
        # Served by docs_pages with local copies of their scripts, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    http_errors.install(app)
    api_docs.describe_security(app, public_metrics=settings.metrics_public)
    # Added first, so innermost: it buffers bodies the size limit has already bounded.
    app.add_middleware(
        Idempotency,
        keys=IdempotencyKeys(runtime.store, parse_duration(settings.idempotency_ttl)),
        tokens=runtime.tokens,
        clock=lambda: runtime.clock(),  # late-bound: tests may swap the runtime's clock
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.rate_limit_per_min > 0:
        app.add_middleware(
            RateLimit,
            tokens=runtime.tokens,
            per_minute=settings.rate_limit_per_min,
            burst=settings.rate_limit_burst,
            session_owner=functools.partial(session_token_id, runtime),
        )
    app.state.evaluation_counts = evaluation.EvaluationCounts()
    metrics.install(app, runtime, app.state.evaluation_counts, public=settings.metrics_public)
    # Evaluation, every service's per-request call, is answered ahead of FastAPI's stack.
    app.evaluation_fast_path = EvaluationFastPath(
        runtime.snapshots,
        runtime.tokens,
        app.state.evaluation_counts,
        max_body_bytes=settings.max_body_bytes,
        latency=app.state.metrics.evaluation_latency,
    )
    for module in (health, evaluation, flags, rollouts, gates, tokens, webhooks):
        app.include_router(module.router)
    app.include_router(plan_history.router)
    impressions.install(app)  # SDK reports: counts into evaluation_counts, impression rings
    ui.install(app)
    docs_pages.install(app)  # /docs and /redoc, offline
    return app
