"""What a person may do to a rollout, as an explicit transition table.

``ALLOWED`` says which statuses each action may start from; ``perform`` returns the
next state or raises ``ActionRefused`` with a reason fit to show as it is.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime

from stages.state import Outcome, RolloutState, Status
from stages.transitions import begin_bake, enter_step, roll_back, step_back
from stages.windows import closed_sentence


class Action(enum.StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    ADVANCE = "advance"
    APPROVE = "approve"
    ROLLBACK = "rollback"
    ABORT = "abort"
    RETRY = "retry"


ALLOWED: Mapping[Action, frozenset[Status]] = {
    Action.START: frozenset({Status.PENDING}),
    Action.PAUSE: frozenset({Status.RUNNING, Status.AWAITING_APPROVAL, Status.ROLLING_BACK}),
    Action.RESUME: frozenset({Status.PAUSED}),
    Action.ADVANCE: frozenset({Status.RUNNING, Status.PAUSED}),
    Action.APPROVE: frozenset({Status.AWAITING_APPROVAL}),
    Action.ROLLBACK: frozenset(
        {
            Status.RUNNING,
            Status.PAUSED,
            Status.AWAITING_APPROVAL,
            Status.ROLLING_BACK,
            Status.COMPLETED,
        }
    ),
    Action.ABORT: frozenset(
        {
            Status.PENDING,
            Status.RUNNING,
            Status.PAUSED,
            Status.AWAITING_APPROVAL,
            Status.ROLLING_BACK,
            Status.ROLLED_BACK,
            Status.COMPLETED,
        }
    ),
    Action.RETRY: frozenset({Status.ROLLED_BACK, Status.ABORTED}),
}

# Refusals that deserve more than "applies to ...": what to do instead.
_HINTS: Mapping[tuple[Action, Status], str] = {
    (Action.ADVANCE, Status.AWAITING_APPROVAL): "the next step needs approval: use approve",
    (Action.ADVANCE, Status.ROLLING_BACK): "a gate breached; pause, then resume or advance",
    (Action.START, Status.ROLLED_BACK): "use retry",
    (Action.START, Status.ABORTED): "use retry",
    (Action.RESUME, Status.AWAITING_APPROVAL): "use approve",
}

_BLOCKING = frozenset({Outcome.ROLLBACK, Outcome.ABORT})

# What may not happen while the rollout's flag is disabled: each would move a rollout
# on (or count its time) while the kill switch serves nobody the new side. Pausing,
# rolling back and aborting stay allowed: they only narrow.
NEEDS_FLAG_ENABLED = frozenset(
    {Action.START, Action.RESUME, Action.ADVANCE, Action.APPROVE, Action.RETRY}
)


class ActionRefused(Exception):
    """A manual action that the rollout's status (or its gates) does not allow."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def available_actions(state: RolloutState) -> list[Action]:
    """The actions a person may take now, in a stable order for the UI."""
    return [action for action in Action if state.status in ALLOWED[action]]


def perform(
    state: RolloutState,
    action: Action,
    now: datetime,
    *,
    force: bool = False,
    immediate: bool = False,
    reason: str = "",
    flag_enabled: bool = True,
) -> RolloutState:
    if state.status not in ALLOWED[action]:
        raise ActionRefused(_refusal(state, action))
    if not flag_enabled and action in NEEDS_FLAG_ENABLED:
        flag = state.plan.flag
        raise ActionRefused(
            f"cannot {action}: flag {flag} is disabled (kill switch), so the rollout serves "
            f"the old side to everyone; enable the flag first (rollout flag enable {flag})"
        )
    closed = closed_sentence(state.windows, now)
    if closed and action is Action.APPROVE:
        # Refused, not kept for later: an approval judges the gates as they read now,
        # and a change that starts by itself when a window opens is one nobody watched
        # begin (docs/windows.md).
        raise ActionRefused(
            f"cannot approve {_next_step_name(state)} now: {closed}; approve it then"
        )
    if closed and action is Action.ADVANCE and not force:
        breached = _breached_gates(state)
        also = f" (force would also override {breached})" if breached else ""
        raise ActionRefused(f"cannot advance now: {closed}; use force to override{also}")
    if action is Action.ADVANCE:
        if closed:
            reason = f"{reason or 'advanced by operator'} (forced {closed})"
        return _advance(state, now, force, reason)
    if action is Action.ROLLBACK:
        return _rollback(state, now, immediate, reason)
    return _SIMPLE[action](state, now, reason or f"{_PAST[action]} by operator")


