"""Leases: at most one replica acts on a rollout at a time. The database is the
coordination point; a lease is a row taken or renewed in a write transaction.

Expiry is compared in SQL against the database's clock on PostgreSQL (``now()``), so
a replica whose clock runs ahead cannot see every other replica's lease as expired.
On SQLite (one host) the process clock is the only one there is.

A lease is short (``ttl``, 15 s by default) and the scheduler renews the leases it
holds every few seconds (``renew``), so after a crash another replica takes a rollout
over within ``max(ttl, interval)``; a clean shutdown releases them at once.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, insert, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from controller.storage.store import Store
from controller.storage.tables import LeaseRow

LEASE_TTL = timedelta(seconds=15)


class Leases:
    def __init__(self, store: Store, holder: str, ttl: timedelta = LEASE_TTL) -> None:
        self._store = store
        self.holder = holder
        self.ttl = ttl

    def acquire(self, name: str) -> bool:
        """Take or renew the lease on ``name``; False while another replica holds it."""
        try:
            with self._store.write() as session:
                now = self._store.now_expression()
                expires = self._store.now_expression(plus=self.ttl)
                taken = session.execute(
                    update(LeaseRow)
                    .where(
                        col(LeaseRow.name) == name,
                        or_(col(LeaseRow.holder) == self.holder, col(LeaseRow.expires_at) <= now),
                    )
                    .values(holder=self.holder, expires_at=expires)
                    .execution_options(synchronize_session=False)
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    return True
                if session.get(LeaseRow, name) is not None:
                    return False
                session.execute(
                    insert(LeaseRow).values(name=name, holder=self.holder, expires_at=expires)
                )
                return True
        except IntegrityError:
            # Another replica inserted the first lease row at the same moment.
            return False

    def renew(self) -> int:
        """Extend every lease this replica holds by ``ttl``; how many there were."""
        with self._store.write() as session:
            result = session.execute(
                update(LeaseRow)
                .where(col(LeaseRow.holder) == self.holder)
                .values(expires_at=self._store.now_expression(plus=self.ttl))
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def release(self, name: str) -> None:
        with self._store.write() as session:
            session.execute(
                delete(LeaseRow).where(
                    col(LeaseRow.name) == name, col(LeaseRow.holder) == self.holder
                )
            )

    def release_all(self) -> int:
        """On a clean shutdown: let other replicas take over without waiting for expiry."""
        with self._store.write() as session:
            result = session.execute(delete(LeaseRow).where(col(LeaseRow.holder) == self.holder))
            return int(result.rowcount)  # type: ignore[attr-defined]

    def holder_of(self, name: str) -> str | None:
        with self._store.read() as session:
            return session.execute(
                select(LeaseRow.holder).where(
                    col(LeaseRow.name) == name,
                    col(LeaseRow.expires_at) > self._store.now_expression(),
                )
            ).scalar_one_or_none()
