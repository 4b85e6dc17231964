"""A flapping gate never lets a step advance.

Two rules together: ``min_evaluations`` counts consecutive all-ok ticks (any hold,
no data, error or raw breach starts the run again), and no step advances while a
gate read rollback or abort inside its ``for`` window, even once its reads are ok.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.decide import decide, ok_evaluations_after, recent_breach
from stages.decisions import Advance, AwaitApproval, Complete, Decision, Hold, RollBack, StepBack
from stages.plan import Plan
from stages.state import GateMark, GateReading, Outcome, RolloutState, Status
from stages.transitions import tick
from tests.unit.plans import MINUTE, SECOND, T0, at, gate, marks, ramp, reading, state

OK, HOLD, NO_DATA, ERROR, ROLLBACK, ABORT = (
    Outcome.OK,
    Outcome.HOLD,
    Outcome.NO_DATA,
    Outcome.ERROR,
    Outcome.ROLLBACK,
    Outcome.ABORT,
)
FORWARD = (Advance, AwaitApproval, Complete)
BREACHED = (ROLLBACK, ABORT)

ERR = gate("error-rate", hold_above=0.01, rollback_above=0.02, abort_above=0.05)


def plan_with(
    sustain: timedelta, *, hold: timedelta = 5 * MINUTE, min_evaluations: int = 3
) -> Plan:
    return ramp(
        3, hold=hold, gates=[replace(ERR, sustain=sustain)], min_evaluations=min_evaluations
    )


def running(plan: Plan, **fields: Any) -> RolloutState:
    return state(plan, Status.RUNNING, 0, **fields)


def err(outcome: Outcome | None, when: datetime) -> list[GateReading]:
    """This tick's readings: one of error-rate, or none (the gate was not read)."""
    return [] if outcome is None else [reading("error-rate", outcome, when)]


def drive(
    start: RolloutState, outcomes: Sequence[Outcome | None], every: timedelta, first: datetime
) -> list[tuple[datetime, Decision, RolloutState]]:
    """Tick the pure core as the scheduler does: decide, apply, next tick ``every`` later."""
    out = []
    current, now = start, first
    for outcome in outcomes:
        decision, current = tick(current, err(outcome, now), now)
        out.append((now, decision, current))
        now += every
    return out


# --- flapping -------------------------------------------------------------------------


@pytest.mark.parametrize("every", [10 * SECOND, MINUTE, 90 * SECOND], ids=str)
@pytest.mark.parametrize("level", BREACHED, ids=str)
def test_a_gate_flapping_faster_than_its_for_never_advances_nor_rolls_back(
    every: timedelta, level: Outcome
) -> None:
    plan = plan_with(2 * MINUTE)
    ticks = int(timedelta(hours=6) / every)
    flapping = [OK if i % 2 == 0 else level for i in range(ticks)]

    results = drive(running(plan), flapping, every, T0 + every)

    decisions = [d for _, d, _ in results]
    assert not [d for d in decisions if isinstance(d, FORWARD)]
    assert all(isinstance(d, Hold) for d in decisions)  # never sustained: no rollback either
    assert {(s.status, s.step) for _, _, s in results} == {(Status.RUNNING, 0)}
    ok_tick_reasons = [d.reason for d, o in zip(decisions, flapping, strict=True) if o is OK]
    assert all(f"{level} " in r and "within for: 2m" in r for r in ok_tick_reasons[1:])


def test_a_gate_flapping_slower_than_its_for_never_advances_either() -> None:
    # Every ok tick is past the last breach's `for` window; only the run of
    # consecutive ok ticks, never longer than one, keeps the step from advancing.
    plan = plan_with(2 * MINUTE, min_evaluations=2)
    flapping = [OK if i % 2 == 0 else ROLLBACK for i in range(200)]

    results = drive(running(plan), flapping, 3 * MINUTE, T0 + 3 * MINUTE)

    assert not [d for _, d, _ in results if isinstance(d, FORWARD)]
    assert max(s.ok_evaluations for _, _, s in results) == 1


def test_steady_ok_advances_once_dwell_and_min_evaluations_are_met() -> None:
    plan = plan_with(2 * MINUTE, hold=5 * MINUTE)

    results = drive(running(plan), [OK] * 6, MINUTE, at(minutes=1))

    kinds = [type(d) for _, d, _ in results]
    assert kinds == [Hold, Hold, Hold, Hold, Advance, Hold]  # dwell ends at 5m
    assert results[4][1].reason.startswith("dwell 5m done, 5 ok evaluations in a row")
    assert results[4][2].step == 1


