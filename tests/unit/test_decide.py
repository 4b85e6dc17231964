"""The decision rules as a named case table, then how ``apply`` keeps the books."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from stages.decide import decide, format_duration
from stages.decisions import (
    Advance,
    AwaitApproval,
    Complete,
    Decision,
    Hold,
    Pause,
    Recover,
    RollBack,
    StepBack,
)
from stages.plan import OnRollback, Plan, Stage
from stages.state import GateMark, GateReading, Outcome, RolloutState, Status
from stages.transitions import apply, tick
from tests.unit.plans import (
    MINUTE,
    T0,
    at,
    gate,
    marks,
    ramp,
    reading,
    readings,
    state,
    step,
    with_step,
)

OK, HOLD, NO_DATA, ERROR, ROLLBACK, ABORT = (
    Outcome.OK,
    Outcome.HOLD,
    Outcome.NO_DATA,
    Outcome.ERROR,
    Outcome.ROLLBACK,
    Outcome.ABORT,
)
PAUSE = OnRollback.PAUSE

ERR = gate("error-rate", hold_above=0.01, rollback_above=0.02, abort_above=0.05)
LAT = gate("p99-latency-ms", hold_above=250, abort_above=500)
SLOW_ERR = replace(ERR, sustain=5 * MINUTE)
LATE_ERR = replace(ERR, delay=2 * MINUTE)
SHADOW_ONLY = gate("shadow-writes", rollback_above=0, stages=frozenset({Stage.SHADOW}))
STEP_GATE = gate("step-gate", rollback_above=0)

GATED = ramp(3, gates=[ERR])  # steps hold 5m; min_evaluations 3; max_gate_errors 4
TWO = ramp(3, gates=[ERR, LAT])
TIMED = ramp(3)
WITH_SHADOW = ramp(
    steps=[step(0, Stage.SHADOW, hold=5 * MINUTE), step(1, hold=5 * MINUTE)], gates=[SHADOW_ONLY]
)
DONE = at(minutes=10)  # dwell of every step in these plans has elapsed
READY = 2  # ok evaluations so far: this tick's ok makes min_evaluations


def running(plan: Plan = GATED, step: int = 1, **fields: Any) -> RolloutState:
    fields.setdefault("ok_evaluations", READY)
    return state(plan, Status.RUNNING, step, **fields)


def rolling_back(plan: Plan = GATED, step: int = 1, **fields: Any) -> RolloutState:
    return state(plan, Status.ROLLING_BACK, step, observe_until=at(minutes=10), **fields)


def lat_hold(when: datetime = DONE) -> GateReading:
    return reading(
        "p99-latency-ms", HOLD, when, value=312, threshold="hold_above", threshold_value=250
    )


@dataclass(frozen=True)
class Case:
    id: str
    state: RolloutState
    readings: Sequence[GateReading]
    now: datetime
    expect: type[Decision]
    says: str = ""  # part of the reason a person reads
    to_step: int | None = None


CASES = [
    # 1. abort: immediate rollback, unless going back is worse than stopping
    Case("abort rolls back", running(), readings(DONE, error_rate=ABORT), DONE, RollBack, "abort"),
    Case(
        "abort with on_rollback pause pauses",
        running(with_step(GATED, 1, on_rollback=PAUSE)),
        readings(DONE, error_rate=ABORT),
        DONE,
        Pause,
        "on_rollback: pause",
    ),
    Case(
        "worst gate wins: abort beats hold",
        running(TWO),
        [lat_hold(), reading("error-rate", ABORT, DONE)],
        DONE,
        RollBack,
        "error-rate",
    ),
    # 2. rollback: gradual
    Case(
        "rollback steps back one step",
        running(step=2),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        StepBack,
        "stepping back to step 2",
        to_step=1,
    ),
    Case(
        "rollback at the first step rolls back",
        running(step=0),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        RollBack,
        "first step",
    ),
    Case(
        "rollback with on_rollback pause pauses",
        running(with_step(GATED, 1, on_rollback=PAUSE)),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        Pause,
        "on_rollback: pause",
    ),
    Case(
        "rollback beats missing data on another gate",
        running(TWO),
        [reading("error-rate", ROLLBACK, DONE)],
        DONE,
        StepBack,
        "rollback: error-rate",
        to_step=0,
    ),
    # 3. hold, no data, error: stay and say why
    Case(
        "hold names gate, value and threshold",
        running(TWO),
        [lat_hold(), reading("error-rate", OK, DONE)],
        DONE,
        Hold,
        "p99-latency-ms: 312 > hold_above 250",
    ),
    Case("gate not read is no data", running(), [], DONE, Hold, "error-rate: no data"),
    Case(
        "no_data reading holds",
        running(),
        readings(DONE, error_rate=NO_DATA),
        DONE,
        Hold,
        "error-rate: no data",
    ),
    Case(
        "error holds with the error",
        running(),
        [reading("error-rate", ERROR, DONE, error="connection refused")],
        DONE,
        Hold,
        "error-rate: error: connection refused",
    ),
    Case(
        "max_gate_errors in a row pauses",
        running(gate_errors={"error-rate": 3}),
        [reading("error-rate", ERROR, DONE, error="timeout")],
        DONE,
        Pause,
        "gate source unavailable: error-rate: error: timeout",
    ),
    Case(
        "no data counts toward max_gate_errors",
        running(gate_errors={"error-rate": 3}),
        [],
        DONE,
        Pause,
        "gate source unavailable: error-rate: no data",
    ),
    Case(
        "errors below max_gate_errors only hold",
        running(gate_errors={"error-rate": 2}),
        readings(DONE, error_rate=ERROR),
        DONE,
        Hold,
        "error-rate: error",
    ),
    Case(
        "earlier errors of an ok gate do not pause",
        running(TWO, gate_errors={"error-rate": 3}),
        [reading("error-rate", OK, DONE), reading("p99-latency-ms", ERROR, DONE)],
        DONE,
        Hold,
        "p99-latency-ms: error",
    ),
    # `for`: a level counts only when sustained over the whole window
    Case(
        "rollback not yet sustained holds",
        running(ramp(gates=[SLOW_ERR]), history={"error-rate": marks(ROLLBACK, at(minutes=7))}),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        Hold,
        "not sustained for 5m yet",
    ),
    Case(
        "rollback sustained over the window steps back",
        running(
            ramp(gates=[SLOW_ERR]),
            history={"error-rate": marks(ROLLBACK, at(minutes=4), at(minutes=7))},
        ),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        StepBack,
        to_step=0,
    ),
    Case(
        "an ok inside the window breaks the sustain",
        running(
            ramp(gates=[SLOW_ERR]),
            history={
                "error-rate": (
                    GateMark(at(minutes=4), ROLLBACK),
                    GateMark(at(minutes=6), OK),
                    GateMark(at(minutes=8), ROLLBACK),
                )
            },
        ),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        Hold,
        "not sustained",
    ),
    Case(
        "abort not sustained but rollback sustained steps back",
        running(
            ramp(gates=[SLOW_ERR]),
            history={"error-rate": marks(ROLLBACK, at(minutes=5), at(minutes=8))},
        ),
        readings(DONE, error_rate=ABORT),
        DONE,
        StepBack,
        to_step=0,
    ),
    Case(
        "abort sustained rolls back",
        running(
            ramp(gates=[SLOW_ERR]),
            history={"error-rate": marks(ABORT, at(minutes=5), at(minutes=8))},
        ),
        readings(DONE, error_rate=ABORT),
        DONE,
        RollBack,
    ),
    # delay: readings skipped while rate windows hold the previous step's traffic
    Case(
        "delayed gate's abort is ignored",
        running(ramp(gates=[LATE_ERR], hold=timedelta(0))),
        readings(at(minutes=1), error_rate=ABORT),
        at(minutes=1),
        Hold,
        "error-rate: delayed 1m more",
    ),
    Case(
        "gate acts once its delay is over",
        running(ramp(gates=[LATE_ERR], hold=timedelta(0))),
        readings(at(minutes=2), error_rate=ABORT),
        at(minutes=2),
        RollBack,
    ),
    Case(
        "delayed gate's ok is not an evaluation",
        running(ramp(gates=[LATE_ERR], hold=timedelta(0))),
        readings(at(minutes=1), error_rate=OK),
        at(minutes=1),
        Hold,
        "2 of 3 ok evaluations",
    ),
    # which gates apply
    Case(
        "gate of another stage is ignored",
        running(ramp(gates=[SHADOW_ONLY]), ok_evaluations=0),
        readings(DONE, shadow_writes=ABORT),
        DONE,
        Advance,
        to_step=2,
    ),
    Case(
        "gate of the stage applies",
        running(WITH_SHADOW, step=0),
        readings(DONE, shadow_writes=ROLLBACK),
        DONE,
        RollBack,
    ),
    Case(
        "step gate applies at its step",
        running(with_step(GATED, 1, gates=(STEP_GATE,))),
        [reading("error-rate", OK, DONE), reading("step-gate", ROLLBACK, DONE)],
        DONE,
        StepBack,
        "step-gate",
        to_step=0,
    ),
    Case(
        "step gate does not apply at other steps",
        running(with_step(GATED, 1, gates=(STEP_GATE,)), step=0),
        [reading("error-rate", OK, DONE), reading("step-gate", ROLLBACK, DONE)],
        DONE,
        Advance,
        to_step=1,
    ),
    Case(
        "readings of unknown gates are ignored",
        running(TIMED),
        readings(DONE, other=ABORT),
        DONE,
        Advance,
        to_step=2,
    ),
    # 4. dwell and min_evaluations
    Case(
        "dwell not elapsed holds",
        running(),
        readings(at(seconds=108), error_rate=OK),
        at(seconds=108),
        Hold,
        "dwell: 3m12s left",
    ),
    Case(
        "min_evaluations not reached holds",
        running(ok_evaluations=0),
        readings(DONE, error_rate=OK),
        DONE,
        Hold,
        "1 of 3 ok evaluations",
    ),
    Case(
        "min_evaluations reached advances",
        running(),
        readings(DONE, error_rate=OK),
        DONE,
        Advance,
        "advancing to step 3",
        to_step=2,
    ),
    Case(
        "next step needs approval",
        running(with_step(GATED, 2, approval=True)),
        readings(DONE, error_rate=OK),
        DONE,
        AwaitApproval,
        "needs approval",
    ),
    Case(
        "last step done completes",
        running(step=2),
        readings(DONE, error_rate=OK),
        DONE,
        Complete,
        "last step",
    ),
    Case("timed ramp advances on dwell", running(TIMED, ok_evaluations=0), [], DONE, Advance),
    Case(
        "timed ramp waits for its dwell",
        running(TIMED),
        [],
        at(minutes=4),
        Hold,
        "dwell: 1m left",
    ),
    # rolling back: observe, then step back again, roll back or recover
    Case(
        "observing after a step back holds despite rollback",
        rolling_back(),
        readings(at(minutes=5), error_rate=ROLLBACK),
        at(minutes=5),
        Hold,
        "observing after step back, 5m left",
    ),
    Case(
        "abort while observing rolls back",
        rolling_back(),
        readings(at(minutes=5), error_rate=ABORT),
        at(minutes=5),
        RollBack,
    ),
    Case(
        "still breached after observing steps back again",
        rolling_back(),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        StepBack,
        "still breached",
        to_step=0,
    ),
    Case(
        "still breached at the first step rolls back",
        rolling_back(step=0),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        RollBack,
    ),
    Case(
        "still breached on an on_rollback pause step pauses",
        rolling_back(with_step(GATED, 1, on_rollback=PAUSE)),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        Pause,
        "on_rollback: pause",
    ),
    Case(
        "still breached needs no sustain after the step back",
        rolling_back(ramp(gates=[SLOW_ERR])),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        StepBack,
        to_step=0,
    ),
    Case(
        # Recovery needs the evidence an advance needs: min_evaluations (3) ok in a row.
        "healthy after observing, with 2 ok before, recovers",
        replace(rolling_back(), ok_evaluations=2),
        readings(DONE, error_rate=OK),
        DONE,
        Recover,
        "recovered at step 2",
    ),
    Case(
        "one healthy reading after observing is not yet a recovery",
        rolling_back(),
        readings(DONE, error_rate=OK),
        DONE,
        Hold,
        "1 of 3 ok evaluations in a row",
    ),
    Case(
        "hold after observing is not a recovery",
        replace(rolling_back(), ok_evaluations=2),
        readings(DONE, error_rate=HOLD),
        DONE,
        Hold,
        "not recovered yet",
    ),
    Case(
        "no data after observing waits",
        rolling_back(),
        [],
        DONE,
        Hold,
        "waiting for gate data",
    ),
    Case(
        "gate source unavailable after observing pauses",
        rolling_back(gate_errors={"error-rate": 3}),
        [],
        DONE,
        Pause,
        "gate source unavailable",
    ),
    # paused and awaiting approval: only abort acts
    Case(
        "paused holds on rollback",
        state(GATED, Status.PAUSED, 1, reason="checking dashboards"),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        Hold,
        "paused: checking dashboards",
    ),
    Case(
        "paused does not advance on ok",
        state(GATED, Status.PAUSED, 1, ok_evaluations=5),
        readings(DONE, error_rate=OK),
        DONE,
        Hold,
        "paused",
    ),
    Case(
        "paused rolls back on abort",
        state(GATED, Status.PAUSED, 1),
        readings(DONE, error_rate=ABORT),
        DONE,
        RollBack,
        "abort while paused",
    ),
    Case(
        "paused on an on_rollback pause step stays paused on abort",
        state(with_step(GATED, 1, on_rollback=PAUSE), Status.PAUSED, 1),
        readings(DONE, error_rate=ABORT),
        DONE,
        Hold,
        "on_rollback: pause",
    ),
    Case(
        "awaiting approval holds on rollback",
        state(GATED, Status.AWAITING_APPROVAL, 1),
        readings(DONE, error_rate=ROLLBACK),
        DONE,
        Hold,
        "awaiting approval for step 3",
    ),
    Case(
        "awaiting approval rolls back on abort",
        state(GATED, Status.AWAITING_APPROVAL, 1),
        readings(DONE, error_rate=ABORT),
        DONE,
        RollBack,
    ),
    Case(
        "awaiting approval on an on_rollback pause step pauses on abort",
        state(with_step(GATED, 1, on_rollback=PAUSE), Status.AWAITING_APPROVAL, 1),
        readings(DONE, error_rate=ABORT),
        DONE,
        Pause,
        "on_rollback: pause",
    ),
    *(
        Case(
            f"{status} does nothing",
            state(GATED, status, 0),
            readings(DONE, error_rate=ABORT),
            DONE,
            Hold,
            "not running",
        )
        for status in (Status.PENDING, Status.ROLLED_BACK, Status.COMPLETED, Status.ABORTED)
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    decision = decide(case.state, case.readings, case.now)

    assert type(decision) is case.expect, decision
    assert case.says in decision.reason
    if case.to_step is not None:
        assert isinstance(decision, Advance | StepBack)
        assert decision.to_step == case.to_step


def test_await_approval_names_the_next_step() -> None:
    decision = decide(
        running(with_step(GATED, 2, approval=True)), readings(DONE, error_rate=OK), DONE
    )

    assert decision == AwaitApproval(2, decision.reason)


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=192), "3m12s"),
        (timedelta(days=2), "2d"),
        (timedelta(hours=1, seconds=1), "1h1s"),
        (timedelta(seconds=0.2), "1s"),  # rounded up: never "0s left" while waiting
    ],
)
def test_format_duration(span: timedelta, text: str) -> None:
    assert format_duration(span) == text


# --- apply: the books kept between ticks -----------------------------------------------

ADVANCE = Advance(2, "advancing")
STAY = Hold("holding")


def test_apply_appends_a_mark_per_due_gate() -> None:
    after = apply(running(TWO), STAY, [lat_hold()], DONE)

    assert after.history == {
        "error-rate": (GateMark(DONE, NO_DATA),),
        "p99-latency-ms": (GateMark(DONE, HOLD),),
    }
    assert after.last_outcomes == {"error-rate": NO_DATA, "p99-latency-ms": HOLD}


def test_apply_trims_history_to_the_window_keeping_the_mark_at_its_start() -> None:
    sustain = 2 * MINUTE
    plan = ramp(gates=[replace(ERR, sustain=sustain)])
    past = marks(ROLLBACK, at(0), at(60), at(120), at(150))
    now = at(240)  # the window starts at 120s

    after = apply(running(plan, history={"error-rate": past}), STAY, [], now)

    assert [m.at for m in after.history["error-rate"]] == [at(120), at(150), now]


def test_apply_keeps_only_the_latest_mark_without_sustain() -> None:
    past = marks(OK, at(0), at(60))

    after = apply(running(history={"error-rate": past}), STAY, [], DONE)

    assert after.history["error-rate"] == (GateMark(DONE, NO_DATA),)


def test_apply_ignores_delayed_and_foreign_readings() -> None:
    plan = ramp(gates=[LATE_ERR])
    now = at(minutes=1)

    after = apply(running(plan), STAY, readings(now, error_rate=ABORT, other=OK), now)

    assert after.history == {}
    assert after.last_outcomes == {}
    assert after.gate_errors == {}
    assert after.ok_evaluations == READY


@pytest.mark.parametrize(
    ("before", "outcomes", "errors"),
    [
        ({}, {"error_rate": ERROR}, {"error-rate": 1}),
        ({"error-rate": 2}, {"error_rate": NO_DATA}, {"error-rate": 3}),
        ({"error-rate": 2}, {}, {"error-rate": 3}),  # not read: no data
        ({"error-rate": 3}, {"error_rate": OK}, {}),
        ({"error-rate": 3}, {"error_rate": HOLD}, {}),
        ({"error-rate": 3}, {"error_rate": ROLLBACK}, {}),
    ],
    ids=["error", "no data", "not read", "ok resets", "hold resets", "rollback resets"],
)
def test_apply_counts_consecutive_errors(
    before: dict[str, int], outcomes: dict[str, Outcome], errors: dict[str, int]
) -> None:
    after = apply(running(gate_errors=before), STAY, readings(DONE, **outcomes), DONE)

    assert after.gate_errors == errors


@pytest.mark.parametrize(
    ("plan", "outcomes", "counted"),
    [
        (TWO, {"error_rate": OK, "p99_latency_ms": OK}, 1),
        (TWO, {"error_rate": OK, "p99_latency_ms": HOLD}, 0),
        (TWO, {"error_rate": OK}, 0),
        (TIMED, {}, 0),
    ],
    ids=["all ok", "one hold", "one not read", "no gates never counts"],
)
def test_apply_counts_ok_evaluations(
    plan: Plan, outcomes: dict[str, Outcome], counted: int
) -> None:
    after = apply(running(plan, ok_evaluations=0), STAY, readings(DONE, **outcomes), DONE)

    assert after.ok_evaluations == counted


def test_advance_starts_the_next_step_afresh() -> None:
    before = running(
        ok_evaluations=2, gate_errors={"error-rate": 1}, history={"error-rate": marks(OK, T0)}
    )

    after = apply(before, ADVANCE, readings(DONE, error_rate=OK), DONE)

    assert (after.status, after.step, after.step_started_at) == (Status.RUNNING, 2, DONE)
    assert (after.ok_evaluations, after.gate_errors, after.history) == (0, {}, {})
    assert after.max_step_reached == 2
    assert after.reason == "advancing"
    assert after.version == before.version


def test_step_back_observes_for_rollback_observe() -> None:
    after = apply(running(step=2), StepBack(1, "rollback: x"), [], DONE)

    assert (after.status, after.step) == (Status.ROLLING_BACK, 1)
    assert after.observe_until == DONE + GATED.rollback_observe
    assert after.max_step_reached == 2  # the path taken stays visible


@pytest.mark.parametrize(
    ("decision", "status", "step"),
    [
        (AwaitApproval(2, "needs approval"), Status.AWAITING_APPROVAL, 1),
        (Complete("done"), Status.COMPLETED, 1),
        (Pause("gate source unavailable"), Status.PAUSED, 1),
        (RollBack("abort"), Status.ROLLED_BACK, 0),
        (Recover("recovered"), Status.PAUSED, 1),
        (Hold("holding: x"), Status.ROLLING_BACK, 1),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, Status | int) else str(v),
)
def test_apply_moves_status(decision: Decision, status: Status, step: int) -> None:
    after = apply(rolling_back(), decision, [], at(minutes=5))

    assert (after.status, after.step, after.reason) == (status, step, decision.reason)
    if status is not Status.ROLLING_BACK:
        assert after.observe_until is None


def test_hold_while_paused_keeps_the_reason_it_was_paused_for() -> None:
    paused = state(GATED, Status.PAUSED, 1, reason="checking dashboards")

    decision, after = tick(paused, readings(DONE, error_rate=OK), DONE)

    assert isinstance(decision, Hold)
    assert after.reason == "checking dashboards"


def _run(
    start: RolloutState, ticks: Sequence[Sequence[GateReading]], every: timedelta = MINUTE
) -> list[tuple[Decision, RolloutState]]:
    out = []
    current = start
    for i, tick_readings in enumerate(ticks, start=1):
        decision, current = tick(current, tick_readings, T0 + i * every)
        out.append((decision, current))
    return out


def test_errors_that_are_not_consecutive_never_pause() -> None:
    plan = ramp(gates=[ERR], max_gate_errors=3, hold=timedelta(hours=1))
    pattern = [ERROR, ERROR, OK, ERROR, ERROR, HOLD, NO_DATA, NO_DATA, OK]
    ticks = [[reading("error-rate", o, T0)] for o in pattern]

    results = _run(running(plan, step=0), ticks)

    assert all(isinstance(d, Hold) for d, _ in results)
    assert max(s.gate_errors.get("error-rate", 0) for _, s in results) == 2


def test_consecutive_errors_pause_at_max_gate_errors() -> None:
    plan = ramp(gates=[ERR], max_gate_errors=3)
    ticks = [[reading("error-rate", ERROR, T0, error="timeout")]] * 3

    results = _run(running(plan, step=0), ticks)

    assert [type(d) for d, _ in results] == [Hold, Hold, Pause]
    assert results[-1][1].status is Status.PAUSED
    assert results[-1][1].reason.startswith("gate source unavailable: error-rate")


def test_a_sustained_rollback_builds_up_over_ticks() -> None:
    plan = ramp(gates=[replace(ERR, sustain=3 * MINUTE)])
    ticks = [[reading("error-rate", ROLLBACK, T0)]] * 4

    results = _run(running(plan, step=1, ok_evaluations=0), ticks)

    # Marks at 1, 2, 3 min; at 4 min the window [1m, 4m] is covered.
    assert [type(d) for d, _ in results] == [Hold, Hold, Hold, StepBack]


def test_a_gated_step_advances_after_dwell_and_min_evaluations() -> None:
    ticks = [[reading("error-rate", OK, T0)]] * 6

    results = _run(running(GATED, step=0, ok_evaluations=0), ticks)

    assert [type(d) for d, _ in results] == [Hold, Hold, Hold, Hold, Advance, Hold]
    assert results[4][1].step == 1


def test_a_block_from_outside_the_plan_holds_an_advance_and_says_why() -> None:
    blocked = replace(running(GATED), blocked=("frozen by INC-123 until 14:00",))
    decision = decide(blocked, readings(DONE, error_rate=OK), DONE)

    assert isinstance(decision, Hold)
    assert "frozen by INC-123 until 14:00" in decision.reason


def test_a_block_never_stops_a_rollback() -> None:
    blocked = replace(running(GATED), blocked=("frozen by INC-123",))
    decision = decide(blocked, readings(DONE, error_rate=ROLLBACK), DONE)

    assert isinstance(decision, StepBack | RollBack)
