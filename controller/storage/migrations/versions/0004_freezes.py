"""Freezes: a stop on advances in a scope until a time (docs/freezes.md). Self-contained,
as 0001 explains: it does not import the table models.

Revision ID: 0004_freezes
Revises: 0003_gate_details
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_freezes"
down_revision: str | Sequence[str] | None = "0003_gate_details"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "freezes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=128), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
    )
    op.create_index("ix_freezes_ended_until", "freezes", ["ended_at", "until"])


def downgrade() -> None:
    op.drop_index("ix_freezes_ended_until", table_name="freezes")
    op.drop_table("freezes")
