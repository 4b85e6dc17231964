"""Plan history: every applied plan of every rollout (``plan_revisions``).

Revision ID: 0006_plan_revisions
Revises: 0003_gate_details
Create Date: 2026-12-04

Each rollout that exists now gets its current plan as revision 1, so that every
rollout has a history and the next apply is revision 2. Who applied it and when come
from the newest ``apply`` audit event of the rollout (the row's own times if there is
none); its reason says it was recorded by this migration. Self-contained like 0001: the
hash is spelled out here as ``controller.plan_history.plan_hash`` computes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006_plan_revisions"
down_revision: str | Sequence[str] | None = "0003_gate_details"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MIGRATED_REASON = "the plan in force when plan history began (migration 0006)"


def upgrade() -> None:
    revisions = op.create_table(
        "plan_revisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("rollout", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("plan_hash", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rollout", "revision", name="uq_plan_revisions_rollout"),
    )
    assert revisions is not None
    op.bulk_insert(revisions, list(_current_plans()))


def _current_plans() -> Any:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT name, plan_source, plan, created_at, updated_at FROM rollouts")
    ).all()
    for name, source, plan, created_at, updated_at in rows:
        data = json.loads(plan) if isinstance(plan, str) else plan
        applied = bind.execute(
            sa.text(
                "SELECT actor, at FROM audit_events WHERE rollout = :name AND action = 'apply' "
                "ORDER BY id DESC LIMIT 1"
            ),
            {"name": name},
        ).first()
        steps = len(data.get("steps", []))
        yield {
            "rollout": name,
            "revision": 1,
            "source": source,
            "plan": data,
            "plan_hash": _plan_hash(data),
            "actor": applied[0] if applied else "unknown",
            "reason": MIGRATED_REASON,
            "summary": f"recorded at migration: {steps} step{'' if steps == 1 else 's'}",
            "applied_at": _aware(applied[1] if applied else updated_at or created_at),
        }


def _plan_hash(plan: Any) -> str:
    text = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _aware(value: Any) -> Any:
    # SQLite hands back text or a naive datetime; the column stores UTC either way.
    from datetime import UTC, datetime

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def downgrade() -> None:
    op.drop_table("plan_revisions")
