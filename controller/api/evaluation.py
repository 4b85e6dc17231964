"""Per-request evaluation: the native endpoint and OFREP. Both read only the
in-memory snapshot (never the database), so they keep answering while it is down.

What an evaluation request means (its context and the status of its answer) is
defined once here, as plain functions; the answer's JSON is the core's wire format
(``flags.wire``). Two front ends serve them: the lean ASGI handler in
``controller.http.fastpath``, which answers these routes in production, and the FastAPI
routes below, which document them in ``/openapi.json`` and answer whatever the lean
handler passes on. Both produce the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response

from controller.api.answers import ErrorAnswer, EvaluationAnswer, SnapshotAnswer, errors
from controller.runtime import Evaluator, RuntimeDep
from flags.codec import snapshot_to_dict
from flags.model import ErrorCode, Evaluation, EvaluationContext, Reason
from flags.snapshot import Snapshot
from flags.wire import (
    bulk_answer,
    evaluation_to_dict,
    evaluation_to_ofrep,
    ofrep_error,
    to_json,
)

router = APIRouter(tags=["evaluation"])

_RESERVED_QUERY = frozenset({"targetingKey"})
JSON_TYPE = b"application/json"
# Nesting depth of an evaluation body; a context is a flat object of attributes.
MAX_DEPTH = 64


class EvaluationCounts:
    """How often each flag answered each variant since this process started, for the
    UI, ``/metrics`` and SDK reports.

    Counting is on every evaluation's path, so it takes no lock: each thread counts into
    a dict of its own, which only that thread writes, and readers merge them. Copying a
    dict is one C call under the GIL, so a reader never sees half an update, and no
    count is lost to a race. The lock guards only the list of per-thread dicts; the
    dicts of finished threads are folded into one, so memory stays bounded.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._shards: list[tuple[threading.Thread, dict[tuple[str, str], int]]] = []
        self._retired: Counter[tuple[str, str]] = Counter()

    def add(self, evaluation: Evaluation) -> None:
        key = (evaluation.key, evaluation.variant or "(none)")
        try:
            counts: dict[tuple[str, str], int] = self._local.counts
        except AttributeError:
            counts = self._new_shard()
        counts[key] = counts.get(key, 0) + 1

    def add_counts(self, flag: str, variant: str | None, count: int) -> None:
        """Counts reported in a batch by an SDK that evaluated locally."""
        key = (flag, variant or "(none)")
        try:
            counts: dict[tuple[str, str], int] = self._local.counts
        except AttributeError:
            counts = self._new_shard()
        counts[key] = counts.get(key, 0) + count

    def by_flag(self) -> dict[str, dict[str, int]]:
        with self._lock:
            self._retire_finished()
            merged = Counter(self._retired)
            for _thread, counts in self._shards:
                merged.update(counts.copy())
        out: dict[str, dict[str, int]] = {}
        for (flag, variant), count in sorted(merged.items()):
            out.setdefault(flag, {})[variant] = count
        return out

    def _new_shard(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        with self._lock:
            self._retire_finished()
            self._shards.append((threading.current_thread(), counts))
        self._local.counts = counts
        return counts

    def _retire_finished(self) -> None:
        # A finished thread writes no more, so its dict can be folded without a race.
        alive = []
        for thread, counts in self._shards:
            if thread.is_alive():
                alive.append((thread, counts))
            else:
                self._retired.update(counts)
        self._shards = alive


def count_all(request: Request, evaluations: Iterable[Evaluation]) -> None:
    counts: EvaluationCounts | None = getattr(request.app.state, "evaluation_counts", None)
    if counts is not None:
        for evaluation in evaluations:
            counts.add(evaluation)


# -- what a request means ------------------------------------------------------


class ContextError(ValueError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def context_from_json(raw: object) -> EvaluationContext:
    """The OFREP/OpenFeature context object: ``targetingKey`` plus attributes."""
    if raw is None:
        return EvaluationContext()
    if not isinstance(raw, dict):
        raise ContextError(ErrorCode.INVALID_CONTEXT, "context must be a JSON object")
    attributes = dict(raw)
    key = attributes.pop("targetingKey", None)
    if key is not None and not isinstance(key, str):
        raise ContextError(ErrorCode.INVALID_CONTEXT, "context.targetingKey must be a string")
    return EvaluationContext(targeting_key=key or None, attributes=attributes)


def context_from_query(query_string: bytes) -> EvaluationContext:
    """``?targetingKey=K``; every other query parameter is an attribute (the last of
    repeated ones, as Starlette's ``request.query_params`` reads them)."""
    attributes = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
    key = attributes.pop("targetingKey", None)
    return EvaluationContext(targeting_key=key or None, attributes=attributes)


def body_object(raw: bytes) -> dict[str, Any]:
    """A request body: empty, or a JSON object."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ContextError(ErrorCode.PARSE_ERROR, f"request body is not JSON: {exc}") from None
    except RecursionError:
        data = None
    # Counting brackets is a C-speed bound on the depth: only a body with many of them
    # is walked. Deeper bodies would break rendering its ETag, and mean nothing here.
    if data is None or (raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(data)):
        raise ContextError(
            ErrorCode.PARSE_ERROR, f"request body is nested more than {MAX_DEPTH} deep"
        )
    if not isinstance(data, dict):
        raise ContextError(ErrorCode.PARSE_ERROR, "request body must be a JSON object")
    return data


def _too_deep(data: object) -> bool:
    pending: list[tuple[int, object]] = [(1, data)]
    while pending:
        depth, item = pending.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, dict):
            pending.extend((depth + 1, child) for child in item.values())
        elif isinstance(item, list):
            pending.extend((depth + 1, child) for child in item)
    return False


# -- native --------------------------------------------------------------------


def native_answer(evaluation: Evaluation) -> tuple[int, bytes]:
    status = 404 if evaluation.error_code is ErrorCode.FLAG_NOT_FOUND else 200
    return status, to_json(evaluation_to_dict(evaluation))


def native_context_error(exc: ContextError) -> bytes:
    return to_json(
        {
            "error": "invalid",
            "message": str(exc),
            "problems": [{"field": "context", "message": str(exc)}],
        }
    )


# Documentation only: these routes write their bytes themselves (``flags.wire``, the same
# as the fast path), so a response model would not check them; test_openapi_answers does.
_NATIVE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": EvaluationAnswer},
    404: {"model": EvaluationAnswer, "description": "FLAG_NOT_FOUND"},
    **errors(401, 403),
}


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


@router.get("/api/v1/evaluate/{key}", responses=_NATIVE_ANSWERS)
def evaluate_get(key: str, request: Request, runtime: RuntimeDep, _who: Evaluator) -> Response:
    """Evaluate for ``?targetingKey=K``; every other query parameter is an attribute."""
    context = context_from_query(request.scope["query_string"])
    evaluation = runtime.snapshots.current.evaluate(key, context)
    count_all(request, (evaluation,))
    return _json(*native_answer(evaluation))


@router.post(
    "/api/v1/evaluate/{key}",
    responses={
        **_NATIVE_ANSWERS,
        400: {"model": ErrorAnswer, "description": "not a JSON object, or a bad context"},
    },
)
async def evaluate_post(
    key: str, request: Request, runtime: RuntimeDep, _who: Evaluator
) -> Response:
    """Evaluate for a JSON body ``{"context": {"targetingKey": ..., ...}}``."""
    try:
        context = context_from_json(body_object(await request.body()).get("context"))
    except ContextError as exc:
        return _json(400, native_context_error(exc))
    evaluation = runtime.snapshots.current.evaluate(key, context)
    count_all(request, (evaluation,))
    return _json(*native_answer(evaluation))


@router.get(
    "/api/v1/snapshot",
    responses={
        200: {"model": SnapshotAnswer},
        304: {"description": "If-None-Match holds the current ETag"},
        **errors(401, 403),
    },
)
def snapshot(request: Request, runtime: RuntimeDep, _who: Evaluator) -> Response:
    """Every flag with its rollout overlay, for SDKs that evaluate locally."""
    current = runtime.snapshots.current
    if request.headers.get("if-none-match") == current.etag:
        return Response(status_code=304, headers={"ETag": current.etag})
    return _json(200, to_json(snapshot_to_dict(current)), {"ETag": current.etag})


# -- OFREP ---------------------------------------------------------------------


def ofrep_status(evaluation: Evaluation) -> int:
    """OFREP's status for an answer: 404 for an unknown flag, 400 for a failed evaluation.
    A missing targeting key on a split is a 200: the safe default (PRODUCT.md)."""
    if evaluation.error_code is ErrorCode.FLAG_NOT_FOUND:
        return 404
    if evaluation.reason is Reason.ERROR:
        return 400
    return 200


def ofrep_answer(evaluation: Evaluation) -> tuple[int, bytes]:
    return ofrep_status(evaluation), to_json(evaluation_to_ofrep(evaluation))


def bulk_etag(snapshot: Snapshot, raw_context: object) -> str:
    """The bulk answer's ETag: it covers the flag revision and the context, since
    either changing changes answers."""
    context_digest = hashlib.sha256(
        json.dumps(raw_context, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()[:16]
    return f'"{snapshot.revision}-{context_digest}"'


@router.post("/ofrep/v1/evaluate/flags/{key}")
async def ofrep_single(
    key: str, request: Request, runtime: RuntimeDep, _who: Evaluator
) -> Response:
    try:
        context = context_from_json(body_object(await request.body()).get("context"))
    except ContextError as exc:
        return _json(400, to_json(ofrep_error(exc.code, str(exc), key)))
    evaluation = runtime.snapshots.current.evaluate(key, context)
    count_all(request, (evaluation,))
    return _json(*ofrep_answer(evaluation))


@router.post("/ofrep/v1/evaluate/flags")
async def ofrep_bulk(request: Request, runtime: RuntimeDep, _who: Evaluator) -> Response:
    try:
        raw_context = body_object(await request.body()).get("context")
        context = context_from_json(raw_context)
    except ContextError as exc:
        return _json(400, to_json(ofrep_error(exc.code, str(exc))))
    current = runtime.snapshots.current
    etag = bulk_etag(current, raw_context)
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    evaluations = current.evaluate_all(context)
    count_all(request, evaluations)
    body = bulk_answer(to_json(evaluation_to_ofrep(e)) for e in evaluations)
    return _json(200, body, {"ETag": etag})
