"""The backtest's walk over history, against a fake history: which checks it makes, what
each reads, and the timeline of decisions it records."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.backtest import (
    AsOf,
    BacktestError,
    backtest,
    check_instants,
    parse_time,
    unknown_variables,
)
from stages.gates import classify
from stages.plan import Gate
from stages.query_templates import render_query
from stages.state import GateReading, Outcome, RolloutState, Status
from stages.windows import Window
from tests.unit.plans import MINUTE, T0, at, gate, ramp, with_step

Value = Callable[[Gate, datetime, Mapping[str, str]], float | None]


@dataclass
class FakeHistory:
    """A history whose every gate reads ``value(gate, instant, variables)``."""

    value: Value
    asked: list[tuple[str, datetime | None, dict[str, str]]] = field(default_factory=list)

    def read(
        self,
        gate: Gate,
        variables: Mapping[str, str],
        now: datetime,
        *,
        deadline: float | None = None,
        state: RolloutState | None = None,
        at_time: datetime | None = None,
    ) -> GateReading:
        self.asked.append((gate.name, at_time, dict(variables)))
        assert at_time is not None
        try:
            value = self.value(gate, at_time, variables)
        except RuntimeError as exc:  # the fake's way of saying "Prometheus failed"
            return GateReading(gate.name, Outcome.ERROR, now, error=str(exc))
        c = classify(gate, value)
        return GateReading(
            gate.name,
            c.outcome,
            now,
            query=render_query(gate.query, variables),
            value=value,
            threshold=c.threshold,
            threshold_value=c.threshold_value,
        )

    def ping(self) -> bool:
        return True


def errors_jump_at(when: datetime, before: float = 0.001, after: float = 0.5) -> Value:
    return lambda _gate, instant, _vars: after if instant >= when else before


ERRORS = gate("errors", rollback_above=0.01)


def moves(timeline_events: object) -> list[tuple[int, str, int, int, Status]]:
    """(minutes after T0, action, from step, to step, status after) of each event."""
    assert isinstance(timeline_events, tuple)
    return [
        (int((e.at - T0) / MINUTE), e.action, e.from_step, e.to_step, e.status)
        for e in timeline_events
    ]


def test_a_healthy_plan_advances_at_each_dwell_and_completes() -> None:
    plan = ramp(3, gates=[ERRORS])  # holds of 5 m, checks every minute
    history = FakeHistory(errors_jump_at(at(minutes=999)))

    timeline = backtest(plan, AsOf(history), T0, at(minutes=60))

    assert moves(timeline.events) == [
        (5, "advance", 0, 1, Status.RUNNING),
        (10, "advance", 1, 2, Status.RUNNING),
        (15, "complete", 2, 2, Status.COMPLETED),
    ]
    assert timeline.events[0].reason.startswith("dwell 5m done, 6 ok evaluations in a row")
    assert (timeline.checks, timeline.ended, timeline.gate_errors) == (16, "completed", 0)
    assert timeline.final.status is Status.COMPLETED


def test_every_read_is_as_of_its_check_with_the_live_variables() -> None:
    plan = ramp(3, gates=[Gate(name="errors", query='x{step="${step}"}[${step_window}]')])
    history = FakeHistory(errors_jump_at(at(minutes=999)))

    backtest(plan, AsOf(history), T0, at(minutes=7))

    instants = [asked_at for _, asked_at, _ in history.asked]
    assert instants == [at(minutes=m) for m in range(8)]
    # ${step_window} is the time since the step began (at least 1 s), as a live check says.
    windows = [(v["step"], v["step_window"]) for _, _, v in history.asked]
    assert windows == [
        ("1", "1s"), ("1", "60s"), ("1", "120s"), ("1", "180s"), ("1", "240s"),
        ("1", "300s"), ("2", "60s"), ("2", "120s"),
    ]  # fmt: skip


def test_a_jump_in_errors_steps_back_then_rolls_back() -> None:
    plan = ramp(3, gates=[ERRORS])
    history = FakeHistory(errors_jump_at(at(minutes=7)))

    timeline = backtest(plan, AsOf(history), T0, at(minutes=60))

    # Step 2 began at 5 m; the jump at 7 m steps back to step 1; still breached when
    # the 10 m observation ends: rolled back.
    assert moves(timeline.events) == [
        (5, "advance", 0, 1, Status.RUNNING),
        (7, "step_back", 1, 0, Status.ROLLING_BACK),
        (17, "rollback", 0, 0, Status.ROLLED_BACK),
    ]
    assert "errors: 0.5 > rollback_above 0.01" in timeline.events[1].reason
    assert timeline.events[1].readings[0].value == 0.5
    assert timeline.ended == "rolled back"


def test_an_approval_step_ends_the_walk_unless_approval_is_assumed() -> None:
    plan = with_step(ramp(3, gates=[ERRORS]), 1, approval=True)
    history = FakeHistory(errors_jump_at(at(minutes=999)))

    stopped = backtest(plan, AsOf(history), T0, at(minutes=60))
    assumed = backtest(plan, AsOf(history), T0, at(minutes=60), approve=True)

    assert moves(stopped.events) == [(5, "await_approval", 0, 1, Status.AWAITING_APPROVAL)]
    assert stopped.ended == "awaiting approval for step 2 (canary 5%)"
    assert moves(assumed.events) == [
        (5, "await_approval", 0, 1, Status.AWAITING_APPROVAL),
        (5, "approve", 0, 1, Status.RUNNING),
        (10, "advance", 1, 2, Status.RUNNING),
        (15, "complete", 2, 2, Status.COMPLETED),
    ]


def test_a_walk_can_start_at_a_later_step() -> None:
    plan = ramp(3, gates=[ERRORS])
    history = FakeHistory(errors_jump_at(at(minutes=999)))

    timeline = backtest(plan, AsOf(history), T0, at(minutes=60), step=1)

    assert moves(timeline.events) == [
        (5, "advance", 1, 2, Status.RUNNING),
        (10, "complete", 2, 2, Status.COMPLETED),
    ]
    assert history.asked[0][2]["step"] == "2"


def test_a_failing_source_pauses_the_walk_after_max_gate_errors() -> None:
    def failing(_gate: Gate, _instant: datetime, _vars: Mapping[str, str]) -> float:
        raise RuntimeError("bad query: parse error")

    timeline = backtest(ramp(3, gates=[ERRORS]), AsOf(FakeHistory(failing)), T0, at(minutes=60))

    assert moves(timeline.events) == [(3, "pause", 0, 0, Status.PAUSED)]
    assert "gate source unavailable" in timeline.events[0].reason
    assert (timeline.gate_errors, timeline.checks) == (4, 4)
    assert timeline.ended == "paused at step 1 (canary 1%): a person would act here"


def test_holds_are_recorded_when_asked_for() -> None:
    history = FakeHistory(errors_jump_at(at(minutes=999)))

    timeline = backtest(ramp(2, gates=[ERRORS]), AsOf(history), T0, at(minutes=3), holds=True)

    assert [e.action for e in timeline.events] == ["hold"] * 4
    assert timeline.events[0].reason == "dwell: 5m left; 1 of 3 ok evaluations in a row"
    assert timeline.transitions == ()
    assert timeline.ended == "reached --to at step 1 (canary 1%), running"


def test_the_walk_is_bounded_and_refuses_a_reversed_range() -> None:
    plan = replace(ramp(2), interval=timedelta(seconds=1))
    with pytest.raises(BacktestError, match="is after --to"):
        check_instants(plan, at(minutes=5), T0)
    assert check_instants(plan, T0, at(minutes=5)) == 301
    with pytest.raises(BacktestError, match="604,801 checks at the plan's interval 1s"):
        check_instants(plan, T0, T0 + timedelta(days=7))


def test_a_query_variable_no_check_knows_is_found_before_the_walk() -> None:
    plan = ramp(2, gates=[Gate(name="errors", query='x{team="${team}",step="${step}"}')])
    assert unknown_variables(plan, T0) == [
        "gate errors: unknown variable ${team} (known: flag, new_variant, old_variant, "
        "percent, rollout, stage, step, step_window)"
    ]
    assert unknown_variables(ramp(2, gates=[ERRORS]), T0) == []


NOW = datetime(2026, 11, 30, 14, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("-7d", NOW - timedelta(days=7)),
        ("now-90m", NOW - timedelta(minutes=90)),
        ("2026-11-30T14:00:00Z", datetime(2026, 11, 30, 14, 0, tzinfo=UTC)),
        ("2026-11-30T15:00:00+01:00", datetime(2026, 11, 30, 14, 0, tzinfo=UTC)),
        ("2026-11-30 14:00", datetime(2026, 11, 30, 14, 0, tzinfo=UTC)),  # no offset: UTC
    ],
)
def test_times_as_people_write_them(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-7x", "2026-13-01", ""])
def test_a_time_that_is_none_is_refused_with_the_forms_that_are(text: str) -> None:
    with pytest.raises(BacktestError):
        parse_time(text, NOW)


def test_the_global_change_windows_hold_a_plan_without_its_own() -> None:
    # T0 is a Wednesday, 12:00 UTC; the window opens at 12:07. The plan declares no
    # windows, so ROLLOUT_CHANGE_WINDOWS applies, as it does live.
    plan = ramp(3, gates=[ERRORS])
    history = FakeHistory(errors_jump_at(at(minutes=999)))
    office = (Window(days=frozenset({2}), opens=12 * 60 + 7, closes=13 * 60, tz="UTC"),)

    live_like = backtest(plan, AsOf(history), T0, at(minutes=60), default_windows=office)
    unwindowed = backtest(plan, AsOf(history), T0, at(minutes=60))

    assert moves(unwindowed.events)[0] == (5, "advance", 0, 1, Status.RUNNING)
    assert moves(live_like.events)[0] == (7, "advance", 0, 1, Status.RUNNING)
