"""Bearer tokens and roles. Fail closed: no token, an unknown token or a revoked one
is refused, and each route names the permission it needs.

Tokens are stored as SHA-256 hashes. The registry keeps the hashes of live tokens in
memory so that evaluation, which every service calls per request, never waits on
the database and keeps working while the database is down.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select

from controller.errors import Forbidden, NotFound, Unauthorized
from controller.storage.store import Store
from controller.storage.tables import TokenRow
from controller.unit_of_work import unit_of_work


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

    @classmethod
    def of(cls, row: TokenRow) -> TokenInfo:
        return cls(row.id, row.name, row.role, row.created_by, row.created_at, row.revoked_at)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return "rt_" + secrets.token_urlsafe(32)


class TokenRegistry:
    """The live tokens, by hash. Reloaded from the database after every change here,
    and by ``controller.jobs.snapshot_refresh`` after changes made through other replicas."""

    def __init__(self, store: Store, bootstrap_admin: str | None) -> None:
        self._store = store
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
            fresh = {r.token_hash: Principal(r.name, Role(r.role), r.id) for r in rows}
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
        principal = bootstrap or self._by_hash.get(digest)
        if principal is None:
            raise Unauthorized("unknown or revoked token")
        return principal

    def create(
        self, *, name: str, role: Role, created_by: str, now: datetime
    ) -> tuple[TokenInfo, str]:
        secret = new_secret()
        row = TokenRow(
            id=secrets.token_hex(6),
            name=name,
            role=role.value,
            token_hash=hash_token(secret),
            created_by=created_by,
            created_at=now,
        )
        # The audit event moves the revision: other replicas then reload their tokens.
        with unit_of_work(self._store, on_change=self.on_change) as uow:
            uow.session.add(row)
            uow.record(
                at=now,
                actor=created_by,
                action="token.create",
                reason=f"token {row.id} ({role}) for {name}",
            )
            uow.after_commit(self.reload)
            info = TokenInfo.of(row)
        return info, secret

    def list(self) -> list[TokenInfo]:
        with self._store.read() as session:
            rows = session.execute(select(TokenRow).order_by(col(TokenRow.created_at))).scalars()
            return [TokenInfo.of(r) for r in rows]

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
            return TokenInfo.of(row)


def require(principal: Principal, permission: Permission) -> Principal:
    if not principal.can(permission):
        raise Forbidden(f"role {principal.role} may not {permission}; ask an admin for a token")
    return principal
