"""How ``rollout backtest`` prints a timeline: a line per transition and a summary, or JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from controller.backtest import Event, Timeline
from controller.gates.history import reading_view
from stages.durations import format_duration
from stages.plan import Plan
from stages.state import Status


def timeline_text(timeline: Timeline) -> str:
    plan = timeline.plan
    lines = [
        f"backtest of {plan.rollout}: {when(timeline.start)} to {when(timeline.end)}, "
        f"a check every {format_duration(plan.interval)}"
    ]
    lines += [event_line(plan, e) for e in timeline.events]
    if not timeline.transitions:
        lines.append("no transition: it would have stayed where it started")
    lines.append(summary_line(timeline))
    return "\n".join(lines)


def event_line(plan: Plan, e: Event) -> str:
    where = _step(plan, e.from_step)
    if e.is_transition:
        where = f"{where} -> {_target(plan, e)}"
    return f"{when(e.at)}  {where}  {e.action}: {e.reason}"


def _target(plan: Plan, e: Event) -> str:
    if e.status is Status.COMPLETED:
        return "completed"
    if e.status is Status.ROLLED_BACK:
        return "rolled back"
    if e.status is Status.PAUSED:
        return "paused"
    if e.status is Status.AWAITING_APPROVAL:
        return f"{_step(plan, e.to_step)} (awaiting approval)"
    return _step(plan, e.to_step)


def summary_line(timeline: Timeline) -> str:
    last = f" at {when(timeline.last_check)}" if timeline.last_check else ""
    errors = f"{timeline.gate_errors} gate error{'' if timeline.gate_errors == 1 else 's'}"
    return (
        f"ended: {timeline.ended}{last}, after {timeline.checks:,} checks; {errors}, "
        f"{timeline.no_data} no-data readings"
    )


def timeline_json(timeline: Timeline) -> dict[str, Any]:
    final = timeline.final
    return {
        "rollout": timeline.plan.rollout,
        "from": _iso(timeline.start),
        "to": _iso(timeline.end),
        "interval": format_duration(timeline.plan.interval),
        "checks": timeline.checks,
        "last_check": _iso(timeline.last_check) if timeline.last_check else None,
        "ended": timeline.ended,
        "final": {"status": final.status.value, "step": final.step + 1, "step_index": final.step},
        "gate_errors": timeline.gate_errors,
        "no_data": timeline.no_data,
        "events": [event_json(e) for e in timeline.events],
    }


def event_json(e: Event) -> dict[str, Any]:
    return {
        "at": _iso(e.at),
        "action": e.action,
        # Steps as people count them (1-based) and as the API's "step" field (0-based).
        "from_step": e.from_step + 1,
        "to_step": e.to_step + 1,
        "from_step_index": e.from_step,
        "to_step_index": e.to_step,
        "from_status": e.from_status.value,
        "status": e.status.value,
        "reason": e.reason,
        "readings": [reading_view(r) for r in e.readings],
    }


def when(at: datetime) -> str:
    at = at.astimezone(UTC)
    pattern = "%Y-%m-%d %H:%M" if at.second == 0 and at.microsecond == 0 else "%Y-%m-%d %H:%M:%S"
    return f"{at.strftime(pattern)} UTC"


def _step(plan: Plan, index: int) -> str:
    return f"step {index + 1} ({plan.steps[index].label()})"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
