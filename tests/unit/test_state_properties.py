"""Properties of the state machine over random plans, random ticks and random actions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from stages.actions import ALLOWED, Action, ActionRefused, available_actions, perform
from stages.decisions import Advance, AwaitApproval, Complete, Decision
from stages.plan import Plan
from stages.state import GateReading, Outcome, RolloutState, Status, serving
from stages.transitions import tick
from tests.unit.plans import T0, gate_names, plans

BLOCKING = frozenset({Outcome.HOLD, Outcome.NO_DATA, Outcome.ERROR})
FORWARD = (Advance, AwaitApproval, Complete)
# Two in three readings ok, so that random runs get far enough to meet approvals, the
# last step and rollbacks from wide steps.
MOSTLY_OK = st.one_of(st.just(Outcome.OK), st.just(Outcome.OK), st.sampled_from(list(Outcome)))


@dataclass(frozen=True)
class Tick:
    seconds: int
    outcomes: Mapping[str, Outcome | None]  # None: the gate was not read


@dataclass(frozen=True)
class Act:
    action: Action
    force: bool
    immediate: bool


Event = Tick | Act


def events(plan: Plan) -> st.SearchStrategy[list[Event]]:
    names = gate_names(plan)
    ticks = st.builds(
        Tick,
        seconds=st.integers(min_value=0, max_value=90),
        outcomes=st.fixed_dictionaries({n: st.none() | MOSTLY_OK for n in names}),
    )
    # Abort and retry are rarer, or few runs would get past the first steps.
    actions = st.sampled_from([a for a in Action if a not in (Action.ABORT, Action.RETRY)] * 3)
    acts = st.builds(
        Act, st.one_of(actions, st.sampled_from(list(Action))), st.booleans(), st.booleans()
    )
    return st.lists(st.one_of(ticks, ticks, ticks, ticks, acts), min_size=10, max_size=80)


@st.composite
def starts(draw: st.DrawFn, plan: Plan) -> RolloutState:
    """A state a rollout can be in: any status, at any step that status allows."""
    status = draw(st.sampled_from(list(Status)))
    last = plan.last_step
    if status in (Status.PENDING, Status.ROLLED_BACK):
        step = 0
    elif status is Status.COMPLETED:
        step = last
    else:
        step = draw(st.integers(0, last))
    if status is Status.AWAITING_APPROVAL and step == last:
        status = Status.PAUSED  # there is no next step to await
    rolling_back = status is Status.ROLLING_BACK
    return RolloutState(
        plan=plan,
        status=status,
        step=step,
        step_started_at=None if status is Status.PENDING else T0,
        started_at=None if status is Status.PENDING else T0,
        max_step_reached=last if status is Status.COMPLETED else step,
        observe_until=T0 + plan.rollback_observe if rolling_back else None,
        ok_evaluations=draw(st.integers(0, plan.min_evaluations)),
    )


@st.composite
def runs(draw: st.DrawFn) -> tuple[RolloutState, list[Event]]:
    plan = draw(plans())
    return draw(starts(plan)), draw(events(plan))


def readings_of(event: Tick, now: datetime) -> list[GateReading]:
    return [GateReading(name, o, now) for name, o in event.outcomes.items() if o is not None]


def due_outcomes(state: RolloutState, event: Tick, now: datetime) -> list[Outcome]:
    """What each applicable gate past its delay read this tick, computed apart from decide."""
    assert state.step_started_at is not None
    return [
        event.outcomes.get(g.name) or Outcome.NO_DATA
        for g in state.plan.gates_for(state.step)
        if now >= state.step_started_at + g.delay
    ]


def check_tick(
    before: RolloutState, decision: Decision, after: RolloutState, event: Tick, now: datetime
) -> None:
    if after.step > before.step:
        assert isinstance(decision, Advance), "only an advance moves forward"
    if before.status is Status.RUNNING and BLOCKING & set(due_outcomes(before, event, now)):
        assert not isinstance(decision, FORWARD), "advanced on hold or missing data"
        assert after.step <= before.step
    if before.status is not Status.RUNNING:
        assert not isinstance(decision, FORWARD), f"moved forward while {before.status}"
    if before.status is Status.ROLLING_BACK and after.status in (
        Status.ROLLING_BACK,
        Status.ROLLED_BACK,
        Status.PAUSED,
    ):
        assert serving(after).percent <= serving(before).percent, "exposure rose in a rollback"


def check_state(state: RolloutState) -> None:
    assert 0 <= state.step <= state.plan.last_step
    assert available_actions(state), f"no way out of {state.status}"
    if state.status is Status.COMPLETED:
        assert state.step == state.max_step_reached == state.plan.last_step
    if state.status is Status.ROLLING_BACK:
        assert state.observe_until is not None


@settings(max_examples=300, deadline=None)
@given(runs())
def test_random_runs_keep_the_safety_properties(run: tuple[RolloutState, list[Event]]) -> None:
    state, script = run
    now = T0
    for event in script:
        if isinstance(event, Tick):
            now += timedelta(seconds=event.seconds)
            decision, after = tick(state, readings_of(event, now), now)
            check_tick(state, decision, after, event, now)
        else:
            after = act(state, event, now)
        check_state(after)
        state = after


def act(state: RolloutState, event: Act, now: datetime) -> RolloutState:
    try:
        after = perform(state, event.action, now, force=event.force, immediate=event.immediate)
    except ActionRefused as refused:
        assert refused.reason
        forced_only = event.action is Action.ADVANCE and state.status in ALLOWED[event.action]
        assert forced_only or state.status not in ALLOWED[event.action]
        assert not event.force or not forced_only, "force did not override the gates"
        return state
    assert state.status in ALLOWED[event.action]
    return after


@settings(max_examples=200, deadline=None)
@given(plans(), st.integers(min_value=1, max_value=120))
def test_a_healthy_rollout_completes_once_each_approval_is_given(plan: Plan, every: int) -> None:
    now = T0
    state = perform(RolloutState(plan=plan), Action.START, now)
    for _ in range(5000):
        if state.status is Status.COMPLETED:
            break
        if state.status is Status.AWAITING_APPROVAL:
            state = perform(state, Action.APPROVE, now)
            continue
        now += timedelta(seconds=every)
        healthy = [GateReading(name, Outcome.OK, now) for name in gate_names(plan)]
        _, state = tick(state, healthy, now)
        assert state.status in (Status.RUNNING, Status.AWAITING_APPROVAL, Status.COMPLETED)
    assert state.status is Status.COMPLETED


@settings(max_examples=1000, deadline=None)
@given(plans(), st.data())
def test_no_single_tick_advances_on_hold_or_missing_data(plan: Plan, data: st.DataObject) -> None:
    step = data.draw(st.integers(0, plan.last_step), label="step")
    state = RolloutState(
        plan=plan,
        status=Status.RUNNING,
        step=step,
        step_started_at=T0,
        started_at=T0,
        max_step_reached=step,
        ok_evaluations=data.draw(st.integers(0, 5), label="ok_evaluations"),
    )
    now = T0 + timedelta(seconds=data.draw(st.integers(0, 400), label="seconds"))
    outcomes = data.draw(
        st.fixed_dictionaries({n: st.none() | MOSTLY_OK for n in gate_names(plan)}),
        label="outcomes",
    )
    tick_event = Tick(0, outcomes)

    decision, after = tick(state, readings_of(tick_event, now), now)

    check_tick(state, decision, after, tick_event, now)
