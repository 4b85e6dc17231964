"""The revision poll that carries changes between replicas, on SQLite and PostgreSQL:
a second ``Store`` on the same database plays the other replica."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from controller.auth import Role, TokenRegistry
from controller.errors import Unauthorized
from controller.flagstore import Flags
from controller.jobs.snapshot_refresh import SnapshotRefresher
from controller.snapshots import SnapshotHolder
from controller.storage.store import Store

NOW = datetime(2025, 1, 1, tzinfo=UTC)
FLAG = {"type": "boolean", "variants": {"off": False, "on": True}, "default_variant": "off"}


@pytest.fixture
def other(store: Store) -> Iterator[Store]:
    """Another replica's connection pool on the same database."""
    s = Store(store.url)
    try:
        yield s
    finally:
        s.dispose()


def local(store: Store) -> tuple[SnapshotHolder, TokenRegistry, SnapshotRefresher]:
    holder = SnapshotHolder(store)
    tokens = TokenRegistry(store, None)
    tokens.reload()
    holder.refresh()
    return holder, tokens, SnapshotRefresher(holder, tokens, interval=0.05)


def test_a_change_through_another_replica_is_loaded_by_the_next_poll(
    store: Store, other: Store
) -> None:
    holder, _, refresher = local(store)
    refresher.poll()  # the first poll loads whatever is there
    assert refresher.poll() is False  # nothing moved: one read, no reload

    Flags(other, lambda: None).put("far", FLAG, actor="b", now=NOW, expected_version=None)
    assert "far" not in holder.current.flags
    assert refresher.poll() is True
    assert holder.current.flags["far"].version == 1
    assert refresher.poll() is False


def test_a_token_revoked_elsewhere_is_refused_even_after_a_local_change(
    store: Store, other: Store
) -> None:
    holder, tokens, refresher = local(store)
    refresher.poll()
    elsewhere = TokenRegistry(other, None)
    row, secret = elsewhere.create(name="ci", role=Role.SDK, created_by="b", now=NOW)
    refresher.poll()
    assert tokens.authenticate(f"Bearer {secret}").name == "ci"

    elsewhere.revoke(row.id, actor="b", now=NOW)

    # A local change loads the snapshot past the revocation's revision before the poll
    # runs; the poll must still reload the tokens.
    def refresh_here() -> None:
        holder.refresh()

    Flags(store, refresh_here).put("near", FLAG, actor="a", now=NOW, expected_version=None)
    assert refresher.poll() is True
    with pytest.raises(Unauthorized):
        tokens.authenticate(f"Bearer {secret}")


def test_an_outage_keeps_the_snapshot_and_is_logged_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    Flags(store, lambda: None).put("kept", FLAG, actor="a", now=NOW, expected_version=None)
    holder, _, refresher = local(store)
    refresher.poll()
    served = holder.current
    age_before = holder.age_seconds()
    assert age_before is not None

    dead = Store("postgresql://postgres@127.0.0.1:1/none")  # nothing listens there
    holder._store = dead
    try:
        with caplog.at_level(logging.WARNING, logger="controller.jobs.snapshot_refresh"):
            for _ in range(5):
                assert refresher.poll() is False
            time.sleep(0.05)
            assert holder.current is served
            assert refresher.last_error is not None
            assert (holder.age_seconds() or 0) > age_before
            holder._store = store
            refresher.poll()
            assert refresher.last_error is None
    finally:
        holder._store = store
        dead.dispose()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("refresh failed" in m for m in messages) == 1, messages
    assert sum("works again" in m for m in messages) == 1, messages
    assert (holder.age_seconds() or 1) < 0.05
