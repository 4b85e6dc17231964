"""Storage behaviour, on SQLite and on PostgreSQL alike: compare-and-swap, one
transaction per use case (audit included), snapshots that survive a database outage."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from controller.errors import Invalid, Refused, VersionConflict
from controller.flagstore import Flags
from controller.rollouts import Rollouts, parse_plan_input
from controller.snapshots import SnapshotHolder
from controller.storage.store import Store
from controller.storage.tables import AuditRow, FlagRow, RolloutRow
from flags.model import EvaluationContext
from stages.actions import Action
from stages.decisions import Advance, Hold
from tests.serving import plan_yaml

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def services(store: Store) -> tuple[Rollouts, Flags, list[int]]:
    changes: list[int] = []
    bump = lambda: changes.append(1)  # noqa: E731
    return Rollouts(store, bump), Flags(store, bump), changes


def apply(rollouts: Rollouts, name: str, text: str | None = None) -> None:
    plan, source = parse_plan_input(text or plan_yaml(name), None)
    rollouts.apply(plan, source, "tester", T0)


def audit_rows(store: Store, rollout: str | None = None) -> list[AuditRow]:
    with store.read() as s:
        query = select(AuditRow)
        if rollout:
            query = query.where(AuditRow.rollout == rollout)
        return list(s.execute(query).scalars())


def test_apply_writes_rollout_flag_and_audit_together(store: Store) -> None:
    rollouts, _, changes = services(store)
    apply(rollouts, "r1")
    with store.read() as s:
        row = s.get(RolloutRow, "r1")
        flag = s.get(FlagRow, "r1")
    assert row is not None and flag is not None
    assert (row.status, row.version, flag.managed_by) == ("pending", 1, "r1")
    assert {e.action for e in audit_rows(store, "r1")} == {"apply", "flag.create"}
    assert changes == [1]
    apply(rollouts, "r1")  # idempotent: no write, no event, no refresh
    assert len(audit_rows(store, "r1")) == 2
    assert changes == [1]


def test_stale_action_is_refused_and_writes_nothing(store: Store) -> None:
    rollouts, _, _ = services(store)
    apply(rollouts, "r1")
    rollouts.act("r1", Action.START, actor="a", now=T0, expected_version=1)
    before = len(audit_rows(store))
    with pytest.raises(VersionConflict):
        rollouts.act("r1", Action.PAUSE, actor="b", now=T0, expected_version=1)
    assert rollouts.get("r1", T0)["status"] == "running"
    assert rollouts.get("r1", T0)["version"] == 2
    assert len(audit_rows(store)) == before


def test_concurrent_writers_never_lose_an_update(store: Store) -> None:
    """Threads race to act on the same version: exactly one wins each round."""
    rollouts, _, _ = services(store)
    apply(rollouts, "race")
    rollouts.act("race", Action.START, actor="a", now=T0)
    for round_ in range(5):
        version = rollouts.get("race", T0)["version"]
        action = Action.PAUSE if round_ % 2 == 0 else Action.RESUME
        wins: list[str] = []
        losses: list[str] = []

        def attempt(
            who: str,
            action: Action = action,
            version: int = version,
            wins: list[str] = wins,
            losses: list[str] = losses,
        ) -> None:
            try:
                rollouts.act("race", action, actor=who, now=T0, expected_version=version)
                wins.append(who)
            except (VersionConflict, Refused):
                losses.append(who)

        threads = [threading.Thread(target=attempt, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1, (wins, losses)
        assert rollouts.get("race", T0)["version"] == version + 1
    actions = [e.action for e in audit_rows(store, "race") if e.action in ("pause", "resume")]
    assert actions == ["pause", "resume", "pause", "resume", "pause"]


def test_decision_with_stale_version_is_refused(store: Store) -> None:
    rollouts, _, _ = services(store)
    apply(rollouts, "tick")
    rollouts.act("tick", Action.START, actor="a", now=T0)
    with pytest.raises(VersionConflict):
        rollouts.record_decision("tick", 1, Advance(1, "dwell done"), [], T0)
    state = rollouts.record_decision("tick", 2, Hold("waiting"), [], T0 + timedelta(seconds=1))
    assert state.step == 0
    # A hold changes bookkeeping only: no audit event for it.
    assert [e.action for e in audit_rows(store, "tick")][-1] == "start"


def test_plan_that_does_not_fit_its_flag_writes_nothing(store: Store) -> None:
    rollouts, flags, _ = services(store)
    flags.put(
        "colors",
        {"type": "string", "variants": {"a": "x", "b": "y"}, "default_variant": "a"},
        actor="t",
        now=T0,
        expected_version=None,
    )
    with pytest.raises(Invalid) as caught:
        apply(rollouts, "colors")
    assert {p["field"] for p in caught.value.problems} == {"variants.old", "variants.new"}
    with store.read() as s:
        assert s.get(RolloutRow, "colors") is None
        assert s.get(FlagRow, "colors").managed_by is None  # type: ignore[union-attr]
    assert [e.action for e in audit_rows(store)] == ["flag.create"]


def test_snapshot_overlays_rollout_and_survives_a_database_outage(store: Store) -> None:
    rollouts, _, _ = services(store)
    apply(rollouts, "snap")
    rollouts.act("snap", Action.START, actor="a", now=T0)
    rollouts.act("snap", Action.ADVANCE, actor="a", now=T0)
    holder = SnapshotHolder(store)
    first = holder.refresh()
    flag = first.flags["snap"]
    assert flag.rollout is not None
    assert (flag.rollout.stage, flag.rollout.percent, flag.rollout.status) == (
        "canary",
        5,
        "running",
    )
    answers = [first.evaluate("snap", EvaluationContext(f"u{i}")).value for i in range(200)]

    store.dispose()
    holder._store = Store("postgresql://postgres@127.0.0.1:1/none")  # nothing listens there
    with pytest.raises(Exception):  # noqa: B017 - any driver error: the point is what stays
        holder.refresh()
    assert holder.current is first
    again = [holder.current.evaluate("snap", EvaluationContext(f"u{i}")).value for i in range(200)]
    assert again == answers


def test_revision_increases_with_every_served_change(store: Store) -> None:
    rollouts, flags, _ = services(store)
    holder = SnapshotHolder(store)
    revisions = [holder.refresh().revision]
    apply(rollouts, "rev")
    revisions.append(holder.refresh().revision)
    rollouts.act("rev", Action.START, actor="a", now=T0)
    revisions.append(holder.refresh().revision)
    flags.set_enabled("rev", False, actor="a", now=T0, reason="kill", expected_version=None)
    revisions.append(holder.refresh().revision)
    assert revisions == sorted(set(revisions))
