"""What ``decide`` and the manual actions return: decisions as data.

The shell applies a decision with ``stages.transitions.apply`` and records it in
the audit log as it is. Every decision carries the reason a person will read.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hold:
    """Stay at the current step (also: keep observing, keep waiting)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Advance:
    to_step: int
    reason: str


@dataclass(frozen=True, slots=True)
class AwaitApproval:
    """Dwell and gates allow the next step, but it needs a person's approval."""

    next_step: int
    reason: str


@dataclass(frozen=True, slots=True)
class Complete:
    reason: str


@dataclass(frozen=True, slots=True)
class Pause:
    reason: str


@dataclass(frozen=True, slots=True)
class StepBack:
    """Gradual rollback: go to ``to_step`` and observe for ``rollback_observe``."""

    to_step: int
    reason: str


@dataclass(frozen=True, slots=True)
class RollBack:
    """Immediate rollback to the first step: status ``rolled_back``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Recover:
    """The observation after a step back ended healthy: pause here for a person."""

    reason: str


@dataclass(frozen=True, slots=True)
class BeginBake:
    """The last step is done and the plan has a ``bake``: keep its gates running (and
    the holdout on the old side) for that long before completing (``stages.bake``)."""

    reason: str


Decision = (
    Hold | Advance | AwaitApproval | Complete | Pause | StepBack | RollBack | Recover | BeginBake
)

# Decisions after which the state's status or step changes (audit-worthy transitions).
TRANSITIONS = (Advance, AwaitApproval, Complete, Pause, StepBack, RollBack, Recover, BeginBake)
