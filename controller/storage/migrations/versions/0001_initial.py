"""The initial schema: the tables of controller/storage/tables.py when migrations were introduced.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-22

Self-contained on purpose: a migration must not import controller.storage.tables, which keeps
changing after the migration is written. Types are spelled as the tables render them
(sqlmodel's AutoString is a VARCHAR, UTCDateTime a timezone-aware DATETIME).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _serial_id() -> sa.Column[int]:
    # BIGINT on PostgreSQL; SQLite autoincrements only an INTEGER PRIMARY KEY.
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False)


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "flags",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("managed_by", sa.String(length=64), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "rollouts",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("flag_key", sa.String(length=128), nullable=False),
        sa.Column("plan_source", sa.Text(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        _ts("step_started_at", nullable=True),
        _ts("observe_until", nullable=True),
        _ts("started_at", nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("bookkeeping", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("row_version", sa.Integer(), nullable=False),
        _ts("checked_at", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("flag_key"),
    )
    op.create_table(
        "audit_events",
        _serial_id(),
        _ts("at"),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("rollout", sa.String(length=64), nullable=True),
        sa.Column("flag", sa.String(length=128), nullable=True),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=True),
        sa.Column("from_step", sa.Integer(), nullable=True),
        sa.Column("to_step", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_index("ix_audit_events_flag", "audit_events", ["flag"])
    op.create_index("ix_audit_events_rollout", "audit_events", ["rollout"])
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    revision_table = op.create_table(
        "revision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # The one row every change bumps (controller.snapshots reads it).
    op.bulk_insert(revision_table, [{"id": 1, "value": 0}])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "gate_evaluations",
        _serial_id(),
        sa.Column("rollout", sa.String(length=64), nullable=False),
        sa.Column("gate", sa.String(length=128), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("baseline", sa.Float(), nullable=True),
        sa.Column("samples", sa.Float(), nullable=True),
        sa.Column("threshold", sa.String(length=32), nullable=True),
        sa.Column("threshold_value", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_gate_evaluations_rollout_gate_at", "gate_evaluations", ["rollout", "gate", "at"]
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("claim", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("content_type", sa.String(length=255), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        _ts("created_at"),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("principal", "key"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])
    op.create_table(
        "webhook_outbox",
        _serial_id(),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        _ts("created_at"),
        sa.Column("webhook", sa.String(length=64), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("rollout", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at"),
        _ts("delivered_at", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        _ts("claimed_until", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("delivery_id"),
    )
    op.create_index("ix_webhook_outbox_status_due", "webhook_outbox", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_outbox_webhook", "webhook_outbox", ["webhook"])


def downgrade() -> None:
    # Everything: the tables hold no data older than this revision.
    for table in (
        "webhook_outbox",
        "idempotency_keys",
        "gate_evaluations",
        "leases",
        "revision",
        "tokens",
        "audit_events",
        "rollouts",
        "flags",
    ):
        op.drop_table(table)
