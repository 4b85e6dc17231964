"""The rollout plan: ordered steps, each a stage at some exposure, and the gates
that decide whether it is safe to widen exposure.

A parsed ``Plan`` is already validated (see ``stages.planfile``): steps only ever
widen exposure, regions accumulate, ``full`` comes last. Steps carry their
*effective* exposure: a regional step's ``percent`` is the percent of the last
non-regional step before it, and its ``regions`` are every region released so far.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta

from stages.windows import Window


class Stage(enum.StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"
    GRADUATED = "graduated"
    REGIONAL = "regional"
    FULL = "full"


class Dwell(enum.StrEnum):
    """What a step's ``hold`` counts: all time, or only time inside change windows."""

    ALWAYS = "always"
    IN_WINDOW = "in_window"


class OnRollback(enum.StrEnum):
    STEP_BACK = "step_back"
    PAUSE = "pause"


DEFAULT_FALSE_ROLLBACK_BUDGET = 0.01


class GateMode(enum.StrEnum):
    ENFORCE = "enforce"
    OBSERVE = "observe"  # read, stored and shown with what it would have done; never acts


# Threshold names, in the order they are checked: the worst crossed wins.
THRESHOLD_NAMES = (
    "abort_above",
    "abort_below",
    "rollback_above",
    "rollback_below",
    "hold_above",
    "hold_below",
)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A compare gate: per-side event and exposure counts over the current step
    (PromQL templates with ``${step_window}``), and the margin the new side may be worse
    by. ``histogram``/``slower_than`` is the latency form as written; ``events`` and
    ``exposures`` are then derived from the histogram's buckets."""

    events: str
    exposures: str
    worse_by: float
    on_regression: str = "rollback"  # or "abort"
    by: str = "variant"  # the label that names the side
    new: str = "new"  # its value on the new side
    old: str = "old"
    # Relative: a share off by more than this (and significant) is a mismatch. Exposures
    # are requests while the split is of users, and heavy users move the share: a 1 %
    # group of 200 users with gamma(0.5) request weights has 0.77 % of requests (measured
    # in the decision benchmark), so 20 % held correct splits.
    srm_tolerance: float = 0.5
    # What lets a step advance: "not_worse" (the interval below the margin; undecided
    # holds) or "no_regression" (a guardrail: undecided is ok once min_samples are in;
    # only a shown regression acts). Small canaries rarely show "not worse" in hours.
    requires: str = "not_worse"
    histogram: str | None = None
    slower_than: float | None = None
    # Users, not requests, are what the split assigns, and users differ: a random 1 % of
    # them has its own error rate, off the rest's by a chance amount that more requests
    # do not shrink (only more users do). ``user_spread`` is the standard deviation of
    # that gap for a 1 % group and a change that does nothing (absolute, like
    # ``worse_by``); 0 treats requests as independent. stages.compare scales it to the
    # step and widens the interval by it (docs/concepts.md, "Who is on each side").
    user_spread: float = 0.0


@dataclass(frozen=True, slots=True)
class Gate:
    """A PromQL instant query with thresholds named after what happens when crossed.

    With ``baseline`` the compared value is ``query - baseline``. With ``samples``,
    fewer than ``min_samples`` means ``no_data``. ``sustain`` is the plan's ``for``.
    ``stages`` empty means every stage.
    """

    name: str
    query: str
    baseline: str | None = None
    samples: str | None = None
    min_samples: float = 0.0
    hold_above: float | None = None
    hold_below: float | None = None
    rollback_above: float | None = None
    rollback_below: float | None = None
    abort_above: float | None = None
    abort_below: float | None = None
    sustain: timedelta = timedelta(0)
    delay: timedelta = timedelta(0)
    stages: frozenset[Stage] = frozenset()
    compare: Comparison | None = None
    mode: GateMode = GateMode.ENFORCE

    @property
    def observe_only(self) -> bool:
        return self.mode is GateMode.OBSERVE

    def query_templates(self) -> list[tuple[str, str]]:
        """(role, template) of each query the gate sends, the main one first: a compare
        gate's events and exposures, a threshold gate's query, baseline and samples."""
        if self.compare is not None:
            return [("events", self.compare.events), ("exposures", self.compare.exposures)]
        roles = (("query", self.query), ("baseline", self.baseline), ("samples", self.samples))
        return [(role, template) for role, template in roles if template is not None]

    def thresholds(self) -> dict[str, float]:
        """The thresholds that are set, by name, in checking order."""
        out: dict[str, float] = {}
        for name in THRESHOLD_NAMES:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def applies_to(self, stage: Stage) -> bool:
        return not self.stages or stage in self.stages


