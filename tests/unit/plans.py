"""Plans, states and readings for the unit tests, built straight from the core's dataclasses.

Builders for case tables, and Hypothesis strategies for the state-machine properties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from stages.plan import Gate, OnRollback, Plan, Stage, Step
from stages.state import GateMark, GateReading, Outcome, RolloutState, Status

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)


def at(seconds: float = 0, minutes: float = 0) -> datetime:
    """A time relative to T0, the start of the current step in most cases."""
    return T0 + timedelta(seconds=seconds, minutes=minutes)


def gate(name: str = "error-rate", **fields: Any) -> Gate:
    return Gate(name=name, query=f"{name}_query", **fields)


def step(percent: float = 1, stage: Stage = Stage.CANARY, **fields: Any) -> Step:
    return Step(stage=stage, percent=percent, **fields)


PERCENTS = (0, 1, 5, 25, 50, 100)


def ramp(
    n: int = 3,
    *,
    hold: timedelta = 5 * MINUTE,
    gates: Sequence[Gate] = (),
    steps: Sequence[Step] | None = None,
    **fields: Any,
) -> Plan:
    """A plan of ``n`` widening canary steps (or the given steps), each held ``hold``."""
    if steps is None:
        steps = [step(PERCENTS[min(i + 1, len(PERCENTS) - 1)], hold=hold) for i in range(n)]
    return Plan(rollout="demo", flag="demo", steps=tuple(steps), gates=tuple(gates), **fields)


def with_step(plan: Plan, index: int, **fields: Any) -> Plan:
    """The plan with one step changed (approval, on_rollback, gates, ...)."""
    steps = list(plan.steps)
    steps[index] = replace(steps[index], **fields)
    return replace(plan, steps=tuple(steps))


def state(
    plan: Plan,
    status: Status = Status.RUNNING,
    step: int = 0,
    started: datetime = T0,
    **fields: Any,
) -> RolloutState:
    return RolloutState(
        plan=plan,
        status=status,
        step=step,
        step_started_at=started,
        started_at=T0,
        max_step_reached=step,
        **fields,
    )


def reading(gate: str, outcome: Outcome, when: datetime = T0, **fields: Any) -> GateReading:
    return GateReading(gate=gate, outcome=outcome, at=when, **fields)


def readings(when: datetime, **outcomes: Outcome) -> list[GateReading]:
    """One reading per gate; keyword names use ``_`` for the ``-`` in gate names."""
    return [reading(name.replace("_", "-"), o, when) for name, o in outcomes.items()]


def marks(outcome: Outcome, *times: datetime) -> tuple[GateMark, ...]:
    return tuple(GateMark(t, outcome) for t in times)


# --- Hypothesis strategies -------------------------------------------------------------

OUTCOMES = st.sampled_from(list(Outcome))
_SHORT = st.integers(min_value=0, max_value=180).map(lambda s: timedelta(seconds=s))


@st.composite
def gates(draw: st.DrawFn, name: str) -> Gate:
    stages = draw(st.frozensets(st.sampled_from(list(Stage)), max_size=2))
    return Gate(
        name=name,
        query=f"{name}_query",
        hold_above=1.0,
        rollback_above=2.0,
        abort_above=3.0,
        sustain=draw(st.sampled_from([timedelta(0), 30 * SECOND, 2 * MINUTE])),
        delay=draw(st.sampled_from([timedelta(0), 20 * SECOND])),
        stages=stages,
    )


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """Valid plans: exposure only widens; any number of gates, approvals and pauses."""
    n = draw(st.integers(min_value=1, max_value=5))
    percents = sorted(draw(st.lists(st.sampled_from(PERCENTS[1:]), min_size=n, max_size=n)))
    steps = [
        Step(
            stage=Stage.CANARY if p < 100 else Stage.FULL,
            percent=float(p),
            hold=draw(_SHORT),
            approval=draw(st.booleans()),
            on_rollback=draw(st.sampled_from(list(OnRollback))),
        )
        for p in percents
    ]
    if draw(st.booleans()):
        steps.insert(0, Step(stage=Stage.SHADOW, percent=0.0, hold=draw(_SHORT)))
    names = draw(st.lists(st.sampled_from(["g1", "g2", "g3"]), unique=True, max_size=3))
    return Plan(
        rollout="prop",
        flag="prop",
        steps=tuple(steps),
        gates=tuple(draw(gates(name)) for name in names),
        min_evaluations=draw(st.integers(min_value=1, max_value=3)),
        max_gate_errors=draw(st.integers(min_value=1, max_value=4)),
        rollback_observe=draw(_SHORT),
    )


def gate_names(plan: Plan) -> list[str]:
    return sorted({g.name for i in range(len(plan.steps)) for g in plan.gates_for(i)})
