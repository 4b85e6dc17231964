"""The evaluation routes, answered by a lean ASGI handler in front of FastAPI.

Services ask for a flag per request, so these routes are the controller's hot path.
A FastAPI route spends most of a request in its own machinery (middleware layers,
routing, dependency injection, a thread hop for sync routes); this handler answers

    GET/POST /api/v1/evaluate/{key}
    POST     /ofrep/v1/evaluate/flags/{key}
    POST     /ofrep/v1/evaluate/flags

before any of it runs, with the same semantics and the same bytes: what a request
means and what status its answer has are the functions in ``controller.api.evaluation``,
and how an answer is written is the core's wire format (``flags.wire``); the documented
FastAPI routes (still in ``/openapi.json``) call both too. Anything
else, including HEAD, other methods, trailing slashes and apps served under a root
path, goes on to FastAPI unchanged.

What the FastAPI stack would have done for these routes is done here explicitly:
authentication (the principal cached per ``Authorization`` value and checked against
the token registry's generation, so a revocation applies to the very next request),
the body size limit and sampled latency (the same ASGI classes, wrapped around this
handler), and counting. Idempotency keys and rate limits never apply to evaluation.
A middleware added to the FastAPI app later does not see these routes: add it here
too if it must.
"""

from __future__ import annotations

import enum
from typing import Any

from fastapi import FastAPI
from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.evaluation import (
    JSON_TYPE,
    ContextError,
    EvaluationCounts,
    body_object,
    bulk_etag,
    context_from_json,
    context_from_query,
    native_answer,
    native_context_error,
    ofrep_answer,
)
from controller.auth import Permission, Principal, TokenRegistry, require
from controller.errors import Forbidden, Unauthorized
from controller.http.body_limit import BodySizeLimit
from controller.http.errors import error_body
from controller.http.metrics import SampledLatency
from controller.snapshots import SnapshotHolder
from flags.model import Evaluation, EvaluationContext, Reason
from flags.snapshot import Snapshot
from flags.wire import bulk_answer, ofrep_error, to_json

_NATIVE = "/api/v1/evaluate/"
_OFREP_BULK = "/ofrep/v1/evaluate/flags"
_OFREP_SINGLE = _OFREP_BULK + "/"
_ROUTE = "rollout.evaluation_route"  # scope key: the matched route, for the inner handler
# Bounds for the two caches: reached only by clients sending many distinct tokens, or
# by a snapshot with very many answers; emptying the cache then just costs a refill.
MAX_PRINCIPALS = 1_024
MAX_RENDERED = 4_096


class Route(enum.Enum):
    NATIVE_GET = "native-get"
    NATIVE_POST = "native-post"
    OFREP_SINGLE = "ofrep-single"
    OFREP_BULK = "ofrep-bulk"


def match(scope: Scope) -> tuple[Route, str] | None:
    """The evaluation route this request is for, with its flag key, as FastAPI's router
    would match it (``{key}`` is one non-empty path segment); None for anything else."""
    if scope["type"] != "http" or scope.get("root_path"):
        return None
    method = scope["method"]
    if method not in ("GET", "POST"):
        return None
    path: str = scope["path"]
    if path.startswith(_NATIVE):
        key = path[len(_NATIVE) :]
        if not key or "/" in key:
            return None
        return (Route.NATIVE_GET if method == "GET" else Route.NATIVE_POST), key
    if method != "POST":
        return None
    if path == _OFREP_BULK:
        return Route.OFREP_BULK, ""
    if path.startswith(_OFREP_SINGLE):
        key = path[len(_OFREP_SINGLE) :]
        if key and "/" not in key:
            return Route.OFREP_SINGLE, key
    return None


