"""Gate evaluations: the stored history, and trying a gate now ("test query")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, Field

from controller.api.answers import (
    READ_ERRORS,
    GateEvaluations,
    GateTest,
    RolloutGateTest,
    errors,
)
from controller.api.bodies import Body
from controller.api.params import PathText, QueryText
from controller.errors import Busy, Invalid
from controller.gates import history as gate_history
from controller.gates.reading import query_variables, read_gate
from controller.rollouts import plan_problems
from controller.runtime import Reader, Runtime, RuntimeDep
from stages.decide import decide
from stages.planfile import PlanError, parse_plan_data
from stages.state import RolloutState

router = APIRouter(prefix="/api/v1", tags=["gates"])


class GateTestBody(Body):
    gate: str | None = Field(default=None, description="one gate by name; default: every gate")


class AdHocGateBody(Body):
    gate: dict[str, Any] = Field(description="a gate as written in a plan file")
    variables: dict[str, str] = Field(default_factory=dict)


@router.get(
    "/rollouts/{name}/gates",
    response_model=GateEvaluations,
    responses=errors(404, *READ_ERRORS),
)
def gate_evaluations(
    name: PathText,
    runtime: RuntimeDep,
    _who: Reader,
    gate: QueryText = None,
    since: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> dict[str, Any]:
    """The newest evaluation of each gate, and the history (newest first)."""
    since_utc = _utc(since, "query.since") if since is not None else None
    return runtime.read_models.gate_evaluations(name, gate=gate, since=since_utc, limit=limit)


def _utc(moment: datetime, field: str) -> datetime:
    # 0001-01-01T00:00+14:00 is a valid timestamp that has no UTC date.
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise Invalid(
            f"{field} is out of range", [{"field": field, "message": "no such UTC date"}]
        ) from None


@router.post(
    "/rollouts/{name}/gates/test",
    response_model=RolloutGateTest,
    responses=errors(404, 429, *READ_ERRORS),
)
def test_rollout_gates(
    name: PathText, body: GateTestBody, runtime: RuntimeDep, _who: Reader
) -> dict[str, Any]:
    """Read the rollout's gates now and say what the controller would decide.
    Nothing is stored and nothing changes."""
    state = runtime.read_models.rollout_state(name)
    now = runtime.clock()
    variables = query_variables(state, now)
    every = {
        g.name: g
        for i in range(len(state.plan.steps))
        for g in state.plan.gates_for(i, baking=True)
    }
    if body.gate is not None and body.gate not in every:
        raise Invalid(
            f"rollout {name!r} has no gate {body.gate!r}",
            [{"field": "gate", "message": f"one of: {', '.join(sorted(every)) or 'none'}"}],
        )
    current = state.gates_now()
    chosen = [every[body.gate]] if body.gate else list(current)
    with _gate_test_slot(runtime):
        deadline = time.monotonic() + runtime.settings.gate_timeout * max(1, len(chosen))
        readings = [read_gate(runtime.gates, g, variables, now, state, deadline) for g in chosen]
    decision = decide(state, readings, now)
    return {
        "rollout": name,
        "status": state.status.value,
        "step": state.step,
        "readings": [gate_history.reading_view(r) for r in readings],
        "would_decide": {"decision": type(decision).__name__, "reason": decision.reason},
    }


@router.post("/gates/test", response_model=GateTest, responses=errors(429, *READ_ERRORS))
def test_gate(body: AdHocGateBody, runtime: RuntimeDep, _who: Reader) -> dict[str, Any]:
    """Try a gate definition before it goes into a plan."""
    probe = {
        "rollout": "gate-test",
        "flag": "gate-test",
        "steps": [{"stage": "full"}],
        "gates": [body.gate],
    }
    try:
        plan = parse_plan_data(probe)
    except PlanError as exc:
        problems = plan_problems(exc)
        for p in problems:
            p["field"] = "gate" + str(p["field"]).removeprefix("gates[0]")
        raise Invalid("the gate has problems", problems) from exc
    with _gate_test_slot(runtime):
        # A compare gate reads against a rollout that has just begun (no evidence yet);
        # its ``${step_window}`` comes from the body's variables, e.g. "3600s".
        probe_state = RolloutState(plan=plan)
        now = runtime.clock()
        reading = read_gate(runtime.gates, plan.gates[0], body.variables, now, probe_state)
    return {"reading": gate_history.reading_view(reading)}


@contextmanager
def _gate_test_slot(runtime: Runtime) -> Iterator[None]:
    """One of ROLLOUT_GATE_TEST_CONCURRENCY places, or 429 at once: people testing
    queries never queue up threads, and they share nothing with the scheduler (whose
    checks have workers of their own), so no amount of them delays a rollback."""
    if not runtime.gate_tests.acquire(blocking=False):
        raise Busy(
            f"{runtime.settings.gate_test_concurrency} gate tests are running; try again shortly"
        )
    try:
        yield
    finally:
        runtime.gate_tests.release()
