"""The bake after full (stages.bake): the plan fields and their problems, the decisions
in and around the bake as a named case table, the manual actions during it, what it
serves, and compare gates reading the holdout as their old side."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.actions import Action, ActionRefused, perform
from stages.bake import bake_view, coarse_duration
from stages.compare import Side
from stages.decide import decide
from stages.decisions import BeginBake, Complete, Decision, Hold, Pause, RollBack, StepBack
from stages.gates import compare_reading
from stages.plan import Comparison, Gate, OnRollback, Plan, Stage
from stages.plan_diff import diff_plans
from stages.planfile import PlanError, parse_plan, parse_plan_data, plan_to_dict
from stages.state import Outcome, RolloutState, Status, serving
from stages.transitions import apply
from tests.unit.plans import MINUTE, T0, at, gate, plans, ramp, reading, readings, state, step

DAY = timedelta(days=1)
ERR = gate("error-rate", hold_above=0.01, rollback_above=0.02, abort_above=0.05)
VS_HOLDOUT = Gate(
    name="errors-vs-holdout",
    query="events",
    min_samples=100,
    stages=frozenset({Stage.CANARY, Stage.FULL}),
    compare=Comparison(events="events", exposures="exposures", worse_by=0.05),
)


def baked(*, holdout: float | None = 1, gates: tuple[Gate, ...] = (ERR,), **fields: object) -> Plan:
    """Canary 5 %, regional us-west-1, full; each step held 5m; a 7-day bake."""
    steps = (
        step(5, hold=5 * MINUTE),
        step(5, Stage.REGIONAL, regions=frozenset({"us-west-1"}), hold=5 * MINUTE),
        step(100, Stage.FULL, regions=frozenset({"us-west-1"}), hold=5 * MINUTE),
    )
    return ramp(steps=steps, gates=gates, bake=7 * DAY, holdout=holdout, **fields)  # type: ignore[arg-type]


def at_full(plan: Plan, **fields: object) -> RolloutState:
    """Running at the last step, which began at T0."""
    return state(plan, step=plan.last_step, **fields)  # type: ignore[arg-type]


def in_bake(plan: Plan, **fields: object) -> RolloutState:
    """In the bake, which began at T0 (so did the step: a bake is a new segment)."""
    return at_full(plan, bake_started_at=T0, **fields)


def oks(plan: Plan, n: int = 3) -> dict[str, object]:
    return {"ok_evaluations": n}


# --- the plan file -----------------------------------------------------------------------

PLAN = """\
rollout: memory-layer
flag: memory-layer
steps:
  - {stage: canary, percent: 5, hold: 1h}
  - {stage: full, hold: 1h}