@dataclass(frozen=True, slots=True)
class Step:
    stage: Stage
    percent: float  # effective percent, 0..100, 0.01 resolution
    regions: frozenset[str] = frozenset()  # effective: every region released so far
    hold: timedelta = timedelta(0)
    approval: bool = False
    on_rollback: OnRollback = OnRollback.STEP_BACK
    shadow: bool = True  # dual-write
    gates: tuple[Gate, ...] = ()  # gates of this step only, on top of the plan's
    dwell: Dwell | None = None  # None: the plan's

    def label(self) -> str:
        if self.stage is Stage.REGIONAL:
            return f"regional {','.join(sorted(self.regions))} (+{self.percent:g}%)"
        if self.stage in (Stage.CANARY, Stage.GRADUATED):
            return f"{self.stage} {self.percent:g}%"
        if self.stage is Stage.FULL and not self.shadow:
            return "full (dual-write off)"
        return str(self.stage)


@dataclass(frozen=True, slots=True)
class Plan:
    rollout: str
    flag: str
    steps: tuple[Step, ...]
    gates: tuple[Gate, ...] = ()
    salt: str | None = None
    interval: timedelta = timedelta(minutes=1)
    min_evaluations: int = 3
    max_gate_errors: int = 4
    rollback_observe: timedelta = timedelta(minutes=10)
    old_variant: str = "off"
    new_variant: str = "on"
    description: str = ""
    labels: tuple[tuple[str, str], ...] = field(default=())
    # The chance the rollout is ever rolled back by its compare gates while the new side
    # is not worse than their margins; split evenly across them.
    false_rollback_budget: float = 0.01  # DEFAULT_FALSE_ROLLBACK_BUDGET
    # After the last step: how long its gates keep running before the rollout completes,
    # and the percent of users kept on the old side meanwhile (stages.bake).
    bake: timedelta | None = None
    holdout: float | None = None
    # When automatic advances may happen (stages.windows); none: the global setting's.
    windows: tuple[Window, ...] = ()
    dwell: Dwell = Dwell.ALWAYS

    def gates_for(self, step_index: int, *, baking: bool = False) -> tuple[Gate, ...]:
        """Every gate that applies while ``step_index`` is the current step (``baking``:
        in the bake after it, where a holdout gives compare gates an old side at full)."""
        step = self.steps[step_index]
        plan_gates = tuple(
            g
            for g in self.gates
            if g.applies_to(step.stage) and (baking or not _needs_holdout(g, step.stage))
        )
        return plan_gates + step.gates

    def compare_alpha(self) -> float:
        """Each compare gate's share of ``false_rollback_budget``."""
        names = {g.name for g in self.gates if g.compare is not None}
        names |= {g.name for step in self.steps for g in step.gates if g.compare is not None}
        return self.false_rollback_budget / max(1, len(names))

    def dwell_of(self, step_index: int) -> Dwell:
        return self.steps[step_index].dwell or self.dwell

    @property
    def last_step(self) -> int:
        return len(self.steps) - 1


def _needs_holdout(gate: Gate, stage: Stage) -> bool:
    # At full nobody is on the old side, but the holdout of a bake.
    return gate.compare is not None and stage is Stage.FULL
