"""The wire format of an evaluation answer: the JSON of the native route
(``/api/v1/evaluate/{key}``) and of OFREP (``/ofrep/v1/evaluate/flags[/{key}]``), and
the flag metadata the SDK's OpenFeature provider gives (the same as OFREP's, so the two
providers agree).

Written once here for every front end: the controller's lean evaluation route and its
documented FastAPI routes send the same bytes because both write with these functions.
Pure: an ``Evaluation`` in, dicts and bytes out. Which HTTP status goes with an answer
is the edge's business (``controller.api.evaluation``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from flags.model import ErrorCode, Evaluation, Reason

FlagMetadata = dict[str, bool | int | float | str]


def flag_metadata(evaluation: Evaluation) -> FlagMetadata:
    """OpenFeature flag metadata for an answer: what OFREP sends and our provider gives."""
    meta: FlagMetadata = {"flagVersion": evaluation.flag_version}
    rollout = evaluation.rollout
    if rollout is not None:
        meta.update(
            rollout=rollout.rollout,
            status=rollout.status,
            stage=rollout.stage,
            step=rollout.step,
            percent=rollout.percent,
            shadow=rollout.shadow,
        )
    return meta


def evaluation_to_dict(evaluation: Evaluation) -> dict[str, Any]:
    """The native API's answer for one flag (camelCase, as OpenFeature clients expect)."""
    answer: dict[str, Any] = {
        "key": evaluation.key,
        "value": evaluation.value,
        "variant": evaluation.variant,
        "reason": evaluation.reason.value,
    }
    if evaluation.error_code is not None:
        answer["errorCode"] = evaluation.error_code.value
    if evaluation.error_message is not None:
        answer["errorMessage"] = evaluation.error_message
    answer["flagVersion"] = evaluation.flag_version
    rollout = evaluation.rollout
    if rollout is not None:
        answer["rollout"] = {
            "name": rollout.rollout,
            "status": rollout.status,
            "stage": rollout.stage,
            "step": rollout.step,
            "percent": rollout.percent,
            "regions": sorted(rollout.regions),
            "shadow": rollout.shadow,
        }
    return answer


def evaluation_to_ofrep(evaluation: Evaluation) -> dict[str, Any]:
    """One OFREP answer: the single route's body, and one item of the bulk answer."""
    code = evaluation.error_code
    if code is ErrorCode.FLAG_NOT_FOUND:
        return {
            "key": evaluation.key,
            "errorCode": code.value,
            "errorDetails": evaluation.error_message or "flag not found",
        }
    if evaluation.reason is Reason.ERROR:
        return {
            "key": evaluation.key,
            "errorCode": (code or ErrorCode.GENERAL).value,
            "errorDetails": evaluation.error_message or "evaluation failed",
        }
    # A missing targeting key on a split is the safe default, not an error (PRODUCT.md):
    # a success, so OpenFeature keeps the flag's value rather than the caller's default.
    return {
        "key": evaluation.key,
        "value": evaluation.value,
        "reason": evaluation.reason.value,
        "variant": evaluation.variant,
        "metadata": flag_metadata(evaluation),
    }


def ofrep_error(code: ErrorCode, message: str, key: str | None = None) -> dict[str, Any]:
    """An OFREP answer for a request that could not be evaluated (a bad body or context)."""
    body: dict[str, Any] = {"errorCode": code.value, "errorDetails": message}
    if key is not None:
        body["key"] = key
    return body


def to_json(content: Any) -> bytes:
    """JSON exactly as Starlette's ``JSONResponse`` writes it: UTF-8, compact, no NaN."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def bulk_answer(items: Iterable[bytes]) -> bytes:
    """OFREP's ``{"flags": [...]}`` from items already written by ``to_json``: byte for
    byte what writing the whole object would give, since ``to_json`` is compact. Lets a
    server keep each answer's bytes and join them per request."""
    return b'{"flags":[' + b",".join(items) + b"]}"
