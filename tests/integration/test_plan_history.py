"""Plan history on SQLite and PostgreSQL: each applied plan is kept with who, when and
why, in the apply's own transaction; a refused apply and a dry run write nothing; the
migration gives every existing rollout its plan as revision 1."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from controller.errors import Conflict, Invalid
from controller.gates.prometheus import SyntaxUnchecked
from controller.plan_history import PlanHistory, plan_hash
from controller.rollouts import Rollouts
from controller.storage import migrate
from controller.storage.store import Store
from controller.storage.tables import AuditRow, FlagRow, PlanRevisionRow, RolloutRow
from stages.actions import Action
from stages.planfile import parse_plan, plan_to_dict
from tests.databases import fresh_database

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

PLAN = textwrap.dedent(
    """\
    rollout: checkout
    flag: checkout
    steps:
      - {stage: shadow, hold: 1h}
      - {stage: canary, percent: 5, hold: 3d}
      - {stage: full}
    gates:
      - name: error-rate
        query: sum(rate(errors_total{rollout="${rollout}"}[5m]))
        abort_above: 0.05
    """
)
TIGHTER = PLAN.replace("abort_above: 0.05", "abort_above: 0.03").replace("3d", "2d")


class Syntax:
    """Prometheus' format_query as a fake: this integration test is about storage."""

    url = "http://prometheus.test"

    def __init__(self, bad: str = "", down: bool = False) -> None:
        self.bad, self.down = bad, down

    def parse_error(self, query: str, timeout: float) -> str | None:
        if self.down:
            raise SyntaxUnchecked("prometheus unreachable")
        return "1:5: parse error: unexpected character" if self.bad and self.bad in query else None


@pytest.fixture
def rollouts(store: Store) -> Rollouts:
    use_cases = Rollouts(store, on_change=lambda: None)
    use_cases.query_syntax = Syntax()
    return use_cases


def apply(rollouts: Rollouts, text: str, actor: str, at: datetime, **kw: Any) -> Any:
    return rollouts.apply(parse_plan(text), text, actor, at, **kw)


def written(store: Store) -> dict[str, Any]:
    """Everything an apply could write, to compare before and after a refusal."""
    with store.read() as s:
        rows = s.execute(select(RolloutRow)).scalars().all()
        return {
            "revisions": s.execute(select(func.count()).select_from(PlanRevisionRow)).scalar(),
            "events": s.execute(select(func.count()).select_from(AuditRow)).scalar(),
            "flags": sorted(s.execute(select(FlagRow.key)).scalars()),
            "rollouts": {r.name: (r.row_version, r.plan) for r in rows},
        }


def test_each_apply_is_kept_with_who_when_and_why(store: Store, rollouts: Rollouts) -> None:
    first = apply(rollouts, PLAN, "alice (operator)", T0, reason="CHG-1 first cut")
    again = apply(rollouts, PLAN, "bob (operator)", T0 + timedelta(minutes=1))
    second = apply(rollouts, TIGHTER, "bob (operator)", T0 + timedelta(hours=1), reason="CHG-2")
    assert (first.outcome, first.revision) == ("created", 1)
    assert (again.outcome, again.revision) == ("unchanged", None)  # no revision for no change
    assert (second.outcome, second.revision) == ("updated", 2)
    assert second.changes == [
        "step 2 (canary 5%): hold 3d -> 2d",
        "gates.error-rate.abort_above: 0.05 -> 0.03",
    ]

    history = PlanHistory(store)
    revisions = history.revisions("checkout", with_changes=True)
    assert [(r["revision"], r["actor"], r["reason"]) for r in revisions] == [
        (1, "alice (operator)", "CHG-1 first cut"),
        (2, "bob (operator)", "CHG-2"),
    ]
    assert [r["applied_at"] for r in revisions] == [
        T0.isoformat(),
        (T0 + timedelta(hours=1)).isoformat(),
    ]
    assert revisions[0]["summary"] == "created: 3 steps, 1 gate" and revisions[0]["changes"] == []
    assert [c["text"] for c in revisions[1]["changes"]] == second.changes
    detail = history.revision("checkout", 2)
    assert detail["source"] == TIGHTER and detail["previous"] == 1
    assert detail["plan_hash"] == plan_hash(plan_to_dict(parse_plan(TIGHTER)))

    with store.read() as s:
        events = s.execute(
            select(AuditRow).where(AuditRow.action == "apply").order_by(AuditRow.id)
        ).scalars()
        said = [(e.actor, e.reason, e.details["revision"]) for e in events]
    assert said == [
        ("alice (operator)", "plan created: CHG-1 first cut", 1),
        ("bob (operator)", "plan updated: CHG-2", 2),
    ]


