"""The scheduler's shell on a real database (SQLite and PostgreSQL), with a fake gate
source and a clock the test moves: load, read gates, decide, save; leases; CAS."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col

from controller.gates import history as gate_history
from controller.jobs.scheduler import Scheduler
from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.leases import Leases
from controller.storage.store import Store
from controller.storage.tables import AuditRow, GateEvaluationRow, LeaseRow, RolloutRow
from stages.actions import Action
from stages.plan import Gate
from stages.state import GateReading, Outcome

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

GATED_PLAN = """
rollout: gated
flag: gated
interval: 10s
min_evaluations: 2
max_gate_errors: 3
rollback_observe: 30s
steps:
  - {stage: shadow, hold: 20s}
  - {stage: canary, percent: 5, hold: 20s}
  - {stage: graduated, percent: 50, hold: 20s}
gates:
  - {name: errors, query: 'sum(rate(x{rollout="${rollout}"}[1m]))', rollback_above: 0.01}
"""

RAMP_PLAN = """
rollout: ramp
flag: ramp
interval: 5s
steps:
  - {stage: canary, percent: 1, hold: 5s}
  - {stage: canary, percent: 2, hold: 5s}
  - {stage: full}
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeGates:
    """Answers each gate with the outcome the test set; records what it was asked."""

    outcome: Outcome = Outcome.OK
    asked: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    during_read: object = None

    def read(
        self,
        gate: Gate,
        variables: Mapping[str, str],
        now: datetime,
        *,
        deadline: float | None = None,
    ) -> GateReading:
        self.asked.append((gate.name, dict(variables)))
        if callable(self.during_read):
            action, self.during_read = self.during_read, None  # once
            action()
        value = {Outcome.OK: 0.001, Outcome.ROLLBACK: 0.5}.get(self.outcome)
        return GateReading(
            gate=gate.name,
            outcome=self.outcome,
            at=now,
            query=gate.query.replace("${rollout}", variables["rollout"]),
            value=value,
            error="connection refused" if self.outcome is Outcome.ERROR else None,
        )

    def ping(self) -> bool:
        return True


def setup(
    store: Store, text: str, gates: FakeGates, holder: str = "r1"
) -> tuple[Rollouts, Scheduler, Clock]:
    clock = Clock()
    rollouts = Rollouts(store, lambda: None)
    plan, source = parse_plan_input(text, None)
    rollouts.apply(plan, source, "test", clock())
    rollouts.act(plan.rollout, Action.START, actor="test", now=clock())
    scheduler = Scheduler(store, rollouts, gates, Leases(store, holder), clock)
    return rollouts, scheduler, clock


def transitions(store: Store, rollout: str) -> list[tuple[str, int | None, str | None]]:
    with store.read() as s:
        rows = s.query(AuditRow).filter(AuditRow.rollout == rollout).order_by(AuditRow.id).all()
        return [(r.action, r.to_step, r.to_status) for r in rows if r.actor == "controller"]


def tick(scheduler: Scheduler) -> None:
    """One pass, and the checks it queued run to the end (passes never wait on them)."""
    scheduler.run_pass()
    assert scheduler.wait_idle(timeout=30)


def expire_leases(store: Store, holder: str) -> None:
    """What 15 s without renewal does to a crashed replica's leases."""
    with store.write() as s:
        s.execute(
            update(LeaseRow)
            .where(col(LeaseRow.holder) == holder)
            .values(expires_at=datetime.now(UTC) - timedelta(hours=1))
        )


def run(scheduler: Scheduler, clock: Clock, seconds: float, step: float = 1.0) -> None:
    elapsed = 0.0
    while elapsed < seconds:
        clock.advance(step)
        elapsed += step
        tick(scheduler)


def test_timed_ramp_advances_on_dwell_alone_and_completes(store: Store) -> None:
    gates = FakeGates()
    rollouts, scheduler, clock = setup(store, RAMP_PLAN, gates)
    run(scheduler, clock, 30)
    assert rollouts.get("ramp", clock())["status"] == "completed"
    assert transitions(store, "ramp") == [
        ("advance", 1, "running"),
        ("advance", 2, "running"),
        ("complete", 2, "completed"),
    ]
    assert gates.asked == []  # no gates: nothing to ask Prometheus


def test_healthy_gates_advance_after_dwell_and_min_evaluations(store: Store) -> None:
    gates = FakeGates(Outcome.OK)
    rollouts, scheduler, clock = setup(store, GATED_PLAN, gates)
    run(scheduler, clock, 15)
    assert rollouts.get("gated", clock())["step"] == 0  # dwell of 20 s not over yet
    run(scheduler, clock, 10)
    assert rollouts.get("gated", clock())["step"] == 1
    # Checked once per interval (10 s), not once per scheduler pass (1 s).
    assert 2 <= len(gates.asked) <= 3
    assert gates.asked[0][1]["rollout"] == "gated"
    assert gates.asked[0][1]["step"] == "1"


