"""What the controller will do next with a rollout, in a sentence a person reads.

It runs the pure ``decide`` on the stored latest readings of the current step: the
same rules the scheduler applies, so the page cannot drift from what will happen.
Nothing is read from Prometheus and nothing is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from stages.bake import bake_left
from stages.decide import decide, dwelt, format_duration, is_ok_evaluation
from stages.decisions import (
    Advance,
    AwaitApproval,
    BeginBake,
    Complete,
    Hold,
    Pause,
    Recover,
    RollBack,
    StepBack,
)
from stages.state import GateReading, Outcome, RolloutState, Status
from stages.windows import closed_sentence


@dataclass(frozen=True, slots=True)
class Forecast:
    tone: str  # "advance", "hold", "person", "danger", "idle": how the page colours it
    headline: str
    detail: str = ""


def reading_from_row(row: Mapping[str, Any]) -> GateReading:
    """A stored evaluation (``gate_history.row_view``) as the core's reading again."""
    return GateReading(
        gate=row["gate"],
        outcome=Outcome(row["outcome"]),
        at=datetime.fromisoformat(row["at"]),
        query=row.get("query") or "",
        value=_number(row.get("value")),
        baseline=_number(row.get("baseline")),
        samples=_number(row.get("samples")),
        threshold=row.get("threshold"),
        threshold_value=_number(row.get("threshold_value")),
        error=row.get("error"),
    )


def _number(raw: object) -> float | None:
    # The views spell NaN and infinity as text, since JSON has neither.
    if raw is None:
        return None
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def current_readings(state: RolloutState, latest: Sequence[Mapping[str, Any]]) -> list[GateReading]:
    """Only readings taken at this step since it began: older ones judged other exposure."""
    began = state.step_started_at
    readings = []
    for row in latest:
        reading = reading_from_row(row)
        if row.get("step") == state.step and (began is None or reading.at >= began):
            readings.append(reading)
    return readings


def forecast(
    state: RolloutState,
    latest: Sequence[Mapping[str, Any]],
    now: datetime,
    next_check_in: timedelta | None = None,
) -> Forecast:
    readings = current_readings(state, latest)
    status = state.status
    if status is Status.PENDING:
        return Forecast("idle", "not started: waiting for start")
    if status is Status.COMPLETED:
        return Forecast("idle", "completed: serving the last step")
    if status is Status.ROLLED_BACK:
        return Forecast("person", "rolled back: waiting for a person to retry", state.reason)
    if status is Status.ABORTED:
        return Forecast("idle", "aborted: retry starts it again from the first step")
    decision = decide(state, readings, now)
    at_check = _at_next_check(next_check_in)
    if isinstance(decision, Advance):
        return Forecast(
            "advance", f"will advance to {_label(state, 1)} {at_check}", decision.reason
        )
    if isinstance(decision, AwaitApproval):
        return Forecast("advance", f"will ask for approval of {_label(state, 1)} {at_check}")
    if isinstance(decision, Complete):
        return Forecast("advance", f"will complete {at_check}", decision.reason)
    if isinstance(decision, BeginBake):
        return Forecast("advance", f"will begin its bake {at_check}", decision.reason)
    if isinstance(decision, StepBack):
        return Forecast("danger", f"will step back to {_label(state, -1)}", decision.reason)
    if isinstance(decision, RollBack):
        return Forecast("danger", "will roll back to the first step", decision.reason)
    if isinstance(decision, Pause):
        return Forecast("danger", "will pause for a person", decision.reason)
    if isinstance(decision, Recover):
        return Forecast("person", "will pause here: recovered after the step back")
    return _holding(state, decision, readings, now)


def _holding(
    state: RolloutState, decision: Hold, readings: Sequence[GateReading], now: datetime
) -> Forecast:
    if state.status is Status.PAUSED:
        return Forecast("person", "paused: waiting for a person", state.reason)
    if state.status is Status.AWAITING_APPROVAL:
        return Forecast("person", f"awaiting approval of {_label(state, 1)}", decision.reason)
    if state.status is Status.ROLLING_BACK:
        return Forecast("danger", "rolling back: observing the narrower step", decision.reason)
    if decision.reason.startswith(("holding:", "ready to advance, but")):
        # A gate, a block from outside the plan, or a closed change window.
        return Forecast("hold", decision.reason)
    gates = state.gates_now()
    if gates and not readings:
        return Forecast("hold", "waiting for the first gate check at this step", decision.reason)
    # The headline says all the dwell/evidence reason says, in the person's terms.
    return Forecast("advance", _waiting_to_advance(state, readings, now))


def _waiting_to_advance(state: RolloutState, readings: Sequence[GateReading], now: datetime) -> str:
    plan = state.plan
    left = plan.steps[state.step].hold - dwelt(state, now)
    if state.baking:
        left = bake_left(state, now)
        what = "will complete, releasing the holdout" if plan.holdout else "will complete"
    elif state.step >= plan.last_step and plan.bake is not None:
        what = "will begin its bake"
    elif state.step >= plan.last_step:
        what = "will complete"
    elif plan.steps[state.step + 1].approval:
        what = f"will ask for approval of {_label(state, 1)}"
    else:
        what = f"will advance to {_label(state, 1)}"
    when = f" in {format_duration(left)}" if left > timedelta(0) else ""
    if state.gates_now():
        oks = state.ok_evaluations + (1 if is_ok_evaluation(state, readings, now) else 0)
        missing = plan.min_evaluations - oks
        if missing > 0:
            checks = "check" if missing == 1 else "checks"
            joiner = " and" if when else ""
            when += f"{joiner} after {missing} more ok {checks}"
    closed = closed_sentence(state.windows, now)
    return what + when + (f"; {closed}" if closed else "")


def _at_next_check(next_check_in: timedelta | None) -> str:
    if next_check_in is None or next_check_in <= timedelta(0):
        return "at the next check"
    return f"at the next check (in {format_duration(next_check_in)})"


def _label(state: RolloutState, offset: int) -> str:
    index = min(max(state.step + offset, 0), state.plan.last_step)
    return state.plan.steps[index].label()
