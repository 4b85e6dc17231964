"""Schema migrations with Alembic, configured in code (no ``alembic.ini`` at run time).

What start-up (``prepare``) does with the database it finds:

- empty (none of our tables): upgrade to head, which creates everything;
- at head: nothing;
- behind head: upgrade only when asked (``ROLLOUT_DB_UPGRADE=true``, ``rollout serve
  --upgrade-db``, ``rollout db upgrade``); otherwise ``SchemaBehind``;
- our tables but no ``alembic_version`` (made by ``create_all`` before migrations
  existed): stamped at ``FIRST_REVISION`` when its tables are exactly the ones that
  revision makes, otherwise ``SchemaMismatch``;
- at a revision this version does not know (a newer version migrated it):
  ``SchemaUnknown``.

Each of these runs in one transaction on one connection that first takes a lock
(``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite): replicas that
start together queue up, the first migrates, the others find the work done, and a
failed upgrade leaves nothing half-written.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect, text
from sqlmodel import SQLModel

# Imported for its side effect: the tables register on SQLModel.metadata.
from controller.storage import tables  # noqa: F401
from controller.storage.store import Store

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FIRST_REVISION = "0001_initial"
# pg_advisory_xact_lock key for migrations (any fixed number; this one spells "roll").
LOCK_KEY = 0x726F6C6C


class SchemaError(RuntimeError):
    """The database schema is not one this version can start on."""


class SchemaBehind(SchemaError):
    def __init__(self, current: str, needed: str) -> None:
        super().__init__(
            f"database schema is at {current}, this version needs {needed}: "
            "run `rollout db upgrade`"
        )
        self.current = current
        self.needed = needed


class SchemaUnknown(SchemaError):
    def __init__(self, current: str, needed: str) -> None:
        super().__init__(
            f"database schema is at {current}, a revision this version does not know "
            f"(it needs {needed}): a newer version of rollout-controller migrated it"
        )
        self.current = current


class SchemaMismatch(SchemaError):
    """Our tables without Alembic's bookkeeping, and not the ones FIRST_REVISION makes."""


@dataclass(frozen=True)
class Outcome:
    before: str | None  # None: the database was empty
    after: str | None
    stamped: bool = False  # a database from before migrations was adopted at FIRST_REVISION

    def describe(self) -> str:
        adopted = f"adopted the existing tables as {FIRST_REVISION}; " if self.stamped else ""
        if self.before == self.after:
            return f"{adopted}database schema already at {self.after} (head)"
        return f"{adopted}database schema upgraded from {self.before or 'empty'} to {self.after}"


@dataclass(frozen=True)
class Status:
    """What ``check`` found, changing nothing."""

    current: str | None
    head: str
    # legacy: tables from before migrations, which start-up would adopt; mismatch: ones
    # it would refuse; unknown: a revision a newer version wrote.
    state: Literal["at_head", "behind", "empty", "legacy", "mismatch", "unknown"]
    message: str

    @property
    def at_head(self) -> bool:
        return self.state == "at_head"