def test_breach_steps_back_and_records_the_evidence(store: Store) -> None:
    gates = FakeGates(Outcome.OK)
    rollouts, scheduler, clock = setup(store, GATED_PLAN, gates)
    run(scheduler, clock, 25)
    assert rollouts.get("gated", clock())["step"] == 1
    run(scheduler, clock, 25)
    assert rollouts.get("gated", clock())["step"] == 2
    gates.outcome = Outcome.ROLLBACK
    run(scheduler, clock, 10)
    view = rollouts.get("gated", clock())
    # From 50 % back to the canary (from the canary the plan would end rolled_back: its
    # first step, shadow, serves nobody the new side; tests/unit/test_gate_modes.py).
    assert (view["status"], view["step"]) == ("rolling_back", 1)
    with store.read() as s:
        evaluations = s.query(GateEvaluationRow).filter(GateEvaluationRow.outcome == "rollback")
        row = evaluations.first()
        assert row is not None
        assert row.query == 'sum(rate(x{rollout="gated"}[1m]))'
        assert row.value == 0.5
    step_back = [t for t in transitions(store, "gated") if t[0] == "step_back"]
    assert step_back == [("step_back", 1, "rolling_back")]


def test_gate_source_down_holds_then_pauses_and_never_advances(store: Store) -> None:
    gates = FakeGates(Outcome.ERROR)
    rollouts, scheduler, clock = setup(store, GATED_PLAN, gates)
    run(scheduler, clock, 25)  # dwell over, but every read is an error
    view = rollouts.get("gated", clock())
    assert view["step"] == 0
    assert view["status"] == "paused"
    assert "gate source unavailable" in view["reason"]
    assert [t[0] for t in transitions(store, "gated")] == ["pause"]


def test_a_person_acting_during_the_check_wins(store: Store) -> None:
    gates = FakeGates(Outcome.OK)
    rollouts, scheduler, clock = setup(store, GATED_PLAN, gates)
    run(scheduler, clock, 25)
    assert rollouts.get("gated", clock())["step"] == 1
    gates.during_read = lambda: rollouts.act("gated", Action.PAUSE, actor="alice", now=clock())
    run(scheduler, clock, 30)
    view = rollouts.get("gated", clock())
    # The tick that read the gates before alice paused was dropped, not merged: her
    # pause stands and the controller made no transition of its own after it.
    assert (view["status"], view["step"]) == ("paused", 1)
    with store.read() as s:
        actions = [
            (r.actor, r.action)
            for r in s.query(AuditRow).filter(AuditRow.rollout == "gated").order_by(AuditRow.id)
        ]
    assert actions[-1] == ("alice", "pause")


def test_only_the_lease_holder_checks(store: Store) -> None:
    gates_a, gates_b = FakeGates(), FakeGates()
    rollouts, scheduler_a, clock = setup(store, GATED_PLAN, gates_a, holder="replica-a")
    scheduler_b = Scheduler(store, rollouts, gates_b, Leases(store, "replica-b"), clock)
    for _ in range(30):
        clock.advance(1)
        tick(scheduler_a)
        tick(scheduler_b)
    assert gates_a.asked and not gates_b.asked
    # replica-a dies: once its lease expires, replica-b takes over.
    expire_leases(store, "replica-a")
    for _ in range(15):
        clock.advance(1)
        tick(scheduler_b)
    assert gates_b.asked
    advances = [t for t in transitions(store, "gated") if t[0] == "advance"]
    assert len(advances) == len({t[1] for t in advances})  # each step entered once


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_readings_that_are_not_finite_are_stored_and_served(store: Store, value: float) -> None:
    """Prometheus answers NaN (0/0) and ±Inf; JSON and PostgreSQL's json reject them."""

    class Odd(FakeGates):
        def read(
            self,
            gate: Gate,
            variables: Mapping[str, str],
            now: datetime,
            *,
            deadline: float | None = None,
        ) -> GateReading:
            return GateReading(gate=gate.name, outcome=Outcome.NO_DATA, at=now, value=value)

    _, scheduler, clock = setup(store, GATED_PLAN, Odd())
    run(scheduler, clock, 12)
    with store.read() as s:
        assert s.query(GateEvaluationRow).count() >= 1
        history = gate_history.history(s, "gated")
    assert history[0]["outcome"] == "no_data"
    assert history[0]["value"] in (None, "nan", "inf", "-inf")
    json.dumps(history, allow_nan=False)  # what the API sends is strict JSON


