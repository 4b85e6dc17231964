"""Plan history: every plan applied to a rollout, numbered from 1, with who applied it,
when and why. A revision is written by ``record`` inside the apply's unit of work, so it
exists exactly when the plan it holds was applied; an unchanged re-apply writes none.

Rollouts that existed before plan history have their plan of that moment as revision 1,
written by migration 0006 (its reason says so). Revisions outlive a deleted rollout: a
rollout created again under the same name goes on from the next number.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.orm import Session
from sqlmodel import col, select

from controller.errors import NotFound
from controller.storage.store import Store
from controller.storage.tables import PlanRevisionRow, RolloutRow
from controller.unit_of_work import UnitOfWork
from stages.plan import Plan
from stages.plan_diff import Change, diff_plans
from stages.planfile import PlanError, parse_stored_plan


def plan_hash(plan_data: dict[str, Any]) -> str:
    """sha256 of the canonical plan as compact, key-sorted JSON (as migration 0006)."""
    text = json.dumps(plan_data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record(
    uow: UnitOfWork,
    *,
    rollout: str,
    source: str,
    plan_data: dict[str, Any],
    actor: str,
    reason: str,
    summary: str,
    now: datetime,
) -> int:
    """Add the next revision of ``rollout``; returns its number."""
    session = uow.session
    number = (latest(session, rollout) or 0) + 1
    session.add(
        PlanRevisionRow(
            rollout=rollout,
            revision=number,
            source=source,
            plan=plan_data,
            plan_hash=plan_hash(plan_data),
            actor=actor,
            reason=reason,
            summary=summary,
            applied_at=now,
        )
    )
    return number


def latest(session: Session, rollout: str) -> int | None:
    """The newest revision's number, or ``None`` when the rollout has none."""
    query = select(func.max(PlanRevisionRow.revision)).where(
        col(PlanRevisionRow.rollout) == rollout
    )
    number: int | None = session.execute(query).scalar_one_or_none()
    return number


class PlanHistory:
    """The reads: a rollout's revisions, and one revision with its source."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def revisions(self, name: str, *, with_changes: bool = False) -> list[dict[str, Any]]:
        """Oldest first; ``with_changes`` adds each one's changes against the one before."""
        with self._store.read() as session:
            rows = _rows(session, name)
            out = []
            previous: PlanRevisionRow | None = None
            for row in rows:
                item = _summary(row)
                if with_changes:
                    item["changes"] = [c.as_dict() for c in _changes(previous, row)]
                out.append(item)
                previous = row
            return out

    def revision(self, name: str, number: int) -> dict[str, Any]:
        with self._store.read() as session:
            rows = {row.revision: row for row in _rows(session, name)}
            row = rows.get(number)
            if row is None:
                raise NotFound(
                    f"rollout {name!r} has no plan revision {number} "
                    f"(it has {_numbers(sorted(rows))})"
                )
            previous = rows.get(number - 1)
            return {
                **_summary(row),
                "source": row.source,
                "plan": row.plan,
                "previous": previous.revision if previous is not None else None,
                "changes": [c.as_dict() for c in _changes(previous, row)],
            }


def _rows(session: Session, name: str) -> list[PlanRevisionRow]:
    query = (
        select(PlanRevisionRow)
        .where(col(PlanRevisionRow.rollout) == name)
        .order_by(col(PlanRevisionRow.revision))
    )
    rows = list(session.execute(query).scalars())
    if not rows and session.get(RolloutRow, name) is None:
        raise NotFound(f"rollout {name!r} not found")
    return rows


def _summary(row: PlanRevisionRow) -> dict[str, Any]:
    return {
        "revision": row.revision,
        "applied_at": row.applied_at.isoformat(),
        "actor": row.actor,
        "reason": row.reason,
        "summary": row.summary,
        "plan_hash": row.plan_hash,
    }


def _changes(previous: PlanRevisionRow | None, row: PlanRevisionRow) -> tuple[Change, ...]:
    if previous is None:
        return ()
    old, new = _plan(previous), _plan(row)
    if old is None or new is None:
        return ()
    return diff_plans(old, new)


def _plan(row: PlanRevisionRow) -> Plan | None:
    try:
        return parse_stored_plan(row.plan)
    except PlanError:  # stored plans are valid; this guards hand edits
        return None


def _numbers(numbers: list[int]) -> str:
    if not numbers:
        return "none"
    return f"1 to {numbers[-1]}" if numbers == list(range(1, len(numbers) + 1)) else str(numbers)


__all__ = ["PlanHistory", "latest", "plan_hash", "record"]
