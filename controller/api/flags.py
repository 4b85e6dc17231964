"""Flags: list, read, create or replace, kill switch, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Response

from controller.api.answers import (
    CHANGE_ERRORS,
    READ_ERRORS,
    FlagAnswer,
    FlagList,
    PutFlagAnswer,
    errors,
)
from controller.api.bodies import SwitchBody
from controller.api.params import PathText
from controller.errors import Invalid
from controller.runtime import Admin, Operator, Reader, RuntimeDep

router = APIRouter(prefix="/api/v1/flags", tags=["flags"])

# A flag is its stored JSON: a key it lacks (an older definition, or "unreadable" on a
# sound one) stays absent rather than becoming null.
KEYS_AS_STORED = True


@router.get(
    "",
    response_model=FlagList,
    responses=errors(*READ_ERRORS),
    response_model_exclude_unset=KEYS_AS_STORED,
)
def list_flags(runtime: RuntimeDep, _who: Reader) -> dict[str, Any]:
    return {"flags": runtime.flags.list_all()}


@router.get(
    "/{key}",
    response_model=FlagAnswer,
    responses=errors(404, *READ_ERRORS),
    response_model_exclude_unset=KEYS_AS_STORED,
)
def get_flag(key: PathText, runtime: RuntimeDep, _who: Reader) -> dict[str, Any]:
    return runtime.flags.get(key)


@router.put(
    "/{key}",
    response_model=PutFlagAnswer,
    responses={201: {"model": PutFlagAnswer, "description": "created"}, **errors(*CHANGE_ERRORS)},
    response_model_exclude_unset=KEYS_AS_STORED,
)
def put_flag(
    key: PathText,
    runtime: RuntimeDep,
    who: Operator,
    response: Response,
    body: Annotated[dict[str, Any], Body()],
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Create a flag, or replace it (send the version you read, in the body or If-Match)."""
    body = dict(body)
    version = _version(body.pop("version", None), if_match)
    for server_field in ("managed_by", "created_at", "updated_at"):
        body.pop(server_field, None)
    outcome, view = runtime.flags.put(
        key,
        body,
        actor=who.actor,
        now=runtime.clock(),
        expected_version=version,
        rollouts=runtime.rollouts,
    )
    response.status_code = 201 if outcome == "created" else 200
    return {"outcome": outcome, "flag": view}


@router.post(
    "/{key}/enable",
    response_model=FlagAnswer,
    responses=errors(*CHANGE_ERRORS),
    response_model_exclude_unset=KEYS_AS_STORED,
)
def enable_flag(
    key: PathText, body: SwitchBody, runtime: RuntimeDep, who: Operator
) -> dict[str, Any]:
    return runtime.flags.set_enabled(
        key,
        True,
        actor=who.actor,
        now=runtime.clock(),
        reason=body.reason,
        expected_version=body.version,
        rollouts=runtime.rollouts,
    )


@router.post(
    "/{key}/disable",
    response_model=FlagAnswer,
    responses=errors(*CHANGE_ERRORS),
    response_model_exclude_unset=KEYS_AS_STORED,
)
def disable_flag(
    key: PathText, body: SwitchBody, runtime: RuntimeDep, who: Operator
) -> dict[str, Any]:
    """The kill switch: everyone gets the flag's default variant. A rollout that drives
    the flag is paused in the same transaction; enabling the flag does not resume it."""
    return runtime.flags.set_enabled(
        key,
        False,
        actor=who.actor,
        now=runtime.clock(),
        reason=body.reason,
        expected_version=body.version,
        rollouts=runtime.rollouts,
    )


@router.delete("/{key}", status_code=204, responses=errors(*CHANGE_ERRORS))
def delete_flag(key: PathText, runtime: RuntimeDep, who: Admin) -> Response:
    runtime.flags.delete(key, actor=who.actor, now=runtime.clock())
    return Response(status_code=204)


def _version(in_body: object, if_match: str | None) -> int | None:
    raw: object = in_body
    if raw is None and if_match is not None:
        raw = if_match.strip().strip('"')
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise Invalid(
            "version must be an integer", [{"field": "version", "message": "not an integer"}]
        )
    try:
        version = int(str(raw))
    except (TypeError, ValueError):
        raise Invalid(
            "version must be an integer", [{"field": "version", "message": "not an integer"}]
        ) from None
    if version < 0:
        raise Invalid("version must be >= 0", [{"field": "version", "message": "negative"}])
    return version
