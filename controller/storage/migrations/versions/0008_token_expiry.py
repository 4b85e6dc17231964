"""Tokens get an optional expiry, a last-used time and names unique among live tokens.

Revision ID: 0008_token_expiry
Revises: 0006_plan_revisions
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_token_expiry"
down_revision: str | Sequence[str] | None = "0006_plan_revisions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME_LENGTH = 128


def upgrade() -> None:
    # Nullable: existing tokens never expire, and have not been seen in use yet.
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    _rename_duplicate_live_names()
    op.create_index(
        "ux_tokens_live_name",
        "tokens",
        ["name"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )


def _rename_duplicate_live_names() -> None:
    """Before this revision names could repeat; the unique index would refuse such a
    database. The oldest live token keeps its name, the others get ``NAME-ID`` (ids are
    unique), so every token keeps working and a person can still tell them apart."""
    tokens = sa.table(
        "tokens",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("created_at", sa.DateTime),
        sa.column("revoked_at", sa.DateTime),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(tokens.c.id, tokens.c.name)
        .where(tokens.c.revoked_at.is_(None))
        .order_by(tokens.c.name, tokens.c.created_at, tokens.c.id)
    ).all()
    seen: set[str] = set()
    for token_id, name in rows:
        if name in seen:
            suffix = f"-{token_id}"
            bind.execute(
                sa.update(tokens)
                .where(tokens.c.id == token_id)
                .values(name=name[: NAME_LENGTH - len(suffix)] + suffix)
            )
        seen.add(name)


def downgrade() -> None:
    op.drop_index("ux_tokens_live_name", table_name="tokens")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
