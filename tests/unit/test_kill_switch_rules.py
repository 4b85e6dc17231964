"""The core's kill-switch rules: which actions a disabled flag refuses, and what the
pause and the re-enable do to a rollout's state."""

from __future__ import annotations

import itertools

import pytest

from stages.actions import ALLOWED, NEEDS_FLAG_ENABLED, Action, ActionRefused, perform
from stages.decide import decide
from stages.decisions import Hold
from stages.state import ACTIVE_STATUSES, GateMark, Outcome, Status
from stages.transitions import (
    after_kill_switch,
    kill_switch_reason,
    pause_for_kill_switch,
    paused_by_kill_switch,
)
from tests.unit.plans import at, gate, ramp, state

PLAN = ramp(4, gates=[gate("error-rate", rollback_above=0.02)])
NOW = at(minutes=30)  # every step's 5-minute hold has long run out
ALLOWED_PAIRS = [(a, s) for a, s in itertools.product(Action, Status) if s in ALLOWED[a]]


@pytest.mark.parametrize(("action", "status"), ALLOWED_PAIRS)
def test_a_disabled_flag_refuses_exactly_the_actions_that_move_a_rollout_on(
    action: Action, status: Status
) -> None:
    before = state(PLAN, status, 1)
    if action in NEEDS_FLAG_ENABLED:
        with pytest.raises(ActionRefused, match="flag demo is disabled \\(kill switch\\)"):
            perform(before, action, NOW, flag_enabled=False)
    else:
        # Pause, rollback and abort narrow: the kill switch changes nothing about them.
        assert perform(before, action, NOW, flag_enabled=False) == perform(before, action, NOW)


@pytest.mark.parametrize("status", sorted(ACTIVE_STATUSES))
def test_the_kill_switch_pauses_where_the_rollout_is(status: Status) -> None:
    before = state(PLAN, status, 2, ok_evaluations=2, observe_until=at(minutes=40))
    reason = kill_switch_reason("demo", "alice (operator)")

    after = pause_for_kill_switch(before, reason)

    assert (after.status, after.step, after.reason) == (Status.PAUSED, 2, reason)
    assert after.step_started_at == before.step_started_at
    assert after.observe_until is None
    assert paused_by_kill_switch(after)
    assert reason.startswith("kill switch: flag demo disabled by alice (operator)")
    # Paused, its hold long over and every gate ok: the controller does not move it.
    assert isinstance(decide(after, [], NOW), Hold)


def test_enabling_the_flag_restarts_the_step_and_stays_paused() -> None:
    killed = pause_for_kill_switch(
        state(
            PLAN,
            Status.RUNNING,
            2,
            ok_evaluations=2,
            gate_errors={"error-rate": 1},
            history={"error-rate": (GateMark(at(minutes=1), Outcome.OK),)},
        ),
        kill_switch_reason("demo", "alice"),
    )

    after = after_kill_switch(killed, NOW, "kill switch off")

    assert (after.status, after.step, after.reason) == (Status.PAUSED, 2, "kill switch off")
    assert after.step_started_at == NOW  # the dwell under the kill switch does not count
    assert (after.ok_evaluations, after.gate_errors, after.history) == (0, {}, {})
    assert not paused_by_kill_switch(after)
    resumed = perform(after, Action.RESUME, NOW)
    assert (resumed.status, resumed.step_started_at) == (Status.RUNNING, NOW)


def test_a_pause_for_another_reason_is_not_the_kill_switch() -> None:
    paused = perform(state(PLAN, Status.RUNNING, 1), Action.PAUSE, NOW, reason="p99 odd")
    assert not paused_by_kill_switch(paused)
    running = state(PLAN, Status.RUNNING, 1, reason=kill_switch_reason("demo", "a"))
    assert not paused_by_kill_switch(running)