def _next_step_name(state: RolloutState) -> str:
    index = min(state.step + 1, state.plan.last_step)
    return f"step {index + 1} ({state.plan.steps[index].label()})"


def _refusal(state: RolloutState, action: Action) -> str:
    allowed = ", ".join(s for s in Status if s in ALLOWED[action])
    status = str(state.status).replace("_", " ")
    hint = _HINTS.get((action, state.status), f"{action} applies to {allowed}")
    return f"cannot {action} a rollout that is {status}; {hint}"


def _advance(state: RolloutState, now: datetime, force: bool, reason: str) -> RolloutState:
    breached = _breached_gates(state)
    if breached and not force:
        raise ActionRefused(
            f"cannot advance while {breached} is at rollback/abort; use force to override"
        )
    why = reason or "advanced by operator"
    if breached:
        # The force is part of the record: the audit log shows what was overridden.
        why = f"{why} (forced past {breached})"
    plan = state.plan
    if state.step >= plan.last_step and plan.bake is not None and not state.baking:
        # The bake is what follows the last step: advancing skips the dwell, not the bake.
        return begin_bake(state, now, f"{why}: into the bake")
    if state.step >= plan.last_step:
        if state.baking:
            why = f"{why}: bake ended early" + (
                f", holdout of {plan.holdout:g} % released" if plan.holdout is not None else ""
            )
        return replace(state, status=Status.COMPLETED, reason=why, observe_until=None)
    if plan.steps[state.step + 1].approval:
        return replace(state, status=Status.AWAITING_APPROVAL, reason=why)
    return enter_step(state, state.step + 1, Status.RUNNING, now, why)


def _breached_gates(state: RolloutState) -> str:
    # Only gates of the current step: a stale outcome of a gate that no longer
    # applies says nothing about widening from here.
    names = {g.name for g in state.gates_now()}
    return ", ".join(
        f"{name}: {outcome}"
        for name, outcome in sorted(state.last_outcomes.items())
        if name in names and outcome in _BLOCKING
    )


def _rollback(state: RolloutState, now: datetime, immediate: bool, reason: str) -> RolloutState:
    # From completed the rollout serves the last step, so stepping back starts there.
    current = state.plan.last_step if state.status is Status.COMPLETED else state.step
    if immediate or current == 0:
        return roll_back(state, now, reason or "rolled back to the first step by operator")
    return step_back(state, current - 1, now, reason or "rolled back one step by operator")


def _start(state: RolloutState, now: datetime, reason: str) -> RolloutState:
    # Starting is the person's approval of the first step, even if it asks for one.
    fresh = replace(state, max_step_reached=0, last_outcomes={}, started_at=now, evidence={})
    return enter_step(fresh, 0, Status.RUNNING, now, reason)


def _pause(state: RolloutState, now: datetime, reason: str) -> RolloutState:
    return replace(state, status=Status.PAUSED, reason=reason, observe_until=None)


def _resume(state: RolloutState, now: datetime, reason: str) -> RolloutState:
    # Fresh evidence before advancing, but the dwell already served still counts.
    return replace(state, status=Status.RUNNING, reason=reason, ok_evaluations=0, gate_errors={})


def _approve(state: RolloutState, now: datetime, reason: str) -> RolloutState:
    # A plan applied while awaiting approval may have dropped the step it waited for.
    if state.step >= state.plan.last_step:
        return replace(state, status=Status.COMPLETED, reason=reason, observe_until=None)
    return enter_step(state, state.step + 1, Status.RUNNING, now, reason)


def _abort(state: RolloutState, now: datetime, reason: str) -> RolloutState:
    return replace(state, status=Status.ABORTED, reason=reason, observe_until=None)


_SIMPLE: Mapping[Action, Callable[[RolloutState, datetime, str], RolloutState]] = {
    Action.START: _start,
    Action.PAUSE: _pause,
    Action.RESUME: _resume,
    Action.APPROVE: _approve,
    Action.ABORT: _abort,
    Action.RETRY: _start,
}

_PAST: Mapping[Action, str] = {
    Action.START: "started",
    Action.PAUSE: "paused",
    Action.RESUME: "resumed",
    Action.APPROVE: "approved",
    Action.ABORT: "aborted",
    Action.RETRY: "retried",
}
