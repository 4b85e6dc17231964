"""Explicit mapping between database rows and the core's frozen dataclasses."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, fields
from datetime import datetime
from typing import Any

from controller.storage.tables import RolloutRow
from stages.bake import bake_view
from stages.compare import Evidence
from stages.decide import dwelt
from stages.plan import Plan
from stages.planfile import parse_stored_plan, plan_to_dict
from stages.state import GateMark, Outcome, RolloutState, Status, serving
from stages.windows import Window, closed_sentence, status


def _marks_to_json(marks: tuple[GateMark, ...]) -> list[list[str]]:
    return [[m.at.isoformat(), m.outcome.value] for m in marks]


def _marks_from_json(data: list[list[str]]) -> tuple[GateMark, ...]:
    return tuple(GateMark(datetime.fromisoformat(at), Outcome(o)) for at, o in data)


def json_number(value: float) -> float | str:
    """JSON (and PostgreSQL's json) has no NaN or infinity: they are kept as text."""
    return value if math.isfinite(value) else str(value)


def _evidence_to_json(evidence: Evidence) -> dict[str, float | int | str]:
    return {
        name: value if isinstance(value, int) else json_number(value)
        for name, value in asdict(evidence).items()
    }


_EVIDENCE_INTS = frozenset(f.name for f in fields(Evidence) if f.type in (int, "int"))


def _evidence_from_json(data: Mapping[str, Any]) -> Evidence:
    # Keys this version does not know are left out, missing ones take their default:
    # a row written by a version before or after this one still loads.
    known = {f.name for f in fields(Evidence)}
    values: dict[str, Any] = {
        name: int(raw) if name in _EVIDENCE_INTS else float(raw)
        for name, raw in data.items()
        if name in known
    }
    return Evidence(**values)


def bookkeeping_to_json(state: RolloutState) -> dict[str, Any]:
    return {
        "ok_evaluations": state.ok_evaluations,
        "gate_errors": dict(state.gate_errors),
        "history": {g: _marks_to_json(m) for g, m in state.history.items()},
        "last_outcomes": {g: o.value for g, o in state.last_outcomes.items()},
        "max_step_reached": state.max_step_reached,
        "evidence": {g: _evidence_to_json(e) for g, e in state.evidence.items()},
        # JSON like the rest of the bookkeeping: a bake needs no column of its own.
        "bake_started_at": _iso(state.bake_started_at),
    }


def state_from_row(
    row: RolloutRow, plan: Plan | None = None, *, default_windows: tuple[Window, ...] = ()
) -> RolloutState:
    """The core state of a row; ``default_windows`` are the global change windows
    (ROLLOUT_CHANGE_WINDOWS), which apply when the plan declares none."""
    book = row.bookkeeping or {}
    return RolloutState(
        default_windows=default_windows,
        plan=plan if plan is not None else parse_stored_plan(row.plan),
        status=Status(row.status),
        step=row.step,
        step_started_at=row.step_started_at,
        version=row.version,
        reason=row.reason,
        ok_evaluations=int(book.get("ok_evaluations", 0)),
        gate_errors={str(k): int(v) for k, v in book.get("gate_errors", {}).items()},
        history={str(k): _marks_from_json(v) for k, v in book.get("history", {}).items()},
        last_outcomes={str(k): Outcome(v) for k, v in book.get("last_outcomes", {}).items()},
        observe_until=row.observe_until,
        started_at=row.started_at,
        max_step_reached=int(book.get("max_step_reached", 0)),
        # Rows from before compare gates have no evidence: nothing gathered yet.
        evidence={str(k): _evidence_from_json(v) for k, v in book.get("evidence", {}).items()},
        bake_started_at=_datetime(book.get("bake_started_at")),
    )


def state_columns(state: RolloutState) -> dict[str, Any]:
    """The columns a state change writes (the version is the store's business)."""
    return {
        "status": state.status.value,
        "step": state.step,
        "step_started_at": state.step_started_at,
        "observe_until": state.observe_until,
        "started_at": state.started_at,
        "reason": state.reason,
        "bookkeeping": bookkeeping_to_json(state),
    }


def rollout_view(row: RolloutRow, state: RolloutState, now: datetime) -> dict[str, Any]:
    """The API's representation of a rollout: stored state plus what it serves now."""
    plan = state.plan
    served = serving(state)
    step = plan.steps[state.step]
    in_step = (now - state.step_started_at).total_seconds() if state.step_started_at else None
    may_advance_in = None
    if state.step_started_at is not None and state.status is Status.RUNNING:
        # hold - elapsed, never started + hold: a plan stored before the limits may
        # hold a duration no datetime reaches.
        left = (step.hold - dwelt(state, now)).total_seconds()
        may_advance_in = max(0.0, left)
    bake = bake_view(state, now)
    if bake is not None and state.status is Status.RUNNING:
        may_advance_in = bake.left.total_seconds()  # completes then, the holdout released
    return {
        "name": row.name,
        "flag": row.flag_key,
        "status": state.status.value,
        "reason": state.reason,
        "version": row.version,
        "step": state.step,
        "step_count": len(plan.steps),
        "step_label": step.label(),
        "step_started_at": _iso(state.step_started_at),
        "seconds_in_step": in_step,
        "seconds_until_may_advance": may_advance_in,
        "observe_until": _iso(state.observe_until),
        "started_at": _iso(state.started_at),
        "ok_evaluations": state.ok_evaluations,
        "last_outcomes": {g: o.value for g, o in state.last_outcomes.items()},
        "serving": {
            "stage": served.stage.value,
            "step": served.step,
            "percent": served.percent,
            "regions": sorted(served.regions),
            "shadow": served.shadow,
        },
        "bake": _bake_json(state, now),
        "plan": plan_to_dict(plan),
        "window": window_view(state, now),
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
    }


def _bake_json(state: RolloutState, now: datetime) -> dict[str, Any] | None:
    """Where the bake after the last step is; None outside it."""
    bake = bake_view(state, now)
    if bake is None:
        return None
    return {
        "started_at": _iso(bake.started_at),
        "ends_at": _iso(bake.ends_at),
        "seconds_left": bake.left.total_seconds(),
        "holdout_percent": bake.holdout,
        "summary": bake.sentence,
    }


def _datetime(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def window_view(state: RolloutState, now: datetime) -> dict[str, Any] | None:
    """Whether a change window is open now, and when the next opens and closes; ``None``
    when no windows apply (automatic advances may happen at any time)."""
    windows = state.windows
    if not windows:
        return None
    now_open = status(windows, now)
    return {
        "open": now_open.open,
        "next_open": _iso(now_open.next_open),
        "next_close": _iso(now_open.next_close),
        "source": "plan" if state.plan.windows else "setting",
        "message": closed_sentence(windows, now),
    }
