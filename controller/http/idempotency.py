"""``Idempotency-Key`` on mutating requests, after draft-ietf-httpapi-idempotency-key-header.

A POST, PUT, PATCH or DELETE under ``/api/v1`` (evaluation excepted: it changes
nothing) that carries ``Idempotency-Key`` runs once per principal and key. A retry
with the same key gets the first answer again (status, body, content type and
``Idempotent-Replayed: true``) and changes nothing. The same key on another request
(method, path, query or body) is refused with 422; a retry while the first request
still runs gets 409. A bad header value gets 400. Answers of 5xx and 429 are not
kept, so a retry after a server failure or a "too busy" runs again (the CLI retries
those with the same key); other 2xx, 3xx and 4xx answers are replayed.

Keys are scoped by the principal's token id (never the token), so two principals'
keys never meet. They are kept in the database, so they hold across replicas and
restarts, for ``ROLLOUT_IDEMPOTENCY_TTL`` (default 24h); expired keys are pruned at
most once a minute per process, and an expired key is simply free again.

The reservation is the same on SQLite and PostgreSQL: in its own short write
transaction, read the (principal, key) row; none, or an expired one: insert (or take
over) a pending row and commit *before* the request runs. Two requests racing for one
key cannot both win: on SQLite ``BEGIN IMMEDIATE`` serialises the two transactions, so
the second reads the first's pending row; on PostgreSQL both may read nothing, but the
primary key lets one INSERT commit and fails the other with a unique violation, after
which it reads again and sees the pending row. An expired row is taken over with an
UPDATE conditional on its old ``claim``, so only one of two racers gets it. The pending
row expires after ``PENDING_TIMEOUT``: a replica that died mid-request does not hold a
key for a day. When the request ends, a second transaction stores the answer (or
deletes the reservation after a 5xx or an exception), again only for its own claim.

The key costs a GET or an evaluation nothing: the method and path are checked first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import col
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.auth import TokenRegistry
from controller.errors import Unauthorized
from controller.http.errors import error_body
from controller.http.rate_limit import is_mutation
from controller.storage.store import Store
from controller.storage.tables import IdempotencyRow

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# How long a reservation whose request never finished (its process died) blocks retries.
PENDING_TIMEOUT = timedelta(minutes=2)
PRUNE_EVERY_SECONDS = 60.0
# Answers that carry a secret shown once: the secret is never stored, so a replay
# says where it went instead of repeating it.
SECRET_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {("POST", "/api/v1/tokens"): ("token",)}
WITHHELD_NOTE = (
    "replayed answer: the secret was shown only once, to the first request; "
    "if it was lost, revoke this token and create another"
)
_HEADER_NAME = HEADER.lower().encode()


class InvalidKey(ValueError):
    """The header's value is not a usable key; the message says why."""


def parse_key(values: list[bytes]) -> str:
    """The key from the header's values: 1-255 visible ASCII characters, bare or as a
    structured-field string (``"..."``, as the draft writes it)."""
    if len(values) != 1:
        raise InvalidKey(f"send exactly one {HEADER} header")
    try:
        text = values[0].decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidKey("only visible ASCII characters are allowed") from None
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = _unquote(text[1:-1])
    if not 1 <= len(text) <= MAX_KEY_LENGTH:
        raise InvalidKey(f"must be 1 to {MAX_KEY_LENGTH} characters")
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in text):
        raise InvalidKey("only visible ASCII characters are allowed (no spaces)")
    return text


def _unquote(inner: str) -> str:
    out: list[str] = []
    escaped = False
    for ch in inner:
        if escaped:
            if ch not in '"\\':
                raise InvalidKey('in a quoted key, "\\" may only escape " or \\')
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            raise InvalidKey('a quoted key must escape " as \\"')
        else:
            out.append(ch)
    if escaped:
        raise InvalidKey("a quoted key may not end with a lone backslash")
    return "".join(out)


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


# -- what a reservation finds ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reserved:
    claim: str


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    content_type: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class InProgress:
    pass


@dataclass(frozen=True, slots=True)
class Mismatch:
    pass


Found = Reserved | Replay | InProgress | Mismatch


class _Lost(Exception):
    """Another request took the expired key between our read and our update."""