def test_a_refused_apply_writes_nothing(store: Store, rollouts: Rollouts) -> None:
    apply(rollouts, PLAN, "alice", T0)
    rollouts.act("checkout", Action.START, actor="alice", now=T0)
    rollouts.act("checkout", Action.ADVANCE, actor="alice", now=T0)  # serving canary 5 %
    before = written(store)

    moves_users = PLAN.replace("percent: 5", "percent: 10")
    with pytest.raises(Conflict, match="changes that step's exposure"):
        apply(rollouts, moves_users, "bob", T0, reason="wider")
    with pytest.raises(Conflict, match="already driven by rollout 'checkout'"):
        apply(rollouts, PLAN.replace("rollout: checkout", "rollout: intruder"), "bob", T0)
    other_variants = PLAN + "variants: {old: legacy, new: modern}\n"
    with pytest.raises(Invalid) as caught:
        apply(rollouts, other_variants, "bob", T0)
    assert [p["field"] for p in caught.value.problems] == ["variants.old", "variants.new"]
    rollouts.query_syntax = Syntax(bad="errors_total")
    with pytest.raises(Invalid, match=r"gates\[0\] error-rate: query: parse error at char 5"):
        apply(rollouts, TIGHTER, "bob", T0)
    assert written(store) == before
    assert [r["revision"] for r in PlanHistory(store).revisions("checkout")] == [1]


def test_a_dry_run_runs_the_same_checks_and_writes_nothing(
    store: Store, rollouts: Rollouts
) -> None:
    new = apply(rollouts, PLAN, "alice", T0, dry_run=True)
    assert (new.outcome, new.rollout, new.revision) == ("created", None, None)
    assert written(store)["revisions"] == 0 and written(store)["flags"] == []

    apply(rollouts, PLAN, "alice", T0)
    rollouts.act("checkout", Action.START, actor="alice", now=T0)
    rollouts.act("checkout", Action.ADVANCE, actor="alice", now=T0)
    before = written(store)
    update = apply(rollouts, TIGHTER, "bob", T0, dry_run=True, reason="try")
    assert update.outcome == "updated" and update.revision is None
    assert [d["path"] for d in update.diff] == ["steps[1].hold", "gates.error-rate.abort_above"]
    with pytest.raises(Conflict, match="changes that step's exposure"):
        apply(rollouts, PLAN.replace("percent: 5", "percent: 10"), "bob", T0, dry_run=True)
    rollouts.query_syntax = Syntax(down=True)
    unchecked = apply(rollouts, TIGHTER, "bob", T0, dry_run=True)
    assert unchecked.outcome == "updated" and "syntax not checked" in unchecked.warnings[0]
    assert written(store) == before


@pytest.fixture(params=["sqlite", "postgres"])
def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A database at the revision before plan history, holding one rollout."""
    with fresh_database(request.param, tmp_path) as url:
        store = Store(url)
        try:
            migrate.upgrade(store, "0003_gate_details")
            yield store
        finally:
            store.dispose()


def test_the_migration_keeps_each_existing_plan_as_revision_1(old_store: Store) -> None:
    data = plan_to_dict(parse_plan(PLAN))
    with old_store.write() as s:
        s.add(
            RolloutRow(
                name="checkout",
                flag_key="checkout",
                plan_source=PLAN,
                plan=data,
                status="pending",
                bookkeeping={},
                version=3,
                created_at=T0,
                updated_at=T0 + timedelta(days=1),
            )
        )
        s.add(
            AuditRow(
                at=T0 + timedelta(hours=2),
                actor="carol (admin)",
                action="apply",
                rollout="checkout",
                flag="checkout",
                details={},
                prev_hash="0" * 64,
            )
        )
    migrate.upgrade(old_store)

    (kept,) = PlanHistory(old_store).revisions("checkout")
    assert kept["revision"] == 1 and kept["actor"] == "carol (admin)"
    assert kept["applied_at"] == (T0 + timedelta(hours=2)).isoformat()
    assert kept["plan_hash"] == plan_hash(data)
    assert "migration 0006" in kept["reason"]
    assert PlanHistory(old_store).revision("checkout", 1)["source"] == PLAN

    rollouts = Rollouts(old_store, on_change=lambda: None)
    assert apply(rollouts, TIGHTER, "dave", T0 + timedelta(days=2)).revision == 2
