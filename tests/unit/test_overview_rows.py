"""What an overview row says beyond its status: why it stopped or holds (the recorded
reason and the gates it names), which gates apply when none does now, and times as
``<time>`` elements in UTC for the page's script to show in the viewer's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from controller.ui.causes import cause, gates_named
from controller.ui.formatting import time_tag
from controller.ui.gate_schedule import gates_elsewhere
from stages.decide import decide
from stages.plan import Stage
from stages.state import Outcome, RolloutState, Status
from stages.transitions import apply
from tests.unit.plans import T0, at, gate, ramp, reading, state, step

CANARY_GATES = (
    gate("error-rate", abort_above=0.05, stages=frozenset({Stage.CANARY, Stage.GRADUATED})),
    gate("p99", hold_above=250, stages=frozenset({Stage.CANARY, Stage.GRADUATED})),
    gate("saturation", hold_above=0.9, stages=frozenset({Stage.GRADUATED})),
)
RUNBOOK = ramp(
    steps=[
        step(0, Stage.SHADOW, hold=timedelta(hours=1)),
        step(1, hold=timedelta(hours=1)),
        step(25, Stage.GRADUATED, hold=timedelta(hours=1)),
        step(100, Stage.FULL),
    ],
    gates=CANARY_GATES,
)


def test_at_a_shadow_step_the_gates_that_apply_later_are_named_with_their_steps() -> None:
    assert gates_elsewhere(RUNBOOK, 0) == (
        "no gates at this step; gates from step 2 (canary 1%): error-rate, p99; "
        "from step 3 (graduated 25%): saturation"
    )
    assert gates_elsewhere(RUNBOOK, 1) is None  # gates apply: the lights show them
    assert gates_elsewhere(RUNBOOK, 3) == (
        "no gates at this step or later; gates applied at step 2 (canary 1%): error-rate, "
        "p99; at step 3 (graduated 25%): saturation"
    )


def test_only_a_plan_without_any_gate_is_a_timed_ramp() -> None:
    assert gates_elsewhere(ramp(3), 0) is None
    step_gate = ramp(steps=[step(0, Stage.SHADOW), step(5, gates=(gate("own"),))])
    assert (
        gates_elsewhere(step_gate, 0) == "no gates at this step; gates from step 2 (canary 5%): own"
    )


def _rolled_back_by_the_core() -> tuple[str, RolloutState]:
    """The reason the core itself writes when error-rate reaches its abort level."""
    running = state(RUNBOOK, step=1)
    readings = [
        reading(
            "error-rate",
            Outcome.ABORT,
            at(30),
            value=0.31,
            threshold="abort_above",
            threshold_value=0.05,
        ),
        reading(
            "p99", Outcome.HOLD, at(30), value=300, threshold="hold_above", threshold_value=250
        ),
    ]
    decision = decide(running, readings, at(30))
    after = apply(running, decision, readings, at(30))
    return after.reason, after


def test_a_rollback_names_the_gate_that_caused_it_and_who_made_the_transition() -> None:
    reason, after = _rolled_back_by_the_core()
    assert after.status is Status.ROLLED_BACK
    event = {
        "to_status": "rolled_back",
        "actor": "controller",
        "action": "rollback",
        "at": at(30).isoformat(),
        "reason": reason,
    }
    why = cause(after, event)
    assert why is not None
    assert why.gates == ("error-rate",)  # p99 only held: it caused nothing
    assert why.reason == reason and reason.startswith("abort: error-rate: 0.31 > abort_above 0.05")
    assert (why.actor, why.action, why.at) == ("controller", "rollback", at(30).isoformat())


def test_a_person_s_pause_shows_their_reason_and_an_older_event_is_not_taken_for_it() -> None:
    paused = state(RUNBOOK, Status.PAUSED, step=1, reason="p99 looks odd, INC-77")
    by_alice = {
        "to_status": "paused",
        "actor": "alice (operator)",
        "action": "pause",
        "at": T0.isoformat(),
        "reason": "p99 looks odd, INC-77",
    }
    why = cause(paused, by_alice)
    assert why is not None and (why.reason, why.gates, why.actor) == (
        "p99 looks odd, INC-77",
        (),
        "alice (operator)",
    )
    older = {**by_alice, "to_status": "running", "actor": "bob"}
    why = cause(paused, older)
    assert why is not None and (why.reason, why.actor, why.at) == (
        "p99 looks odd, INC-77",
        "",
        None,
    )


def test_a_hold_says_why_unless_the_row_says_it_already() -> None:
    running = state(
        RUNBOOK, step=1, reason="ready to advance, but alert HighLatency holds advances"
    )
    why = cause(running, None, headline="will advance to graduated 25% at the next check")
    assert why is not None and why.reason.startswith("ready to advance, but alert")
    assert cause(running, None, headline=running.reason) is None
    assert cause(state(RUNBOOK, step=1, reason="dwell: 3m left"), None) is None
    assert cause(state(RUNBOOK, Status.COMPLETED, step=3, reason="last step done"), None) is None


@pytest.mark.parametrize(
    ("reason", "gates"),
    [
        ("gate source unavailable: p99: error: timeout (4 in a row)", ("p99",)),
        (
            "holding: p99: 300 > hold_above 250; error-rate: waiting for traffic: 3 of 10 samples",
            ("p99", "error-rate"),
        ),
        (
            "rollback: error-rate: 0.1 > rollback_above 0.05; "
            "observe only: p99 would abort (600 > abort_above 500)",
            ("error-rate",),
        ),
        ("kill switch: flag p99 disabled by alice", ()),
        ("abort while paused: saturation: 0.99 > hold_above 0.9", ("saturation",)),
    ],
)
def test_gates_are_found_where_the_core_names_them(reason: str, gates: tuple[str, ...]) -> None:
    assert gates_named(reason, ["error-rate", "p99", "saturation"]) == gates


def test_times_are_time_elements_in_utc_with_utc_on_hover() -> None:
    kolkata = timezone(timedelta(hours=5, minutes=30))
    tag = str(time_tag(datetime(2026, 12, 5, 12, 58, 23, tzinfo=kolkata)))
    assert tag == (
        '<time datetime="2026-12-05T07:28:23Z" title="2026-12-05 07:28:23 UTC" data-utc>'
        "2026-12-05 07:28:23 UTC</time>"
    )
    assert 'datetime="2026-12-05T07:28:23Z"' in str(
        time_tag(datetime(2026, 12, 5, 7, 28, 23, tzinfo=UTC).isoformat())
    )
    assert str(time_tag(None)) == "\N{EN DASH}"
