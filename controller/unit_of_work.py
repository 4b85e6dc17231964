"""The unit of work: one use case's write transaction and everything that must commit
with it, or not at all.

A use case opens one (``with unit_of_work(store, on_change=..., notify=...) as uow``),
changes rows through ``uow.session``, writes versioned rows with
``uow.compare_and_swap``, and says what happened with ``uow.record`` (an audit event)
or ``uow.record_transition`` (an audit event and its webhook outbox rows). Leaving the
block normally bumps the revision, once, if anything was recorded, and commits; then,
and only then, the after-commit hooks run: ``on_change`` (the snapshot refresh) if the
revision moved, then the hooks the use case registered with ``after_commit`` (metrics,
a token reload), in order. An exception in the block or in the commit rolls back the
rows, the events, the revision and the outbox together, and runs no hook.

The invariant this keeps in one place: a change that is audited moves the revision (so
every replica reloads what it serves) and is served here as soon as it commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import inspect, update
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from controller import audit
from controller.errors import VersionConflict
from controller.storage.store import Store
from controller.storage.tables import AuditRow
from stages.state import RolloutState

log = logging.getLogger(__name__)

# Told each transition's audit event inside its transaction (the webhook outbox).
Notifier = Callable[[Session, AuditRow, RolloutState, RolloutState], None]
Hook = Callable[[], None]


class UnitOfWork:
    """What a use case does inside its transaction; built by ``unit_of_work``."""

    def __init__(self, session: Session, notify: Notifier | None) -> None:
        self.session = session
        self._notify = notify
        self._hooks: list[Hook] = []
        self.recorded = 0  # audit events written in this transaction

    def record(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        reason: str = "",
        rollout: str | None = None,
        flag: str | None = None,
        before: RolloutState | None = None,
        after: RolloutState | None = None,
        version: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRow:
        """Append an audit event; the revision moves when the transaction commits."""
        event = audit.record(
            self.session,
            at=at,
            actor=actor,
            action=action,
            reason=reason,
            rollout=rollout,
            flag=flag,
            before=before,
            after=after,
            version=version,
            details=details,
        )
        self.recorded += 1
        return event

    def record_transition(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        rollout: str,
        flag: str,
        before: RolloutState,
        after: RolloutState,
        version: int,
        reason: str,
        details: dict[str, Any],
    ) -> AuditRow:
        """A rollout's transition: its audit event and, in the same transaction, the
        webhook outbox rows of the receivers that want it."""
        event = self.record(
            at=at,
            actor=actor,
            action=action,
            rollout=rollout,
            flag=flag,
            before=before,
            after=after,
            version=version,
            reason=reason,
            details=details,
        )
        if self._notify is not None:
            self._notify(self.session, event, before, after)
        return event

    def compare_and_swap(
        self, row: SQLModel, *, version: str, values: Mapping[str, Any], conflict: str
    ) -> None:
        """Write ``values`` to ``row`` only if its ``version`` column still holds what
        was read (``values`` moves it); else ``VersionConflict(conflict)``. The row is
        expired, so reading it again sees what was written."""
        table = type(row)
        where = [key == getattr(row, key.key) for key in inspect(table).primary_key]
        where.append(getattr(table, version) == getattr(row, version))
        result = self.session.execute(
            update(table)
            .where(*where)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise VersionConflict(conflict)
        self.session.expire(row)

    def after_commit(self, hook: Hook) -> None:
        """Run ``hook`` once the transaction has committed; never if it rolls back."""
        self._hooks.append(hook)


@contextmanager
def unit_of_work(
    store: Store, *, on_change: Hook | None = None, notify: Notifier | None = None
) -> Iterator[UnitOfWork]:
    """One write transaction; see the module's docstring for what it guarantees."""
    with store.write() as session:
        work = UnitOfWork(session, notify)
        yield work
        if work.recorded:
            audit.bump_revision(session)
    # Committed: what follows cannot undo the change, so a hook that fails is logged and
    # the others still run (a created token's secret must still reach its caller).
    hooks = ([on_change] if work.recorded and on_change is not None else []) + work._hooks
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception("after-commit hook %r failed; the change is committed", hook)