# -- configuration ----------------------------------------------------------------


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    # ConfigParser interpolates %: escape it in a path.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    # The revision id is the file name: versions/0002_add_x.py holds revision 0002_add_x.
    config.set_main_option("file_template", "%%(rev)s")
    config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this version knows (one head: branches are a mistake here)."""
    revision = _scripts().get_current_head()
    if revision is None:
        raise SchemaError(f"no migrations found in {MIGRATIONS_DIR}")
    return revision


@contextmanager
def _store(target: Store | str) -> Iterator[Store]:
    if isinstance(target, Store):
        yield target
        return
    store = Store(target)
    try:
        yield store
    finally:
        store.dispose()


@contextmanager
def _locked(store: Store) -> Iterator[Connection]:
    """One write transaction holding the migration lock; commits when the block ends."""
    with store.write_connection() as conn:
        if conn.dialect.name == "postgresql":
            # Held until commit: a second replica waits here, then sees the new revision.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        yield conn


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _our_tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) & set(SQLModel.metadata.tables)


def _is_known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


# -- databases made by create_all before migrations existed ---------------------------


def _columns(conn: Connection, names: set[str]) -> dict[str, set[str]]:
    inspector = inspect(conn)
    return {name: {c["name"] for c in inspector.get_columns(name)} for name in names}


@cache
def _first_revision_columns() -> dict[str, set[str]]:
    """Tables and columns FIRST_REVISION makes, read back from a scratch in-memory
    database: still right after later revisions change the models."""
    scratch = Store("sqlite://")
    try:
        with _locked(scratch) as conn:
            command.upgrade(_config(conn), FIRST_REVISION)
            return _columns(conn, set(inspect(conn).get_table_names()) - {"alembic_version"})
    finally:
        scratch.dispose()


def _legacy_problems(conn: Connection) -> list[str]:
    expected = _first_revision_columns()
    found = _columns(conn, _our_tables(conn))
    problems = [f"table {t} missing" for t in sorted(set(expected) - set(found))]
    problems += [f"table {t} not in {FIRST_REVISION}" for t in sorted(set(found) - set(expected))]
    for table in sorted(set(expected) & set(found)):
        for column in sorted(expected[table] - found[table]):
            problems.append(f"column {table}.{column} missing")
        for column in sorted(found[table] - expected[table]):
            problems.append(f"column {table}.{column} not in {FIRST_REVISION}")
    return problems


def _mismatch(problems: list[str]) -> SchemaMismatch:
    return SchemaMismatch(
        "the database has rollout tables but no alembic_version, and they are not the "
        f"tables of {FIRST_REVISION}, so it cannot be adopted: " + "; ".join(problems)
    )


# -- the operations ---------------------------------------------------------------


def _migrate(conn: Connection, *, upgrade_behind: bool, to: str = "head") -> Outcome:
    needed = head() if to == "head" else to
    before = _current(conn)
    revision, stamped = before, False
    if before is None and _our_tables(conn):
        problems = _legacy_problems(conn)
        if problems:
            raise _mismatch(problems)
        command.stamp(_config(conn), FIRST_REVISION)
        revision, stamped = FIRST_REVISION, True
    if revision is not None and revision != needed:
        if not _is_known(revision):
            raise SchemaUnknown(revision, needed)
        if not upgrade_behind:
            raise SchemaBehind(revision, needed)
    if revision != needed:
        command.upgrade(_config(conn), needed)
    outcome = Outcome(before, _current(conn), stamped)
    if outcome.before != outcome.after:
        log.info("%s", outcome.describe())
    return outcome


def prepare(target: Store | str, *, upgrade: bool) -> Outcome:
    """At start-up: create an empty database, adopt a pre-migration one, and upgrade one
    behind head only when ``upgrade`` is true (see the module docstring)."""
    with _store(target) as store, _locked(store) as conn:
        return _migrate(conn, upgrade_behind=upgrade)


def upgrade(target: Store | str, revision: str = "head") -> Outcome:
    """Bring the database to ``revision`` (default head) from whatever revision it is at
    (``rollout db upgrade``)."""
    with _store(target) as store, _locked(store) as conn:
        return _migrate(conn, upgrade_behind=True, to=revision)


def downgrade(target: Store | str, revision: str) -> Outcome:
    """Back to ``revision`` (``base``: drop every table). For tests and emergencies."""
    with _store(target) as store, _locked(store) as conn:
        before = _current(conn)
        command.downgrade(_config(conn), revision)
        return Outcome(before, _current(conn))


def current(target: Store | str) -> str | None:
    """The database's revision; None when it has no alembic_version row."""
    with _store(target) as store, store.engine.connect() as conn:
        return _current(conn)


def check(target: Store | str) -> Status:
    """Where the database stands against this version's head, changing nothing."""
    needed = head()
    with _store(target) as store, store.engine.connect() as conn:
        revision = _current(conn)
        if revision == needed:
            return Status(revision, needed, "at_head", f"database schema at {needed} (head)")
        if revision is None and not _our_tables(conn):
            return Status(None, needed, "empty", f"database is empty, this version needs {needed}")
        if revision is None:
            problems = _legacy_problems(conn)
            if problems:
                return Status(None, needed, "mismatch", str(_mismatch(problems)))
            return Status(
                None,
                needed,
                "legacy",
                f"database has the tables of {FIRST_REVISION} without alembic_version; "
                "start-up or `rollout db upgrade` adopts them"
                + ("" if needed == FIRST_REVISION else f" and upgrades to {needed}"),
            )
        if not _is_known(revision):
            return Status(revision, needed, "unknown", str(SchemaUnknown(revision, needed)))
        return Status(revision, needed, "behind", str(SchemaBehind(revision, needed)))


def new_revision(message: str) -> Path:
    """Write the next migration from the difference between the table models and head
    (autogenerate against a scratch SQLite database). Read and edit what it writes."""
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "change"
    number = int(head().split("_", 1)[0]) + 1
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Store(f"sqlite:///{Path(tmp) / 'autogenerate.db'}")
        try:
            with _locked(scratch) as conn:
                command.upgrade(_config(conn), "head")
                written = command.revision(
                    _config(conn), message, autogenerate=True, rev_id=f"{number:04d}_{slug}"
                )
        finally:
            scratch.dispose()
    scripts = written if isinstance(written, list) else [written]
    return Path(next(s.path for s in scripts if isinstance(s, Script)))
