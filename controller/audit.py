"""The audit log: one event per action, automatic transition, plan apply and flag
change, written in the same transaction as the change it records, and chained by
hash onto the event before it (see ``controller.audit_chain``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.orm import Session
from sqlmodel import col, select

from controller.audit_chain import GENESIS, ChainWalk, VerifyReport, canonical_json, event_hash
from controller.storage.tables import AuditRow, RevisionRow
from stages.state import RolloutState

VERIFY_BATCH = 500


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
    """Append one event to the chain, inside the caller's write transaction."""
    _serialize_appends(session)
    last = session.execute(
        select(col(AuditRow.id), col(AuditRow.hash)).order_by(col(AuditRow.id).desc()).limit(1)
    ).first()
    prev_id, prev_hash = (last[0] or 0, last[1]) if last is not None else (0, GENESIS)
    row = AuditRow(
        # The id is allocated here rather than by the database, so the hash (which covers
        # the id) is known before the INSERT: no row ever exists without its hash, and no
        # INSERT-then-UPDATE. It also makes a fork impossible twice over: two appends onto
        # the same event would both claim prev_id + 1, and the primary key refuses the
        # second. (The PostgreSQL sequence behind the column is therefore unused: every
        # event must be written through this function.)
        id=prev_id + 1,
        at=at if at.tzinfo is None else at.astimezone(UTC),  # naive: the column refuses it
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
        # Stored as it is hashed: NaN and infinity as text, tuples as lists.
        details=json.loads(canonical_json(details or {})),
        prev_hash=prev_hash,
    )
    row.hash = event_hash(event_view(row), prev_hash)
    session.add(row)
    return row


def _serialize_appends(session: Session) -> None:
    """Let one transaction at a time read the chain's end and append to it, until it
    commits. SQLite: write transactions start with BEGIN IMMEDIATE, which already
    serializes writers. PostgreSQL: lock the one revision row (most writers bump it in
    the same transaction anyway); a database without it locks the audit table instead."""
    if session.get_bind().dialect.name == "sqlite":
        return
    locked = session.execute(
        select(col(RevisionRow.id)).where(col(RevisionRow.id) == 1).with_for_update()
    ).first()
    if locked is None:
        session.execute(text("LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE"))


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
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def verify(session: Session, *, batch_size: int = VERIFY_BATCH) -> VerifyReport:
    """Walk the whole log in id order, a batch at a time, recomputing every hash."""
    walk = ChainWalk()
    after = 0
    while True:
        rows = list(
            session.execute(
                select(AuditRow)
                .where(col(AuditRow.id) > after)
                .order_by(col(AuditRow.id))
                .limit(batch_size)
            ).scalars()
        )
        if not rows or not walk.feed(event_view(r) for r in rows):
            return walk.report()
        after = rows[-1].id or after


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
