"""Bearer tokens and roles. Fail closed: no token, an unknown token or a revoked one
is refused, and each route names the permission it needs.

Tokens are stored as SHA-256 hashes. The registry keeps the hashes of live tokens in
memory so that evaluation, which every service calls per request, never waits on
the database and keeps working while the database is down.

A token may expire (``expires_at``); an expired one is refused with 401 saying so. A
name belongs to one live token (revoking frees it). When a token was last used is
noted in memory on every request, a dictionary write, and written to the database by
``TokenRegistry.save_last_used`` (the snapshot refresher's thread calls it after each
poll) at most once per ``LAST_USED_EVERY`` per token, so the stored time lags the
truth by at most that much and a busy SDK token costs one UPDATE a minute, not one a
request. The token list shows the newer of the stored time and this replica's own.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import col, select

from controller.errors import AlreadyExists, Forbidden, NotFound, Unauthorized
from controller.storage.store import Store
from controller.storage.tables import TokenRow
from controller.unit_of_work import unit_of_work

log = logging.getLogger(__name__)

LAST_USED_EVERY = timedelta(minutes=1)
# Far enough for any real rotation policy, near enough that now + it is a datetime.
MAX_EXPIRY = timedelta(days=3650)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    SDK = "sdk"
    # Alertmanager (or any alert source): may post alerts and nothing else, not even read.
    ALERTS = "alerts"


class Permission(enum.StrEnum):
    EVALUATE = "evaluate"  # flag evaluation, OFREP, snapshot
    READ = "read"  # flags, rollouts, audit
    OPERATE = "operate"  # actions, plans, flag changes
    ADMIN = "admin"  # tokens, deletions
    ALERT = "alert"  # post alerts (controller/api/alerts.py)


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.SDK: frozenset({Permission.EVALUATE}),
    Role.VIEWER: frozenset({Permission.EVALUATE, Permission.READ}),
    Role.OPERATOR: frozenset({Permission.EVALUATE, Permission.READ, Permission.OPERATE}),
    Role.ADMIN: frozenset(Permission),
    Role.ALERTS: frozenset({Permission.ALERT}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    token_id: str
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def can(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.role})"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored token as people may see it: never its secret or hash."""

    id: str
    name: str
    role: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None
    expired: bool

    @classmethod
    def of(cls, row: TokenRow, now: datetime, last_used: datetime | None = None) -> TokenInfo:
        """``last_used``: a newer use this replica has noted but not written yet."""
        used = max(filter(None, (row.last_used_at, last_used)), default=None)
        return cls(
            row.id,
            row.name,
            row.role,
            row.created_by,
            row.created_at,
            row.revoked_at,
            row.expires_at,
            used,
            row.expires_at is not None and row.expires_at <= now,
        )

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "revoked_at": _iso(self.revoked_at),
            "expires_at": _iso(self.expires_at),
            "expired": self.expired,
            "last_used_at": _iso(self.last_used_at),
        }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


class UseLog:
    """When each token was last used: noted per request in memory, handed out for
    writing at most once per ``every`` per token. Thread-safe enough without a lock
    for ``note`` (one dictionary store under the GIL); the rest takes the lock."""

    def __init__(self, every: timedelta = LAST_USED_EVERY) -> None:
        self.every = every
        self._seen: dict[str, datetime] = {}
        self._written: dict[str, tuple[datetime, datetime]] = {}  # id: (value, when)
        self._lock = threading.Lock()

    def note(self, token_id: str, now: datetime) -> None:
        self._seen[token_id] = now

    def latest(self, token_id: str) -> datetime | None:
        return self._seen.get(token_id)

    def due(self, now: datetime, *, all_pending: bool = False) -> dict[str, datetime]:
        """The uses to write now: newer than the last written, which was ``every`` ago
        (any time, the first use of a token)."""
        with self._lock:
            due = {}
            for token_id, seen in list(self._seen.items()):
                written = self._written.get(token_id)
                if written is None or (
                    seen > written[0] and (all_pending or now - written[1] >= self.every)
                ):
                    due[token_id] = seen
            return due

    def written(self, uses: dict[str, datetime], now: datetime) -> None:
        with self._lock:
            for token_id, seen in uses.items():
                self._written[token_id] = (seen, now)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return "rt_" + secrets.token_urlsafe(32)


