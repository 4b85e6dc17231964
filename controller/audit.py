"""The audit log: one event per action, automatic transition, plan apply and flag
change, written in the same transaction as the change it records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlmodel import col, select

from controller.tables import AuditRow, RevisionRow
from stages.state import RolloutState


def record(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    reason: str = "",
    rollout: str | None = None,
    flag: str | None = None,
    before: RolloutState | None = None,
    after: RolloutState | None = None,
    version: int | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRow:
    row = AuditRow(
        at=at,
        actor=actor,
        action=action,
        rollout=rollout,
        flag=flag,
        from_status=before.status.value if before else None,
        to_status=after.status.value if after else None,
        from_step=before.step if before else None,
        to_step=after.step if after else None,
        version=version,
        reason=reason,
        details=details or {},
    )
    session.add(row)
    return row


def bump_revision(session: Session) -> None:
    """Mark that what evaluation serves has changed (read by snapshot refreshers)."""
    session.execute(
        update(RevisionRow).where(col(RevisionRow.id) == 1).values(value=RevisionRow.value + 1)
    )


def current_revision(session: Session) -> int:
    row = session.get(RevisionRow, 1)
    return row.value if row is not None else 0


def event_view(row: AuditRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at.isoformat(),
        "actor": row.actor,
        "action": row.action,
        "rollout": row.rollout,
        "flag": row.flag,
        "from_status": row.from_status,
        "to_status": row.to_status,
        "from_step": row.from_step,
        "to_step": row.to_step,
        "version": row.version,
        "reason": row.reason,
        "details": row.details,
    }


def list_events(
    session: Session,
    *,
    rollout: str | None = None,
    flag: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    query = select(AuditRow)
    if rollout is not None:
        query = query.where(col(AuditRow.rollout) == rollout)
    if flag is not None:
        query = query.where(col(AuditRow.flag) == flag)
    if before_id is not None:
        query = query.where(col(AuditRow.id) < before_id)
    query = query.order_by(col(AuditRow.id).desc()).limit(limit)
    return [event_view(r) for r in session.execute(query).scalars()]
