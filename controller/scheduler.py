"""The scheduler: every second, check each active rollout whose ``interval`` has
passed. A check is the four-line shell around the pure core: load, read gates,
decide, save. Only the replica holding a rollout's lease checks it, and the save
is a compare-and-swap, so a person's action during the check wins over the tick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import OperationalError
from sqlmodel import col, select

from controller import gate_history
from controller.errors import NotFound, VersionConflict
from controller.gates import GateSource
from controller.leases import Leases
from controller.mapping import state_from_row
from controller.rollouts import Rollouts
from controller.store import Store
from controller.tables import RolloutRow
from stages.decide import decide
from stages.decisions import Decision, Hold
from stages.durations import parse_duration
from stages.state import ACTIVE_STATUSES, GateReading, RolloutState

log = logging.getLogger(__name__)

# How long a lease outlives a check: long enough for slow gate queries, short enough
# that another replica takes over soon after this one dies.
MIN_LEASE = timedelta(seconds=15)


def query_variables(state: RolloutState) -> dict[str, str]:
    """What a gate query may refer to as ``${name}``."""
    step = state.plan.steps[state.step]
    return {
        "rollout": state.plan.rollout,
        "flag": state.plan.flag,
        "stage": step.stage.value,
        "step": str(state.step + 1),
        "percent": f"{step.percent:g}",
        "new_variant": state.plan.new_variant,
        "old_variant": state.plan.old_variant,
    }


def read_gates(gates: GateSource, state: RolloutState, now: datetime) -> list[GateReading]:
    variables = query_variables(state)
    return [gates.read(gate, variables, now) for gate in state.plan.gates_for(state.step)]


@dataclass
class CheckResult:
    rollout: str
    decision: Decision | None
    readings: list[GateReading]
    skipped: str | None = None


class Scheduler:
    def __init__(
        self,
        store: Store,
        rollouts: Rollouts,
        gates: GateSource,
        leases: Leases,
        clock: Callable[[], datetime],
        *,
        tick_seconds: float = 1.0,
        retention: timedelta = timedelta(days=14),
    ) -> None:
        self._store = store
        self._rollouts = rollouts
        self._gates = gates
        self._leases = leases
        self._clock = clock
        self._tick_seconds = tick_seconds
        self._retention = retention
        self._scheduler: BackgroundScheduler | None = None
        self._lock = threading.Lock()
        self._last_pruned: datetime | None = None
        # Seen by /readyz and /metrics: when the last pass began and how late it was.
        self.last_pass_at: datetime | None = None
        self.last_pass_lag: float = 0.0
        self.passes = 0
        # When passes began to fail (the database is down, say); None while they work.
        self.failing_since: datetime | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._scheduler.add_job(
            self.run_pass,
            "interval",
            seconds=self._tick_seconds,
            id="rollout-checks",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None

    @property
    def running(self) -> bool:
        return self._scheduler is not None and bool(self._scheduler.running)

    # -- one pass ----------------------------------------------------------------------

    def run_pass(self) -> list[CheckResult]:
        """Check every rollout that is due. Never raises: the loop must go on."""
        with self._lock:
            started = self._clock()
            if self.last_pass_at is not None:
                late = (started - self.last_pass_at).total_seconds() - self._tick_seconds
                self.last_pass_lag = max(0.0, late)
            self.last_pass_at = started
            self.passes += 1
            results: list[CheckResult] = []
            try:
                for name in self._due(started):
                    results.append(self.check(name))
                self._prune(started)
            except OperationalError as exc:
                # Once per outage, not once per tick: a database down for an hour would
                # otherwise write thousands of identical lines.
                if self.failing_since is None:
                    self.failing_since = started
                    log.warning(
                        "scheduler pass failed (database unavailable: %s)", _first_line(exc)
                    )
                return results
            except Exception:
                if self.failing_since is None:
                    self.failing_since = started
                log.exception("scheduler pass failed; trying again next tick")
                return results
            if self.failing_since is not None:
                log.warning("scheduler passes work again (failing since %s)", self.failing_since)
                self.failing_since = None
            return results

    def _due(self, now: datetime) -> list[str]:
        with self._store.read() as session:
            rows = session.execute(
                select(RolloutRow.name, RolloutRow.plan, RolloutRow.checked_at).where(
                    col(RolloutRow.status).in_([s.value for s in ACTIVE_STATUSES])
                )
            ).all()
        due = []
        for name, plan, checked_at in rows:
            interval = _interval_of(plan)
            if checked_at is None or now - checked_at >= interval - timedelta(milliseconds=50):
                due.append(name)
        return due

    def check(self, name: str) -> CheckResult:
        """Load, read gates, decide, save: one rollout, one tick."""
        now = self._clock()
        try:
            state, row_version = self._load(name)
        except NotFound:
            return CheckResult(name, None, [], skipped="gone")
        if state.status not in ACTIVE_STATUSES:
            return CheckResult(name, None, [], skipped=f"{state.status}")
        ttl = max(MIN_LEASE, state.plan.interval * 3)
        if not self._leases.acquire(name, now, ttl):
            return CheckResult(name, None, [], skipped="lease held by another replica")
        readings = read_gates(self._gates, state, now)
        decision = decide(state, readings, self._clock())
        try:
            self._rollouts.record_decision(name, row_version, decision, readings, self._clock())
        except VersionConflict:
            # Someone acted while the gates were read: their change wins; check again next tick.
            log.info("rollout %s changed during its check; the tick is dropped", name)
            return CheckResult(name, None, readings, skipped="changed during check")
        if not isinstance(decision, Hold):
            log.info("rollout %s: %s: %s", name, type(decision).__name__, decision.reason)
        return CheckResult(name, decision, readings)

    def _load(self, name: str) -> tuple[RolloutState, int]:
        with self._store.read() as session:
            row = session.get(RolloutRow, name)
            if row is None:
                raise NotFound(name)
            return state_from_row(row), row.row_version

    def _prune(self, now: datetime) -> None:
        if self._last_pruned is not None and now - self._last_pruned < timedelta(minutes=10):
            return
        self._last_pruned = now
        with self._store.write() as session:
            removed = gate_history.prune(session, now - self._retention)
        if removed:
            log.info("pruned %d gate evaluations older than %s", removed, self._retention)


def _interval_of(plan: Mapping[str, object]) -> timedelta:
    raw = plan.get("interval", "1m")
    try:
        return parse_duration(raw if isinstance(raw, (str, int, float)) else "1m")
    except ValueError:
        return timedelta(minutes=1)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
