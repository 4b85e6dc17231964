"""The bake after full: a plan's ``bake: 7d`` keeps the last step's gates running for
that long after the last step is done, and only then does the rollout complete.

The status stays ``running`` (PRODUCT.md's names; a bake acts as a running step: a
breach steps back or rolls back as anywhere else); ``RolloutState.bake_started_at``
says it is in the bake, and the reason and the rollout's ``bake`` view say how long is
left. With ``holdout: 1`` the top 1 % of buckets stays on the old side for the whole
bake (``stages.state.serving`` serves ``100 - holdout`` %), the comparison group a
compare gate reads as its old side; the holdout is released when the bake completes.

Pure: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from stages.durations import format_duration
from stages.plan import Plan
from stages.state import RolloutState

_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


@dataclass(frozen=True, slots=True)
class BakeView:
    """Where a bake is, for the API, the CLI and the UI."""

    started_at: datetime
    ends_at: datetime
    left: timedelta
    holdout: float | None  # percent of users kept on the old side

    @property
    def sentence(self) -> str:
        """``baking, 5d 3h left, holdout 1 %``"""
        parts = ["baking", f"{coarse_duration(self.left)} left" if self.left else "bake done"]
        if self.holdout is not None:
            parts.append(f"holdout {self.holdout:g} %")
        return ", ".join(parts)


def bake_view(state: RolloutState, now: datetime) -> BakeView | None:
    if not state.baking or state.bake_started_at is None or state.plan.bake is None:
        return None
    return BakeView(
        started_at=state.bake_started_at,
        ends_at=state.bake_started_at + state.plan.bake,
        left=bake_left(state, now),
        holdout=state.plan.holdout,
    )


def bake_left(state: RolloutState, now: datetime) -> timedelta:
    """What is left of the bake, never below zero (nothing outside a bake)."""
    if not state.baking or state.bake_started_at is None or state.plan.bake is None:
        return timedelta(0)
    # bake - elapsed, never start + bake: a stored plan may hold a duration past what a
    # datetime can reach.
    return max(timedelta(0), state.plan.bake - (now - state.bake_started_at))


def coarse_duration(span: timedelta) -> str:
    """The two largest units, for a person: ``5d 3h``, ``3h 12m``, ``42s``."""
    seconds = max(0, -(-span // timedelta(seconds=1)))  # whole seconds, rounded up
    for i, (unit, size) in enumerate(_UNITS):
        if seconds >= size or unit == "s":
            first, rest = divmod(seconds, size)
            text = f"{first}{unit}"
            if i + 1 < len(_UNITS) and (second := rest // _UNITS[i + 1][1]):
                text += f" {second}{_UNITS[i + 1][0]}"
            return text
    return "0s"


def begin_reason(plan: Plan, why: str) -> str:
    holdout = f", {plan.holdout:g} % held out on the old side" if plan.holdout is not None else ""
    bake = format_duration(plan.bake) if plan.bake is not None else "0s"
    return f"{why}: last step done; baking for {bake}{holdout}"


def complete_reason(state: RolloutState, evidence: str) -> str:
    bake = format_duration(state.plan.bake) if state.plan.bake is not None else "0s"
    released = (
        f"; holdout of {state.plan.holdout:g} % released" if state.plan.holdout is not None else ""
    )
    return f"bake {bake} done, {evidence}{released}"


def expected_share(state: RolloutState) -> float | None:
    """The new side's share of exposures in a bake with a holdout (its complement)."""
    if not state.baking or state.plan.holdout is None:
        return None
    return (100 - state.plan.holdout) / 100


def segments(plan: Plan, gate: str) -> int:
    """How many segments the compare gate ``gate`` may gather evidence in: the steps it
    applies to, and a bake whose holdout gives compare gates an old side. Fixed by the
    plan, so the restarted tests' weights (``stages.compare``) are fixed before any data;
    at least 1."""
    count = sum(
        any(g.name == gate for g in plan.gates_for(index)) for index in range(len(plan.steps))
    )
    if plan.holdout is not None and any(
        g.name == gate for g in plan.gates_for(plan.last_step, baking=True)
    ):
        count += 1
    return max(1, count)
