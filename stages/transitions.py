"""Applying a decision: the next ``RolloutState``, pure.

``apply`` first records this tick's readings (the memory that ``for`` windows,
``min_evaluations`` and ``max_gate_errors`` need), then carries out the decision.
The version is left alone: the store bumps it with its compare-and-swap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from stages.compare import Evidence
from stages.decide import (
    decide,
    due_gates,
    ok_evaluations_after,
    outcome_of,
    readings_by_gate,
    waiting_for_traffic,
)
from stages.decisions import (
    Advance,
    AwaitApproval,
    BeginBake,
    Complete,
    Decision,
    Hold,
    Pause,
    Recover,
    RollBack,
    StepBack,
)
from stages.plan import Plan
from stages.state import ACTIVE_STATUSES, GateMark, GateReading, RolloutState, Status

# Holds in these statuses explain the status itself ("holding: p99 ..."), so they
# replace the reason; a paused rollout keeps the reason it was paused for.
_HOLD_SETS_REASON = frozenset({Status.RUNNING, Status.ROLLING_BACK})


def tick(
    state: RolloutState, readings: Sequence[GateReading], now: datetime
) -> tuple[Decision, RolloutState]:
    decision = decide(state, readings, now)
    return decision, apply(state, decision, readings, now)


def apply(
    state: RolloutState, decision: Decision, readings: Sequence[GateReading], now: datetime
) -> RolloutState:
    if state.status in ACTIVE_STATUSES:
        state = record_readings(state, readings, now)
    return _carry_out(state, decision, now)


def record_readings(
    state: RolloutState, readings: Sequence[GateReading], now: datetime
) -> RolloutState:
    """Remember this tick's outcome of every due gate; delayed or foreign ones are ignored."""
    gates = due_gates(state, now)
    by_gate = readings_by_gate(gates, readings)
    history = dict(state.history)
    errors = dict(state.gate_errors)
    last = dict(state.last_outcomes)
    evidence = dict(state.evidence)
    sustains = longest_sustains(state.plan)
    for gate in gates:
        reading = by_gate[gate.name]
        if reading is not None and reading.compare is not None and gate.compare is not None:
            kept = evidence.get(gate.name)
            if kept is None or kept.margin != gate.compare.worse_by:
                kept = Evidence(gate.compare.worse_by)
            evidence[gate.name] = kept.with_step(reading.compare)
        outcome = outcome_of(reading)
        marks = (*history.get(gate.name, ()), GateMark(now, outcome))
        history[gate.name] = trim(marks, now - sustains.get(gate.name, timedelta(0)))
        if outcome.is_missing_data and not waiting_for_traffic(gate, reading):
            errors[gate.name] = errors.get(gate.name, 0) + 1
        else:
            errors.pop(gate.name, None)
        last[gate.name] = outcome
    return replace(
        state,
        history=history,
        gate_errors=errors,
        last_outcomes=last,
        ok_evaluations=ok_evaluations_after(state, readings, now),
        evidence=evidence,
    )


def longest_sustain(plan: Plan, gate: str) -> timedelta:
    """The longest `for` window of any gate by that name, in any step."""
    return longest_sustains(plan).get(gate, timedelta(0))


def longest_sustains(plan: Plan) -> dict[str, timedelta]:
    """The longest `for` window of each gate name, in any step: one pass over the plan
    (a tick trims every gate's marks; a pass per gate cost 40 % of a tick's time)."""
    out: dict[str, timedelta] = {}
    for gate in (*plan.gates, *(g for step in plan.steps for g in step.gates)):
        out[gate.name] = max(out.get(gate.name, timedelta(0)), gate.sustain)
    return out


def trim(marks: Sequence[GateMark], window_start: datetime) -> tuple[GateMark, ...]:
    """Drop marks before the window, except the newest one at or before its start:
    that one shows whether the level already held when the window began."""
    before = [m for m in marks if m.at <= window_start]
    inside = [m for m in marks if m.at > window_start]
    return (*before[-1:], *inside)


def enter_step(
    state: RolloutState, step: int, status: Status, now: datetime, reason: str
) -> RolloutState:
    """Begin ``step`` afresh: its dwell, evaluations and ``for`` windows start now."""
    return replace(
        state,
        status=status,
        step=step,
        step_started_at=now,
        reason=reason,
        ok_evaluations=0,
        gate_errors={},
        history={},
        observe_until=None,
        max_step_reached=max(state.max_step_reached, step),
        # A new step is a new segment: the split changed, so its counts start afresh.
        evidence={name: kept.folded() for name, kept in state.evidence.items()},
        bake_started_at=None,  # any step entered, even the last again, is outside a bake
    )


def begin_bake(state: RolloutState, now: datetime, reason: str) -> RolloutState:
    """Into the bake after the last step: a new segment, as a step is (the holdout changes
    the split, and rate windows still hold the traffic before it), still ``running``."""
    entered = enter_step(state, state.plan.last_step, Status.RUNNING, now, reason)
    return replace(entered, bake_started_at=now)


def _carry_out(state: RolloutState, decision: Decision, now: datetime) -> RolloutState:
    match decision:
        case Hold(reason=reason):
            return replace(state, reason=reason) if state.status in _HOLD_SETS_REASON else state
        case Advance(to_step=to_step, reason=reason):
            return enter_step(state, to_step, Status.RUNNING, now, reason)
        case AwaitApproval(reason=reason):
            return replace(
                state, status=Status.AWAITING_APPROVAL, reason=reason, observe_until=None
            )
        case BeginBake(reason=reason):
            return begin_bake(state, now, reason)
        case Complete(reason=reason):
            return replace(state, status=Status.COMPLETED, reason=reason, observe_until=None)
        case Pause(reason=reason) | Recover(reason=reason):
            return replace(state, status=Status.PAUSED, reason=reason, observe_until=None)
        case StepBack(to_step=to_step, reason=reason):
            return step_back(state, to_step, now, reason)
        case RollBack(reason=reason):
            return roll_back(state, now, reason)


# The reason a kill switch pauses with; enabling the flag looks for it.
KILL_SWITCH_PREFIX = "kill switch: "


def kill_switch_reason(flag: str, actor: str) -> str:
    return (
        f"{KILL_SWITCH_PREFIX}flag {flag} disabled by {actor}; it serves the old side to "
        "everyone. Enabling the flag does not resume: a person resumes"
    )


def paused_by_kill_switch(state: RolloutState) -> bool:
    return state.status is Status.PAUSED and state.reason.startswith(KILL_SWITCH_PREFIX)


def pause_for_kill_switch(state: RolloutState, reason: str) -> RolloutState:
    """Stop where it is: while the flag is disabled nobody gets this step, so nothing
    about it may count toward advancing."""
    return replace(state, status=Status.PAUSED, reason=reason, observe_until=None)


def after_kill_switch(state: RolloutState, now: datetime, reason: str) -> RolloutState:
    """The flag serves the step again: its dwell, delays and evidence start now, since
    the time under the kill switch served nobody the new side. Still paused."""
    return enter_step(state, state.step, Status.PAUSED, now, reason)


def step_back(state: RolloutState, to_step: int, now: datetime, reason: str) -> RolloutState:
    entered = enter_step(state, to_step, Status.ROLLING_BACK, now, reason)
    return replace(entered, observe_until=now + state.plan.rollback_observe)


def roll_back(state: RolloutState, now: datetime, reason: str) -> RolloutState:
    return enter_step(state, 0, Status.ROLLED_BACK, now, reason)
