"""What a rollout should do this tick, from its state, this tick's gate readings and the time.

``decide`` is pure: the shell loads the state, reads the gates, calls ``decide``,
applies the result with ``stages.transitions.apply`` and saves. The rules, in order,
are PRODUCT.md's "Decisions, each tick, in this order".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from stages.bake import bake_left, bake_view, begin_reason, complete_reason
from stages.compare import describe as describe_compare
from stages.decisions import (
    Advance,
    AwaitApproval,
    BeginBake,
    Complete,
    Decision,
    Hold,
    Pause,
    Recover,
    RollBack,
    StepBack,
)
from stages.durations import format_duration as exact_duration
from stages.plan import Dwell, Gate, OnRollback, Step
from stages.state import ACTIVE_STATUSES, GateMark, GateReading, Outcome, RolloutState, Status
from stages.windows import closed_sentence, time_inside

# Levels a `for` window applies to, most severe first. Hold is not among them: a gate
# at hold never lets a step advance, sustained or not ("never advance" beats `for`).
_SUSTAINED_LEVELS = (Outcome.ABORT, Outcome.ROLLBACK)
_BREACHED = frozenset({Outcome.ROLLBACK, Outcome.ABORT})


@dataclass(frozen=True, slots=True)
class Verdict:
    """One due gate this tick: what it read, and what that counts as after ``for``."""

    gate: Gate
    raw: Outcome
    outcome: Outcome
    why: str
    waiting: bool = False  # no data because too little traffic, not a failing source

    @property
    def name(self) -> str:
        return self.gate.name


def step_start(state: RolloutState, now: datetime) -> datetime:
    # A state that never recorded its start is treated as starting now: the safe side,
    # since dwell and delays then have not elapsed.
    return now if state.step_started_at is None else state.step_started_at


def is_delayed(state: RolloutState, gate: Gate, now: datetime) -> bool:
    """Rate windows still hold the previous step's traffic during a gate's delay."""
    return now < step_start(state, now) + gate.delay


def due_gates(state: RolloutState, now: datetime) -> tuple[Gate, ...]:
    """The gates that apply at the current step and whose delay has passed."""
    return tuple(g for g in state.gates_now() if not is_delayed(state, g, now))


def acting(gates: Sequence[Gate]) -> tuple[Gate, ...]:
    """The gates whose readings decide: ``mode: observe`` ones are read and shown only."""
    return tuple(g for g in gates if not g.observe_only)


def readings_by_gate(
    gates: Sequence[Gate], readings: Sequence[GateReading]
) -> dict[str, GateReading | None]:
    """The reading of each gate this tick (the worst if read twice); None if not read."""
    out: dict[str, GateReading | None] = {g.name: None for g in gates}
    for reading in readings:
        if reading.gate not in out:
            continue  # a gate that does not apply here, or is still delayed
        seen = out[reading.gate]
        if seen is None or reading.outcome.severity > seen.outcome.severity:
            out[reading.gate] = reading
    return out


def outcome_of(reading: GateReading | None) -> Outcome:
    """A due gate that was not read this tick counts as no data."""
    return Outcome.NO_DATA if reading is None else reading.outcome


def is_ok_evaluation(state: RolloutState, readings: Sequence[GateReading], now: datetime) -> bool:
    """Whether this tick counts toward ``min_evaluations``: every applicable gate read ok.

    A gate still in its delay has not been read, so the tick does not count; nor does
    a tick of a plan without gates (there is nothing to count).
    """
    gates = acting(state.gates_now())
    if not gates or any(is_delayed(state, g, now) for g in gates):
        return False
    by_gate = readings_by_gate(gates, readings)
    return all(outcome_of(r) is Outcome.OK for r in by_gate.values())


def ok_evaluations_after(
    state: RolloutState, readings: Sequence[GateReading], now: datetime
) -> int:
    """The run of consecutive all-ok ticks, this one included: what ``min_evaluations``
    is compared with.

    Any due gate reading other than ok (hold, no data, error, or a breach whose ``for``
    has not elapsed) starts the run again: a flapping gate never adds up to enough
    evidence. A tick with a gate still in its delay read nothing of that gate, so it
    neither counts nor resets (it can only happen before anything was counted).
    """
    if is_ok_evaluation(state, readings, now):
        return state.ok_evaluations + 1
    by_gate = readings_by_gate(acting(due_gates(state, now)), readings)
    if any(outcome_of(r) is not Outcome.OK for r in by_gate.values()):
        return 0
    return state.ok_evaluations


def recent_breach(gate: Gate, past: Sequence[GateMark], now: datetime) -> GateMark | None:
    """The newest raw rollback or abort of ``gate`` inside its ``for`` window, if any.

    ``for`` tolerates a breach that does not last, so such a breach never rolls back;
    it must not let the step advance either while it could still be building up.
    """
    window_start = now - gate.sustain
    inside = [m for m in past if m.at > window_start and m.outcome in _BREACHED]
    return inside[-1] if inside else None


def decide(state: RolloutState, readings: Sequence[GateReading], now: datetime) -> Decision:
    if state.status not in ACTIVE_STATUSES:
        return Hold("not running")
    verdicts = _verdicts(state, readings, now)
    if state.status is Status.RUNNING:
        decision = _decide_running(state, verdicts, readings, now)
    elif state.status is Status.ROLLING_BACK:
        decision = _decide_rolling_back(state, verdicts, readings, now)
    else:
        decision = _decide_waiting(state, verdicts)
    return _with_observed(decision, state, readings, now)


def _with_observed(
    decision: Decision, state: RolloutState, readings: Sequence[GateReading], now: datetime
) -> Decision:
    """Say what an observe-only gate would have done, where it would have acted."""
    observed = [g for g in due_gates(state, now) if g.observe_only]
    by_gate = readings_by_gate(observed, readings)
    would = [
        f"{name} would {reading.outcome.value} ({describe(reading)})"
        for name, reading in by_gate.items()
        if reading is not None and reading.outcome in _BREACHED
    ]
    if not would:
        return decision
    return replace(decision, reason=f"{decision.reason}; observe only: {'; '.join(would)}")


# --- reading the gates -----------------------------------------------------------------


def _verdicts(
    state: RolloutState, readings: Sequence[GateReading], now: datetime
) -> tuple[Verdict, ...]:
    gates = acting(due_gates(state, now))
    by_gate = readings_by_gate(gates, readings)
    return tuple(_verdict(g, by_gate[g.name], state.history.get(g.name, ()), now) for g in gates)


def _verdict(
    gate: Gate, reading: GateReading | None, past: Sequence[GateMark], now: datetime
) -> Verdict:
    raw = outcome_of(reading)
    waiting = waiting_for_traffic(gate, reading)
    why = _waiting_why(gate, reading) if waiting and reading is not None else describe(reading)
    outcome = _after_sustain(gate, raw, (*past, GateMark(now, raw)), now)
    if outcome is not raw:
        why = f"{why} (not sustained for {format_duration(gate.sustain)} yet)"
    return Verdict(gate, raw, outcome, why, waiting)


def waiting_for_traffic(gate: Gate, reading: GateReading | None) -> bool:
    """No data because the gate's ``samples`` counted fewer than ``min_samples``: too
    little traffic is not evidence, and not an outage either (it never pauses)."""
    return (
        reading is not None
        and reading.outcome is Outcome.NO_DATA
        and gate.samples is not None
        and reading.samples is not None
        and reading.samples < gate.min_samples
    )


def _waiting_why(gate: Gate, reading: GateReading) -> str:
    counted = f"{reading.samples:,.0f}" if reading.samples is not None else "0"
    return f"waiting for traffic: {counted} of {gate.min_samples:,.0f} samples"


def _after_sustain(gate: Gate, raw: Outcome, marks: Sequence[GateMark], now: datetime) -> Outcome:
    """The most severe level the gate has held for its whole ``for`` window.

    A level not yet sustained counts as hold: do not advance while it builds up.
    """
    if gate.sustain <= timedelta(0) or raw not in _BREACHED:
        return raw
    for level in _SUSTAINED_LEVELS:
        if raw.severity >= level.severity and sustained(level, marks, now - gate.sustain):
            return level
    return Outcome.HOLD


def sustained(level: Outcome, marks: Sequence[GateMark], window_start: datetime) -> bool:
    """Every mark since ``window_start`` is at least ``level``, and so is the newest one
    at or before it: the evidence must reach back over the whole window."""
    before = [m for m in marks if m.at <= window_start]
    if not before:
        return False
    inside = [m for m in marks if m.at > window_start]
    return all(m.outcome.severity >= level.severity for m in (before[-1], *inside))


def describe(reading: GateReading | None) -> str:
    """What a gate read, in the words a person checks against the dashboard."""
    if reading is None:
        return "no data"
    if reading.compare is not None and reading.outcome is not Outcome.ERROR:
        on_regression = "abort" if reading.outcome is Outcome.ABORT else "rollback"
        guardrail = reading.outcome is Outcome.OK
        return describe_compare(reading.compare, on_regression, guardrail=guardrail)
    if reading.outcome is Outcome.ERROR:
        return f"error: {reading.error or 'unknown error'}"
    if reading.outcome is Outcome.NO_DATA:
        return f"no data: {reading.error}" if reading.error else "no data"
    if reading.outcome is Outcome.OK:
        return "ok" if reading.value is None else f"{reading.value:g} ok"
    if reading.threshold and reading.value is not None and reading.threshold_value is not None:
        op = "<" if reading.threshold.endswith("_below") else ">"
        return f"{reading.value:g} {op} {reading.threshold} {reading.threshold_value:g}"
    return str(reading.outcome)


def _explain(verdicts: Sequence[Verdict]) -> str:
    return "; ".join(f"{v.name}: {v.why}" for v in verdicts)


def _with(verdicts: Sequence[Verdict], *outcomes: Outcome, raw: bool = False) -> list[Verdict]:
    return [v for v in verdicts if (v.raw if raw else v.outcome) in outcomes]


# --- running ---------------------------------------------------------------------------


def _decide_running(
    state: RolloutState,
    verdicts: Sequence[Verdict],
    readings: Sequence[GateReading],
    now: datetime,
) -> Decision:
    if aborting := _with(verdicts, Outcome.ABORT):
        return _abort(state, f"abort: {_explain(aborting)}")
    if breached := _with(verdicts, Outcome.ROLLBACK):
        return _step_back(state, f"rollback: {_explain(breached)}")
    if unavailable := _source_unavailable(state, verdicts):
        return unavailable
    if blocking := _with(verdicts, Outcome.HOLD, Outcome.NO_DATA, Outcome.ERROR):
        return Hold(f"holding: {_explain(blocking)}")
    if flapping := _recent_breaches(state, verdicts, now):
        return Hold(f"holding: {'; '.join(flapping)}")
    return _dwell(state, readings, now)


def _recent_breaches(state: RolloutState, verdicts: Sequence[Verdict], now: datetime) -> list[str]:
    out = []
    for v in verdicts:
        mark = recent_breach(v.gate, state.history.get(v.name, ()), now)
        if mark is not None:
            out.append(
                f"{v.name}: {v.why} now, but {mark.outcome} {format_duration(now - mark.at)} "
                f"ago, within for: {format_duration(v.gate.sustain)}"
            )
    return out


def _abort(state: RolloutState, reason: str) -> Decision:
    if _pauses_on_rollback(state):
        return Pause(f"{reason}; step {state.step + 1} says on_rollback: pause")
    return RollBack(reason)


def _step_back(state: RolloutState, reason: str) -> Decision:
    if _pauses_on_rollback(state):
        return Pause(f"{reason}; step {state.step + 1} says on_rollback: pause")
    if state.step == 0:
        return RollBack(f"{reason}; at the first step")
    if state.step == 1 and _reads_nothing_new(state.plan.steps[0]):
        # Nothing reads the new side there, so nothing could show a recovery: that is
        # what rolled_back serves anyway.
        return RollBack(
            f"{reason}; the first step ({state.plan.steps[0].label()}) serves nobody the new side"
        )
    return StepBack(state.step - 1, f"{reason}; stepping back to {_step_name(state, -1)}")


def _reads_nothing_new(step: Step) -> bool:
    return step.percent <= 0 and not step.regions


def _pauses_on_rollback(state: RolloutState) -> bool:
    return state.plan.steps[state.step].on_rollback is OnRollback.PAUSE


def _source_unavailable(state: RolloutState, verdicts: Sequence[Verdict]) -> Pause | None:
    for v in _with(verdicts, Outcome.NO_DATA, Outcome.ERROR):
        if v.waiting:
            continue
        in_a_row = state.gate_errors.get(v.name, 0) + 1
        if in_a_row >= state.plan.max_gate_errors:
            return Pause(f"gate source unavailable: {v.name}: {v.why} ({in_a_row} in a row)")
    return None


def _dwell(state: RolloutState, readings: Sequence[GateReading], now: datetime) -> Decision:
    plan = state.plan
    gates = acting(state.gates_now())
    # hold - elapsed, never start + hold: a plan stored before the limits may hold a
    # duration past what a datetime can reach. In the bake, the bake's time instead.
    left = (
        bake_left(state, now) if state.baking else plan.steps[state.step].hold - dwelt(state, now)
    )
    oks = ok_evaluations_after(state, readings, now)
    closed = closed_sentence(state.windows, now)
    waiting: list[str] = []
    if state.baking:
        waiting.extend(_baking(state, now, left))
    elif left > timedelta(0):
        counted = " (counted inside change windows)" if counts_in_window(state) else ""
        waiting.append(f"dwell: {format_duration(left)} left{counted}")
    if gates and oks < plan.min_evaluations:
        waiting.append(f"{oks} of {plan.min_evaluations} ok evaluations in a row")
        waiting.extend(_delays_left(state, gates, now))
    if waiting:
        return Hold("; ".join([*waiting, *([closed] if closed else [])]))
    if state.blocked:
        return Hold(f"ready to advance, but {'; '.join(state.blocked)}")
    # Advances and completions wait for a change window; rollbacks came before this.
    if closed:
        return Hold(f"ready to advance, but {closed}")
    evidence = f"{oks} ok evaluations in a row" if gates else "timed ramp"
    if state.baking:
        return Complete(complete_reason(state, evidence))
    return _next(state, f"dwell {format_duration(plan.steps[state.step].hold)} done, {evidence}")


def _baking(state: RolloutState, now: datetime, left: timedelta) -> list[str]:
    view = bake_view(state, now)
    return [view.sentence] if view is not None and left > timedelta(0) else []


def counts_in_window(state: RolloutState) -> bool:
    return state.plan.dwell_of(state.step) is Dwell.IN_WINDOW


def dwelt(state: RolloutState, now: datetime) -> timedelta:
    """The time the current step's ``hold`` has counted: all of it since the step began,
    or with ``dwell: in_window`` only the time inside change windows."""
    start = step_start(state, now)
    if counts_in_window(state):
        return time_inside(state.windows, start, now)
    return now - start


def _delays_left(state: RolloutState, gates: Sequence[Gate], now: datetime) -> list[str]:
    start = step_start(state, now)
    return [
        f"{g.name}: delayed {format_duration(start + g.delay - now)} more"
        for g in gates
        if is_delayed(state, g, now)
    ]


def _next(state: RolloutState, why: str) -> Decision:
    plan = state.plan
    if state.step >= plan.last_step:
        if plan.bake is not None:
            return BeginBake(begin_reason(plan, why))
        return Complete(f"{why}: last step done")
    nxt = state.step + 1
    if plan.steps[nxt].approval:
        return AwaitApproval(nxt, f"{why}: {_step_name(state, 1)} needs approval")
    return Advance(nxt, f"{why}: advancing to {_step_name(state, 1)}")


def _step_name(state: RolloutState, offset: int) -> str:
    index = state.step + offset
    return f"step {index + 1} ({state.plan.steps[index].label()})"


# --- rolling back ----------------------------------------------------------------------


def _decide_rolling_back(
    state: RolloutState,
    verdicts: Sequence[Verdict],
    readings: Sequence[GateReading],
    now: datetime,
) -> Decision:
    if aborting := _with(verdicts, Outcome.ABORT):
        return _abort(state, f"abort while rolling back: {_explain(aborting)}")
    if state.observe_until is not None and now < state.observe_until:
        left = format_duration(state.observe_until - now)
        gates = f"; {_explain(verdicts)}" if verdicts else ""
        return Hold(f"observing after step back, {left} left{gates}")
    # The step back already answered the sustained breach; what counts now is whether
    # the narrower exposure is still breached, so raw outcomes, no `for` window.
    if breached := _with(verdicts, *_BREACHED, raw=True):
        return _step_back(state, f"still breached after observing: {_explain(breached)}")
    if unavailable := _source_unavailable(state, verdicts):
        return unavailable
    return _recover_or_wait(state, verdicts, readings, now)


def _recover_or_wait(
    state: RolloutState,
    verdicts: Sequence[Verdict],
    readings: Sequence[GateReading],
    now: datetime,
) -> Decision:
    # Recovery needs the evidence an advance needs: every gate ok (a gate with no data,
    # still delayed or at hold has not shown it), min_evaluations times in a row.
    missing = [f"{v.name}: {v.why}" for v in _with(verdicts, Outcome.NO_DATA, Outcome.ERROR)]
    missing += _delays_left(state, acting(state.plan.gates_for(state.step)), now)
    if missing:
        return Hold(f"observation ended; waiting for gate data: {'; '.join(missing)}")
    if holding := _with(verdicts, Outcome.HOLD, raw=True):
        return Hold(f"observation ended; not recovered yet: {_explain(holding)}")
    oks = ok_evaluations_after(state, readings, now)
    if verdicts and oks < state.plan.min_evaluations:
        return Hold(
            f"observation ended; {oks} of {state.plan.min_evaluations} ok evaluations in a row"
        )
    return Recover(
        f"recovered at {_step_name(state, 0)} after observing "
        f"{format_duration(state.plan.rollback_observe)}; paused for a person"
    )


# --- paused, awaiting approval ---------------------------------------------------------


def _decide_waiting(state: RolloutState, verdicts: Sequence[Verdict]) -> Decision:
    """Only abort acts while a person is in charge: safety beats a pause."""
    if aborting := _with(verdicts, Outcome.ABORT):
        reason = f"abort while {state.status}: {_explain(aborting)}"
        if not _pauses_on_rollback(state):
            return RollBack(reason)
        stay = f"{reason}; step {state.step + 1} says on_rollback: pause"
        # Already paused: nothing to change. Awaiting approval: pause, so that nobody
        # approves a wider step while a gate is at abort.
        return Hold(stay) if state.status is Status.PAUSED else Pause(stay)
    return Hold(_waiting_reason(state))


def _waiting_reason(state: RolloutState) -> str:
    if state.status is Status.AWAITING_APPROVAL:
        return f"awaiting approval for {_step_name(state, 1)}"
    return f"paused: {state.reason}" if state.reason else "paused"


# --- formatting ------------------------------------------------------------------------


def format_duration(span: timedelta) -> str:
    """For reasons a person reads: whole seconds, rounded up (``3m12s``, ``2d``, ``0s``)."""
    return exact_duration(timedelta(seconds=max(0, math.ceil(span.total_seconds()))))
