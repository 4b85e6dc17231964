"""A cheap fingerprint of everything the REST API can change, read straight from the
server's database, so a test can show that a refused request changed nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from controller.audit import current_revision
from controller.store import Store
from controller.tables import (
    AuditRow,
    FlagRow,
    GateEvaluationRow,
    RolloutRow,
    TokenRow,
    WebhookOutboxRow,
)


def fingerprint(store: Store) -> dict[str, Any]:
    """The revision every change moves, the audit chain's head, every flag's and
    rollout's version, the tokens, the webhook outbox and the stored gate readings."""
    with store.read() as session:
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
        }
