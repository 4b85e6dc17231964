"""Alembic's environment, run by ``controller.storage.migrate`` (``rollout db ...`` and start-up).

The caller passes a connection that is already inside its transaction (holding the
migration lock on PostgreSQL, the write lock on SQLite), so a whole upgrade commits or
rolls back as one and two replicas never run it twice.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

# Imported for its side effect: the tables register on SQLModel.metadata (autogenerate).
from controller.storage import tables  # noqa: F401

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations through controller.storage.migrate (`rollout db upgrade`)")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite cannot ALTER most things: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    # Our SQLite engine issues BEGIN itself, so SQLite DDL is transactional here too.
    transactional_ddl=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