def test_steady_ok_on_a_short_dwell_waits_for_min_evaluations() -> None:
    plan = plan_with(2 * MINUTE, hold=30 * SECOND)

    results = drive(running(plan), [OK] * 3, MINUTE, at(minutes=1))

    assert [type(d) for _, d, _ in results] == [Hold, Hold, Advance]
    assert "1 of 3 ok evaluations in a row" in results[0][1].reason


# --- one bad tick starts the run again ----------------------------------------------------

BLIPS = [HOLD, NO_DATA, ERROR, ROLLBACK, ABORT, None]
BLIP_IDS = ["hold", "no data", "error", "raw rollback", "raw abort", "not read"]


@pytest.mark.parametrize("blip", BLIPS, ids=BLIP_IDS)
def test_one_tick_that_is_not_ok_resets_the_run(blip: Outcome | None) -> None:
    now = at(minutes=10)
    before = running(plan_with(2 * MINUTE), ok_evaluations=2)

    assert ok_evaluations_after(before, err(blip, now), now) == 0
    assert ok_evaluations_after(before, err(OK, now), now) == 3


def test_a_tick_of_a_gate_still_in_its_delay_neither_counts_nor_resets() -> None:
    plan = ramp(3, gates=[ERR, replace(gate("late"), delay=2 * MINUTE)])
    before = running(plan, ok_evaluations=0)

    assert ok_evaluations_after(before, err(OK, at(minutes=1)), at(minutes=1)) == 0
    assert ok_evaluations_after(before, err(HOLD, at(minutes=1)), at(minutes=1)) == 0
    assert ok_evaluations_after(replace(before, ok_evaluations=1), [], at(minutes=1)) == 0


def test_after_a_reset_the_next_ok_tick_is_one_of_min_evaluations() -> None:
    decision = decide(running(plan_with(2 * MINUTE), ok_evaluations=0), err(OK, at(10)), at(10))

    assert decision == Hold("dwell: 4m50s left; 1 of 3 ok evaluations in a row")


@pytest.mark.parametrize("blip", BLIPS, ids=BLIP_IDS)
def test_after_one_bad_tick_it_takes_min_evaluations_ok_ticks_again(
    blip: Outcome | None,
) -> None:
    # Dwell long over; `for` shorter than the interval, so only the run holds it back.
    plan = plan_with(30 * SECOND, hold=MINUTE)
    script = [OK, OK, blip, OK, OK, OK]

    results = drive(running(plan), script, MINUTE, at(minutes=5))

    assert [type(d) for _, d, _ in results] == [Hold, Hold, Hold, Hold, Hold, Advance]
    assert [s.ok_evaluations for _, _, s in results[:5]] == [1, 2, 0, 1, 2]


# --- a raw breach inside `for` blocks the advance -------------------------------------------


@pytest.mark.parametrize("level", BREACHED, ids=str)
def test_a_breach_30s_ago_blocks_an_advance_until_its_for_window_passes(level: Outcome) -> None:
    plan = plan_with(MINUTE)
    breach = at(minutes=10)  # dwell (5m) long over
    history = {"error-rate": (GateMark(breach, level),)}
    start = running(plan, ok_evaluations=50, history=history)

    results = drive(start, [OK] * 6, 10 * SECOND, breach + 10 * SECOND)

    # 10s .. 50s after the breach: held; 60s after it the window no longer holds it.
    assert [type(d) for _, d, _ in results] == [Hold] * 5 + [Advance]
    assert results[-1][0] - breach == MINUTE
    assert results[2][1] == Hold(
        f"holding: error-rate: ok now, but {level} 30s ago, within for: 1m"
    )


@pytest.mark.parametrize(
    ("ago", "blocks"),
    [(0, True), (30, True), (59, True), (60, False), (61, False)],
    ids=lambda v: str(v),
)
def test_a_breach_blocks_exactly_while_inside_the_window(ago: int, blocks: bool) -> None:
    plan = plan_with(MINUTE)
    now = at(minutes=10)
    history = {"error-rate": marks(ROLLBACK, now - ago * SECOND)}
    before = running(plan, ok_evaluations=50, history=history)

    decision = decide(before, err(OK, now), now)

    assert isinstance(decision, Hold) is blocks
    assert (recent_breach(plan.gates[0], history["error-rate"], now) is not None) is blocks


def test_a_hold_level_reading_inside_the_window_only_resets_the_run() -> None:
    plan = plan_with(MINUTE)
    now = at(minutes=10)
    before = running(plan, ok_evaluations=3, history={"error-rate": marks(HOLD, now - 30 * SECOND)})

    assert isinstance(decide(before, err(OK, now), now), Advance)


