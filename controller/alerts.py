"""Alert triggers: what an alert from Alertmanager (or the plain JSON form) does to the
rollouts its mapping selects (``stages.alert_mappings``).

Each alert of a notification is its own unit of work: the row that records what it did
to a rollout (``alerts``) commits with what it did, so a crash between the two cannot
act twice or record an action that did not happen.

- rollback, abort: at once, through ``Rollouts.act`` as a person's would, with the
  alert's name, labels and URL as the audit reason.
- hold: a row that holds (``holding``); the scheduler's tick reads the holds of the
  rollout it checks (``blocked``) into ``RolloutState.blocked``, and ``decide`` keeps a
  ready advance waiting. The alert's resolved notification clears the holds it placed,
  and only those.

Replays are harmless: Alertmanager resends a firing alert every ``repeat_interval``
with the same fingerprint and startsAt, and retries a notification that failed. A row
per (fingerprint, startsAt, rollout) is unique, so the same firing acts on a rollout
once: a second one finds the row and changes nothing (no audit event, no version).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from controller.errors import Refused, VersionConflict
from controller.rollouts import Rollouts
from controller.storage.store import Store
from controller.storage.tables import AlertRow, RolloutRow
from controller.unit_of_work import UnitOfWork
from stages.actions import Action
from stages.alert_mappings import (
    Alert,
    AlertAction,
    AlertMapping,
    AlertStatus,
    RolloutRef,
    Target,
    audit_reason,
    hold_reason,
    route,
)
from stages.state import RolloutState

log = logging.getLogger(__name__)

# A write that lost a race (a scheduler tick's compare-and-swap, another replica storing
# the same alert) is tried again this often: Alertmanager does not retry a 4xx, so a
# conflict must not reach it as one.
ATTEMPTS = 5

# The stored name is for people reading the list; the audit reason keeps it whole.
NAME_CHARS = 255

_ACTIONS = {AlertAction.ROLLBACK: Action.ROLLBACK, AlertAction.ABORT: Action.ABORT}


@dataclass(frozen=True, slots=True)
class AlertResult:
    """What one alert did to one rollout (or, with no rollout, why it did nothing)."""

    alert: str
    key: str
    status: AlertStatus
    outcome: str  # acted, held, refused, replayed, cleared, resolved, ignored
    message: str
    rollout: str | None = None
    action: AlertAction | None = None

    def view(self) -> dict[str, Any]:
        return {
            "alert": self.alert,
            "fingerprint": self.key,
            "status": self.status.value,
            "rollout": self.rollout,
            "action": self.action.value if self.action else None,
            "outcome": self.outcome,
            "message": self.message,
        }


class Alerts:
    def __init__(self, store: Store, rollouts: Rollouts, mappings: Sequence[AlertMapping]) -> None:
        self._store = store
        self._rollouts = rollouts
        self.mappings = tuple(mappings)

    def receive(
        self, alerts: Sequence[Alert], *, source: str, actor: str, now: datetime
    ) -> list[AlertResult]:
        results: list[AlertResult] = []
        for alert in alerts:
            results.extend(self._receive_one(alert, source=source, actor=actor, now=now))
        return results

    def records(
        self, *, rollout: str | None, holding: bool | None, limit: int
    ) -> list[dict[str, Any]]:
        """What alerts did, newest first: to one rollout, or only the holds in force."""
        query = select(AlertRow).order_by(col(AlertRow.id).desc()).limit(limit)
        if rollout is not None:
            query = query.where(col(AlertRow.rollout) == rollout)
        if holding is not None:
            query = query.where(col(AlertRow.holding).is_(holding))
        with self._store.read() as session:
            return [_record_view(row) for row in session.execute(query).scalars()]

    def blocking(self, state: RolloutState, now: datetime) -> tuple[str, ...]:
        """For the scheduler's check (``controller.jobs.scheduler.Blocker``)."""
        return self.blocked(state.plan.rollout)

    def blocked(self, rollout: str) -> tuple[str, ...]:
        """The sentences of the holds alerts keep on ``rollout``, oldest first (the
        scheduler's ``RolloutState.blocked``)."""
        with self._store.read() as session:
            reasons = session.execute(
                select(AlertRow.reason)
                .where(col(AlertRow.rollout) == rollout, col(AlertRow.holding).is_(True))
                .order_by(col(AlertRow.id))
            ).scalars()
            return tuple(dict.fromkeys(reasons))  # two rows of one alert: said once

    def _receive_one(
        self, alert: Alert, *, source: str, actor: str, now: datetime
    ) -> list[AlertResult]:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self._rollouts.transaction() as uow:
                    if alert.status is AlertStatus.FIRING:
                        return self._fire(uow, alert, source, actor, now)
                    return self._resolve(uow, alert, actor, now)
            except (IntegrityError, VersionConflict) as exc:
                # Rolled back whole; the next attempt sees what won (and may find that
                # the alert has acted already).
                if attempt == ATTEMPTS:
                    raise
                log.info("alert %s lost a race (%s); trying again", alert.name, type(exc).__name__)
        raise AssertionError("unreachable")

    def _fire(
        self, uow: UnitOfWork, alert: Alert, source: str, actor: str, now: datetime
    ) -> list[AlertResult]:
        routing = route(alert, self.mappings, _rollout_refs(uow))
        if not routing.targets:
            return [_result(alert, "ignored", routing.why)]
        seen = set(
            uow.session.execute(
                select(AlertRow.rollout).where(
                    col(AlertRow.alert_key) == alert.key,
                    col(AlertRow.occurrence) == alert.occurrence,
                )
            ).scalars()
        )
        results = []
        for target in routing.targets:
            if target.rollout in seen:
                message = "this firing of the alert acted on the rollout already"
                results.append(_result(alert, "replayed", message, target))
                continue
            results.append(self._act(uow, alert, target, source, actor, now))
        return results

    def _act(
        self,
        uow: UnitOfWork,
        alert: Alert,
        target: Target,
        source: str,
        actor: str,
        now: datetime,
    ) -> AlertResult:
        reason = audit_reason(alert, target, now)
        flag = uow.session.execute(
            select(RolloutRow.flag_key).where(col(RolloutRow.name) == target.rollout)
        ).scalar_one_or_none()
        if flag is None:  # deleted since the mapping found it
            return _result(alert, "ignored", f"rollout {target.rollout} is gone", target)
        details = {
            "alert": alert.name,
            "fingerprint": alert.key,
            "starts_at": alert.starts_at.isoformat() if alert.starts_at else None,
            "labels": dict(alert.labels),
            "url": alert.url,
            "mapping": target.mapping,
        }
        holding = False
        if target.action is AlertAction.HOLD:
            holding = True
            outcome, message = "held", f"holds the advances of rollout {target.rollout}"
            uow.record(
                at=now,
                actor=actor,
                action="alert.hold",
                rollout=target.rollout,
                flag=flag,
                reason=reason,
                details=details,
            )
        else:
            try:
                after = self._rollouts.act(
                    target.rollout,
                    _ACTIONS[target.action],
                    actor=actor,
                    now=now,
                    reason=reason,
                    immediate=target.immediate,
                    within=uow,
                )
                outcome, message = "acted", f"rollout {target.rollout} is {after['status']}"
            except Refused as exc:
                # Recorded, so that a resend is a replay and not a second try.
                outcome, message = "refused", exc.message
                uow.record(
                    at=now,
                    actor=actor,
                    action="alert.refused",
                    rollout=target.rollout,
                    flag=flag,
                    reason=f"{reason}; not applied: {exc.message}",
                    details=details,
                )
        uow.session.add(
            AlertRow(
                alert_key=alert.key,
                occurrence=alert.occurrence,
                rollout=target.rollout,
                name=alert.name[:NAME_CHARS],
                source=source,
                action=target.action.value,
                status=AlertStatus.FIRING.value,
                holding=holding,
                reason=hold_reason(alert, now),
                outcome=f"{outcome}: {message}",
                labels=dict(alert.labels),
                url=alert.url,
                starts_at=alert.starts_at,
                received_at=now,
            )
        )
        uow.session.flush()  # a duplicate from another replica fails here, before commit
        return _result(alert, outcome, message, target)

    def _resolve(
        self, uow: UnitOfWork, alert: Alert, actor: str, now: datetime
    ) -> list[AlertResult]:
        rows = uow.session.execute(
            select(AlertRow)
            .where(
                col(AlertRow.alert_key) == alert.key,
                col(AlertRow.occurrence) == alert.occurrence,
            )
            .order_by(col(AlertRow.id))
            .with_for_update()
        ).scalars()
        results = []
        for row in rows:
            target = Target(row.rollout, AlertAction(row.action), True, "")
            if row.status == AlertStatus.RESOLVED.value:
                message = "resolved already"
                results.append(_result(alert, "replayed", message, target))
                continue
            row.status = AlertStatus.RESOLVED.value
            row.resolved_at = now
            if not row.holding:
                # A rollback or abort is not undone by the alert ending: a person retries.
                message = f"the alert's {row.action} stays: retry or resume the rollout by hand"
                results.append(_result(alert, "resolved", message, target))
                continue
            row.holding = False
            uow.record(
                at=now,
                actor=actor,
                action="alert.resolve",
                rollout=row.rollout,
                reason=f"alert {alert.name} resolved: its hold is cleared ({row.reason})"
                + (f"; {alert.url}" if alert.url else ""),
                details={"alert": alert.name, "fingerprint": alert.key, "url": alert.url},
            )
            message = f"the hold on rollout {row.rollout} is cleared"
            results.append(_result(alert, "cleared", message, target))
        if not results:
            message = "no firing of this alert (fingerprint and startsAt) acted on a rollout"
            results.append(_result(alert, "ignored", message))
        return results


