"""Rate limiting of the mutating API: a token bucket per principal.

Only mutating methods (POST, PUT, PATCH, DELETE) are limited, and never evaluation,
which services call per request. A request is counted against its token's principal,
or its session cookie's in the UI, or, without a valid token, its client address.

The buckets live in this process's memory: with N replicas behind a load balancer
the effective limit is N times the setting. That is enough to stop a runaway script
from flooding the audit log; it is not a quota.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from controller.auth import TokenRegistry
from controller.errors import Unauthorized
from controller.http.errors import error_body
from controller.ui.session import SESSION_COOKIE

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# POSTs that are not a person's change: a flag evaluation changes nothing and must never
# be slowed, and SDK count reports come from a whole fleet sharing one token (at least
# once, bounded in size by their own endpoint), so a per-token limit would drop them.
EVALUATION_PATHS = ("/api/v1/evaluate/", "/ofrep/v1/evaluate/", "/api/v1/evaluations/report")
# Alertmanager retries a notification only on a 5xx: over the limit, an alert source is
# told 503 (with Retry-After), so its alert comes again instead of being dropped.
ALERT_PATHS = ("/api/v1/alerts",)


def is_mutation(scope: Scope) -> bool:
    """An HTTP request that may change something: the only kind limited or deduplicated."""
    return (
        scope["type"] == "http"
        and scope["method"] in MUTATING_METHODS
        and not scope["path"].startswith(EVALUATION_PATHS)
    )


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One bucket per key, ``burst`` deep, refilled at ``per_minute``. Time is passed in
    (monotonic seconds), so the arithmetic is tested without a clock.

    Memory is bounded: a bucket idle long enough to be full again is the same as no
    bucket, so it is dropped; past ``max_keys`` the least recently used go too (which
    can only make the limit briefly looser for them, never stricter).
    """

    def __init__(self, per_minute: float, burst: int, max_keys: int = 10_000) -> None:
        if per_minute <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("per_minute must be > 0, burst and max_keys >= 1")
        self.rate = per_minute / 60.0
        self.burst = burst
        self.max_keys = max_keys
        self._refill_seconds = burst / self.rate
        # Insertion order is recency order: a key is moved to the end when used.
        self._buckets: dict[str, _Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take one token: 0.0 if the request may go ahead, else the seconds until it may."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        self._buckets[key] = bucket
        self._evict(now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _evict(self, now: float) -> None:
        # Oldest first, and only while there is something to drop: O(1) per request.
        while self._buckets:
            key = next(iter(self._buckets))
            idle = now - self._buckets[key].updated >= self._refill_seconds
            if not idle and len(self._buckets) <= self.max_keys:
                return
            del self._buckets[key]


class RateLimit:
    """ASGI middleware: 429 with ``Retry-After`` once a principal's bucket is empty."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenRegistry,
        per_minute: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        session_owner: Callable[[str], str | None] | None = None,
    ) -> None:
        self.app = app
        self._tokens = tokens
        # A UI session id -> the token id it signed in with (a database read), so a
        # person's UI changes count against their token, as their API changes do.
        self._session_owner = session_owner
        self._buckets = TokenBuckets(per_minute, burst)
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_mutation(scope):
            await self.app(scope, receive, send)
            return
        wait = self._buckets.take(await self._who(scope), self._clock())
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        body = error_body(
            "rate_limited",
            f"too many changes from this client; try again in {retry_after} s",
            retry_after=retry_after,
        )
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503 if scope["path"].startswith(ALERT_PATHS) else 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"retry-after", str(retry_after).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _who(self, scope: Scope) -> str:
        authorization, cookie = _credentials(scope)
        if authorization:
            try:
                return "principal:" + self._tokens.authenticate(authorization).token_id
            except Unauthorized:
                pass
        if cookie and self._session_owner is not None:
            # An unknown cookie counts by address like no cookie: made-up cookies must
            # not each get a bucket of their own (sign-in guessing would go unlimited).
            try:
                owner = await anyio.to_thread.run_sync(self._session_owner, cookie)
            except Exception:  # the database is away: the address, not a 500
                owner = None
            if owner is not None:
                return "principal:" + owner
        # No valid token: the peer's address. Behind a proxy that is the proxy's, shared
        # by everyone; X-Forwarded-For is not trusted, as any client can send it.
        client = scope.get("client")
        return "client:" + (client[0] if client else "unknown")


def _credentials(scope: Scope) -> tuple[str | None, str | None]:
    authorization: str | None = None
    cookie: str | None = None
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"cookie":
            cookie = cookie_parser(value.decode("latin-1")).get(SESSION_COOKIE)
    return authorization, cookie
