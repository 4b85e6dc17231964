"""Web UI sessions for tests that send UI requests as a given token without going
through the sign-in form (which refuses roles without the UI, whose refusals the
role matrix checks page by page): a session row written straight into the server's
database, as signing in would write it."""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from controller.auth import hash_token
from controller.storage.store import Store
from controller.storage.tables import UiSessionRow


@functools.cache
def ui_session(database_url: str, token: str) -> str:
    """A session id (the cookie's value) for ``token``, valid for a day."""
    session_id = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    store = Store(database_url)
    try:
        with store.write() as session:
            session.add(
                UiSessionRow(
                    id_hash=hashlib.sha256(session_id.encode()).hexdigest(),
                    token_hash=hash_token(token),
                    created_at=now,
                    expires_at=now + timedelta(days=1),
                )
            )
    finally:
        store.dispose()
    return session_id
