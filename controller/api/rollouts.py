"""Rollouts: apply plans, read state, perform actions, and the audit list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from controller.api.answers import (
    CHANGE_ERRORS,
    READ_ERRORS,
    ApplyAnswer,
    AuditEvents,
    DryRunAnswer,
    RolloutAnswer,
    RolloutList,
    VerifyAnswer,
    errors,
)
from controller.api.bodies import ActionBody, PlanBody
from controller.api.params import MAX_DB_INT, PathText, QueryText
from controller.errors import Invalid
from controller.rollouts import parse_plan_input
from controller.runtime import Admin, Operator, Reader, RuntimeDep
from stages.actions import Action
from stages.planfile import plan_size_problem, plan_to_dict

router = APIRouter(prefix="/api/v1", tags=["rollouts"])


@router.post(
    "/plans",
    response_model=ApplyAnswer | DryRunAnswer,
    responses={201: {"model": ApplyAnswer, "description": "created"}, **errors(*CHANGE_ERRORS)},
)
def apply_plan(
    body: PlanBody,
    runtime: RuntimeDep,
    who: Operator,
    response: Response,
    dry_run: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    """Create or update a rollout from a plan (idempotent; a bad plan changes nothing).
    Each change is kept as the rollout's next plan revision, with ``reason``.
    ``?dry_run=true`` runs every check of the apply, gate query syntax included, and
    changes nothing."""
    # 422 like every other plan problem, not the 413 of a request over the body limit:
    # the request was readable, the plan in it is not acceptable.
    too_large = plan_size_problem(body.yaml if body.yaml is not None else body.plan)
    if too_large is not None:
        problem: dict[str, object] = {"field": "plan", "line": None, "message": too_large}
        raise Invalid(f"{too_large}; nothing was applied", [problem])
    plan, source = parse_plan_input(body.yaml, body.plan)
    # One code path for both: what dry-run calls valid, apply accepts (controller.rollouts).
    result = runtime.rollouts.apply(
        plan, source, who.actor, runtime.clock(), reason=body.reason, dry_run=dry_run
    )
    if dry_run:
        return {
            "outcome": "valid",
            "would": result.outcome,
            "plan": plan_to_dict(plan),
            "changes": result.changes,
            "diff": result.diff,
            "warnings": result.warnings,
        }
    response.status_code = 201 if result.outcome == "created" else 200
    return {
        "outcome": result.outcome,
        "changes": result.changes,
        "diff": result.diff,
        "revision": result.revision,
        "warnings": result.warnings,
        "rollout": result.rollout,
    }


@router.get("/rollouts", response_model=RolloutList, responses=errors(*READ_ERRORS))
def list_rollouts(runtime: RuntimeDep, _who: Reader) -> dict[str, Any]:
    return {"rollouts": runtime.rollouts.list_all(runtime.clock())}


@router.get("/rollouts/{name}", response_model=RolloutAnswer, responses=errors(404, *READ_ERRORS))
def get_rollout(name: PathText, runtime: RuntimeDep, _who: Reader) -> dict[str, Any]:
    return runtime.rollouts.get(name, runtime.clock())


@router.post(
    "/rollouts/{name}/actions/{action}",
    response_model=RolloutAnswer,
    responses=errors(*CHANGE_ERRORS),
)
def act(
    name: PathText, action: Action, body: ActionBody, runtime: RuntimeDep, who: Operator
) -> dict[str, Any]:
    """start, pause, resume, advance (force), approve, rollback (immediate), abort, retry."""
    return runtime.rollouts.act(
        name,
        action,
        actor=who.actor,
        now=runtime.clock(),
        reason=body.reason,
        force=body.force,
        immediate=body.immediate,
        expected_version=body.version,
    )


@router.delete("/rollouts/{name}", status_code=204, responses=errors(*CHANGE_ERRORS))
def delete_rollout(name: PathText, runtime: RuntimeDep, who: Admin) -> Response:
    runtime.rollouts.delete(name, actor=who.actor, now=runtime.clock())
    return Response(status_code=204)


@router.get("/audit/verify", response_model=VerifyAnswer, responses=errors(*READ_ERRORS))
def verify_audit(runtime: RuntimeDep, _who: Reader) -> dict[str, Any]:
    """Walk the audit hash chain: ``ok``, events ``checked``, the ``first_bad`` id and
    the ``problem`` with it."""
    return runtime.read_models.verify_audit().as_dict()


@router.get("/audit", response_model=AuditEvents, responses=errors(*READ_ERRORS))
def audit(
    runtime: RuntimeDep,
    _who: Reader,
    rollout: QueryText = None,
    flag: QueryText = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_DB_INT)] = None,
) -> dict[str, Any]:
    """Audit events, newest first; page with ``before`` = the last id you saw."""
    events = runtime.read_models.audit_events(
        rollout=rollout, flag=flag, limit=limit, before_id=before
    )
    return {"events": events}
