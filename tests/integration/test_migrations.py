"""Schema migrations on SQLite and PostgreSQL: creating, re-running, drift between the
table models and the migrations, start-up refusing a database behind this version,
adopting a database made by create_all before migrations existed, and two replicas
upgrading one PostgreSQL database at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlmodel import SQLModel

from controller.storage import migrate
from controller.storage.store import Store
from controller.storage.tables import FlagRow, RevisionRow
from tests.databases import fresh_database
from tests.serving import ADMIN_TOKEN, free_port, stop, wait_healthy

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HEAD = migrate.head()
PROBE = "0002_probe"
# A migration after head, so that a database at today's head is honestly "behind".
PROBE_MIGRATION = f'''
import sqlalchemy as sa
from alembic import op

revision = "{PROBE}"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("migration_probe", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("migration_probe")
'''
# `rollout ...` with controller.storage.migrate reading the scripts from argv[1]: the real CLI and
# server, on a version whose head is PROBE.
LAUNCH_WITH_SCRIPTS = (
    "import sys; from pathlib import Path; import controller.storage.migrate as m; "
    "m.MIGRATIONS_DIR = Path(sys.argv[1]); from controller.cli import main; main(sys.argv[2:])"
)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as database_url:
        yield database_url


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", tmp_path) as database_url:
        yield database_url


@pytest.fixture
def newer_scripts(tmp_path: Path) -> Path:
    """This package's migrations plus PROBE: the scripts of a next version."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / f"{PROBE}.py").write_text(PROBE_MIGRATION, encoding="utf-8")
    return scripts


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store(url)
    try:
        yield s
    finally:
        s.dispose()


