"""API tokens (admin only). A token's secret is shown once, when it is created."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from controller.api.bodies import TokenBody
from controller.api.params import PathText
from controller.runtime import Admin, RuntimeDep
from controller.storage.tables import TokenRow

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


def _view(row: TokenRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


@router.post("", status_code=201)
def create_token(body: TokenBody, runtime: RuntimeDep, who: Admin) -> dict[str, Any]:
    row, secret = runtime.tokens.create(
        name=body.name, role=body.role, created_by=who.actor, now=runtime.clock()
    )
    # The change bumped the revision (so other replicas reload their tokens); serve that
    # revision here at once, or the snapshot's ETag would move later for no visible reason.
    runtime.changed()
    return {**_view(row), "token": secret}


@router.get("")
def list_tokens(runtime: RuntimeDep, _who: Admin) -> dict[str, Any]:
    return {"tokens": [_view(r) for r in runtime.tokens.list()]}


@router.delete("/{token_id}")
def revoke_token(token_id: PathText, runtime: RuntimeDep, who: Admin) -> dict[str, Any]:
    row = runtime.tokens.revoke(token_id, actor=who.actor, now=runtime.clock())
    runtime.changed()  # as in create_token
    return _view(row)
