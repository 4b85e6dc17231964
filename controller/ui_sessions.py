"""Web UI sessions in the database: opened at sign-in, ended at sign-out, looked up on
every UI request (``controller.ui.session`` holds the cookie and CSRF side).

Only the SHA-256 of a session id is stored, with the hash of the token that signed in
and an expiry, so every replica shares the session and a copy of the database opens
none. Looking a session up checks its token again, so a revoked or expired token signs
its sessions out at the next page."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import col, select

from controller.auth import Principal, Role
from controller.storage.store import Store
from controller.storage.tables import TokenRow, UiSessionRow


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class UiSessions:
    def __init__(self, store: Store) -> None:
        self._store = store

    def open(self, token_hash: str, now: datetime, ttl: timedelta) -> str:
        """A new session for the token with this hash; returns the session id."""
        session_id = secrets.token_urlsafe(32)
        with self._store.write() as session:
            # Expired sessions are forgotten here, where sessions are made: no sweeper needed.
            session.execute(delete(UiSessionRow).where(col(UiSessionRow.expires_at) <= now))
            session.add(
                UiSessionRow(
                    id_hash=session_hash(session_id),
                    token_hash=token_hash,
                    created_at=now,
                    expires_at=now + ttl,
                )
            )
        return session_id

    def end(self, session_id: str) -> None:
        with self._store.write() as session:
            session.execute(
                delete(UiSessionRow).where(col(UiSessionRow.id_hash) == session_hash(session_id))
            )

    def owner(self, session_id: str, now: datetime, *, admin_hash: str | None) -> Principal | None:
        """Who holds this unexpired session, if its token is still live; ``admin_hash``
        is the bootstrap admin token's hash, which has no row."""
        with self._store.read() as session:
            row = session.get(UiSessionRow, session_hash(session_id))
            if row is None or row.expires_at <= now:
                return None
            if admin_hash is not None and hmac.compare_digest(admin_hash, row.token_hash):
                return Principal("bootstrap-admin", Role.ADMIN, "bootstrap")
            token = session.execute(
                select(TokenRow).where(
                    col(TokenRow.token_hash) == row.token_hash, col(TokenRow.revoked_at).is_(None)
                )
            ).scalar_one_or_none()
            if token is None or (token.expires_at is not None and token.expires_at <= now):
                return None
            return Principal(token.name, Role(token.role), token.id, token.expires_at)