def test_a_gate_without_for_is_not_held_by_its_past() -> None:
    plan = plan_with(timedelta(0))
    now = at(minutes=10)
    before = running(plan, ok_evaluations=3, history={"error-rate": marks(ROLLBACK, now - SECOND)})

    assert isinstance(decide(before, err(OK, now), now), Advance)


def test_a_breach_still_sustained_rolls_back_rather_than_holds() -> None:
    plan = plan_with(MINUTE)
    now = at(minutes=10)
    past = marks(ABORT, now - 70 * SECOND, now - 30 * SECOND)
    before = running(plan, ok_evaluations=50, history={"error-rate": past})

    assert isinstance(decide(before, err(ABORT, now), now), RollBack)
    assert isinstance(decide(before, err(ROLLBACK, now), now), RollBack)  # at step 0
    assert isinstance(decide(replace(before, step=1), err(ROLLBACK, now), now), StepBack)


# --- properties ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    plan: Plan
    every: timedelta
    outcomes: tuple[Outcome, ...]


@dataclass(frozen=True)
class Tick:
    now: datetime
    decision: Decision
    after: RolloutState
    step_began: datetime
    in_step: tuple[tuple[datetime, Outcome], ...]  # this step's ticks so far, this one last


@st.composite
def runs(draw: st.DrawFn, levels: Sequence[Outcome] = (OK, OK, ROLLBACK, ABORT)) -> Run:
    sustain = draw(st.sampled_from([timedelta(0), 30 * SECOND, MINUTE, 2 * MINUTE, 5 * MINUTE]))
    plan = plan_with(
        sustain,
        hold=draw(st.sampled_from([timedelta(0), MINUTE, 5 * MINUTE])),
        min_evaluations=draw(st.integers(1, 4)),
    )
    every = draw(st.sampled_from([10 * SECOND, 30 * SECOND, MINUTE, 3 * MINUTE]))
    outcomes = draw(st.lists(st.sampled_from(levels), min_size=1, max_size=120))
    return Run(plan, every, tuple(outcomes))


def play(run: Run) -> list[Tick]:
    """Tick until the rollout leaves ``running`` (rolled back, paused, completed)."""
    out: list[Tick] = []
    current, now = running(run.plan), T0 + run.every
    began = T0
    seen: tuple[tuple[datetime, Outcome], ...] = ()
    for outcome in run.outcomes:
        if current.status is not Status.RUNNING:
            break
        seen = (*seen, (now, outcome))
        decision, current = tick(current, err(outcome, now), now)
        out.append(Tick(now, decision, current, began, seen))
        if isinstance(decision, Advance):
            began, seen = now, ()
        now += run.every
    return out


def ok_run(ticks: Sequence[tuple[datetime, Outcome]]) -> int:
    count = 0
    for _, outcome in reversed(ticks):
        if outcome is not OK:
            break
        count += 1
    return count


def breached_within(ticks: Sequence[tuple[datetime, Outcome]], since: datetime) -> bool:
    return any(o in BREACHED and t > since for t, o in ticks)


@settings(max_examples=400, deadline=None)
@given(runs())
def test_no_advance_while_a_raw_breach_is_inside_for(run: Run) -> None:
    sustain = run.plan.gates[0].sustain
    for t in play(run):
        if isinstance(t.decision, FORWARD):
            assert t.in_step[-1][1] is OK
            assert not breached_within(t.in_step, t.now - sustain), t.in_step


@settings(max_examples=400, deadline=None)
@given(runs(levels=(OK, OK, OK, HOLD, NO_DATA, ERROR, ROLLBACK, ABORT)))
def test_an_advance_comes_exactly_when_the_evidence_allows(run: Run) -> None:
    """Forward only after min_evaluations consecutive ok ticks, the dwell, and no raw
    breach within ``for``; and then at once: the rules are no stricter than they say."""
    plan = run.plan
    sustain, hold = plan.gates[0].sustain, plan.steps[0].hold  # every step holds the same
    for t in play(run):
        allowed = (
            ok_run(t.in_step) >= plan.min_evaluations
            and not breached_within(t.in_step, t.now - sustain)
            and t.now >= t.step_began + hold
        )
        if isinstance(t.decision, FORWARD):
            assert allowed, f"advanced on {t.in_step}"
        elif isinstance(t.decision, Hold):
            assert not allowed, f"held on {t.in_step}: {t.decision.reason}"
