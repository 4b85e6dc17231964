"""Leases: at most one replica acts on a rollout at a time. The database is the
coordination point; a lease is a row taken or renewed in a write transaction
(``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select

from controller.store import Store
from controller.tables import LeaseRow


class Leases:
    def __init__(self, store: Store, holder: str) -> None:
        self._store = store
        self.holder = holder

    def acquire(self, name: str, now: datetime, ttl: timedelta) -> bool:
        """Take or renew the lease on ``name``; False while another replica holds it."""
        try:
            with self._store.write() as session:
                row = session.execute(
                    select(LeaseRow).where(col(LeaseRow.name) == name).with_for_update()
                ).scalar_one_or_none()
                if row is None:
                    session.add(LeaseRow(name=name, holder=self.holder, expires_at=now + ttl))
                    return True
                if row.holder != self.holder and row.expires_at > now:
                    return False
                row.holder = self.holder
                row.expires_at = now + ttl
                return True
        except IntegrityError:
            # Another replica inserted the first lease row at the same moment.
            return False

    def release(self, name: str) -> None:
        with self._store.write() as session:
            session.execute(
                delete(LeaseRow).where(
                    col(LeaseRow.name) == name, col(LeaseRow.holder) == self.holder
                )
            )

    def holder_of(self, name: str, now: datetime) -> str | None:
        with self._store.read() as session:
            row = session.get(LeaseRow, name)
            if row is None or row.expires_at <= now:
                return None
            return row.holder
