"""The database: engine set-up and one transaction per use case.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so two processes on one file queue for the write lock instead
of failing half-way when a read transaction tries to upgrade.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, func, literal, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from controller.storage.tables import UTCDateTime

if TYPE_CHECKING:
    from controller.storage.migrate import Outcome

_IMMEDIATE = "rollout_immediate"


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def normalize_url(url: str) -> str:
    """``postgresql://`` means the psycopg 3 driver here (the one we install)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if _is_sqlite(url):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Store:
    """Owns the engine. ``write()`` and ``read()`` each give one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._write_engine = self.engine.execution_options(**{_IMMEDIATE: True})

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def create_schema(self) -> Outcome:
        """Bring the schema to the newest migration, creating it in an empty database."""
        # Imported here: controller.storage.migrate builds Stores of its own, so it imports this.
        from controller.storage import migrate

        return migrate.upgrade(self)

    def prepare_schema(self, *, upgrade: bool) -> Outcome:
        """Start-up: see ``controller.storage.migrate.prepare``."""
        from controller.storage import migrate

        return migrate.prepare(self, upgrade=upgrade)

    @contextmanager
    def write(self) -> Iterator[Session]:
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A Core connection in one write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        with self._write_engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def now(self) -> datetime:
        """The time every replica agrees on: PostgreSQL's ``now()``, so a replica whose
        clock is off cannot cut a hold short; on SQLite (one host) the process clock."""
        if self.dialect != "postgresql":
            return datetime.now(UTC)
        with self.engine.connect() as conn:
            moment = conn.execute(select(func.now())).scalar_one()
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    def now_expression(self, plus: timedelta = timedelta(0)) -> ColumnElement[datetime]:
        """``now() + plus`` inside a statement, evaluated by PostgreSQL; on SQLite the
        process clock, bound as a parameter (SQLite has no datetime arithmetic on it)."""
        if self.dialect == "postgresql":
            return func.now() + plus if plus else func.now()
        return literal(datetime.now(UTC) + plus, UTCDateTime())

    def ping(self) -> None:
        """Raise if the database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
