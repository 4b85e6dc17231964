"""Gate evaluations keep a compare gate's counts, interval and verdict (``details``).

Revision ID: 0003_gate_details
Revises: 0002_ui_sessions
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_gate_details"
down_revision: str | Sequence[str] | None = "0002_ui_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: existing rows are threshold readings, which have no details.
    # batch_alter_table: SQLite alters tables by copying them, PostgreSQL in place.
    with op.batch_alter_table("gate_evaluations") as batch:
        batch.add_column(sa.Column("details", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gate_evaluations") as batch:
        batch.drop_column("details")
