"""``rollout backtest``: a plan's gates replayed over Prometheus history.

The walk is the live controller's check at every instant it would have checked, from
``start`` every ``plan.interval`` to ``end``: the scheduler's own ``read_gates``
(controller/gates/reading.py, with the variables it would pass at that state,
``${step_window}`` included), read as of
that instant, then ``stages.transitions.tick``, the ``decide()`` and ``apply`` the
scheduler and ``record_decision`` run. Nothing is written anywhere.

It cannot know what people did: an approval step ends the walk ("awaiting approval")
unless ``approve`` assumes it granted at once; a pause ends it (a person would act).

Instant queries only, as the live check makes them: a range query would be faster for
gates whose query does not depend on the state, but it is another code path, and a
local Prometheus answers an instant query in about half a millisecond.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from controller.gates.reading import query_variables, read_gates
from controller.rollouts import DECISION_ACTIONS
from stages.actions import Action, perform
from stages.decisions import TRANSITIONS, AwaitApproval, Decision
from stages.durations import format_duration, parse_duration
from stages.plan import Gate, Plan
from stages.query_templates import QueryTemplateError, placeholders
from stages.state import GateReading, Outcome, RolloutState, Status
from stages.transitions import enter_step, tick
from stages.windows import Window

# A walk longer than this many checks is refused: 7 days at 1 s would be 604,800
# checks of every gate, hours against any Prometheus. Widen the plan's interval.
MAX_CHECKS = 100_000


class BacktestError(ValueError):
    """Bad input to a backtest (times, step, query variables); the message says which."""


class HistoryReader(Protocol):
    """A gate source that reads as of a given instant (``PrometheusGates`` is one)."""

    def read(
        self,
        gate: Gate,
        variables: Mapping[str, str],
        now: datetime,
        *,
        deadline: float | None = None,
        state: RolloutState | None = None,
        at_time: datetime | None = None,
    ) -> GateReading: ...

    def ping(self) -> bool: ...


class AsOf:
    """The live ``GateSource`` port over history: every read is as of the check's ``now``.
    The backtest reads through it, and so can a scheduler driven by a clock that replays
    the past (the backtest's equivalence test does)."""

    def __init__(self, reader: HistoryReader) -> None:
        self._reader = reader

    def read(
        self,
        gate: Gate,
        variables: Mapping[str, str],
        now: datetime,
        *,
        deadline: float | None = None,
        state: RolloutState | None = None,
    ) -> GateReading:
        return self._reader.read(gate, variables, now, deadline=deadline, state=state, at_time=now)

    def ping(self) -> bool:
        return self._reader.ping()


@dataclass(frozen=True, slots=True)
class Event:
    """One check of the walk: a transition (or, when asked for, a hold)."""

    at: datetime
    action: str  # the audit log's name: advance, step_back, rollback, hold, approve, ...
    from_step: int  # 0-based index
    to_step: int
    from_status: Status
    status: Status
    reason: str
    readings: tuple[GateReading, ...] = ()

    @property
    def is_transition(self) -> bool:
        return self.action != "hold"


@dataclass(frozen=True, slots=True)
class Timeline:
    plan: Plan
    start: datetime
    end: datetime
    events: tuple[Event, ...]
    final: RolloutState
    checks: int
    last_check: datetime | None
    gate_errors: int  # readings whose outcome was error (bad query, Prometheus failing)
    no_data: int
    ended: str  # why the walk stopped, for a person

    @property
    def transitions(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.is_transition)


@dataclass
class _Walk:
    events: list[Event] = field(default_factory=list)
    checks: int = 0
    gate_errors: int = 0
    no_data: int = 0
    last_check: datetime | None = None


def initial_state(
    plan: Plan, at: datetime, step: int = 0, *, default_windows: tuple[Window, ...] = ()
) -> RolloutState:
    """A rollout started at ``at``, as ``rollout start`` leaves it; at ``step`` (0-based)
    if asked, as if it had just entered that step. ``default_windows`` are the global
    change windows (ROLLOUT_CHANGE_WINDOWS) for a plan without its own, as the live
    controller gives each state it loads."""
    if not 0 <= step < len(plan.steps):
        raise BacktestError(f"--step {step + 1}: the plan has steps 1 to {len(plan.steps)}")
    fresh = RolloutState(plan, default_windows=default_windows)
    started = perform(fresh, Action.START, at, reason="backtest start")
    if step == 0:
        return started
    return enter_step(started, step, Status.RUNNING, at, f"backtest starts at step {step + 1}")


def check_instants(plan: Plan, start: datetime, end: datetime) -> int:
    """How many checks a walk from ``start`` to ``end`` may make (both ends included)."""
    if end < start:
        raise BacktestError(f"--from {_iso(start)} is after --to {_iso(end)}")
    count = int((end - start) / plan.interval) + 1
    if count > MAX_CHECKS:
        raise BacktestError(
            f"{count:,} checks at the plan's interval {format_duration(plan.interval)}: more than "
            f"{MAX_CHECKS:,}; backtest a shorter range"
        )
    return count


def unknown_variables(plan: Plan, at: datetime) -> list[str]:
    """Every ``${name}`` of the plan's queries that no live check would give a value."""
    known = set(query_variables(initial_state(plan, at), at))
    problems: list[str] = []
    gates = {g.name: g for i in range(len(plan.steps)) for g in plan.gates_for(i, baking=True)}
    for gate in gates.values():
        for _, template in gate.query_templates():
            try:
                names = {p.name for p in placeholders(template)}
            except QueryTemplateError as exc:
                problems.append(f"gate {gate.name}: {exc}")
                continue
            problems += [
                f"gate {gate.name}: unknown variable ${{{n}}} (known: {', '.join(sorted(known))})"
                for n in sorted(names - known)
            ]
    return problems


def query_errors(source: AsOf, plan: Plan, start: datetime, at: datetime) -> list[str]:
    """Read every gate of every step once, as of ``at``: a query Prometheus refuses is
    found even in a step the walk never reaches (what CI wants of a plan change)."""
    problems: dict[str, str] = {}
    for step in range(len(plan.steps)):
        state = initial_state(plan, start, step)
        for reading in read_gates(source, state, at):
            if reading.outcome is Outcome.ERROR and reading.gate not in problems:
                problems[reading.gate] = f"gate {reading.gate} (step {step + 1}): {reading.error}"
    return list(problems.values())


def backtest(
    plan: Plan,
    source: AsOf,
    start: datetime,
    end: datetime,
    *,
    step: int = 0,
    approve: bool = False,
    holds: bool = False,
    default_windows: tuple[Window, ...] = (),
    progress: Callable[[int, int], None] | None = None,
) -> Timeline:
    """Walk the checks from ``start`` to ``end``. ``holds`` records every hold too."""
    total = check_instants(plan, start, end)
    state = initial_state(plan, start, step, default_windows=default_windows)
    walk = _Walk()
    for index in range(total):
        at = start + index * plan.interval
        state = _check(walk, state, source, at, holds=holds)
        if progress is not None:
            progress(index + 1, total)
        if state.status is Status.AWAITING_APPROVAL and approve:
            state = _approve(walk, state, at)
        ended = _ended(state)
        if ended is not None:
            return _timeline(plan, start, end, walk, state, ended)
    reached = f"reached --to at step {state.step + 1} ({state.plan.steps[state.step].label()})"
    return _timeline(plan, start, end, walk, state, f"{reached}, {state.status}")


def _check(
    walk: _Walk, state: RolloutState, source: AsOf, at: datetime, *, holds: bool
) -> RolloutState:
    """One live check: read the gates that apply, decide, apply."""
    readings = read_gates(source, state, at)
    decision, after = tick(state, readings, at)
    walk.checks += 1
    walk.last_check = at
    walk.gate_errors += sum(r.outcome is Outcome.ERROR for r in readings)
    walk.no_data += sum(r.outcome is Outcome.NO_DATA for r in readings)
    if isinstance(decision, TRANSITIONS) or holds:
        walk.events.append(_event(at, decision, state, after, readings))
    return after


def _event(
    at: datetime,
    decision: Decision,
    before: RolloutState,
    after: RolloutState,
    readings: Sequence[GateReading],
) -> Event:
    action = DECISION_ACTIONS.get(type(decision), "hold")
    to_step = decision.next_step if isinstance(decision, AwaitApproval) else after.step
    return Event(
        at, action, before.step, to_step, before.status, after.status, decision.reason,
        tuple(readings),
    )  # fmt: skip


def _approve(walk: _Walk, state: RolloutState, at: datetime) -> RolloutState:
    reason = "approval assumed (--approve)"
    after = perform(state, Action.APPROVE, at, reason=reason)
    walk.events.append(
        Event(at, "approve", state.step, after.step, state.status, after.status, reason)
    )
    return after


def _ended(state: RolloutState) -> str | None:
    label = state.plan.steps[state.step].label()
    if state.status is Status.AWAITING_APPROVAL:
        nxt = state.step + 1
        return f"awaiting approval for step {nxt + 1} ({state.plan.steps[nxt].label()})"
    if state.status is Status.PAUSED:
        return f"paused at step {state.step + 1} ({label}): a person would act here"
    if state.status is Status.COMPLETED:
        return "completed"
    if state.status is Status.ROLLED_BACK:
        return "rolled back"
    if state.status is Status.ABORTED:
        return "aborted"
    return None


def _timeline(
    plan: Plan, start: datetime, end: datetime, walk: _Walk, state: RolloutState, ended: str
) -> Timeline:
    return Timeline(
        plan, start, end, tuple(walk.events), state, walk.checks, walk.last_check,
        walk.gate_errors, walk.no_data, ended,
    )  # fmt: skip


# --- times as people write them --------------------------------------------------------------

_RELATIVE = re.compile(r"(?:now)?\s*-\s*(.+)")


def parse_time(text: str, now: datetime) -> datetime:
    """``now``, ``-7d`` or ``now-90m`` (before ``now``), or RFC 3339 (``2026-11-30T14:00:00Z``;
    without an offset it is UTC)."""
    raw = text.strip()
    if raw == "now":
        return now
    relative = _RELATIVE.fullmatch(raw)
    if relative is not None:
        try:
            return now - parse_duration(relative.group(1).strip())
        except (ValueError, OverflowError) as exc:
            raise BacktestError(f"{text!r}: {exc}") from None
    try:
        at = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise BacktestError(
            f"{text!r} is not a time: write RFC 3339 (2026-11-30T14:00:00Z), now, or -7d"
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


__all__ = [
    "MAX_CHECKS",
    "AsOf",
    "BacktestError",
    "Event",
    "HistoryReader",
    "Timeline",
    "backtest",
    "check_instants",
    "initial_state",
    "parse_time",
    "query_errors",
    "unknown_variables",
]
