"""Freeze use cases: create, end, list, expire, and what is frozen now (docs/freezes.md).

A freeze stops the advances, completions and approvals of the rollouts in its scope
(``stages.freezes``): the scheduler puts ``blocking`` into each check's state, and a
manual advance or approve is refused (``refusal``) unless an admin forces it. Each
create, end and expiry is an audit event, written in its own unit of work; an expiry
is written once however many replicas notice it (a conditional update), and an expired
freeze blocks nothing from ``until`` on, whether or not anyone has noticed yet."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlmodel import col, select

from controller.errors import Conflict, Invalid, NotFound
from controller.storage.store import Store
from controller.storage.tables import AuditRow, FreezeRow, RolloutRow
from controller.unit_of_work import unit_of_work
from stages.freezes import (
    Freeze,
    FreezeInputError,
    Scope,
    blocking,
    in_scope,
    parse_scope,
    parse_until,
    until_text,
)
from stages.plan import Plan
from stages.state import RolloutState, Status

REASON_MAX_CHARS = 500  # shown in every frozen rollout's hold reason
EXPIRED_BY = "controller"


def freeze_of(row: FreezeRow) -> Freeze:
    assert row.id is not None
    return Freeze(
        id=row.id,
        reason=row.reason,
        until=row.until,
        scope=Scope(tuple((str(k), str(v)) for k, v in row.scope)),
        created_by=row.created_by,
        created_at=row.created_at,
        ended_at=row.ended_at,
        ended_by=row.ended_by,
    )


def active_freezes(session: Session, now: datetime) -> list[Freeze]:
    """Not ended and not past ``until``: what blocks now."""
    query = select(FreezeRow).where(col(FreezeRow.ended_at).is_(None), col(FreezeRow.until) > now)
    return [freeze_of(r) for r in session.execute(query.order_by(col(FreezeRow.id))).scalars()]


def freezes_on(freezes: Iterable[Freeze], name: str, plan: Plan, now: datetime) -> list[Freeze]:
    return in_scope(freezes, name, dict(plan.labels), now)


def frozen_by(
    freezes: Iterable[Freeze], name: str, plan: Plan, now: datetime
) -> list[dict[str, Any]]:
    """A rollout view's ``frozen_by``: the active freezes that cover it, oldest first."""
    return [
        {
            "id": f.id,
            "reason": f.reason,
            "until": f.until.isoformat(),
            "created_by": f.created_by,
            "sentence": f.sentence(),
        }
        for f in freezes_on(freezes, name, plan, now)
    ]


def refusal(action: str, name: str, held: Sequence[Freeze]) -> str:
    """Why a manual advance or approve is refused, naming each freeze."""
    which = "; ".join(f"freeze {f.id} ({f.sentence()})" for f in held)
    return (
        f"cannot {action} rollout {name!r}: {which}. Wait for it to end, unfreeze it "
        "(rollout unfreeze ID), or, as an admin, force it (recorded)"
    )


def overridden(held: Sequence[Freeze]) -> str:
    """What a forced action's audit reason adds."""
    return "forced past " + "; ".join(f"freeze {f.id} ({f.sentence()})" for f in held)


# Told each freeze event inside its transaction (the webhook outbox), with the freeze.
Notifier = Callable[[Session, AuditRow, dict[str, Any]], None]


