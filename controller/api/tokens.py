"""API tokens (admin only). A token's secret is shown once, when it is created."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from controller.api.answers import (
    CHANGE_ERRORS,
    READ_ERRORS,
    CreatedToken,
    TokenAnswer,
    TokenList,
    errors,
)
from controller.api.bodies import TokenBody
from controller.api.params import PathText
from controller.runtime import Admin, RuntimeDep

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


@router.post("", status_code=201, response_model=CreatedToken, responses=errors(*CHANGE_ERRORS))
def create_token(body: TokenBody, runtime: RuntimeDep, who: Admin) -> dict[str, Any]:
    token, secret = runtime.tokens.create(
        name=body.name,
        role=body.role,
        created_by=who.actor,
        now=runtime.clock(),
        expires_in=body.expires_in,
    )
    return {**token.view(), "token": secret}


@router.get("", response_model=TokenList, responses=errors(*READ_ERRORS))
def list_tokens(runtime: RuntimeDep, _who: Admin) -> dict[str, Any]:
    return {"tokens": [t.view() for t in runtime.tokens.list()]}


@router.delete("/{token_id}", response_model=TokenAnswer, responses=errors(*CHANGE_ERRORS))
def revoke_token(token_id: PathText, runtime: RuntimeDep, who: Admin) -> dict[str, Any]:
    return runtime.tokens.revoke(token_id, actor=who.actor, now=runtime.clock()).view()
