"""A cheap fingerprint of everything the REST API can change, read straight from the
server's database, so a test can show that a refused request changed nothing; and
``snapshot``, one read of that database at a single moment while a server writes it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func
from sqlalchemy.orm import Session
from sqlmodel import col, select

from controller.audit import current_revision
from controller.storage.store import Store
from controller.storage.tables import (
    AlertRow,
    AuditRow,
    FlagRow,
    FreezeRow,
    GateEvaluationRow,
    RolloutRow,
    TokenRow,
    WebhookOutboxRow,
)


@contextmanager
def snapshot(store: Store) -> Iterator[Session]:
    """A read transaction in which every query sees the same committed moment, even
    while a running server (its scheduler, say) commits. Two API requests, or two
    statements under PostgreSQL's default READ COMMITTED, can each see a different
    moment: a transition committed between them looks like a state without its audit
    event. A SQLite read transaction in WAL mode is such a snapshot already."""
    engine = store.engine
    if store.dialect == "postgresql":
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def fingerprint(store: Store) -> dict[str, Any]:
    """The revision every change moves, the audit chain's head, every flag's and
    rollout's version, the tokens, the webhook outbox, the stored gate readings and
    the alerts' rows."""
    with snapshot(store) as session:
        head = session.execute(
            select(col(AuditRow.id), col(AuditRow.hash)).order_by(col(AuditRow.id).desc()).limit(1)
        ).first()
        return {
            "revision": current_revision(session),
            "audit_head": tuple(head) if head else None,
            "flags": dict(session.execute(select(col(FlagRow.key), col(FlagRow.version))).all()),
            "rollouts": {
                name: (status, version)
                for name, status, version in session.execute(
                    select(col(RolloutRow.name), col(RolloutRow.status), col(RolloutRow.version))
                ).all()
            },
            "tokens": dict(
                session.execute(select(col(TokenRow.id), col(TokenRow.revoked_at))).all()
            ),
            "deliveries": sorted(
                session.execute(
                    select(
                        col(WebhookOutboxRow.id),
                        col(WebhookOutboxRow.status),
                        col(WebhookOutboxRow.attempts),
                    )
                ).all()
            ),
            "gate_readings": session.execute(
                select(func.count()).select_from(GateEvaluationRow)
            ).scalar_one(),
            "freezes": dict(
                session.execute(select(col(FreezeRow.id), col(FreezeRow.ended_at))).all()
            ),
            # What alerts did, and the holds they keep.
            "alerts": session.execute(
                select(col(AlertRow.id), col(AlertRow.status), col(AlertRow.holding))
            ).all(),
        }
