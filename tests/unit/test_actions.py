"""Manual actions: every (action, status) pair, then the rules inside the allowed ones."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from stages.actions import ALLOWED, Action, ActionRefused, available_actions, perform
from stages.plan import Plan
from stages.state import Outcome, RolloutState, Status
from tests.unit.plans import MINUTE, at, gate, ramp, state, with_step

PLAN = ramp(4, gates=[gate("error-rate", rollback_above=0.02)])
NOW = at(minutes=3)

# Where a rollout in each status sits in a 4-step plan for the table below.
STEP_IN = {
    Status.PENDING: 0,
    Status.RUNNING: 1,
    Status.PAUSED: 1,
    Status.AWAITING_APPROVAL: 1,
    Status.ROLLING_BACK: 1,
    Status.ROLLED_BACK: 0,
    Status.COMPLETED: 3,
    Status.ABORTED: 1,
}

# (action, from status) -> (status, step) afterwards; every pair not here is refused.
RESULTS: dict[tuple[Action, Status], tuple[Status, int]] = {
    (Action.START, Status.PENDING): (Status.RUNNING, 0),
    (Action.PAUSE, Status.RUNNING): (Status.PAUSED, 1),
    (Action.PAUSE, Status.AWAITING_APPROVAL): (Status.PAUSED, 1),
    (Action.PAUSE, Status.ROLLING_BACK): (Status.PAUSED, 1),
    (Action.RESUME, Status.PAUSED): (Status.RUNNING, 1),
    (Action.ADVANCE, Status.RUNNING): (Status.RUNNING, 2),
    (Action.ADVANCE, Status.PAUSED): (Status.RUNNING, 2),
    (Action.APPROVE, Status.AWAITING_APPROVAL): (Status.RUNNING, 2),
    (Action.ROLLBACK, Status.RUNNING): (Status.ROLLING_BACK, 0),
    (Action.ROLLBACK, Status.PAUSED): (Status.ROLLING_BACK, 0),
    (Action.ROLLBACK, Status.AWAITING_APPROVAL): (Status.ROLLING_BACK, 0),
    (Action.ROLLBACK, Status.ROLLING_BACK): (Status.ROLLING_BACK, 0),
    (Action.ROLLBACK, Status.COMPLETED): (Status.ROLLING_BACK, 2),
    **{(Action.ABORT, s): (Status.ABORTED, STEP_IN[s]) for s in Status if s is not Status.ABORTED},
    (Action.RETRY, Status.ROLLED_BACK): (Status.RUNNING, 0),
    (Action.RETRY, Status.ABORTED): (Status.RUNNING, 0),
}

PAIRS = list(itertools.product(Action, Status))


def at_status(status: Status, plan: Plan = PLAN, **fields: Any) -> RolloutState:
    return state(plan, status, STEP_IN[status], **fields)


def test_the_table_is_the_allowed_map() -> None:
    assert {pair for pair in PAIRS if pair[1] in ALLOWED[pair[0]]} == set(RESULTS)


@pytest.mark.parametrize(
    ("action", "status"),
    [p for p in PAIRS if p in RESULTS],
    ids=[f"{a}-from-{s}" for a, s in PAIRS if (a, s) in RESULTS],
)
def test_allowed_action(action: Action, status: Status) -> None:
    after = perform(at_status(status), action, NOW)

    assert (after.status, after.step) == RESULTS[action, status]
    assert after.reason.endswith("by operator")


@pytest.mark.parametrize(
    ("action", "status"),
    [p for p in PAIRS if p not in RESULTS],
    ids=[f"{a}-from-{s}" for a, s in PAIRS if (a, s) not in RESULTS],
)
def test_refused_action(action: Action, status: Status) -> None:
    before = at_status(status)

    with pytest.raises(ActionRefused) as refused:
        perform(before, action, NOW)

    said = str(status).replace("_", " ")
    assert refused.value.reason.startswith(f"cannot {action} a rollout that is {said}; ")
    assert str(refused.value) == refused.value.reason


@pytest.mark.parametrize(
    ("action", "status", "reason"),
    [
        (Action.RESUME, Status.RUNNING, "cannot resume a rollout that is running; "),
        (Action.ADVANCE, Status.AWAITING_APPROVAL, "use approve"),
        (Action.START, Status.ROLLED_BACK, "use retry"),
        (Action.RETRY, Status.RUNNING, "retry applies to rolled_back, aborted"),
    ],
)
def test_refusals_say_what_to_do(action: Action, status: Status, reason: str) -> None:
    with pytest.raises(ActionRefused, match=reason):
        perform(at_status(status), action, NOW)


def test_person_s_reason_is_kept() -> None:
    after = perform(at_status(Status.RUNNING), Action.PAUSE, NOW, reason="checking dashboards")

    assert after.reason == "checking dashboards"


def test_start_counts_as_approval_of_the_first_step() -> None:
    plan = with_step(PLAN, 0, approval=True)

    after = perform(RolloutState(plan=plan), Action.START, NOW)

    assert (after.status, after.step) == (Status.RUNNING, 0)
    assert after.started_at == after.step_started_at == NOW


def test_resume_needs_fresh_evidence_but_keeps_the_dwell() -> None:
    paused = at_status(Status.PAUSED, ok_evaluations=5, gate_errors={"error-rate": 3})

    after = perform(paused, Action.RESUME, NOW)

    assert (after.ok_evaluations, after.gate_errors) == (0, {})
    assert after.step_started_at == paused.step_started_at


def test_advance_is_refused_while_a_gate_is_at_rollback() -> None:
    running = at_status(Status.RUNNING, last_outcomes={"error-rate": Outcome.ROLLBACK})

    with pytest.raises(ActionRefused, match="error-rate: rollback"):
        perform(running, Action.ADVANCE, NOW)


def test_forced_advance_goes_on_and_records_the_force() -> None:
    running = at_status(Status.RUNNING, last_outcomes={"error-rate": Outcome.ABORT})

    after = perform(running, Action.ADVANCE, NOW, force=True, reason="known flaky metric")

    assert (after.status, after.step) == (Status.RUNNING, 2)
    assert after.reason == "known flaky metric (forced past error-rate: abort)"


def test_advance_ignores_outcomes_of_gates_that_no_longer_apply() -> None:
    running = at_status(Status.RUNNING, last_outcomes={"retired-gate": Outcome.ROLLBACK})

    assert perform(running, Action.ADVANCE, NOW).step == 2


def test_advance_skips_the_dwell_and_starts_the_next_step_afresh() -> None:
    running = at_status(Status.RUNNING, ok_evaluations=1, gate_errors={"error-rate": 1})

    after = perform(running, Action.ADVANCE, NOW)

    assert after.step_started_at == NOW
    assert (after.ok_evaluations, after.gate_errors, after.max_step_reached) == (0, {}, 2)


def test_advance_into_a_step_that_needs_approval_awaits_it() -> None:
    running = at_status(Status.RUNNING, with_step(PLAN, 2, approval=True))

    after = perform(running, Action.ADVANCE, NOW)

    assert (after.status, after.step) == (Status.AWAITING_APPROVAL, 1)


def test_advance_at_the_last_step_completes() -> None:
    after = perform(state(PLAN, Status.RUNNING, 3), Action.ADVANCE, NOW)

    assert (after.status, after.step) == (Status.COMPLETED, 3)


def test_approve_enters_the_next_step() -> None:
    waiting = at_status(Status.AWAITING_APPROVAL, with_step(PLAN, 2, approval=True))

    after = perform(waiting, Action.APPROVE, NOW)

    assert (after.status, after.step, after.step_started_at) == (Status.RUNNING, 2, NOW)


def test_gradual_rollback_observes_the_narrower_step() -> None:
    after = perform(state(PLAN, Status.RUNNING, 2), Action.ROLLBACK, NOW)

    assert (after.status, after.step) == (Status.ROLLING_BACK, 1)
    assert after.observe_until == NOW + PLAN.rollback_observe


def test_gradual_rollback_at_the_first_step_is_rolled_back() -> None:
    after = perform(state(PLAN, Status.RUNNING, 0), Action.ROLLBACK, NOW)

    assert (after.status, after.step, after.observe_until) == (Status.ROLLED_BACK, 0, None)


def test_immediate_rollback_goes_to_the_first_step() -> None:
    after = perform(state(PLAN, Status.RUNNING, 2), Action.ROLLBACK, NOW, immediate=True)

    assert (after.status, after.step) == (Status.ROLLED_BACK, 0)


def test_retry_restarts_from_the_first_step_with_fresh_books() -> None:
    aborted = state(
        PLAN,
        Status.ABORTED,
        2,
        ok_evaluations=3,
        gate_errors={"error-rate": 2},
        last_outcomes={"error-rate": Outcome.ABORT},
        observe_until=NOW,
    )

    after = perform(aborted, Action.RETRY, NOW + MINUTE)

    assert (after.status, after.step, after.max_step_reached) == (Status.RUNNING, 0, 0)
    assert after.started_at == after.step_started_at == NOW + MINUTE
    assert (after.ok_evaluations, after.gate_errors, after.last_outcomes) == (0, {}, {})
    assert after.observe_until is None


@pytest.mark.parametrize("status", list(Status))
def test_every_status_offers_a_way_out(status: Status) -> None:
    actions = available_actions(at_status(status))

    assert actions
    assert actions == [a for a in Action if (a, status) in RESULTS]
