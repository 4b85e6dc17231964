"""Token expiry, unique names and the last-used time, on SQLite and PostgreSQL, with a
clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from controller.auth import Role, TokenRegistry
from controller.errors import AlreadyExists, Unauthorized
from controller.storage import migrate
from controller.storage.store import Store
from controller.storage.tables import TokenRow
from controller.ui_sessions import UiSessions
from tests.databases import fresh_database

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **span: float) -> None:
        self.now += timedelta(**span)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(store: Store, clock: Clock) -> TokenRegistry:
    return TokenRegistry(store, None, clock=clock)


def stored(store: Store, token_id: str) -> TokenRow:
    with store.read() as session:
        row = session.get(TokenRow, token_id)
        assert row is not None
        return row


def test_a_token_is_refused_once_it_expires(registry: TokenRegistry, clock: Clock) -> None:
    info, secret = registry.create(
        name="ci", role=Role.VIEWER, created_by="t", now=clock(), expires_in=timedelta(hours=1)
    )
    assert info.expires_at == T0 + timedelta(hours=1)
    assert not info.expired
    registry.reload()
    clock.advance(minutes=59, seconds=59)
    assert registry.authenticate(f"Bearer {secret}").name == "ci"
    clock.advance(seconds=1)
    with pytest.raises(Unauthorized, match=r"expired at 2026-12-01T13:00:00"):
        registry.authenticate(f"Bearer {secret}")
    [listed] = registry.list()
    assert listed.expired and listed.view()["expired"] is True
    assert listed.view()["expires_at"] == "2026-12-01T13:00:00+00:00"


def test_a_principal_cached_before_expiry_is_refused_after(
    registry: TokenRegistry, clock: Clock
) -> None:
    # The evaluation fast path caches principals per Authorization value and asks
    # admit() on every hit: a cache must not outlive the expiry.
    _, secret = registry.create(
        name="sdk", role=Role.SDK, created_by="t", now=clock(), expires_in=timedelta(minutes=5)
    )
    registry.reload()
    cached = registry.authenticate(f"Bearer {secret}")
    clock.advance(minutes=5)
    with pytest.raises(Unauthorized, match="expired"):
        registry.admit(cached)


def test_a_token_without_expiry_never_expires(registry: TokenRegistry, clock: Clock) -> None:
    info, secret = registry.create(name="forever", role=Role.SDK, created_by="t", now=clock())
    assert info.expires_at is None
    registry.reload()
    clock.advance(days=10_000)
    assert registry.authenticate(f"Bearer {secret}").token_id == info.id


def test_an_expired_token_ends_its_ui_sessions(
    store: Store, registry: TokenRegistry, clock: Clock
) -> None:
    info, _ = registry.create(
        name="person", role=Role.OPERATOR, created_by="t", now=clock(), expires_in=timedelta(1)
    )
    sessions = UiSessions(store)
    session_id = sessions.open(stored(store, info.id).token_hash, clock(), timedelta(days=7))
    assert sessions.owner(session_id, clock(), admin_hash=None) is not None
    clock.advance(days=1)
    assert sessions.owner(session_id, clock(), admin_hash=None) is None


def test_a_second_live_token_with_the_same_name_is_refused(
    store: Store, registry: TokenRegistry, clock: Clock
) -> None:
    first, _ = registry.create(name="deploy-bot", role=Role.OPERATOR, created_by="t", now=T0)
    with pytest.raises(AlreadyExists) as refused:
        registry.create(name="deploy-bot", role=Role.ADMIN, created_by="t", now=T0)
    assert refused.value.problems == [
        {"field": "name", "message": f"taken by live token {first.id}"}
    ]
    assert first.id in refused.value.message
    assert [t.role for t in registry.list()] == ["operator"]  # nothing half-written
    # Revoking frees the name for the replacement.
    registry.revoke(first.id, actor="t", now=T0)
    second, _ = registry.create(name="deploy-bot", role=Role.OPERATOR, created_by="t", now=T0)
    assert second.id != first.id


def test_the_database_itself_refuses_a_duplicate_live_name(store: Store) -> None:
    # What stops two creates racing past the check: the partial unique index.
    def row(token_id: str, revoked: datetime | None) -> TokenRow:
        return TokenRow(
            id=token_id,
            name="same",
            role="viewer",
            token_hash=token_id * 8,
            created_by="t",
            created_at=T0,
            revoked_at=revoked,
        )

    with store.write() as session:
        session.add(row("aaaaaaaa", T0))
        session.add(row("bbbbbbbb", None))
    with pytest.raises(IntegrityError), store.write() as session:
        session.add(row("cccccccc", None))


def test_last_used_is_written_at_most_once_a_minute_per_token(
    store: Store, registry: TokenRegistry, clock: Clock
) -> None:
    info, secret = registry.create(name="svc", role=Role.SDK, created_by="t", now=T0)
    registry.reload()
    assert registry.list()[0].last_used_at is None
    assert registry.save_last_used() == 0  # nothing used: no write

    registry.authenticate(f"Bearer {secret}")
    assert registry.save_last_used() == 1  # the first use is written at once
    assert stored(store, info.id).last_used_at == T0

    for _ in range(100):
        clock.advance(seconds=0.5)
        registry.authenticate(f"Bearer {secret}")
        assert registry.save_last_used() == 0  # used, but written less than a minute ago
    assert stored(store, info.id).last_used_at == T0
    # This replica shows its own newer use at once.
    assert registry.list()[0].last_used_at == T0 + timedelta(seconds=50)

    clock.advance(seconds=10)  # a minute since the write; the token is idle now
    assert registry.save_last_used() == 1
    assert stored(store, info.id).last_used_at == T0 + timedelta(seconds=50)
    clock.advance(minutes=5)
    assert registry.save_last_used() == 0  # idle: nothing new to write
    # Another replica reads what was stored.
    other = TokenRegistry(store, None, clock=clock)
    assert other.list()[0].last_used_at == T0 + timedelta(seconds=50)


def test_last_used_never_goes_backwards(store: Store, clock: Clock) -> None:
    a = TokenRegistry(store, None, clock=clock)
    b = TokenRegistry(store, None, clock=clock)
    info, secret = a.create(name="shared", role=Role.SDK, created_by="t", now=T0)
    a.reload()
    b.reload()
    b.authenticate(f"Bearer {secret}")  # b sees a use at T0 ...
    clock.advance(seconds=30)
    a.authenticate(f"Bearer {secret}")  # ... a a later one, and writes it first
    assert a.save_last_used() == 1
    assert b.save_last_used() == 1
    assert stored(store, info.id).last_used_at == T0 + timedelta(seconds=30)


def test_the_bootstrap_admin_is_not_tracked(store: Store, clock: Clock) -> None:
    registry = TokenRegistry(store, "bootstrap-secret-0123456789", clock=clock)
    registry.authenticate("Bearer bootstrap-secret-0123456789")
    assert registry.save_last_used() == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_migration_renames_duplicate_live_names(kind: str, tmp_path: Path) -> None:
    with fresh_database(kind, tmp_path) as url:
        migrate.upgrade(url, "0003_gate_details")
        store = Store(url)
        try:
            with store.engine.begin() as conn:
                for token_id, revoked in (("t1", None), ("t2", None), ("t3", T0), ("t4", None)):
                    conn.exec_driver_sql(
                        "INSERT INTO tokens (id, name, role, token_hash, created_by, "
                        "created_at, revoked_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                        if kind == "postgres"
                        else "INSERT INTO tokens (id, name, role, token_hash, created_by, "
                        "created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (token_id, "dup", "viewer", token_id, "t", T0, revoked),
                    )
            migrate.upgrade(url)
            with store.read() as session:
                names = dict(session.execute(select(TokenRow.id, TokenRow.name)).all())
        finally:
            store.dispose()
    # The oldest live token keeps its name; a revoked one is left as it was.
    assert names == {"t1": "dup", "t2": "dup-t2", "t3": "dup", "t4": "dup-t4"}
