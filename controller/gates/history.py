"""Stored gate evaluations: written with each scheduler tick, read by the API and the
UI, pruned after the retention period."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from sqlmodel import col, delete, func, select

from controller.storage.tables import GateEvaluationRow
from stages.state import GateReading


def rows_for(rollout: str, step: int, readings: Sequence[GateReading]) -> list[GateEvaluationRow]:
    return [
        GateEvaluationRow(
            rollout=rollout,
            gate=r.gate,
            step=step,
            at=r.at,
            query=r.query,
            value=r.value,
            baseline=r.baseline,
            samples=r.samples,
            threshold=r.threshold,
            threshold_value=r.threshold_value,
            outcome=r.outcome.value,
            error=r.error,
            duration_ms=r.duration_ms,
        )
        for r in readings
    ]


def reading_view(r: GateReading) -> dict[str, Any]:
    return {
        "gate": r.gate,
        "at": r.at.isoformat(),
        "query": r.query,
        "value": _finite(r.value),
        "baseline": _finite(r.baseline),
        "samples": _finite(r.samples),
        "threshold": r.threshold,
        "threshold_value": r.threshold_value,
        "outcome": r.outcome.value,
        "error": r.error,
        "duration_ms": round(r.duration_ms, 2),
    }


def row_view(row: GateEvaluationRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "gate": row.gate,
        "step": row.step,
        "at": row.at.isoformat(),
        "query": row.query,
        "value": _finite(row.value),
        "baseline": _finite(row.baseline),
        "samples": _finite(row.samples),
        "threshold": row.threshold,
        "threshold_value": row.threshold_value,
        "outcome": row.outcome,
        "error": row.error,
        "duration_ms": round(row.duration_ms, 2),
    }


def _finite(value: float | None) -> float | str | None:
    """JSON has no NaN or infinity: say them as text."""
    if value is None or (value == value and value not in (float("inf"), float("-inf"))):
        return value
    return str(value)


def history(
    session: Session,
    rollout: str,
    *,
    gate: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    query = select(GateEvaluationRow).where(col(GateEvaluationRow.rollout) == rollout)
    if gate is not None:
        query = query.where(col(GateEvaluationRow.gate) == gate)
    if since is not None:
        query = query.where(col(GateEvaluationRow.at) >= since)
    query = query.order_by(col(GateEvaluationRow.id).desc()).limit(limit)
    return [row_view(r) for r in session.execute(query).scalars()]


def latest(session: Session, rollout: str) -> list[dict[str, Any]]:
    """The newest evaluation of each gate of a rollout."""
    newest = (
        select(func.max(GateEvaluationRow.id))
        .where(col(GateEvaluationRow.rollout) == rollout)
        .group_by(col(GateEvaluationRow.gate))
    )
    query = select(GateEvaluationRow).where(col(GateEvaluationRow.id).in_(newest))
    rows = session.execute(query.order_by(col(GateEvaluationRow.gate))).scalars()
    return [row_view(r) for r in rows]


def prune(session: Session, older_than: datetime) -> int:
    result = session.execute(
        delete(GateEvaluationRow).where(col(GateEvaluationRow.at) < older_than)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
