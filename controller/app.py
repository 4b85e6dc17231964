"""The composition root: ``create_app(settings)`` builds everything once. Nothing
does I/O at import time."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from controller import http_errors, metrics, ui
from controller.api import evaluation, flags, gates, health, rollouts, tokens
from controller.auth import TokenRegistry
from controller.gates import PrometheusGates
from controller.limits import BodySizeLimit
from controller.rollouts import parse_plan_input
from controller.runtime import Runtime
from controller.scheduler import Scheduler
from controller.settings import Settings
from controller.snapshots import SnapshotHolder
from controller.store import Store
from stages.durations import parse_duration

log = logging.getLogger(__name__)


def build_runtime(settings: Settings) -> Runtime:
    store = Store(settings.database_url)
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    runtime = Runtime(
        settings=settings,
        store=store,
        snapshots=SnapshotHolder(store),
        tokens=TokenRegistry(store, admin),
        gates=PrometheusGates(settings.prometheus_url, timeout_seconds=settings.gate_timeout),
        replica_id=settings.replica_id or f"{socket.gethostname()}-{os.getpid()}",
    )
    if settings.scheduler:
        runtime.scheduler = Scheduler(
            store,
            runtime.rollouts,
            runtime.gates,
            runtime.leases,
            runtime.clock,
            tick_seconds=settings.scheduler_tick,
            retention=parse_duration(settings.gate_history_retention),
        )
    return runtime


def apply_plan_files(runtime: Runtime, paths: Sequence[Path]) -> None:
    """Plans named on the command line, applied at start (idempotent, like ``apply``)."""
    for path in paths:
        text = path.read_text(encoding="utf-8")
        plan, source = parse_plan_input(text, None)
        result = runtime.rollouts.apply(plan, source, "serve --apply", runtime.clock())
        log.info("plan %s: rollout/%s %s", path, plan.rollout, result.outcome)


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    plan_files: Sequence[Path] = (),
) -> FastAPI:
    settings = settings or Settings()
    runtime = runtime or build_runtime(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runtime.store.create_schema()
        runtime.tokens.reload()
        runtime.snapshots.refresh()
        apply_plan_files(runtime, plan_files)
        if settings.admin_token is None:
            log.warning("ROLLOUT_ADMIN_TOKEN is not set: only tokens in the database work")
        if runtime.scheduler is not None:
            runtime.scheduler.start()
        try:
            yield
        finally:
            if runtime.scheduler is not None:
                runtime.scheduler.stop()
            runtime.store.dispose()

    app = FastAPI(
        title="rollout-controller",
        version="0.1.0",
        description="Progressive rollouts with feature flags and Prometheus gates.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    http_errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.state.evaluation_counts = evaluation.EvaluationCounts()
    metrics.install(app, runtime, app.state.evaluation_counts, public=settings.metrics_public)
    for module in (health, evaluation, flags, rollouts, gates, tokens):
        app.include_router(module.router)
    ui.install(app)
    return app