class Freezes:
    def __init__(self, store: Store, on_change: Callable[[], None] | None = None) -> None:
        self._store = store
        self._on_change = on_change
        self.notify: Notifier | None = None

    def _told(self, session: Session, event: AuditRow, view: dict[str, Any]) -> None:
        if self.notify is not None:
            self.notify(session, event, view)

    # -- writes ----------------------------------------------------------------------

    def create(
        self,
        *,
        reason: str,
        until: str,
        scope: Sequence[str],
        tz: str | None,
        actor: str,
        now: datetime,
    ) -> dict[str, Any]:
        """A new freeze from what a person typed; every problem is a 422 naming its field
        and nothing is written."""
        why, ends, where = _checked(reason, until, scope, tz, now)
        with unit_of_work(self._store, on_change=self._on_change) as uow:
            row = FreezeRow(
                reason=why,
                scope=[[k, v] for k, v in where.terms],
                until=ends,
                created_by=actor,
                created_at=now,
            )
            uow.session.add(row)
            uow.session.flush()
            freeze = freeze_of(row)
            covered = _covered(uow.session, freeze)
            event = uow.record(
                at=now,
                actor=actor,
                action="freeze",
                reason=f"freeze {freeze.id}: {why} until {until_text(ends, now)} "
                f"for {where.text()}",
                details={
                    "freeze": freeze.id,
                    "until": ends.isoformat(),
                    "scope": dict(where.terms),
                    "rollouts": covered,
                },
            )
            view = _view(freeze, now, covered)
            self._told(uow.session, event, view)
            return view

    def end(self, freeze_id: int, *, actor: str, now: datetime) -> dict[str, Any]:
        """``unfreeze``: the freeze stops blocking now."""
        with unit_of_work(self._store, on_change=self._on_change) as uow:
            row = uow.session.get(FreezeRow, freeze_id)
            if row is None:
                raise NotFound(f"freeze {freeze_id} not found")
            freeze = freeze_of(row)
            if not freeze.active(now):
                how = "expired" if row.end_reason != "unfrozen" else f"ended by {row.ended_by}"
                at = (row.ended_at or row.until).isoformat()
                raise Conflict(f"freeze {freeze_id} is no longer active ({how} at {at})")
            if not _close(uow.session, freeze_id, at=now, by=actor, why="unfrozen"):
                raise Conflict(f"freeze {freeze_id} ended meanwhile")
            covered = _covered(uow.session, freeze)
            event = uow.record(
                at=now,
                actor=actor,
                action="unfreeze",
                reason=f"freeze {freeze_id} ended: {freeze.reason}",
                details={"freeze": freeze_id, "rollouts": covered},
            )
            uow.session.expire(row)
            view = _view(freeze_of(row), now, [], end_reason="unfrozen")
            self._told(uow.session, event, view)
            return view

    def expire(self, now: datetime) -> list[int]:
        """Record the end of each freeze whose ``until`` has passed: once, whichever
        replica gets there first. The ids it recorded."""
        with self._store.read() as session:
            due = list(
                session.execute(
                    select(FreezeRow.id).where(
                        col(FreezeRow.ended_at).is_(None), col(FreezeRow.until) <= now
                    )
                ).scalars()
            )
        done: list[int] = []
        for freeze_id in due:
            if freeze_id is None:
                continue
            with unit_of_work(self._store, on_change=self._on_change) as uow:
                row = uow.session.get(FreezeRow, freeze_id)
                if row is None or row.ended_at is not None:
                    continue
                freeze = freeze_of(row)
                # Ended at its own time, not when a replica noticed.
                if not _close(
                    uow.session, freeze_id, at=freeze.until, by=EXPIRED_BY, why="expired"
                ):
                    continue
                covered = _covered(uow.session, freeze)
                event = uow.record(
                    at=now,
                    actor=EXPIRED_BY,
                    action="freeze.expire",
                    reason=f"freeze {freeze_id} expired at {freeze.until.isoformat()}: "
                    f"{freeze.reason}",
                    details={
                        "freeze": freeze_id,
                        "until": freeze.until.isoformat(),
                        "rollouts": covered,
                    },
                )
                uow.session.expire(row)
                self._told(uow.session, event, _view(freeze_of(row), now, [], end_reason="expired"))
                done.append(freeze_id)
        return done

    # -- reads -----------------------------------------------------------------------

    def listing(
        self, now: datetime, *, include_ended: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Active freezes (oldest first), each with the rollouts it covers; with
        ``include_ended``, ended ones too, newest first after them."""
        with self._store.read() as session:
            active = active_freezes(session, now)
            labels = _rollout_labels(session)
            out = [_view(f, now, _names_in(f, labels)) for f in active]
            if include_ended:
                query = (
                    select(FreezeRow)
                    .where((col(FreezeRow.ended_at).is_not(None)) | (col(FreezeRow.until) <= now))
                    .order_by(col(FreezeRow.id).desc())
                    .limit(limit)
                )
                for row in session.execute(query).scalars():
                    out.append(_view(freeze_of(row), now, [], end_reason=row.end_reason))
            return out

    def active(self, now: datetime) -> list[Freeze]:
        with self._store.read() as session:
            return active_freezes(session, now)

    def blocking(self, state: RolloutState, now: datetime) -> tuple[str, ...]:
        """For the scheduler's check: the sentences of the freezes that hold ``state``."""
        freezes = self.active(now)
        if not freezes:
            return ()
        return blocking(freezes, state.plan.rollout, dict(state.plan.labels), now)


def _checked(
    reason: str, until: str, scope: Sequence[str], tz: str | None, now: datetime
) -> tuple[str, datetime, Scope]:
    problems: list[dict[str, object]] = []
    why = reason.strip()
    if not why:
        problems.append({"field": "body.reason", "message": "give a reason (e.g. INC-123)"})
    elif len(why) > REASON_MAX_CHARS:
        problems.append(
            {"field": "body.reason", "message": f"at most {REASON_MAX_CHARS} characters"}
        )
    elif not why.replace(" ", "").isprintable():
        problems.append({"field": "body.reason", "message": "must not hold control characters"})
    ends: datetime | None = None
    where: Scope | None = None
    try:
        ends = parse_until(until, now, tz)
    except FreezeInputError as exc:
        problems.append({"field": f"body.{exc.field}", "message": exc.message})
    try:
        where = parse_scope(scope)
        keys = [k for k, _ in where.terms]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise _twice(dup)
    except FreezeInputError as exc:
        problems.append({"field": f"body.{exc.field}", "message": exc.message})
    if problems or ends is None or where is None:
        fields = ", ".join(str(p["field"]) for p in problems)
        raise Invalid(f"the freeze is not valid ({fields}); nothing was written", problems)
    return why, ends, where


def _twice(key: str) -> FreezeInputError:
    return FreezeInputError(
        "scope", f"{key} is given twice; a scope term must hold for every rollout it covers"
    )


def _close(session: Session, freeze_id: int, *, at: datetime, by: str, why: str) -> bool:
    """End the freeze if it is still open: the one writer that wins records it."""
    result = session.execute(
        update(FreezeRow)
        .where(col(FreezeRow.id) == freeze_id, col(FreezeRow.ended_at).is_(None))
        .values(ended_at=at, ended_by=by, end_reason=why)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _rollout_labels(session: Session) -> dict[str, dict[str, str]]:
    """Labels of the rollouts a freeze can hold: finished ones have nothing to advance."""
    query = select(RolloutRow.name, RolloutRow.plan).where(
        col(RolloutRow.status).not_in([Status.COMPLETED.value, Status.ABORTED.value])
    )
    return {name: _labels_of(plan) for name, plan in session.execute(query).all()}


def _labels_of(plan: object) -> dict[str, str]:
    labels = plan.get("labels") if isinstance(plan, dict) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _names_in(freeze: Freeze, labels: dict[str, dict[str, str]]) -> list[str]:
    """The rollouts in the freeze's scope (the caller knows whether it is active)."""
    return sorted(n for n, ls in labels.items() if freeze.covers(n, ls))


def _covered(session: Session, freeze: Freeze) -> list[str]:
    return _names_in(freeze, _rollout_labels(session))


def _view(
    freeze: Freeze, now: datetime, rollouts: list[str], *, end_reason: str | None = None
) -> dict[str, Any]:
    active = freeze.active(now)
    if end_reason is None and not active:
        end_reason = "expired"
    return {
        "id": freeze.id,
        "reason": freeze.reason,
        "until": freeze.until.isoformat(),
        "scope": dict(freeze.scope.terms),
        "scope_text": freeze.scope.text(),
        "created_by": freeze.created_by,
        "created_at": freeze.created_at.isoformat(),
        "active": active,
        "ended_at": freeze.ended_at.isoformat() if freeze.ended_at else None,
        "ended_by": freeze.ended_by,
        "end_reason": end_reason,
        "sentence": freeze.sentence(),
        "rollouts": rollouts,
    }
