"""What the composition root builds once and every request uses: the store, the
snapshot, the token registry and the use cases. FastAPI dependencies are
``Annotated`` aliases over it, so routes name the permission they need."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from controller.alerts import Alerts
from controller.auth import Permission, Principal, TokenRegistry, require
from controller.flagstore import Flags
from controller.freezes import Freezes
from controller.gates.prometheus import GateSource, PrometheusGates
from controller.http.readiness import Probe
from controller.jobs.scheduler import Scheduler
from controller.jobs.snapshot_refresh import SnapshotRefresher
from controller.notify.webhooks import DeliveryWorker, Outbox
from controller.plan_history import PlanHistory
from controller.read_models import ReadModels
from controller.rollouts import Rollouts
from controller.settings import Settings, load_alert_mappings
from controller.snapshots import SnapshotHolder
from controller.storage.leases import Leases
from controller.storage.store import Store
from controller.ui_sessions import UiSessions

log = logging.getLogger(__name__)

APPLY_QUERY_CHECK_S = 3.0  # the longest an apply waits for Prometheus to parse its queries


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    settings: Settings
    store: Store
    snapshots: SnapshotHolder
    tokens: TokenRegistry
    gates: GateSource
    replica_id: str
    clock: Callable[[], datetime] = utc_now
    rollouts: Rollouts = field(init=False)
    alerts: Alerts = field(init=False)
    flags: Flags = field(init=False)
    # What routes and pages read (they open no session of their own).
    read_models: ReadModels = field(init=False)
    ui_sessions: UiSessions = field(init=False)
    # Every applied plan of every rollout (controller.plan_history).
    plan_history: PlanHistory = field(init=False)
    freezes: Freezes = field(init=False)
    leases: Leases = field(init=False)
    scheduler: Scheduler | None = None
    # Picks up changes made through other replicas (None in tests that build no app).
    refresher: SnapshotRefresher | None = None
    outbox: Outbox = field(init=False)
    # Sends the outbox's webhook deliveries (None when no webhook is configured).
    webhook_worker: DeliveryWorker | None = None
    # "Test a gate now" requests in progress, at most settings.gate_test_concurrency.
    gate_tests: threading.BoundedSemaphore = field(init=False)
    # /readyz's probes of the database and Prometheus (controller.http.readiness).
    probes: dict[str, Probe] = field(init=False)

    def __post_init__(self) -> None:
        self.rollouts = Rollouts(self.store, self.changed)
        self.rollouts.default_windows = self.settings.default_windows()
        # With the rollouts: a kill switch's pause then sends its webhook and metric.
        self.flags = Flags(self.store, self.changed, rollouts=self.rollouts)
        self.alerts = Alerts(
            self.store, self.rollouts, load_alert_mappings(self.settings.alert_mappings_file)
        )
        self.tokens.on_change = self.changed
        self.read_models = ReadModels(self.store)
        self.read_models.default_windows = self.rollouts.default_windows
        self.ui_sessions = UiSessions(self.store)
        self.plan_history = PlanHistory(self.store)
        # Gate queries are parsed by the Prometheus the gates read, within one gate timeout
        # and never more than APPLY_QUERY_CHECK_S: a hanging Prometheus must not hold an
        # apply (or a client's request) for a long gate timeout; it is a warning then.
        if isinstance(self.gates, PrometheusGates):
            self.rollouts.query_syntax = self.gates
        self.rollouts.query_check_seconds = min(self.settings.gate_timeout, APPLY_QUERY_CHECK_S)
        self.freezes = Freezes(self.store, self.changed)
        self.leases = Leases(self.store, self.replica_id)
        self.outbox = Outbox(
            self.store,
            self.settings.webhooks,
            public_url=self.settings.public_url,
            max_attempts=self.settings.webhook_max_attempts,
        )
        self.rollouts.notify = self.outbox.enqueue
        self.freezes.notify = self.outbox.enqueue_notice
        self.gate_tests = threading.BoundedSemaphore(self.settings.gate_test_concurrency)
        self.probes = {
            "database": Probe("database", self._database_report),
            "prometheus": Probe("prometheus", self._prometheus_report),
        }

    def _database_report(self) -> dict[str, object]:
        self.store.ping()
        return {"ok": True}

    def _prometheus_report(self) -> dict[str, object]:
        return {"ok": self.gates.ping()}

    def changed(self) -> None:
        """After a committed change: serve it. A failed refresh keeps the old snapshot."""
        try:
            self.snapshots.refresh()
        except Exception:
            log.exception(
                "snapshot refresh failed; still serving revision %s",
                self.snapshots.current.revision,
            )


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _principal(request: Request, runtime: RuntimeDep) -> Principal:
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is None:
        cached = runtime.tokens.authenticate(request.headers.get("authorization"))
        request.state.principal = cached
    return cached


def needs(permission: Permission) -> Callable[..., Principal]:
    def dependency(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        return require(principal, permission)

    dependency.__name__ = f"needs_{permission.value}"
    # Read by controller.http.errors to refuse a caller without the permission before
    # telling it what is wrong with its body.
    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


Evaluator = Annotated[Principal, Depends(needs(Permission.EVALUATE))]
Reader = Annotated[Principal, Depends(needs(Permission.READ))]
Operator = Annotated[Principal, Depends(needs(Permission.OPERATE))]
Admin = Annotated[Principal, Depends(needs(Permission.ADMIN))]
Alerter = Annotated[Principal, Depends(needs(Permission.ALERT))]
