"""Rollout state, gate readings, and what each state serves.

``RolloutState`` is everything ``decide`` needs besides the current readings and
the time: the plan, where the rollout is, and the short memory of past gate
outcomes that ``for`` windows, ``min_evaluations`` and ``max_gate_errors`` need.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from stages.compare import CompareStats, Evidence
from stages.plan import Gate, Plan, Stage
from stages.windows import Window


class Status(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting_approval"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"
    ABORTED = "aborted"


# A rollout in one of these states holds its flag: no other rollout may drive it.
ACTIVE_STATUSES = frozenset(
    {Status.RUNNING, Status.PAUSED, Status.AWAITING_APPROVAL, Status.ROLLING_BACK}
)


class Outcome(enum.StrEnum):
    """How one evaluation of one gate ended. A closed set: the worst wins."""

    OK = "ok"
    HOLD = "hold"
    NO_DATA = "no_data"
    ERROR = "error"
    ROLLBACK = "rollback"
    ABORT = "abort"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @property
    def is_missing_data(self) -> bool:
        return self in (Outcome.NO_DATA, Outcome.ERROR)


_SEVERITY = {
    Outcome.OK: 0,
    Outcome.HOLD: 1,
    Outcome.NO_DATA: 2,
    Outcome.ERROR: 3,
    Outcome.ROLLBACK: 4,
    Outcome.ABORT: 5,
}


def worst(outcomes: list[Outcome] | tuple[Outcome, ...]) -> Outcome:
    return max(outcomes, key=lambda o: o.severity, default=Outcome.OK)


@dataclass(frozen=True, slots=True)
class GateReading:
    """One evaluation of one gate, with everything a person needs to see why."""

    gate: str
    outcome: Outcome
    at: datetime
    query: str = ""
    value: float | None = None
    baseline: float | None = None
    samples: float | None = None
    threshold: str | None = None  # e.g. "rollback_above"
    threshold_value: float | None = None
    error: str | None = None
    duration_ms: float = 0.0
    compare: CompareStats | None = None  # a compare gate's counts, interval and verdict


@dataclass(frozen=True, slots=True)
class GateMark:
    """A past outcome of a gate, kept for ``for`` windows."""

    at: datetime
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class RolloutState:
    plan: Plan
    status: Status = Status.PENDING
    step: int = 0
    step_started_at: datetime | None = None
    version: int = 0
    reason: str = ""
    # The run of consecutive ticks in the current step at which every applicable gate
    # read ok (``stages.decide.ok_evaluations_after``): one that did not starts it again.
    ok_evaluations: int = 0
    # Consecutive error/no_data outcomes, per gate.
    gate_errors: Mapping[str, int] = field(default_factory=dict)
    # Recent raw outcomes per gate, oldest first, trimmed to the longest `for` window:
    # whether a level held over the window, and whether a breach is still inside it.
    history: Mapping[str, tuple[GateMark, ...]] = field(default_factory=dict)
    # The latest outcome per gate (shown while paused; checked by a manual advance).
    last_outcomes: Mapping[str, Outcome] = field(default_factory=dict)
    # While rolling back: when the current observation ends.
    observe_until: datetime | None = None
    started_at: datetime | None = None
    # Steps already entered in this run, so the UI can show the path taken.
    max_step_reached: int = 0
    # Per compare gate: the evidence of earlier steps and the current step's latest,
    # kept across steps (a step back keeps what the wider step showed); a retry clears it.
    evidence: Mapping[str, Evidence] = field(default_factory=dict)
    # Why advances are stopped from outside the plan, set by the shell each tick (a
    # freeze in scope, an alert that holds): each a sentence a person reads. They stop
    # automatic advances and completions only; rollbacks and aborts still act.
    blocked: tuple[str, ...] = ()
    # When the bake after the last step began (stages.bake); None outside it.
    bake_started_at: datetime | None = None
    # The global change windows (ROLLOUT_CHANGE_WINDOWS), set by the shell when it loads
    # the state: they apply when the plan declares none.
    default_windows: tuple[Window, ...] = ()

    @property
    def baking(self) -> bool:
        """In the bake: the last step done, its gates still read, the holdout kept old."""
        return (
            self.bake_started_at is not None
            and self.plan.bake is not None
            and self.step == self.plan.last_step
            and self.status in ACTIVE_STATUSES
        )

    def gates_now(self) -> tuple[Gate, ...]:
        """The gates that apply where the rollout is now (its step, or the bake)."""
        return self.plan.gates_for(self.step, baking=self.baking)

    @property
    def windows(self) -> tuple[Window, ...]:
        """The change windows that apply: the plan's, else the global ones."""
        return self.plan.windows or self.default_windows


@dataclass(frozen=True, slots=True)
class Serving:
    """What a rollout serves now: derived from status and step, never stored."""

    stage: Stage
    step: int  # -1 when nothing is served (pending, aborted)
    percent: float
    regions: frozenset[str]
    shadow: bool


def serving(state: RolloutState) -> Serving:
    plan = state.plan
    if state.status in (Status.PENDING, Status.ABORTED):
        # Everyone old, no dual-write.
        return Serving(plan.steps[0].stage, -1, 0.0, frozenset(), False)
    if state.status is Status.ROLLED_BACK:
        # Back to the first step, and never above 0 %: "shadow, or 0 %".
        first = plan.steps[0]
        return Serving(first.stage, 0, 0.0, frozenset(), first.shadow)
    index = plan.last_step if state.status is Status.COMPLETED else state.step
    step = plan.steps[index]
    if state.baking and plan.holdout is not None and step.stage is Stage.FULL:
        # The holdout is the top buckets, the users a (100 - holdout) % step leaves out:
        # the same users all through the bake. No regions, or they would all be new.
        return Serving(step.stage, index, round(100 - plan.holdout, 2), frozenset(), step.shadow)
    return Serving(step.stage, index, step.percent, step.regions, step.shadow)
