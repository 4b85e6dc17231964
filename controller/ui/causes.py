"""Why a rollout is where it is, for the overview row: the reason its state records,
the gates that reason names, and who or what made the transition and when."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from stages.plan import Plan
from stages.state import RolloutState, Status

# A person acted or a gate acted: the row should say why without a click.
_STOPPED = frozenset(
    {
        Status.PAUSED,
        Status.ROLLED_BACK,
        Status.ABORTED,
        Status.ROLLING_BACK,
        Status.AWAITING_APPROVAL,
    }
)
# How stages.decide begins the reason of a hold that a gate or something outside the
# plan (a freeze, an alert, a closed change window) keeps; dwell holds are not news.
_HOLDS = ("holding:", "ready to advance, but")
# What an observe-only gate would have done is appended after this: it caused nothing.
_OBSERVED = "; observe only:"


@dataclass(frozen=True, slots=True)
class Cause:
    reason: str
    gates: tuple[str, ...]  # the plan's gates the reason names, in its order
    actor: str = ""  # "" for a hold: holds write no audit event
    action: str = ""
    at: str | None = None  # ISO time of the transition


def plan_gate_names(plan: Plan) -> list[str]:
    return list(
        dict.fromkeys([g.name for g in plan.gates] + [g.name for s in plan.steps for g in s.gates])
    )


def gates_named(reason: str, names: Collection[str]) -> tuple[str, ...]:
    """The gates ``reason`` blames: ``stages.decide`` writes each as "NAME: why" after
    the start of the text, a ": " or a "; "."""
    acting = reason.split(_OBSERVED, 1)[0]
    found: list[tuple[int, str]] = []
    for name in names:
        hit = re.search(rf"(?:^|: |; ){re.escape(name)}: ", acting)
        if hit is not None:
            found.append((hit.start(), name))
    return tuple(name for _, name in sorted(found))


def cause(
    state: RolloutState, last_event: Mapping[str, Any] | None, headline: str = ""
) -> Cause | None:
    """``None`` when the status says enough (running on schedule, pending, completed),
    or when the reason is already the ``headline`` the row shows."""
    names = plan_gate_names(state.plan)
    if state.status in _STOPPED:
        event = last_event if _brought_here(state, last_event) else None
        reason = state.reason or (str(event["reason"]) if event else "")
        if not reason and event is None:
            return None
        return Cause(
            reason=reason,
            gates=gates_named(reason, names),
            actor=str(event["actor"]) if event else "",
            action=str(event["action"]) if event else "",
            at=str(event["at"]) if event else None,
        )
    if state.status is Status.RUNNING and state.reason.startswith(_HOLDS):
        if state.reason == headline:
            return None
        return Cause(state.reason, gates_named(state.reason, names))
    return None


def _brought_here(state: RolloutState, event: Mapping[str, Any] | None) -> bool:
    return event is not None and event.get("to_status") == state.status.value
