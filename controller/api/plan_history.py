"""Plan history and plan diff: every applied plan of a rollout, and what a plan would
change against the stored one. Reads only: any reader may call them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from controller.api.answers import (
    READ_ERRORS,
    PlanDiffAnswer,
    PlanRevisionDetail,
    PlanRevisions,
    errors,
)
from controller.api.bodies import PlanBody
from controller.api.params import MAX_DB_INT, PathText
from controller.errors import Invalid
from controller.rollouts import parse_plan_input
from controller.runtime import Reader, RuntimeDep
from stages.planfile import plan_size_problem

router = APIRouter(prefix="/api/v1", tags=["plan history"])


@router.get(
    "/rollouts/{name}/plans",
    response_model=PlanRevisions,
    response_model_exclude_unset=True,
    responses=errors(404, *READ_ERRORS),
)
def plan_revisions(
    name: PathText,
    runtime: RuntimeDep,
    _who: Reader,
    changes: Annotated[
        bool, Query(description="each one's changes against the one before")
    ] = False,
) -> dict[str, Any]:
    """Every applied plan of the rollout, oldest first: who, when, why, what changed."""
    revisions = runtime.plan_history.revisions(name, with_changes=changes)
    return {"rollout": name, "revisions": revisions}


@router.get(
    "/rollouts/{name}/plans/{revision}",
    response_model=PlanRevisionDetail,
    responses=errors(404, *READ_ERRORS),
)
def plan_revision(
    name: PathText,
    revision: Annotated[int, Path(ge=1, le=MAX_DB_INT)],
    runtime: RuntimeDep,
    _who: Reader,
) -> dict[str, Any]:
    """One revision: its source as applied, the stored plan, its changes."""
    return runtime.plan_history.revision(name, revision)


@router.post("/plans/diff", response_model=PlanDiffAnswer, responses=errors(*READ_ERRORS))
def plan_diff(body: PlanBody, runtime: RuntimeDep, _who: Reader) -> dict[str, Any]:
    """What applying the plan would change against its rollout's stored plan: steps
    added, removed or changed, gates, thresholds and fields. Changes nothing."""
    too_large = plan_size_problem(body.yaml if body.yaml is not None else body.plan)
    if too_large is not None:
        problem: dict[str, object] = {"field": "plan", "line": None, "message": too_large}
        raise Invalid(too_large, [problem])
    plan, _source = parse_plan_input(body.yaml, body.plan)
    return runtime.rollouts.diff(plan)
