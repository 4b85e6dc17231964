"""Per-request evaluation: the native endpoint and OFREP. Both read only the
in-memory snapshot (never the database), so they keep answering while it is down."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from controller.runtime import Evaluator, RuntimeDep
from flags.codec import evaluation_to_dict, snapshot_to_dict
from flags.model import ErrorCode, Evaluation, EvaluationContext, Reason

router = APIRouter(tags=["evaluation"])

_RESERVED_QUERY = frozenset({"targetingKey"})


class EvaluationCounts:
    """How often each flag answered each variant since this process started, for the UI.

    A Counter under a lock: a few hundred nanoseconds per answer, next to the
    microseconds an evaluation over HTTP takes; a lost update would make the counts lie.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, evaluation: Evaluation) -> None:
        with self._lock:
            self._counts[(evaluation.key, evaluation.variant or "(none)")] += 1

    def by_flag(self) -> dict[str, dict[str, int]]:
        with self._lock:
            items = list(self._counts.items())
        out: dict[str, dict[str, int]] = {}
        for (flag, variant), count in sorted(items):
            out.setdefault(flag, {})[variant] = count
        return out


def _counted(request: Request, evaluation: Evaluation) -> Evaluation:
    counts: EvaluationCounts | None = getattr(request.app.state, "evaluation_counts", None)
    if counts is not None:
        counts.add(evaluation)
    return evaluation


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


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ContextError(ErrorCode.PARSE_ERROR, f"request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ContextError(ErrorCode.PARSE_ERROR, "request body must be a JSON object")
    return data


# -- native ------------------------------------------------------------------


def _native(evaluation: Evaluation) -> JSONResponse:
    status = 404 if evaluation.error_code is ErrorCode.FLAG_NOT_FOUND else 200
    return JSONResponse(evaluation_to_dict(evaluation), status_code=status)


@router.get("/api/v1/evaluate/{key}")
def evaluate_get(key: str, request: Request, runtime: RuntimeDep, _who: Evaluator) -> JSONResponse:
    """Evaluate for ``?targetingKey=K``; every other query parameter is an attribute."""
    params = request.query_params
    context = EvaluationContext(
        targeting_key=params.get("targetingKey") or None,
        attributes={k: v for k, v in params.items() if k not in _RESERVED_QUERY},
    )
    return _native(_counted(request, runtime.snapshots.current.evaluate(key, context)))


@router.post("/api/v1/evaluate/{key}")
async def evaluate_post(
    key: str, request: Request, runtime: RuntimeDep, _who: Evaluator
) -> JSONResponse:
    """Evaluate for a JSON body ``{"context": {"targetingKey": ..., ...}}``."""
    try:
        context = context_from_json((await _json_body(request)).get("context"))
    except ContextError as exc:
        return JSONResponse(
            {
                "error": "invalid",
                "message": str(exc),
                "problems": [{"field": "context", "message": str(exc)}],
            },
            status_code=400,
        )
    return _native(_counted(request, runtime.snapshots.current.evaluate(key, context)))


@router.get("/api/v1/snapshot")
def snapshot(request: Request, runtime: RuntimeDep, _who: Evaluator) -> Response:
    """Every flag with its rollout overlay, for SDKs that evaluate locally."""
    current = runtime.snapshots.current
    if request.headers.get("if-none-match") == current.etag:
        return Response(status_code=304, headers={"ETag": current.etag})
    return JSONResponse(snapshot_to_dict(current), headers={"ETag": current.etag})


# -- OFREP -------------------------------------------------------------------


def _metadata(evaluation: Evaluation) -> dict[str, Any]:
    meta: dict[str, Any] = {"flagVersion": evaluation.flag_version}
    r = evaluation.rollout
    if r is not None:
        meta.update(
            rollout=r.rollout,
            status=r.status,
            stage=r.stage,
            step=r.step,
            percent=r.percent,
            shadow=r.shadow,
        )
    return meta


def ofrep_item(evaluation: Evaluation) -> tuple[int, dict[str, Any]]:
    code = evaluation.error_code
    if code is ErrorCode.FLAG_NOT_FOUND:
        return 404, {
            "key": evaluation.key,
            "errorCode": code.value,
            "errorDetails": evaluation.error_message or "flag not found",
        }
    if evaluation.reason is Reason.ERROR:
        return 400, {
            "key": evaluation.key,
            "errorCode": (code or ErrorCode.GENERAL).value,
            "errorDetails": evaluation.error_message or "evaluation failed",
        }
    # A missing targeting key on a split is the safe default, not an error (PRODUCT.md).
    return 200, {
        "key": evaluation.key,
        "value": evaluation.value,
        "reason": evaluation.reason.value,
        "variant": evaluation.variant,
        "metadata": _metadata(evaluation),
    }


def _ofrep_error(code: ErrorCode, message: str, key: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"errorCode": code.value, "errorDetails": message}
    if key is not None:
        body["key"] = key
    return JSONResponse(body, status_code=400)


@router.post("/ofrep/v1/evaluate/flags/{key}")
async def ofrep_single(
    key: str, request: Request, runtime: RuntimeDep, _who: Evaluator
) -> JSONResponse:
    try:
        context = context_from_json((await _json_body(request)).get("context"))
    except ContextError as exc:
        return _ofrep_error(exc.code, str(exc), key)
    evaluation = _counted(request, runtime.snapshots.current.evaluate(key, context))
    status, body = ofrep_item(evaluation)
    return JSONResponse(body, status_code=status)


@router.post("/ofrep/v1/evaluate/flags")
async def ofrep_bulk(request: Request, runtime: RuntimeDep, _who: Evaluator) -> Response:
    try:
        raw_context = (await _json_body(request)).get("context")
        context = context_from_json(raw_context)
    except ContextError as exc:
        return _ofrep_error(exc.code, str(exc))
    current = runtime.snapshots.current
    # The ETag covers the flag revision and the context: either changing changes answers.
    context_digest = hashlib.sha256(
        json.dumps(raw_context, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()[:16]
    etag = f'"{current.revision}-{context_digest}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    flags = [ofrep_item(_counted(request, e))[1] for e in current.evaluate_all(context)]
    return JSONResponse({"flags": flags}, headers={"ETag": etag})