def _record_view(row: AlertRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "alert": row.name,
        "fingerprint": row.alert_key,
        "starts_at": row.starts_at.isoformat() if row.starts_at else None,
        "rollout": row.rollout,
        "action": row.action,
        "status": row.status,
        "holding": row.holding,
        "reason": row.reason,
        "outcome": row.outcome,
        "labels": row.labels,
        "url": row.url,
        "source": row.source,
        "received_at": row.received_at.isoformat(),
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
    }


def _rollout_refs(uow: UnitOfWork) -> list[RolloutRef]:
    rows = uow.session.execute(
        select(RolloutRow.name, RolloutRow.flag_key, RolloutRow.plan).order_by(col(RolloutRow.name))
    ).all()
    return [RolloutRef(name, flag, _plan_labels(plan)) for name, flag, plan in rows]


def _plan_labels(plan: object) -> dict[str, str]:
    labels = plan.get("labels") if isinstance(plan, dict) else None
    if not isinstance(labels, dict):
        return {}
    return {str(k): str(v) for k, v in labels.items()}


def _result(alert: Alert, outcome: str, message: str, target: Target | None = None) -> AlertResult:
    return AlertResult(
        alert=alert.name,
        key=alert.key,
        status=alert.status,
        outcome=outcome,
        message=message,
        rollout=target.rollout if target else None,
        action=target.action if target else None,
    )
