"""Stored gate evaluations: written with each scheduler tick, read by the API and the
UI, pruned after the retention period."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from sqlmodel import col, delete, func, select

from controller.storage.tables import GateEvaluationRow
from stages.compare import CompareStats, describe
from stages.state import GateReading, Outcome


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
            details=None if r.compare is None else {"compare": compare_view(r)},
        )
        for r in readings
    ]


def compare_view(r: GateReading) -> dict[str, Any] | None:
    """A compare reading's counts, interval and verdict, and its sentence; written into
    the row as it is shown, so a stored reading reads the same after a plan change."""
    stats = r.compare
    if stats is None:
        return None
    on_regression = "abort" if r.outcome is Outcome.ABORT else "rollback"
    return {
        "verdict": stats.verdict.value,
        "sentence": describe(stats, on_regression, guardrail=r.outcome is Outcome.OK),
        "new": _side(stats, new=True),
        "old": _side(stats, new=False),
        "estimate": _finite(stats.estimate),
        "low": _finite(stats.low),
        "high": _finite(stats.high),
        "margin": _finite(stats.margin),
        "alpha": _finite(stats.alpha),
        "statistic": _finite(stats.statistic),
        "log_e": _finite(stats.log_e),
        "needed": _finite(stats.needed),
        "share": _finite(stats.share),
        "expected_share": _finite(stats.expected_share),
        "srm_p": _finite(stats.srm_p),
        "segments": stats.segments,
        "min_samples": _finite(stats.min_samples),
        "allowance": _finite(stats.allowance),
    }


def _side(stats: CompareStats, *, new: bool) -> dict[str, float | str | None]:
    side = stats.new if new else stats.old
    return {"events": _finite(side.events), "exposures": _finite(side.exposures)}


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
        "compare": compare_view(r),
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
        "compare": (row.details or {}).get("compare"),
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