class EvaluationFastPath:
    """Answers the evaluation routes (see the module docstring). One per app."""

    def __init__(
        self,
        snapshots: SnapshotHolder,
        tokens: TokenRegistry,
        counts: EvaluationCounts,
        *,
        max_body_bytes: int,
        latency: Histogram | None = None,
    ) -> None:
        self._snapshots = snapshots
        self._tokens = tokens
        self._counts = counts
        self._principals: dict[str | None, tuple[int, Principal]] = {}
        # Answers are shared, immutable objects (flags.compiled), so each is written
        # once: by id, holding the object itself so the id cannot be reused meanwhile.
        self._native: dict[int, tuple[Evaluation, int, bytes]] = {}
        self._ofrep: dict[int, tuple[Evaluation, int, bytes]] = {}
        self._rendered_for: Snapshot | None = None
        handler: ASGIApp = BodySizeLimit(self._handle, max_bytes=max_body_bytes)
        if latency is not None:
            handler = SampledLatency(handler, latency)
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a request that ``match`` matched."""
        await self._handler(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route, key = scope[_ROUTE]
        authorization: str | None = None
        if_none_match: str | None = None
        for name, value in scope["headers"]:
            # The first of repeated headers, as Starlette's ``request.headers`` reads them.
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
        try:
            require(self._authenticate(authorization), Permission.EVALUATE)
        except (Unauthorized, Forbidden) as exc:
            await _refused(send, exc)
            return
        snapshot = self._snapshots.current
        if snapshot is not self._rendered_for:
            self._native.clear()
            self._ofrep.clear()
            self._rendered_for = snapshot
        if route is Route.NATIVE_GET:
            query = scope["query_string"]
            if query:
                evaluation = snapshot.evaluate(key, context_from_query(query))
            else:
                evaluation = snapshot.evaluate_key(key)
            self._counts.add(evaluation)
            await _send_json(send, *self._written(self._native, evaluation, native_answer))
            return
        raw = await _read_body(receive)
        if raw is None:  # the client went away
            return
        try:
            raw_context = body_object(raw).get("context")
            context = context_from_json(raw_context)
        except ContextError as exc:
            if route is Route.NATIVE_POST:
                await _send_json(send, 400, native_context_error(exc))
            else:
                body = to_json(ofrep_error(exc.code, str(exc), key or None))
                await _send_json(send, 400, body)
            return
        if route is Route.OFREP_BULK:
            await self._bulk(send, snapshot, raw_context, context, if_none_match)
            return
        evaluation = snapshot.evaluate(key, context)
        self._counts.add(evaluation)
        if route is Route.NATIVE_POST:
            await _send_json(send, *self._written(self._native, evaluation, native_answer))
        else:
            await _send_json(send, *self._written(self._ofrep, evaluation, ofrep_answer))

    async def _bulk(
        self,
        send: Send,
        snapshot: Snapshot,
        raw_context: object,
        context: EvaluationContext,
        if_none_match: str | None,
    ) -> None:
        etag = bulk_etag(snapshot, raw_context)
        etag_header = (b"etag", etag.encode("latin-1"))
        if if_none_match == etag:
            await send({"type": "http.response.start", "status": 304, "headers": [etag_header]})
            await send({"type": "http.response.body", "body": b""})
            return
        items = []
        add = self._counts.add
        for evaluation in snapshot.evaluate_all(context):
            add(evaluation)
            items.append(self._written(self._ofrep, evaluation, ofrep_answer)[1])
        await _send_json(send, 200, bulk_answer(items), etag_header)

    def _authenticate(self, authorization: str | None) -> Principal:
        tokens = self._tokens
        # Read before authenticating: a reload in between leaves an entry that is
        # already stale, so it is checked again next time (never the other way round).
        generation = tokens.generation
        cached = self._principals.get(authorization)
        if cached is not None and cached[0] == generation:
            return tokens.admit(cached[1])  # expiry, and the last-used time
        principal = tokens.authenticate(authorization)
        if len(self._principals) >= MAX_PRINCIPALS:
            self._principals.clear()
        self._principals[authorization] = (generation, principal)
        return principal

    @staticmethod
    def _written(
        cache: dict[int, tuple[Evaluation, int, bytes]],
        evaluation: Evaluation,
        write: Any,
    ) -> tuple[int, bytes]:
        entry = cache.get(id(evaluation))
        if entry is not None and entry[0] is evaluation:
            return entry[1], entry[2]
        status, body = write(evaluation)
        # ERROR answers are built per request (their message names the cause): not kept.
        if evaluation.reason is not Reason.ERROR:
            if len(cache) >= MAX_RENDERED:
                cache.clear()
            cache[id(evaluation)] = (evaluation, status, body)
        return status, body


class FastPathApp(FastAPI):
    """The controller's FastAPI app, with the evaluation routes answered by
    ``evaluation_fast_path`` (when set) before FastAPI's own middleware stack."""

    evaluation_fast_path: EvaluationFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.evaluation_fast_path
        if fast is not None:
            route = match(scope)
            if route is not None:
                scope[_ROUTE] = route
                await fast(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _read_body(receive: Receive) -> bytes | None:
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    while message.get("more_body", False):
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
    return body


async def _send_json(send: Send, status: int, body: bytes, *extra: tuple[bytes, bytes]) -> None:
    headers = [*extra, (b"content-length", str(len(body)).encode()), (b"content-type", JSON_TYPE)]
    start: Message = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def _refused(send: Send, exc: Unauthorized | Forbidden) -> None:
    """What ``controller.http.errors`` answers for an auth error on a FastAPI route."""
    body = to_json(error_body(exc.code, exc.message))
    if isinstance(exc, Unauthorized):
        await _send_json(send, 401, body, (b"www-authenticate", b"Bearer"))
    else:
        await _send_json(send, 403, body)
