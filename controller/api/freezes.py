"""Freezes: stop every advance in a scope until a time (docs/freezes.md). Operators and
admins create and end them; every reader may list them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from controller.api.answers import CHANGE_ERRORS, READ_ERRORS, FreezeAnswer, FreezeList, errors
from controller.api.bodies import FreezeBody
from controller.api.params import MAX_DB_INT
from controller.runtime import Operator, Reader, RuntimeDep

router = APIRouter(prefix="/api/v1/freezes", tags=["freezes"])


@router.post("", status_code=201, response_model=FreezeAnswer, responses=errors(*CHANGE_ERRORS))
def create_freeze(body: FreezeBody, runtime: RuntimeDep, who: Operator) -> dict[str, Any]:
    """Hold every advance, completion and approval of the rollouts in ``scope`` until
    ``until``; rollbacks, aborts and the kill switch still act."""
    return runtime.freezes.create(
        reason=body.reason,
        until=body.until,
        scope=body.scope,
        tz=body.tz,
        actor=who.actor,
        now=runtime.clock(),
    )


@router.get("", response_model=FreezeList, responses=errors(*READ_ERRORS))
def list_freezes(
    runtime: RuntimeDep,
    _who: Reader,
    ended: Annotated[bool, Query(description="also the ended and expired ones")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The active freezes, oldest first, each with the rollouts it holds."""
    return {"freezes": runtime.freezes.listing(runtime.clock(), include_ended=ended, limit=limit)}


@router.delete("/{freeze_id}", response_model=FreezeAnswer, responses=errors(*CHANGE_ERRORS))
def end_freeze(
    freeze_id: Annotated[int, Path(ge=1, le=MAX_DB_INT)], runtime: RuntimeDep, who: Operator
) -> dict[str, Any]:
    """Unfreeze: the freeze stops holding anything now."""
    return runtime.freezes.end(freeze_id, actor=who.actor, now=runtime.clock())