def tables(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def version_rows(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def add_flag(store: Store, key: str) -> None:
    with store.write() as s:
        s.add(FlagRow(key=key, definition={}, version=1, created_at=T0, updated_at=T0))


def flag_keys(store: Store) -> set[str]:
    with store.read() as s:
        return set(s.execute(select(FlagRow.key)).scalars())


def drift(store: Store) -> list[object]:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def rollout(*args: str, scripts: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    command = [sys.executable, "-m", "controller", *args]
    if scripts is not None:
        command = [sys.executable, "-c", LAUNCH_WITH_SCRIPTS, str(scripts), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


# -- creating and re-running ---------------------------------------------------------


def test_upgrade_creates_every_table_and_the_revision_row(store: Store) -> None:
    outcome = migrate.upgrade(store)
    assert (outcome.before, outcome.after, outcome.stamped) == (None, HEAD, False)
    assert tables(store) == set(SQLModel.metadata.tables) | {"alembic_version"}
    with store.read() as s:
        row = s.get(RevisionRow, 1)
    assert row is not None and row.value == 0
    assert migrate.current(store) == HEAD
    assert migrate.check(store).at_head


def test_upgrade_again_changes_nothing(store: Store) -> None:
    migrate.upgrade(store)
    add_flag(store, "kept")
    outcome = migrate.upgrade(store)
    store.create_schema()  # what tests and callers use: the same migration
    assert (outcome.before, outcome.after) == (HEAD, HEAD)
    assert outcome.describe() == f"database schema already at {HEAD} (head)"
    assert version_rows(store) == [HEAD]
    assert flag_keys(store) == {"kept"}


def test_models_and_migrations_agree(store: Store) -> None:
    migrate.upgrade(store)
    differences = drift(store)
    assert differences == [], (
        "controller/storage/tables.py and the migrations differ: write a migration with "
        "`rollout db revision -m 'what changed'` (see docs/database.md)\n"
        + "\n".join(map(str, differences))
    )


def test_downgrade_to_base_drops_every_table(store: Store) -> None:
    migrate.upgrade(store)
    outcome = migrate.downgrade(store, "base")
    assert (outcome.before, outcome.after) == (HEAD, None)
    assert tables(store) & set(SQLModel.metadata.tables) == set()
    assert migrate.check(store).state == "empty"
    assert migrate.upgrade(store).after == HEAD  # and back


# -- start-up on a database behind, or ahead of, this version -------------------------


def test_start_up_refuses_a_database_behind_head_unless_told(
    store: Store, newer_scripts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate.upgrade(store)
    add_flag(store, "kept")
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", newer_scripts)

    with pytest.raises(migrate.SchemaBehind) as refused:
        store.prepare_schema(upgrade=False)
    assert str(refused.value) == (
        f"database schema is at {HEAD}, this version needs {PROBE}: run `rollout db upgrade`"
    )
    assert migrate.current(store) == HEAD and "migration_probe" not in tables(store)
    assert migrate.check(store).state == "behind"

    outcome = store.prepare_schema(upgrade=True)
    assert (outcome.before, outcome.after) == (HEAD, PROBE)
    assert "migration_probe" in tables(store)
    assert flag_keys(store) == {"kept"}


def test_start_up_refuses_a_database_a_newer_version_migrated(
    store: Store, newer_scripts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as newer:
        newer.setattr(migrate, "MIGRATIONS_DIR", newer_scripts)
        migrate.upgrade(store)
    with pytest.raises(migrate.SchemaUnknown, match=f"database schema is at {PROBE}"):
        store.prepare_schema(upgrade=True)
    assert migrate.check(store).state == "unknown"


@pytest.mark.parametrize("how", ["--upgrade-db", "ROLLOUT_DB_UPGRADE"])
def test_serve_exits_on_a_database_behind_head_and_upgrades_when_asked(
    url: str, newer_scripts: Path, tmp_path: Path, how: str
) -> None:
    migrate.upgrade(url)

    refused = rollout("serve", "--database-url", url, "--port", "0", scripts=newer_scripts)
    assert refused.returncode == 1
    assert (
        f"database schema is at {HEAD}, this version needs {PROBE}: run `rollout db upgrade`"
        in refused.stderr
    )
    assert migrate.current(url) == HEAD

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        ROLLOUT_DATABASE_URL=url,
        ROLLOUT_ADMIN_TOKEN=ADMIN_TOKEN,
        ROLLOUT_PORT=str(port),
        ROLLOUT_SCHEDULER="false",
        ROLLOUT_LOG_LEVEL="warning",
    )
    args = ["serve"]
    if how == "--upgrade-db":
        args.append("--upgrade-db")
    else:
        env["ROLLOUT_DB_UPGRADE"] = "true"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCH_WITH_SCRIPTS, str(newer_scripts), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log)
    finally:
        stop(process)
    assert migrate.current(url) == PROBE


# -- databases made by create_all before migrations ----------------------------------


def make_legacy_database(store: Store) -> None:
    """The first revision's tables without alembic_version: what ``create_all`` made
    before migrations existed (the drift test pins that the two were the same)."""
    migrate.upgrade(store, migrate.FIRST_REVISION)
    with store.write_connection() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    add_flag(store, "from-before")


def test_a_create_all_database_is_adopted_at_the_first_revision(store: Store) -> None:
    make_legacy_database(store)
    assert migrate.check(store).state == "legacy"
    # Adopted at the first revision, then upgraded like any database behind head.
    moved_on = HEAD != migrate.FIRST_REVISION
    if moved_on:
        with pytest.raises(migrate.SchemaBehind):
            store.prepare_schema(upgrade=False)
        assert migrate.current(store) is None  # refused whole: not even stamped
    outcome = store.prepare_schema(upgrade=moved_on)
    assert outcome.after == HEAD
    if not moved_on:
        assert (outcome.before, outcome.stamped) == (None, True)
    assert version_rows(store) == [HEAD]
    assert flag_keys(store) == {"from-before"}
    assert drift(store) == []


def test_todays_create_all_is_not_taken_for_the_first_revision(store: Store) -> None:
    """Only 0001_initial's own tables are adopted without alembic_version: a database
    made by today's create_all (past the first revision) is refused, never stamped."""
    assert HEAD != migrate.FIRST_REVISION
    SQLModel.metadata.create_all(store.engine)
    with pytest.raises(migrate.SchemaMismatch) as refused:
        store.prepare_schema(upgrade=True)
    assert "not in 0001_initial" in str(refused.value)
    assert "alembic_version" not in tables(store)


def test_a_create_all_database_that_differs_is_refused_and_left_alone(store: Store) -> None:
    make_legacy_database(store)
    with store.write_connection() as conn:
        conn.execute(text("ALTER TABLE leases ADD COLUMN note TEXT"))
        conn.execute(text("DROP TABLE tokens"))
    with pytest.raises(migrate.SchemaMismatch) as refused:
        store.prepare_schema(upgrade=True)
    assert "table tokens missing" in str(refused.value)
    assert "column leases.note not in 0001_initial" in str(refused.value)
    assert "alembic_version" not in tables(store)
    assert migrate.check(store).state == "mismatch"


# -- the CLI ---------------------------------------------------------------------------


def test_rollout_db_commands(url: str) -> None:
    before = rollout("db", "check", "--database-url", url)
    assert before.returncode == 1
    assert f"database is empty, this version needs {HEAD}" in before.stderr

    upgraded = rollout("db", "upgrade", "--database-url", url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"database schema upgraded from empty to {HEAD}"

    again = rollout("db", "upgrade", "--database-url", url)
    assert again.stdout.strip() == f"database schema already at {HEAD} (head)"
    assert rollout("db", "current", "--database-url", url).stdout.strip() == f"{HEAD} (head)"
    assert rollout("db", "check", "--database-url", url).returncode == 0


def test_rollout_db_check_says_behind_and_upgrade_moves_it(url: str, newer_scripts: Path) -> None:
    migrate.upgrade(url)
    behind = rollout("db", "check", "--database-url", url, scripts=newer_scripts)
    assert behind.returncode == 1
    assert f"database schema is at {HEAD}, this version needs {PROBE}" in behind.stderr
    upgraded = rollout("db", "upgrade", "--database-url", url, scripts=newer_scripts)
    assert upgraded.stdout.strip() == f"database schema upgraded from {HEAD} to {PROBE}"


def test_rollout_db_reports_an_unreachable_database() -> None:
    result = rollout("db", "check", "--database-url", "postgresql://u:secret@127.0.0.1:1/none")
    assert result.returncode == 3
    assert "cannot reach the database at postgresql://u:***@127.0.0.1:1/none" in (result.stderr)
    assert "secret" not in result.stderr


def test_new_revision_writes_the_next_migration(
    newer_scripts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", newer_scripts)
    path = migrate.new_revision("Add a Note column!")
    assert path == newer_scripts / "versions" / "0003_add_a_note_column.py"
    source = path.read_text(encoding="utf-8")
    assert "revision: str = '0003_add_a_note_column'" in source
    assert f"down_revision: str | Sequence[str] | None = '{PROBE}'" in source
    # The models are at head apart from the probe table, which autogenerate drops.
    assert "op.drop_table('migration_probe')" in source
    assert migrate.head() == "0003_add_a_note_column"


# -- two replicas at once ------------------------------------------------------------


def waiting_for_lock(admin: psycopg.Connection[tuple[object, ...]], database: str) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND l.objid = %s AND NOT l.granted AND d.datname = %s",
        (migrate.LOCK_KEY, database),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_two_replicas_upgrading_at_once_migrate_once(postgres_url: str) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    command = [sys.executable, "-m", "controller", "db", "upgrade", "--database-url", postgres_url]
    with psycopg.connect(postgres_url, autocommit=True) as holder:
        # Hold the migration lock so both upgrades are certain to overlap.
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))
        replicas = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
        ]
        try:
            deadline = time.monotonic() + 30
            while waiting_for_lock(holder, database) < 2:
                assert time.monotonic() < deadline, "the upgrades never waited for the lock"
                assert all(p.poll() is None for p in replicas), "an upgrade did not wait"
                time.sleep(0.05)
            holder.execute("SELECT pg_advisory_unlock(%s)", (migrate.LOCK_KEY,))
            outputs = sorted(p.communicate(timeout=60)[0].strip() for p in replicas)
        finally:
            for p in replicas:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    assert [p.returncode for p in replicas] == [0, 0]
    assert outputs == [
        f"database schema already at {HEAD} (head)",
        f"database schema upgraded from empty to {HEAD}",
    ]
    store = Store(postgres_url)
    try:
        assert version_rows(store) == [HEAD]
    finally:
        store.dispose()
