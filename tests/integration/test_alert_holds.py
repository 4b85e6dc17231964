"""Alerts on a real database (SQLite and PostgreSQL), with the scheduler's shell and a
clock the test moves: a hold stops a ready advance until its alert resolves, a resolved
alert clears only its own hold, rollbacks act once however often Alertmanager resends,
and a race with a scheduler tick does not lose the alert."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from controller.alerts import Alerts
from controller.jobs.scheduler import Scheduler
from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.leases import Leases
from controller.storage.store import Store
from controller.storage.tables import AlertRow, AuditRow
from stages.actions import Action
from stages.alert_mappings import (
    DEFAULT_MAPPINGS,
    Alert,
    AlertAction,
    AlertMapping,
    AlertStatus,
    RolloutsBy,
)
from tests.integration.test_scheduler import Clock, FakeGates, run, tick

PLAN = """
rollout: memory-layer
flag: memory-layer
interval: 5s
labels: {service: memory}
steps:
  - {stage: canary, percent: 1, hold: 10s}
  - {stage: canary, percent: 5, hold: 10s}
  - {stage: full}
"""
MAPPINGS = (
    AlertMapping(RolloutsBy.LABELS, AlertAction.HOLD, plan_labels=("service",), name="by-service"),
    *DEFAULT_MAPPINGS,
)
STARTS = datetime(2026, 11, 1, 11, 58, tzinfo=UTC)


def firing(key: str, name: str, **labels: str) -> Alert:
    return Alert(
        key=key,
        name=name,
        status=AlertStatus.FIRING,
        labels={"alertname": name, **labels},
        annotations={},
        starts_at=STARTS,
        url=f"http://prometheus.example/{name}",
    )


def resolved(a: Alert) -> Alert:
    return replace(a, status=AlertStatus.RESOLVED)


def setup(store: Store) -> tuple[Rollouts, Alerts, Scheduler, Clock]:
    clock = Clock()
    rollouts = Rollouts(store, lambda: None)
    alerts = Alerts(store, rollouts, MAPPINGS)
    plan, source = parse_plan_input(PLAN, None)
    rollouts.apply(plan, source, "test", clock())
    rollouts.act(plan.rollout, Action.START, actor="test", now=clock())
    scheduler = Scheduler(
        store, rollouts, FakeGates(), Leases(store, "r1"), clock, blockers=(alerts.blocking,)
    )
    return rollouts, alerts, scheduler, clock


def audit_count(store: Store) -> int:
    with store.read() as s:
        return int(s.execute(select(func.count()).select_from(AuditRow)).scalar_one())


def test_a_hold_stops_the_advance_until_its_alert_resolves(store: Store) -> None:
    rollouts, alerts, scheduler, clock = setup(store)
    latency = firing("9457475f35d760cf", "LatencyHigh", service="memory", severity="ticket")
    [held] = alerts.receive([latency], source="alertmanager", actor="am (alerts)", now=clock())
    assert (held.rollout, held.outcome, held.action) == ("memory-layer", "held", AlertAction.HOLD)

    run(scheduler, clock, 30)  # three times the step's dwell
    view = rollouts.get("memory-layer", clock())
    assert (view["status"], view["step"]) == ("running", 0)
    assert view["reason"] == (
        "ready to advance, but alert LatencyHigh firing since 11:58 UTC (severity=ticket)"
    )

    [cleared] = alerts.receive(
        [resolved(latency)], source="alertmanager", actor="am (alerts)", now=clock()
    )
    assert cleared.outcome == "cleared"
    assert alerts.blocked("memory-layer") == ()
    run(scheduler, clock, 6)
    assert rollouts.get("memory-layer", clock())["step"] == 1
    with store.read() as s:
        events = s.execute(
            select(AuditRow.action, AuditRow.reason).order_by(col(AuditRow.id))
        ).all()
    hold, resolve = (e for e in events if e.action.startswith("alert."))
    assert hold.action == "alert.hold" and "LatencyHigh" in hold.reason
    assert (
        "service=memory" in hold.reason and "http://prometheus.example/LatencyHigh" in hold.reason
    )
    assert resolve.action == "alert.resolve" and "its hold is cleared" in resolve.reason


def test_a_resolved_alert_clears_its_own_hold_only(store: Store) -> None:
    rollouts, alerts, scheduler, clock = setup(store)
    latency = firing("aaaa", "LatencyHigh", service="memory")
    errors = firing("bbbb", "ErrorBudgetBurn", service="memory", severity="page")
    alerts.receive([latency, errors], source="json", actor="a", now=clock())
    assert len(alerts.blocked("memory-layer")) == 2
    alerts.receive([resolved(latency)], source="json", actor="a", now=clock())
    assert alerts.blocked("memory-layer") == (
        "alert ErrorBudgetBurn firing since 11:58 UTC (severity=page)",
    )
    run(scheduler, clock, 20)
    view = rollouts.get("memory-layer", clock())
    assert view["step"] == 0 and "ErrorBudgetBurn" in view["reason"]
    assert "LatencyHigh" not in view["reason"]
    # A resolve of an earlier firing (another startsAt) clears nothing of this one.
    stale = replace(resolved(errors), starts_at=STARTS - timedelta(hours=1))
    [ignored] = alerts.receive([stale], source="json", actor="a", now=clock())
    assert ignored.outcome == "ignored" and len(alerts.blocked("memory-layer")) == 1


def test_resends_of_a_firing_alert_change_nothing(store: Store) -> None:
    rollouts, alerts, _scheduler, clock = setup(store)
    page = firing("b1290b0eb5959070", "HighErrorRate", rollout="memory-layer", action="rollback")
    [first] = alerts.receive([page], source="alertmanager", actor="a", now=clock())
    assert first.outcome == "acted" and "rolled_back" in first.message
    before = (audit_count(store), rollouts.get("memory-layer", clock())["version"])
    for _ in range(3):  # repeat_interval, and retries of the whole notification
        clock.advance(60)
        [again] = alerts.receive([page], source="alertmanager", actor="a", now=clock())
        assert again.outcome == "replayed"
    assert (audit_count(store), rollouts.get("memory-layer", clock())["version"]) == before
    # The same for the resolved notification, twice: the rollback stays, nothing is recorded.
    for outcome in ("resolved", "replayed"):
        [done] = alerts.receive([resolved(page)], source="alertmanager", actor="a", now=clock())
        assert done.outcome == outcome
    assert (audit_count(store), rollouts.get("memory-layer", clock())["version"]) == before
    assert rollouts.get("memory-layer", clock())["status"] == "rolled_back"


def test_a_refused_action_is_recorded_once(store: Store) -> None:
    rollouts, alerts, _scheduler, clock = setup(store)
    rollouts.act("memory-layer", Action.ABORT, actor="person", now=clock())
    page = firing("cccc", "HighErrorRate", rollout="memory-layer", action="rollback")
    [refused] = alerts.receive([page], source="json", actor="a", now=clock())
    assert refused.outcome == "refused" and "aborted" in refused.message
    count = audit_count(store)
    [again] = alerts.receive([page], source="json", actor="a", now=clock())
    assert again.outcome == "replayed" and audit_count(store) == count
    with store.read() as s:
        [row] = s.execute(select(AlertRow)).scalars()
        assert row.outcome.startswith("refused: ") and not row.holding


def test_a_rollback_during_a_scheduler_tick_is_not_lost(store: Store) -> None:
    rollouts, alerts, scheduler, clock = setup(store)
    page = firing("dddd", "HighErrorRate", rollout="memory-layer", action="abort")
    results = []

    def alert_arrives() -> None:
        results.extend(alerts.receive([page], source="json", actor="a", now=clock()))

    gates = FakeGates(during_read=alert_arrives)
    scheduler._gates = gates  # the next check reads its gates while the alert arrives
    plan, source = parse_plan_input(
        PLAN + "gates:\n  - {name: errors, query: 'x', rollback_above: 1}\n", None
    )
    rollouts.apply(plan, source, "test", clock())
    clock.advance(5)
    tick(scheduler)
    assert [r.outcome for r in results] == ["acted"]
    assert rollouts.get("memory-layer", clock())["status"] == "aborted"


def test_a_long_alert_name_is_kept_whole_in_the_audit_and_cut_in_the_list(store: Store) -> None:
    _rollouts, alerts, _scheduler, clock = setup(store)
    name = "A" * 4000
    [held] = alerts.receive(
        [firing("eeee", name, service="memory")], source="json", actor="a", now=clock()
    )
    assert held.outcome == "held"
    [record] = alerts.records(rollout="memory-layer", holding=True, limit=10)
    assert record["alert"] == "A" * 255
    with store.read() as s:
        reason = s.execute(
            select(AuditRow.reason).where(col(AuditRow.action) == "alert.hold")
        ).scalar_one()
    assert f"alert {name} firing" in reason


@pytest.mark.parametrize("action", ["rollback", "hold"])
def test_two_replicas_given_the_same_alert_act_once(store: Store, action: str) -> None:
    """Alertmanager in a cluster sends each replica of its own the notification: two
    controller replicas may take it at once. The loser's write conflicts (the
    rollout's compare-and-swap, or the alert row's unique key) and, tried again, finds
    that the alert has acted."""
    rollouts, alerts, _scheduler, clock = setup(store)
    other = Alerts(store, Rollouts(store, lambda: None), MAPPINGS)
    page = firing("ffff", "HighErrorRate", rollout="memory-layer", action=action)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def replica(use: Alerts) -> None:
        start.wait()
        outcomes.extend(
            r.outcome for r in use.receive([page], source="json", actor="a", now=clock())
        )

    threads = [threading.Thread(target=replica, args=(a,)) for a in (alerts, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    acted = "acted" if action == "rollback" else "held"
    assert sorted(outcomes) == [acted, "replayed"]
    audited = "rollback" if action == "rollback" else "alert.hold"
    with store.read() as s:
        events = s.execute(
            select(func.count()).select_from(AuditRow).where(col(AuditRow.action) == audited)
        ).scalar_one()
        rows = s.execute(select(func.count()).select_from(AlertRow)).scalar_one()
    assert (events, rows) == (1, 1)
    expected = "rolled_back" if action == "rollback" else "running"
    assert rollouts.get("memory-layer", clock())["status"] == expected
