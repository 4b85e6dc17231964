"""One rollout's trouble is its own: the scheduler's pool, lanes, deadlines and errors,
on a real database (SQLite and PostgreSQL) with gate sources the test controls.

What an operator notices: a rollout whose gate read hangs or whose check raises does not
hold up another rollout's decision; the broken one is an error for itself alone, is
paused with the error as its reason after a few tries, and its log line comes once."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from controller.jobs.scheduler import FAILURES_BEFORE_PAUSE, Scheduler
from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.leases import Leases
from controller.storage.store import Store
from controller.storage.tables import AuditRow, LeaseRow
from stages.actions import Action
from stages.plan import Gate
from stages.state import GateReading, Outcome
from tests.waiting import wait_until


def plan(name: str, interval: str = "1s") -> str:
    return f"""
rollout: {name}
flag: {name}
interval: {interval}
min_evaluations: 1
max_gate_errors: 1000
steps:
  - {{stage: canary, percent: 5, hold: 1h}}
  - {{stage: full}}
gates:
  - name: errors
    query: 'errors{{rollout="${{rollout}}"}}'
    rollback_above: 0.01
    abort_above: 0.1
"""


@dataclass
class Gates:
    """Per rollout: a value, an exception to raise, or an event to block on."""

    values: dict[str, float] = field(default_factory=dict)
    blocks: dict[str, threading.Event] = field(default_factory=dict)
    raises: dict[str, Exception] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(
        self,
        gate: Gate,
        variables: Mapping[str, str],
        now: datetime,
        *,
        deadline: float | None = None,
    ) -> GateReading:
        name = variables["rollout"]
        with self.lock:
            self.reads[name] = self.reads.get(name, 0) + 1
        if name in self.raises:
            raise self.raises[name]
        if name in self.blocks:
            # Like a hung Prometheus: until the check's deadline (or the test lets go).
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.blocks[name].wait(left)
            return GateReading(gate.name, Outcome.ERROR, now, error="timeout")
        value = self.values.get(name, 0.001)
        outcome = Outcome.ABORT if value > 0.1 else Outcome.OK
        return GateReading(gate.name, outcome, now, value=value)

    def ping(self) -> bool:
        return True

    def read_count(self, name: str) -> int:
        with self.lock:
            return self.reads.get(name, 0)


def clock() -> datetime:
    return datetime.now(UTC)


def started(store: Store, names: list[str], interval: str = "1s") -> Rollouts:
    rollouts = Rollouts(store, lambda: None)
    for name in names:
        p, source = parse_plan_input(plan(name, interval), None)
        rollouts.apply(p, source, "test", clock())
        rollouts.act(name, Action.START, actor="test", now=clock())
    return rollouts


def status(rollouts: Rollouts, name: str) -> str:
    return str(rollouts.get(name, clock())["status"])


def test_hung_checks_never_hold_up_a_healthy_rollouts_rollback(store: Store) -> None:
    """Six rollouts whose gate reads hang, on a pool of two workers: the breaching
    rollout is still rolled back while all six hang (the fast lane starts a thread in
    place of each stuck one; after one slow check they wait in the slow lane)."""
    hung = [f"hung-{i}" for i in range(6)]
    release = threading.Event()
    gates = Gates(blocks=dict.fromkeys(hung, release))
    rollouts = started(store, [*hung, "breacher"])
    scheduler = Scheduler(
        store, rollouts, gates, Leases(store, "r1"), clock, tick_seconds=0.2, workers=2
    )
    scheduler.start()
    try:
        wait_until(
            lambda: all(gates.read_count(n) >= 1 for n in hung),
            timeout=30,
            what="every hung rollout's check started",
        )
        gates.values["breacher"] = 0.5
        wait_until(
            lambda: status(rollouts, "breacher") == "rolled_back",
            timeout=30,
            what="the breacher rolled back",
        )
        # The six are still hanging: the rollback did not wait for any of them.
        assert not release.is_set()
        in_flight, _ = scheduler.in_flight()
        assert in_flight >= 1
    finally:
        release.set()
        scheduler.stop()
    assert {status(rollouts, n) for n in hung} == {"running"}


def test_a_check_that_raises_is_an_error_for_that_rollout_alone(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    gates = Gates(raises={"broken": OverflowError("date value out of range")})
    rollouts = started(store, ["broken", "healthy"])
    scheduler = Scheduler(store, rollouts, gates, Leases(store, "r1"), clock, tick_seconds=0.1)
    scheduler.start()
    try:
        wait_until(
            lambda: status(rollouts, "broken") == "paused",
            timeout=30,
            what="the broken rollout paused",
        )
        wait_until(
            lambda: gates.read_count("healthy") >= FAILURES_BEFORE_PAUSE,
            timeout=30,
            what="the healthy rollout checked on",
        )
    finally:
        scheduler.stop()
    view = rollouts.get("broken", clock())
    assert "OverflowError: date value out of range" in view["reason"]
    assert "fix the plan or abort" in view["reason"]
    assert status(rollouts, "healthy") == "running"
    assert scheduler.check_errors["broken"] >= FAILURES_BEFORE_PAUSE
    assert "healthy" not in scheduler.check_errors
    # Logged once per streak with its traceback, not once per try.
    failed = [
        r for r in caplog.records if r.levelname == "ERROR" and "check failed" in r.getMessage()
    ]
    assert len(failed) == 1 and failed[0].exc_info is not None
    # The pause is a transition people see in the audit log, by the controller.
    with store.read() as s:
        rows = s.query(AuditRow).filter(AuditRow.rollout == "broken").all()
        assert [(r.actor, r.action) for r in rows if r.actor == "controller"] == [
            ("controller", "pause")
        ]


def test_a_failed_check_waits_for_its_interval_before_the_next_try(store: Store) -> None:
    gates = Gates(raises={"broken": RuntimeError("boom")})
    rollouts = started(store, ["broken"], interval="1h")
    scheduler = Scheduler(store, rollouts, gates, Leases(store, "r1"), clock, tick_seconds=0.05)
    for _ in range(20):
        scheduler.run_pass()
        assert scheduler.wait_idle(timeout=30)
    assert gates.read_count("broken") == 1  # not once per tick


def test_a_clean_stop_releases_the_leases_and_another_replica_takes_over(
    store: Store,
) -> None:
    gates_a, gates_b = Gates(), Gates()
    rollouts = started(store, ["handover"], interval="1s")
    a = Scheduler(store, rollouts, gates_a, Leases(store, "replica-a"), clock, tick_seconds=0.1)
    b = Scheduler(store, rollouts, gates_b, Leases(store, "replica-b"), clock, tick_seconds=0.1)
    a.start()
    try:
        wait_until(lambda: gates_a.read_count("handover") >= 1, 30, "replica-a checked")
        b.run_pass()
        assert b.wait_idle(timeout=30)
        assert gates_b.read_count("handover") == 0  # replica-a holds the lease
    finally:
        a.stop()
    with store.read() as s:
        assert s.query(LeaseRow).filter(LeaseRow.holder == "replica-a").count() == 0
    # No waiting for expiry: the next due pass of replica-b takes it.
    b.start()
    try:
        wait_until(lambda: gates_b.read_count("handover") >= 1, 30, "replica-b took over")
    finally:
        b.stop()


def test_leases_are_short_and_renewed_while_held(store: Store) -> None:
    """A crashed replica's rollouts are taken over within the lease's 15 s, not three
    intervals: the lease no longer scales with the interval, and renewal keeps it."""
    rollouts = started(store, ["slow-interval"], interval="10m")
    leases = Leases(store, "replica-a")
    scheduler = Scheduler(store, rollouts, Gates(), leases, clock)
    scheduler.run_pass()
    assert scheduler.wait_idle(timeout=30)
    with store.read() as s:
        row = s.get(LeaseRow, "slow-interval")
        assert row is not None
        left = (row.expires_at - datetime.now(UTC)).total_seconds()
    assert 0 < left <= leases.ttl.total_seconds()
    assert leases.renew() == 1
    assert Leases(store, "replica-b").acquire("slow-interval") is False