"""


def test_bake_and_holdout_are_read_and_written_back() -> None:
    plan = parse_plan(PLAN + "bake: 7d\nholdout: 1.5\n")
    assert (plan.bake, plan.holdout) == (7 * DAY, 1.5)
    data = plan_to_dict(plan)
    assert (data["bake"], data["holdout"]) == ("7d", 1.5)
    assert parse_plan_data(data) == plan
    plain = parse_plan(PLAN)
    assert (plain.bake, plain.holdout) == (None, None)
    assert "bake" not in plan_to_dict(plain) and "holdout" not in plan_to_dict(plain)


def test_the_example_plan_parses_and_round_trips() -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "bake.yaml"
    plan = parse_plan(example.read_text())
    assert (plan.bake, plan.holdout) == (timedelta(seconds=30), 5)
    assert parse_plan_data(json.loads(json.dumps(plan_to_dict(plan)))) == plan


@pytest.mark.parametrize(
    ("extra", "path", "line", "message"),
    [
        ("bake: 0s\n", "bake", 6, "must be at least 1s"),
        ("bake: 400d\n", "bake", 6, "must be at most 366d"),
        ("bake: soon\n", "bake", 6, "soon"),
        ("bake: 1d\nholdout: 0\n", "holdout", 7, "above 0 and below 50, not 0"),
        ("bake: 1d\nholdout: 50\n", "holdout", 7, "above 0 and below 50, not 50"),
        ("bake: 1d\nholdout: -1\n", "holdout", 7, "between 0 and 100"),
        ("bake: 1d\nholdout: 0.001\n", "holdout", 7, "at most 2 decimals"),
        ("bake: 1d\nholdout: one\n", "holdout", 7, "must be a number"),
        ("holdout: 1\n", "holdout", 6, "set bake too"),
    ],
)
def test_bad_bake_fields_are_refused_with_path_and_line(
    extra: str, path: str, line: int, message: str
) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(PLAN + extra)
    [problem] = caught.value.problems
    assert (problem.path, problem.line) == (path, line)
    assert message in problem.message


def test_a_holdout_needs_dual_writes_at_the_last_step() -> None:
    text = PLAN.replace("{stage: full, hold: 1h}", "{stage: full, shadow: false}")
    with pytest.raises(PlanError) as caught:
        parse_plan(text + "bake: 1d\nholdout: 1\n")
    [problem] = caught.value.problems
    assert problem.path == "holdout" and "shadow: false" in problem.message
    assert parse_plan(text + "bake: 1d\n").bake == DAY  # a bake alone is fine


COMPARE_AT_FULL = """\
gates:
  - name: errors-vs-holdout
    kind: compare
    events: sum by (variant) (increase(errors_total[${step_window}]))
    exposures: sum by (variant) (increase(requests_total[${step_window}]))
    worse_by: 0.01
    stages: [canary, full]