class IdempotencyKeys:
    """The ``idempotency_keys`` table: reserve, complete, release, prune. Synchronous
    (the store is); the middleware calls it from the thread pool."""

    def __init__(
        self, store: Store, ttl: timedelta, pending_timeout: timedelta = PENDING_TIMEOUT
    ) -> None:
        self._store = store
        self.ttl = ttl
        self.pending_timeout = pending_timeout
        self._last_prune = -PRUNE_EVERY_SECONDS

    def reserve(self, principal: str, key: str, fingerprint: str, now: datetime) -> Found:
        self._prune_now_and_then(now)
        # A lost race means the winner's row is there now: the second look sees it.
        for _ in range(2):
            try:
                return self._try_reserve(principal, key, fingerprint, now)
            except (IntegrityError, _Lost):
                continue
        return InProgress()

    def _try_reserve(self, principal: str, key: str, fingerprint: str, now: datetime) -> Found:
        claim = secrets.token_hex(16)
        pending: dict[str, Any] = {
            "claim": claim,
            "fingerprint": fingerprint,
            "status_code": None,
            "content_type": None,
            "body": None,
            "created_at": now,
            "expires_at": now + self.pending_timeout,
        }
        with self._store.write() as session:
            row = session.get(IdempotencyRow, (principal, key))
            if row is None:
                session.add(
                    IdempotencyRow(
                        principal=principal,
                        key=key,
                        claim=claim,
                        fingerprint=fingerprint,
                        created_at=now,
                        expires_at=pending["expires_at"],
                    )
                )
                return Reserved(claim)
            if row.expires_at > now:
                if row.fingerprint != fingerprint:
                    return Mismatch()
                if row.status_code is None:
                    return InProgress()
                return Replay(row.status_code, row.content_type, row.body or b"")
            taken = session.execute(
                update(IdempotencyRow)
                .where(*self._own(principal, key, row.claim))
                .values(**pending)
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise _Lost
            return Reserved(claim)

    def complete(
        self,
        principal: str,
        key: str,
        claim: str,
        answer: Replay,
        now: datetime,
    ) -> None:
        with self._store.write() as session:
            session.execute(
                update(IdempotencyRow)
                .where(*self._own(principal, key, claim))
                .values(
                    status_code=answer.status_code,
                    content_type=answer.content_type,
                    body=answer.body,
                    expires_at=now + self.ttl,
                )
                .execution_options(synchronize_session=False)
            )

    def release(self, principal: str, key: str, claim: str) -> None:
        with self._store.write() as session:
            session.execute(
                delete(IdempotencyRow)
                .where(*self._own(principal, key, claim))
                .execution_options(synchronize_session=False)
            )

    def prune(self, now: datetime) -> int:
        with self._store.write() as session:
            result = session.execute(
                delete(IdempotencyRow)
                .where(col(IdempotencyRow.expires_at) <= now)
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def _prune_now_and_then(self, now: datetime) -> None:
        tick = time.monotonic()
        if tick - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = tick
        pruned = self.prune(now)
        if pruned:
            log.debug("pruned %d expired idempotency keys", pruned)

    @staticmethod
    def _own(principal: str, key: str, claim: str) -> tuple[Any, ...]:
        return (
            col(IdempotencyRow.principal) == principal,
            col(IdempotencyRow.key) == key,
            col(IdempotencyRow.claim) == claim,
        )


# -- the middleware ---------------------------------------------------------------------


class Idempotency:
    """ASGI middleware; install it inside the body size limit, which bounds what it reads."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: IdempotencyKeys,
        tokens: TokenRegistry,
        clock: Callable[[], datetime],
    ) -> None:
        self.app = app
        self._keys = keys
        self._tokens = tokens
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_mutation(scope) or not scope["path"].startswith("/api/v1/"):
            await self.app(scope, receive, send)
            return
        raw = [value for name, value in scope["headers"] if name == _HEADER_NAME]
        principal = self._principal(scope) if raw else None
        if principal is None:
            # No key, or no valid token (the route answers 401): nothing to remember.
            await self.app(scope, receive, send)
            return
        try:
            key = parse_key(raw)
        except InvalidKey as exc:
            await _send_error(send, 400, "invalid", f"{HEADER}: {exc}", str(exc))
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before sending its body
        method, path = scope["method"], scope["path"]
        request_print = fingerprint(method, path, scope.get("query_string", b""), body)
        try:
            found = await run_in_threadpool(
                self._keys.reserve, principal, key, request_print, self._clock()
            )
        except (OperationalError, PoolTimeout) as exc:
            log.warning("idempotency key not reserved, database unavailable: %s", type(exc))
            await _send_json(
                send,
                503,
                error_body(
                    "database_unavailable", "the database is unavailable; nothing was changed"
                ),
                extra_headers=[(b"retry-after", b"5")],
            )
            return
        if isinstance(found, Replay):
            await _send_replay(send, found)
        elif isinstance(found, Mismatch):
            await _send_error(
                send,
                422,
                "idempotency_key_reused",
                f"{HEADER} was used for a different request (method, path or body); "
                "use a new key for a new request",
                "used for a different request",
            )
        elif isinstance(found, InProgress):
            await _send_error(
                send,
                409,
                "idempotency_key_in_progress",
                f"a request with this {HEADER} is still in progress; retry after it ends",
                "a request with this key is in progress",
                extra_headers=[(b"retry-after", b"1")],
            )
        else:
            await self._run_once(scope, send, body, principal, key, found.claim, receive)

    async def _run_once(
        self,
        scope: Scope,
        send: Send,
        body: bytes,
        principal: str,
        key: str,
        claim: str,
        receive: Receive,
    ) -> None:
        held: list[Message] = []
        body_given = False

        async def replay_receive() -> Message:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def hold(message: Message) -> None:
            held.append(message)

        # The answer is held back until it is stored: a client that retries the moment
        # it hears back must find the answer, not the reservation ("in progress").
        try:
            await self.app(scope, replay_receive, hold)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._forget(principal, key, claim)
            raise
        start = next((m for m in held if m["type"] == "http.response.start"), None)
        status = int(start["status"]) if start else 500
        if status >= 500 or status == 429:  # "not now": nothing was done, try again
            await self._forget(principal, key, claim)
        else:
            content = b"".join(
                m.get("body", b"") for m in held if m["type"] == "http.response.body"
            )
            content_type = _header(start.get("headers", []), b"content-type") if start else None
            answer = _withhold_secrets(
                scope["method"], scope["path"], Replay(status, content_type, content)
            )
            try:
                await run_in_threadpool(
                    self._keys.complete, principal, key, claim, answer, self._clock()
                )
            except Exception:
                # The change is made; without the answer stored, a retry waits for the
                # pending reservation to lapse (PENDING_TIMEOUT) and then runs again.
                log.exception("could not store the answer for an idempotency key")
        for message in held:
            await send(message)

    async def _forget(self, principal: str, key: str, claim: str) -> None:
        try:
            await run_in_threadpool(self._keys.release, principal, key, claim)
        except Exception:
            log.exception("could not release an idempotency key; it lapses by itself")

    def _principal(self, scope: Scope) -> str | None:
        authorization = _header(scope["headers"], b"authorization")
        try:
            return self._tokens.authenticate(authorization).token_id
        except Unauthorized:
            return None


def _withhold_secrets(method: str, path: str, answer: Replay) -> Replay:
    fields = SECRET_FIELDS.get((method, path.rstrip("/")))
    if not fields:
        return answer
    try:
        data = json.loads(answer.body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        # Not the JSON we know how to redact: keep nothing rather than a secret.
        return Replay(answer.status_code, "application/json", b"{}")
    for name in fields:
        if name in data:
            data[name] = None
            data["note"] = WITHHELD_NOTE
    return Replay(answer.status_code, answer.content_type, json.dumps(data).encode())


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_replay(send: Send, answer: Replay) -> None:
    headers = [(b"idempotent-replayed", b"true")]
    if answer.content_type:
        headers.append((b"content-type", answer.content_type.encode("latin-1")))
    if answer.status_code not in (204, 304):
        headers.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def _send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    problem: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = error_body(code, message, problems=[{"field": HEADER, "message": problem}])
    await _send_json(send, status, body, extra_headers=extra_headers)


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, Any],
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