APPROVAL_PLAN = """
rollout: gated
flag: gated
interval: 5s
min_evaluations: 1
rollback_observe: 10s
steps:
  - {stage: canary, percent: 5, hold: 5s}
  - {stage: full, approval: true, hold: 5s, on_rollback: pause}
  - {stage: full, shadow: false}
gates:
  - {name: errors, query: 'x', rollback_above: 0.01}
"""


def test_approval_waits_for_a_person_then_goes_on(store: Store) -> None:
    gates = FakeGates(Outcome.OK)
    rollouts, scheduler, clock = setup(store, APPROVAL_PLAN, gates)
    run(scheduler, clock, 30)
    view = rollouts.get("gated", clock())
    assert (view["status"], view["step"]) == ("awaiting_approval", 0)  # waits, however long
    rollouts.act("gated", Action.APPROVE, actor="cab", now=clock(), reason="CHG-1")
    run(scheduler, clock, 30)
    assert rollouts.get("gated", clock())["status"] == "completed"
    assert [t[0] for t in transitions(store, "gated")] == [
        "await_approval",
        "advance",
        "complete",
    ]


def test_on_rollback_pause_pauses_instead_of_stepping_back(store: Store) -> None:
    gates = FakeGates(Outcome.OK)
    rollouts, scheduler, clock = setup(
        store, APPROVAL_PLAN.replace("hold: 5s, on", "hold: 1h, on"), gates
    )
    run(scheduler, clock, 12)
    rollouts.act("gated", Action.APPROVE, actor="cab", now=clock())
    run(scheduler, clock, 6)
    gates.outcome = Outcome.ROLLBACK
    run(scheduler, clock, 12)
    view = rollouts.get("gated", clock())
    assert (view["status"], view["step"]) == ("paused", 1)
    assert "on_rollback: pause" in view["reason"]


def test_gate_history_is_pruned_after_retention(store: Store) -> None:
    gates = FakeGates(Outcome.OK)
    rollouts = Rollouts(store, lambda: None)
    clock = Clock()
    plan, source = parse_plan_input(GATED_PLAN, None)
    rollouts.apply(plan, source, "test", clock())
    rollouts.act("gated", Action.START, actor="test", now=clock())
    scheduler = Scheduler(
        store, rollouts, gates, Leases(store, "r1"), clock, retention=timedelta(minutes=30)
    )
    run(scheduler, clock, 30)
    with store.read() as s:
        early = s.query(GateEvaluationRow).count()
    assert early >= 2
    first_half_minute = T0 + timedelta(seconds=30)
    run(scheduler, clock, 3600, step=30)  # an hour later; pruning runs every 10 minutes
    with store.read() as s:
        left = s.query(GateEvaluationRow).filter(GateEvaluationRow.at <= first_half_minute)
        assert left.count() == 0


def test_gate_checks_that_hold_do_not_make_a_persons_version_stale(store: Store) -> None:
    gates = FakeGates(Outcome.HOLD)
    rollouts, scheduler, clock = setup(store, GATED_PLAN, gates)
    seen = rollouts.get("gated", clock())["version"]
    run(scheduler, clock, 60)  # several checks, every one a hold
    assert len(gates.asked) >= 5
    assert rollouts.get("gated", clock())["version"] == seen
    paused = rollouts.act("gated", Action.PAUSE, actor="bob", now=clock(), expected_version=seen)
    assert paused["version"] == seen + 1


def test_the_next_check_counts_from_the_pass_not_the_checks_start(store: Store) -> None:
    """A check that waited 300 ms for a worker is still due again one interval after
    its pass: waits do not push each later check of the rollout one tick back."""
    gates = FakeGates(Outcome.HOLD)
    rollouts, _, clock = setup(store, GATED_PLAN, gates)
    reads: list[datetime] = []

    def waited() -> datetime:
        # Each pass reads the clock once, then its check once, 300 ms later.
        reads.append(clock.now if len(reads) % 2 == 0 else clock.now + timedelta(seconds=0.3))
        return reads[-1]

    scheduler = Scheduler(store, rollouts, gates, Leases(store, "r1"), waited)
    passes: list[datetime] = []
    for _ in range(6):
        passes.append(clock.now)
        tick(scheduler)
        clock.advance(10)  # exactly one interval after the pass
    assert len(gates.asked) == 6  # due at every pass, none slipped to the next
    with store.read() as s:
        row = s.get(RolloutRow, "gated")
        assert row is not None and row.checked_at == passes[-1]
