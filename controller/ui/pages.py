"""What each page shows, from one read model per page (``controller.read_models``:
one read transaction each), through the same views the API returns, so the UI shows
what the API says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup

from controller.read_models import RolloutSummary
from controller.runtime import Runtime
from controller.ui import charts, overview_filter
from controller.ui.causes import Cause, cause
from controller.ui.forecast import Forecast, forecast
from controller.ui.gate_schedule import gates_elsewhere
from controller.ui.overview_filter import OverviewFilter, OverviewSlice
from flags.model import EvaluationContext
from stages.actions import NEEDS_FLAG_ENABLED, Action, available_actions
from stages.plan import Gate
from stages.state import RolloutState, Status, serving

# Forecasts a freeze replaces: those that would widen exposure or wait for it.
_FROZEN_HIDES = frozenset({"advance", "hold", "person"})
_AUDIT_ROWS = 100
_EVENTS_READ = 1000  # for the percent chart and the count; the table shows _AUDIT_ROWS
_PLAN_REVISION_ROWS = 20
_HISTORY_POINTS = 240  # per gate: a few hours at a one-minute interval


@dataclass(frozen=True, slots=True)
class GateLight:
    gate: str
    outcome: str | None  # None: not read at this rollout's current step yet


@dataclass(frozen=True, slots=True)
class RolloutCard:
    view: dict[str, Any]
    forecast: Forecast
    lights: list[GateLight]
    next_check_in: float | None
    actions: list[str]
    # No gate applies now, but the plan has gates: which apply, from which step.
    gates_later: str | None = None
    cause: Cause | None = None  # why it stopped or holds, on the overview row


@dataclass(frozen=True, slots=True)
class OverviewPage:
    cards: list[RolloutCard]
    slice: OverviewSlice


@dataclass(frozen=True, slots=True)
class GatePanel:
    gate: Gate
    chart: Markup
    relative: bool
    compare: bool = False  # the chart is new - old with its interval, against the margin


def overview_page(runtime: Runtime, now: datetime, chosen: OverviewFilter) -> OverviewPage:
    """The page of rollouts ``chosen`` asks for: only these are summarised."""
    read = runtime.read_models.rollout_overview(
        now, lambda entries: overview_filter.select(entries, chosen).names
    )
    cards = [_card(s, now, read.last_events.get(s.view["name"])) for s in read.summaries]
    return OverviewPage(cards, overview_filter.select(read.entries, chosen))


def rollout_page(runtime: Runtime, name: str, now: datetime) -> dict[str, Any]:
    detail = runtime.read_models.rollout_detail(
        name, now, events=_EVENTS_READ, gate_points=_HISTORY_POINTS
    )
    summary, events = detail.summary, detail.events
    state = summary.state
    card = _card(summary, now)
    panels = [
        _gate_panel(detail.gate_history.get(gate.name, []), gate, now)
        for gate in _every_gate(state.plan.steps, state)
    ]
    steps = [
        {
            "index": i,
            "label": step.label(),
            "hold": step.hold,
            "approval": step.approval,
            "shadow": step.shadow,
            "on_rollback_pause": step.on_rollback.value == "pause",
            "reached": i <= state.max_step_reached and state.started_at is not None,
            "current": i == state.step and state.status is not Status.PENDING,
        }
        for i, step in enumerate(state.plan.steps)
    ]
    if state.baking:
        steps[state.step]["current"] = False  # the bake is where it is now
    bake = (
        {"hold": state.plan.bake, "holdout": state.plan.holdout, "current": state.baking}
        if state.plan.bake is not None
        else None
    )
    percent_svg = charts.percent_chart(_percent_points(summary.created_at, state, events), end=now)
    return {
        "card": card,
        "steps": steps,
        "bake": bake,
        "percent_chart": Markup(percent_svg),  # charts escapes every text it draws
        "gates": panels,
        "latest": summary.latest_gates,
        "thresholds": {p.gate.name: _thresholds_text(p.gate) for p in panels},
        # Read and shown with what they would do, never acting (``mode: observe``).
        "observed": {p.gate.name for p in panels if p.gate.observe_only},
        "events": events[:_AUDIT_ROWS],
        "event_count": len(events),
        **_plan_history(runtime, name),
    }


def _plan_history(runtime: Runtime, name: str) -> dict[str, Any]:
    # Newest first, each with its changes against the one before (controller.plan_history).
    revisions = runtime.plan_history.revisions(name, with_changes=True)
    return {
        "plan_revisions": revisions[::-1][:_PLAN_REVISION_ROWS],
        "plan_revision_count": len(revisions),
    }


def _card(
    summary: RolloutSummary, now: datetime, last_event: Mapping[str, Any] | None = None
) -> RolloutCard:
    state, view = summary.state, summary.view
    latest = summary.latest_gates
    next_check = _next_check(summary.checked_at, state, now)
    lights = _lights(state)
    actions = available_actions(state)
    ahead = forecast(state, latest, now, next_check)
    if view["kill_switch"]:
        # The buttons the API would refuse are not offered; the headline says why.
        actions = [a for a in actions if a not in NEEDS_FLAG_ENABLED]
        ahead = Forecast(
            "danger",
            f"kill switch: flag {view['flag']} is disabled, everyone gets the old side; "
            "enabling it does not resume the rollout",
            ahead.headline,
        )
    if view.get("frozen_by") and ahead.tone in _FROZEN_HIDES:
        # decide() holds a ready advance while frozen; the stored state does not know.
        sentences = "; ".join(f["sentence"] for f in view["frozen_by"])
        ahead = Forecast("hold", f"{sentences}: advances wait; rollbacks still act", ahead.headline)
    return RolloutCard(
        view=view,
        forecast=ahead,
        lights=lights,
        next_check_in=next_check.total_seconds() if next_check is not None else None,
        actions=[a.value for a in actions],
        gates_later=gates_elsewhere(state.plan, state.step, baking=state.baking),
        cause=cause(state, last_event, ahead.headline),
    )


def _next_check(
    checked_at: datetime | None, state: RolloutState, now: datetime
) -> timedelta | None:
    if state.status not in (Status.RUNNING, Status.ROLLING_BACK) or checked_at is None:
        return None
    return max(state.plan.interval - (now - checked_at), timedelta(0))


def _lights(state: RolloutState) -> list[GateLight]:
    """The gates of the current step; a gate of an earlier step no longer counts."""
    names = [g.name for g in state.gates_now()]
    outcomes = {g: o.value for g, o in state.last_outcomes.items()}
    return [GateLight(name, outcomes.get(name)) for name in names]


def _every_gate(steps: Sequence[object], state: RolloutState) -> list[Gate]:
    seen: dict[str, Gate] = {}
    for i in range(len(steps)):
        for gate in state.plan.gates_for(i, baking=True):
            seen.setdefault(gate.name, gate)
    return list(seen.values())


def _gate_panel(rows: Sequence[Mapping[str, Any]], gate: Gate, now: datetime) -> GatePanel:
    if gate.compare is not None:
        points = [_compare_point(r) for r in reversed(rows)]
        margin = {f"{gate.compare.on_regression}_above": gate.compare.worse_by}
        hint = "rate new - old, its interval, against worse_by"
        svg = charts.gate_chart(gate.name, points, margin, end=now, unit_hint=hint)
        return GatePanel(gate, Markup(svg), relative=False, compare=True)
    relative = gate.baseline is not None
    points = [_gate_point(r, relative) for r in reversed(rows)]
    hint = "value - baseline" if relative else ""
    svg = charts.gate_chart(gate.name, points, gate.thresholds(), end=now, unit_hint=hint)
    return GatePanel(gate, Markup(svg), relative)


def _thresholds_text(gate: Gate) -> str:
    if gate.compare is not None:
        spec = gate.compare
        return f"{spec.on_regression} if the interval is above worse_by {spec.worse_by:g}"
    return ", ".join(
        f"{name.split('_')[0]} {'<' if name.endswith('_below') else '>'} {value:g}"
        for name, value in gate.thresholds().items()
    )


def _gate_point(row: Mapping[str, Any], relative: bool) -> charts.GatePoint:
    value = _float(row.get("value"))
    if relative:
        # Thresholds of a relative gate apply to value - baseline, so that is what to plot.
        baseline = _float(row.get("baseline"))
        value = None if value is None or baseline is None else value - baseline
    return charts.GatePoint(datetime.fromisoformat(row["at"]), value, str(row["outcome"]))


def _compare_point(row: Mapping[str, Any]) -> charts.GatePoint:
    stats = row.get("compare") or {}
    return charts.GatePoint(
        datetime.fromisoformat(row["at"]),
        _float(stats.get("estimate")),
        str(row["outcome"]),
        low=_float(stats.get("low")),
        high=_float(stats.get("high")),
    )


def _float(raw: object) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _percent_points(
    created_at: datetime, state: RolloutState, events: Sequence[Mapping[str, Any]]
) -> list[charts.PercentPoint]:
    """Percent served after each transition, oldest first, from 0 % at creation."""
    points = [charts.PercentPoint(created_at, 0.0, "created", "plan applied")]
    for event in reversed(events):  # the log is newest first
        if event["to_status"] is None or not _is_transition(event):
            continue
        after = (event.get("details") or {}).get("serving_after")
        if isinstance(after, dict) and "percent" in after:
            percent = float(after["percent"])
        else:
            percent = _served_percent(state, event["to_status"], event["to_step"])
        detail = f"{event['actor']}: {event['reason']}"
        at = datetime.fromisoformat(event["at"])
        points.append(charts.PercentPoint(at, percent, str(event["action"]), detail))
    return points


def _is_transition(event: Mapping[str, Any]) -> bool:
    if event["action"] == "apply":
        return False  # a plan change never moves what is served (rollouts.py refuses it)
    moved = (event["from_status"], event["from_step"]) != (event["to_status"], event["to_step"])
    # A bake begins at the step it was at, and moves the holdout to the old side.
    return moved or event["action"] in {a.value for a in Action} or event["action"] == "bake"


def _served_percent(state: RolloutState, status: str, step: int | None) -> float:
    # Automatic decisions record statuses and steps, not what was served: derive it with
    # the same rule the snapshot uses (percents of served steps never change in a plan).
    index = min(step or 0, state.plan.last_step)
    then = RolloutState(plan=state.plan, status=Status(status), step=index)
    return serving(then).percent


# --- flags ------------------------------------------------------------------------------


def flags_page(runtime: Runtime, counts: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    flags = runtime.flags.list_all()
    return [
        {
            **flag,
            "rules_text": [_rule_text(rule) for rule in flag.get("rules", [])],
            "counts": dict(counts.get(flag["key"], {})),
            "total": sum(counts.get(flag["key"], {}).values()),
        }
        for flag in flags
    ]


def _rule_text(rule: Mapping[str, Any]) -> str:
    conditions = " and ".join(
        f"{c.get('attribute')} {c.get('op')} {_values(c.get('values'))}"
        for c in rule.get("when", [])
    )
    if rule.get("variant") is not None:
        then = f"→ {rule['variant']}"
    else:
        split = rule.get("split") or {}
        then = "→ split " + ", ".join(f"{v} {w:g}%" for v, w in split.items())
    return f"if {conditions} {then}" if conditions else f"everyone {then}"


def _values(raw: object) -> str:
    if isinstance(raw, list | tuple):
        return "[" + ", ".join(str(v) for v in raw) + "]"
    return str(raw)


def parse_attributes(text: str) -> tuple[dict[str, str], list[str]]:
    """``key=value`` per line (or comma-separated); problems named by the line."""
    attributes: dict[str, str] = {}
    problems: list[str] = []
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            problems.append(f"{line!r} is not key=value")
            continue
        attributes[key.strip()] = value.strip()
    return attributes, problems


def evaluate_for(
    runtime: Runtime, flag: str, targeting_key: str, attributes: Mapping[str, str]
) -> dict[str, Any]:
    """The same answer a service gets, from the same in-memory snapshot."""
    context = EvaluationContext(targeting_key=targeting_key or None, attributes=dict(attributes))
    evaluation = runtime.snapshots.current.evaluate(flag, context)
    rollout = evaluation.rollout
    return {
        "flag": flag,
        "value": evaluation.value,
        "variant": evaluation.variant,
        "reason": evaluation.reason.value,
        "error_code": evaluation.error_code.value if evaluation.error_code else None,
        "error_message": evaluation.error_message,
        "rollout": None
        if rollout is None
        else {
            "name": rollout.rollout,
            "status": rollout.status,
            "stage": rollout.stage,
            "percent": rollout.percent,
            "regions": sorted(rollout.regions),
            "shadow": rollout.shadow,
        },
    }