class TokenRegistry:
    """The live tokens, by hash. Reloaded from the database after every change here,
    and by ``controller.jobs.snapshot_refresh`` after changes made through other replicas."""

    def __init__(
        self,
        store: Store,
        bootstrap_admin: str | None,
        *,
        clock: Callable[[], datetime] = utc_now,
        last_used_every: timedelta = LAST_USED_EVERY,
    ) -> None:
        self._store = store
        self.clock = clock
        self.uses = UseLog(last_used_every)
        self._save_failing = False
        self._lock = threading.Lock()
        self._by_hash: dict[str, Principal] = {}
        # Moves on every reload, so a cache of authenticated principals (the evaluation
        # fast path's) can tell that a token may have been revoked since.
        self.generation = 0
        # After a committed token change: serve its revision at once (the composition
        # root points it at the snapshot refresh), or the snapshot's ETag would move
        # later, at the next poll, for no visible reason.
        self.on_change: Callable[[], None] | None = None
        self._bootstrap: dict[str, Principal] = {}
        if bootstrap_admin:
            self._bootstrap[hash_token(bootstrap_admin)] = Principal(
                "bootstrap-admin", Role.ADMIN, "bootstrap"
            )

    def reload(self) -> None:
        with self._store.read() as session:
            rows = session.execute(
                select(TokenRow).where(col(TokenRow.revoked_at).is_(None))
            ).scalars()
            fresh = {
                r.token_hash: Principal(r.name, Role(r.role), r.id, r.expires_at) for r in rows
            }
        with self._lock:
            self._by_hash = fresh
            self.generation += 1

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing bearer token (Authorization: Bearer TOKEN)")
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("malformed Authorization header: expected 'Bearer TOKEN'")
        digest = hash_token(secret.strip())
        # The bootstrap admin token is chosen by a person and may be short: compare in
        # constant time. Database tokens are 256-bit random, found by their digest: a
        # timing difference could reveal at most a digest prefix, which does not help
        # anyone produce a secret that hashes to it.
        bootstrap = next(
            (p for h, p in self._bootstrap.items() if hmac.compare_digest(h, digest)), None
        )
        if bootstrap is not None:
            return bootstrap
        principal = self._by_hash.get(digest)
        if principal is None:
            raise Unauthorized("unknown or revoked token")
        return self.admit(principal)

    def admit(self, principal: Principal) -> Principal:
        """Check a principal found earlier (a cache's) again: refuse it once expired,
        note its use. What every request with a database token costs beyond a lookup."""
        if principal.token_id == "bootstrap":
            return principal
        now = self.clock()
        if principal.expired(now):
            assert principal.expires_at is not None
            raise Unauthorized(
                f"token {principal.token_id} ({principal.name}) expired at "
                f"{principal.expires_at.isoformat(timespec='seconds')}; ask an admin for a new one"
            )
        self.uses.note(principal.token_id, now)
        return principal

    def create(
        self,
        *,
        name: str,
        role: Role,
        created_by: str,
        now: datetime,
        expires_in: timedelta | None = None,
    ) -> tuple[TokenInfo, str]:
        if expires_in is not None and not timedelta(0) < expires_in <= MAX_EXPIRY:
            raise ValueError(f"expires_in must be more than 0 and at most {MAX_EXPIRY}")
        secret = new_secret()
        row = TokenRow(
            id=secrets.token_hex(6),
            name=name,
            role=role.value,
            token_hash=hash_token(secret),
            created_by=created_by,
            created_at=now,
            expires_at=now + expires_in if expires_in is not None else None,
        )
        # The audit event moves the revision: other replicas then reload their tokens.
        try:
            with unit_of_work(self._store, on_change=self.on_change) as uow:
                holder = self._live_named(uow.session, name)
                if holder is not None:
                    raise _name_taken(name, holder)
                uow.session.add(row)
                uow.record(
                    at=now,
                    actor=created_by,
                    action="token.create",
                    reason=f"token {row.id} ({role}) for {name}"
                    + (f", expires {row.expires_at.isoformat()}" if row.expires_at else ""),
                )
                uow.after_commit(self.reload)
                info = TokenInfo.of(row, now)
        except IntegrityError:
            # Two creates of one name at once: the unique index let one of them in.
            with self._store.read() as session:
                holder = self._live_named(session, name)
            if holder is None:
                raise
            raise _name_taken(name, holder) from None
        return info, secret

    @staticmethod
    def _live_named(session: Session, name: str) -> str | None:
        holder: str | None = session.execute(
            select(TokenRow.id).where(
                col(TokenRow.name) == name, col(TokenRow.revoked_at).is_(None)
            )
        ).scalar_one_or_none()
        return holder

    def list(self) -> list[TokenInfo]:
        now = self.clock()
        with self._store.read() as session:
            rows = session.execute(select(TokenRow).order_by(col(TokenRow.created_at))).scalars()
            return [TokenInfo.of(r, now, self.uses.latest(r.id)) for r in rows]

    def save_last_used(self, *, all_pending: bool = False) -> int:
        """Write the uses that are due (see ``UseLog``); how many. Never raises: a
        failed write is tried again at the next call."""
        now = self.clock()
        due = self.uses.due(now, all_pending=all_pending)
        if not due:
            return 0
        try:
            with self._store.write() as session:
                for token_id, at in due.items():
                    # Never backwards: another replica may have written a newer use.
                    session.execute(
                        update(TokenRow)
                        .where(
                            col(TokenRow.id) == token_id,
                            or_(
                                col(TokenRow.last_used_at).is_(None),
                                col(TokenRow.last_used_at) < at,
                            ),
                        )
                        .values(last_used_at=at)
                        .execution_options(synchronize_session=False)
                    )
        except Exception as exc:
            if not self._save_failing:  # once per outage, not every poll
                log.warning(
                    "could not save when tokens were last used (%s: %s); will retry",
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "",
                )
            self._save_failing = True
            return 0
        self._save_failing = False
        self.uses.written(due, now)
        return len(due)

    def revoke(self, token_id: str, *, actor: str, now: datetime) -> TokenInfo:
        with unit_of_work(self._store, on_change=self.on_change) as uow:
            row = uow.session.get(TokenRow, token_id)
            if row is None:
                raise NotFound(f"token {token_id!r} not found")
            if row.revoked_at is None:
                row.revoked_at = now
                uow.record(
                    at=now,
                    actor=actor,
                    action="token.revoke",
                    reason=f"token {row.id} ({row.role}) for {row.name}",
                )
            # Even if it was revoked already: elsewhere, maybe, and not yet reloaded here.
            uow.after_commit(self.reload)
            return TokenInfo.of(row, now, self.uses.latest(row.id))


def _name_taken(name: str, holder: str | None) -> AlreadyExists:
    return AlreadyExists(
        f"a token named {name!r} already exists ({holder}); pick another name, "
        "or revoke that token first",
        field="name",
        problem=f"taken by live token {holder}",
    )


def require(principal: Principal, permission: Permission) -> Principal:
    if not principal.can(permission):
        raise Forbidden(f"role {principal.role} may not {permission}; ask an admin for a token")
    return principal