"""


def test_a_compare_gate_at_full_needs_a_holdout() -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(PLAN + COMPARE_AT_FULL)
    [problem] = caught.value.problems
    assert (problem.path, problem.line) == ("gates[0].stages", 12)
    assert "holdout" in problem.message
    plan = parse_plan(PLAN + "bake: 1d\nholdout: 1\n" + COMPARE_AT_FULL)
    assert Stage.FULL in plan.gates[0].stages
    with pytest.raises(PlanError, match="not shadow"):
        parse_plan(PLAN + "bake: 1d\nholdout: 1\n" + COMPARE_AT_FULL.replace("full]", "shadow]"))


def test_compare_gates_at_full_are_read_in_the_bake_only() -> None:
    plan = baked(gates=(ERR, VS_HOLDOUT))
    assert [g.name for g in at_full(plan).gates_now()] == ["error-rate"]
    assert [g.name for g in in_bake(plan).gates_now()] == ["error-rate", "errors-vs-holdout"]
    assert [g.name for g in state(plan, step=0).gates_now()] == ["error-rate", "errors-vs-holdout"]


# --- decisions ---------------------------------------------------------------------------

P = baked()
TIMED = baked(gates=())
PAUSING = replace(P, steps=(*P.steps[:-1], replace(P.steps[-1], on_rollback=OnRollback.PAUSE)))
WITHOUT_HOLDOUT = baked(holdout=None)
ALL_OK = readings(T0, error_rate=Outcome.OK)

CASES: list[tuple[str, RolloutState, tuple[Outcome, ...], timedelta, type, str]] = [
    # name, state, error-rate's outcome (none: no gates), time since T0, decision, reason part
    ("last step done: the bake begins", at_full(P, **oks(P)), (Outcome.OK,), 5 * MINUTE,
     BeginBake, "baking for 7d, 1 % held out on the old side"),
    ("a plan without a bake completes", at_full(replace(P, bake=None, holdout=None), **oks(P)),
     (Outcome.OK,), 5 * MINUTE, Complete, "last step done"),
    ("a timed ramp begins its bake on dwell", at_full(TIMED), (), 5 * MINUTE, BeginBake,
     "timed ramp"),
    ("the bake holds while it lasts", in_bake(P, **oks(P)), (Outcome.OK,), 3 * DAY, Hold,
     "baking, 4d left, holdout 1 %"),
    ("and says how long in two units", in_bake(P, **oks(P)), (Outcome.OK,),
     DAY + 20 * timedelta(hours=1) + 59 * MINUTE, Hold, "baking, 5d 3h left"),
    ("the bake ends: complete, holdout released", in_bake(P, **oks(P)), (Outcome.OK,), 7 * DAY,
     Complete, "bake 7d done, 4 ok evaluations in a row; holdout of 1 % released"),
    ("without a holdout nothing is released", in_bake(WITHOUT_HOLDOUT, **oks(P)),
     (Outcome.OK,), 7 * DAY, Complete, "bake 7d done"),
    ("a timed ramp's bake completes on time", in_bake(TIMED), (), 7 * DAY, Complete,
     "timed ramp"),
    ("a gate at hold keeps it baking past its end", in_bake(P, **oks(P)), (Outcome.HOLD,),
     8 * DAY, Hold, "holding: error-rate"),
    ("too few ok evaluations after the end", in_bake(P, **oks(P, 1)), (Outcome.OK,), 8 * DAY,
     Hold, "2 of 3 ok evaluations"),
    ("a freeze stops the completion", in_bake(P, blocked=("frozen by INC-1",), **oks(P)),
     (Outcome.OK,), 8 * DAY, Hold, "ready to advance, but frozen by INC-1"),
    ("a breach in the bake steps back", in_bake(P, **oks(P)), (Outcome.ROLLBACK,), DAY,
     StepBack, "stepping back to step 2"),
    ("an abort in the bake rolls back", in_bake(P, **oks(P)), (Outcome.ABORT,), DAY, RollBack,
     "abort: error-rate"),
    ("on_rollback: pause pauses in the bake", in_bake(PAUSING, **oks(P)), (Outcome.ROLLBACK,),
     DAY, Pause, "on_rollback: pause"),
    ("paused in the bake, only abort acts", in_bake(P, status=Status.PAUSED), (Outcome.ROLLBACK,),
     8 * DAY, Hold, "paused"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "before", "outcomes", "elapsed", "expected", "why"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_decisions_in_and_around_the_bake(
    name: str,
    before: RolloutState,
    outcomes: tuple[Outcome, ...],
    elapsed: timedelta,
    expected: type,
    why: str,
) -> None:
    now = T0 + elapsed
    got: Decision = decide(before, [reading("error-rate", o, now) for o in outcomes], now)
    assert isinstance(got, expected), got
    assert why in got.reason


def test_beginning_the_bake_carves_out_the_holdout_and_starts_a_segment() -> None:
    before = at_full(P, **oks(P))
    assert serving(before).percent == 100 and serving(before).regions == {"us-west-1"}
    now = at(minutes=5)
    after = apply(before, decide(before, ALL_OK, now), ALL_OK, now)
    assert (after.status, after.step, after.bake_started_at) == (Status.RUNNING, 2, now)
    assert after.step_started_at == now and after.ok_evaluations == 0  # a new segment
    served = serving(after)
    # The top 1 % of buckets, everywhere: a released region would give them new.
    assert (served.stage, served.percent, served.regions) == (Stage.FULL, 99, frozenset())
    view = bake_view(after, now + 2 * DAY)
    assert view is not None and view.ends_at == now + 7 * DAY
    assert view.sentence == "baking, 5d left, holdout 1 %"


def test_the_end_of_the_bake_completes_and_serves_everyone() -> None:
    before = in_bake(P, **oks(P))
    now = T0 + 7 * DAY
    after = apply(before, decide(before, ALL_OK, now), ALL_OK, now)
    assert after.status is Status.COMPLETED and not after.baking
    assert serving(after).percent == 100
    assert bake_view(after, now) is None


def test_a_breach_in_the_bake_leaves_it_and_narrows() -> None:
    before = in_bake(P, **oks(P))
    now = T0 + DAY
    breach = readings(now, error_rate=Outcome.ROLLBACK)
    after = apply(before, decide(before, breach, now), breach, now)
    assert (after.status, after.step, after.bake_started_at) == (Status.ROLLING_BACK, 1, None)
    assert serving(after).percent == 5 and serving(after).regions == {"us-west-1"}
    gone = apply(before, RollBack("abort"), [], now)
    assert (gone.status, gone.bake_started_at, serving(gone).percent) == (
        Status.ROLLED_BACK,
        None,
        0,
    )


def test_paused_in_the_bake_still_serves_the_holdout_and_resumes_baking() -> None:
    paused = perform(in_bake(P), Action.PAUSE, T0 + DAY)
    assert paused.baking and serving(paused).percent == 99
    resumed = perform(paused, Action.RESUME, T0 + 2 * DAY)
    assert resumed.baking and resumed.bake_started_at == T0  # the bake's clock runs on
    got = decide(resumed, ALL_OK, T0 + 3 * DAY)
    assert isinstance(got, Hold) and "baking, 4d left" in got.reason


# --- manual actions ----------------------------------------------------------------------


def test_advance_at_the_last_step_begins_the_bake_and_in_the_bake_completes() -> None:
    now = at(minutes=1)
    baking = perform(at_full(P), Action.ADVANCE, now, reason="looks good")
    assert (baking.status, baking.bake_started_at) == (Status.RUNNING, now)
    assert baking.reason == "looks good: into the bake" and serving(baking).percent == 99
    done = perform(baking, Action.ADVANCE, now + DAY)
    assert done.status is Status.COMPLETED and serving(done).percent == 100
    assert done.reason == "advanced by operator: bake ended early, holdout of 1 % released"


def test_advance_in_the_bake_is_refused_while_a_gate_breaches_unless_forced() -> None:
    breached = in_bake(P, last_outcomes={"error-rate": Outcome.ROLLBACK})
    with pytest.raises(ActionRefused, match="error-rate: rollback"):
        perform(breached, Action.ADVANCE, T0 + DAY)
    forced = perform(breached, Action.ADVANCE, T0 + DAY, force=True)
    assert forced.status is Status.COMPLETED
    assert "forced past error-rate: rollback" in forced.reason


def test_rollback_in_the_bake_steps_back_out_of_it() -> None:
    back = perform(in_bake(P), Action.ROLLBACK, T0 + DAY)
    assert (back.status, back.step, back.bake_started_at) == (Status.ROLLING_BACK, 1, None)
    retried = perform(perform(in_bake(P), Action.ROLLBACK, T0, immediate=True), Action.RETRY, T0)
    assert retried.bake_started_at is None and retried.step == 0


# --- compare gates against the holdout --------------------------------------------------


def test_a_compare_gate_in_the_bake_expects_the_holdouts_complement() -> None:
    plan = baked(gates=(VS_HOLDOUT,))
    bake = in_bake(plan)
    even = compare_reading(VS_HOLDOUT, Side(990, 9900), Side(10, 100), bake, T0)
    assert even.compare is not None and even.compare.expected_share == 0.99
    assert even.compare.verdict.value != "assignment_unhealthy"  # 1 % of requests: as split
    # The holdout's share far off its 1 %: the assignment is wrong, and that only holds.
    skewed = compare_reading(VS_HOLDOUT, Side(500, 5000), Side(500, 5000), bake, T0)
    assert skewed.compare is not None and skewed.compare.verdict.value == "assignment_unhealthy"
    assert skewed.outcome is Outcome.HOLD
    # A real regression against the holdout rolls back, as anywhere else.
    worse = compare_reading(VS_HOLDOUT, Side(29_700, 99_000), Side(10, 1000), bake, T0)
    assert worse.outcome is Outcome.ROLLBACK


def test_coarse_durations() -> None:
    assert [
        coarse_duration(d)
        for d in (
            5 * DAY + 3 * timedelta(hours=1) + MINUTE,
            5 * DAY + MINUTE,
            3 * timedelta(hours=1) + 12 * MINUTE,
            timedelta(seconds=42.2),
            timedelta(0),
        )
    ] == ["5d 3h", "5d", "3h 12m", "43s", "0s"]


def test_a_holdout_needs_a_full_last_step_and_a_bake_alone_may_follow_any() -> None:
    partial = PLAN.replace("  - {stage: full, hold: 1h}\n", "")
    with pytest.raises(PlanError) as caught:
        parse_plan(partial + "bake: 1d\nholdout: 1\n")
    [problem] = caught.value.problems
    assert problem.path == "holdout" and "the last step is canary" in problem.message
    plan = parse_plan(partial + "bake: 1d\n")
    baking = in_bake(plan)
    assert baking.baking and serving(baking).percent == 5  # a bake never widens


# --- properties --------------------------------------------------------------------------


@st.composite
def baked_plans(draw: st.DrawFn) -> Plan:
    plan = draw(plans())
    full = plan.steps[-1].stage is Stage.FULL
    holdout = draw(st.sampled_from([None, 1.0, 5.0, 0.25])) if full else None
    bake = timedelta(seconds=draw(st.integers(min_value=1, max_value=600)))
    return replace(plan, bake=bake, holdout=holdout)


TICK = st.tuples(
    st.integers(min_value=0, max_value=120),
    st.lists(st.sampled_from([Outcome.OK, Outcome.OK, Outcome.OK, *Outcome]), max_size=3),
)
ACTS = st.sampled_from([Action.ADVANCE, Action.PAUSE, Action.RESUME, Action.APPROVE,
                        Action.ROLLBACK, Action.RETRY])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(baked_plans(), st.lists(st.one_of(TICK, TICK, TICK, ACTS), min_size=5, max_size=120))
def test_random_runs_never_give_the_holdout_the_new_side_nor_complete_a_bake_early(
    plan: Plan, script: list[tuple[int, list[Outcome]] | Action]
) -> None:
    now = T0
    current = perform(RolloutState(plan=plan), Action.START, now)
    names = sorted({g.name for i in range(len(plan.steps)) for g in plan.gates_for(i)})
    for event in script:
        before = current
        if isinstance(event, Action):
            try:
                current = perform(current, event, now, force=True)
            except ActionRefused:
                continue
        else:
            now += timedelta(seconds=event[0])
            outcomes = dict(zip(names, event[1], strict=False))
            got = decide(current, [reading(n, o, now) for n, o in outcomes.items()], now)
            current = apply(current, got, [reading(n, o, now) for n, o in outcomes.items()], now)
            if isinstance(got, Complete):
                # Automatically, a plan with a bake completes only out of a whole bake.
                assert before.baking and before.bake_started_at is not None
                assert now - before.bake_started_at >= plan.bake  # type: ignore[operator]
        served = serving(current)
        if current.baking and plan.holdout is not None:
            assert current.step == plan.last_step
            assert served.percent == round(100 - plan.holdout, 2) and not served.regions
        if current.status is not Status.COMPLETED:
            # Never wider than the last step, and never more than 100 - holdout in a bake.
            assert served.percent <= plan.steps[-1].percent
        if current.status is Status.COMPLETED:
            assert served.percent == plan.steps[-1].percent


@settings(max_examples=150, deadline=None)
@given(baked_plans(), st.integers(min_value=1, max_value=120))
def test_a_healthy_rollout_bakes_then_completes(plan: Plan, every: int) -> None:
    now = T0
    current = perform(RolloutState(plan=plan), Action.START, now)
    names = sorted({g.name for i in range(len(plan.steps)) for g in plan.gates_for(i)})
    baked_from = None
    for _ in range(10_000):
        if current.status is Status.COMPLETED:
            break
        if current.status is Status.AWAITING_APPROVAL:
            current = perform(current, Action.APPROVE, now)
            continue
        now += timedelta(seconds=every)
        healthy = [reading(n, Outcome.OK, now) for n in names]
        current = apply(current, decide(current, healthy, now), healthy, now)
        if current.baking and baked_from is None:
            baked_from = current.bake_started_at
    assert current.status is Status.COMPLETED and baked_from is not None
    assert plan.bake is not None and now - baked_from >= plan.bake


def test_a_plan_diff_shows_the_bake_and_the_holdout() -> None:
    before = parse_plan(PLAN + "bake: 1d\n")
    after = parse_plan(PLAN + "bake: 7d\nholdout: 1\n")
    changes = {c.path: (c.kind, c.before, c.after) for c in diff_plans(before, after)}
    assert changes == {"bake": ("changed", "1d", "7d"), "holdout": ("added", None, 1)}
