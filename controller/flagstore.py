"""Flag use cases: create or replace a definition, flip the kill switch, delete.
Each is one unit of work (``controller.unit_of_work``) with a version
compare-and-swap and an audit event.

Flipping the kill switch of a flag that a rollout drives changes that rollout in the
same transaction (``Rollouts.follow_kill_switch``): disabling pauses it, enabling
restarts its step's dwell and leaves it paused for a person to resume."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from sqlmodel import col, select

from controller.errors import Invalid, NotFound, Refused, VersionConflict
from controller.rollouts import Rollouts
from controller.storage.store import Store
from controller.storage.tables import FlagRow, RolloutRow
from controller.unit_of_work import UnitOfWork, unit_of_work
from flags.codec import FlagDefinitionError, flag_from_dict, flag_to_dict
from flags.model import Flag


def flag_view(row: FlagRow) -> dict[str, Any]:
    problems: list[str] = []
    definition = _strict_json(row.definition, "", problems)
    extra: dict[str, Any] = {}
    if problems:
        # Stored by an older version (SQLite's JSON keeps NaN): shown, not served, and
        # the list must not become a 500 because of it. A PUT of a fixed flag repairs it.
        extra["unreadable"] = f"stored value not finite at {', '.join(problems)}; put it again"
    return {
        "key": row.key,
        **definition,
        **extra,
        "version": row.version,
        "managed_by": row.managed_by,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def _strict_json(value: Any, path: str, problems: list[str]) -> Any:
    """``value`` with each NaN or ±Infinity as its name in a string (strict JSON has no
    such numbers), their paths in ``problems``."""
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(path or "(the definition)")
        return str(value)
    if isinstance(value, dict):
        return {
            k: _strict_json(v, f"{path}.{k}" if path else str(k), problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_strict_json(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def parse_flag(body: object, key: str) -> Flag:
    try:
        return flag_from_dict(body, key=key)
    except FlagDefinitionError as exc:
        problems: list[dict[str, object]] = [
            {"field": path, "message": message} for path, message in exc.problems
        ]
        raise Invalid(f"the flag has {len(problems)} problem(s)", problems) from exc


class Flags:
    def __init__(
        self, store: Store, on_change: Callable[[], None], rollouts: Rollouts | None = None
    ) -> None:
        self._store = store
        self._on_change = on_change
        # Without the app's Rollouts the kill switch still pauses (audited), but tells
        # no webhook or metric: callers with a runtime pass runtime.rollouts.
        self._rollouts = rollouts if rollouts is not None else Rollouts(store, on_change)

    def _unit_of_work(self, rollouts: Rollouts) -> AbstractContextManager[UnitOfWork]:
        # The rollouts' notifier: a kill switch's pause sends their webhooks.
        return unit_of_work(self._store, on_change=self._on_change, notify=rollouts.notify)

    def list_all(self) -> list[dict[str, Any]]:
        with self._store.read() as session:
            rows = session.execute(select(FlagRow).order_by(col(FlagRow.key))).scalars()
            return [flag_view(r) for r in rows]

    def get(self, key: str) -> dict[str, Any]:
        with self._store.read() as session:
            return flag_view(_load(session, key))

    def put(
        self,
        key: str,
        body: dict[str, Any],
        *,
        actor: str,
        now: datetime,
        expected_version: int | None,
        rollouts: Rollouts | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Create or replace. Replacing needs the version the client read."""
        flag = parse_flag(body, key)
        definition = flag_to_dict(flag)
        rollouts = rollouts or self._rollouts
        with self._unit_of_work(rollouts) as uow:
            session = uow.session
            row = session.get(FlagRow, key)
            if row is None:
                row = FlagRow(
                    key=key, definition=definition, version=1, created_at=now, updated_at=now
                )
                session.add(row)
                uow.record(
                    at=now,
                    actor=actor,
                    action="flag.create",
                    flag=key,
                    version=1,
                    reason="flag created",
                )
                outcome = "created"
            else:
                if expected_version is None:
                    raise Invalid(
                        f"flag {key!r} exists: send its current version to replace it",
                        [{"field": "version", "message": "required when replacing a flag"}],
                    )
                _check_rollout_variants(session, row, flag)
                if row.definition == definition:
                    _check_version(row, expected_version)
                    return "unchanged", flag_view(row)
                was_enabled = _enabled(row)
                _cas(uow, row, expected_version, now, definition=definition)
                uow.record(
                    at=now,
                    actor=actor,
                    action="flag.update",
                    flag=key,
                    version=expected_version + 1,
                    reason="flag replaced",
                    details={"enabled": flag.enabled},
                )
                if not flag.enabled or not was_enabled:
                    rollouts.follow_kill_switch(uow, key, flag.enabled, actor=actor, now=now)
                outcome = "updated"
            session.flush()
            session.refresh(row)
            return outcome, flag_view(row)

    def set_enabled(
        self,
        key: str,
        enabled: bool,
        *,
        actor: str,
        now: datetime,
        reason: str,
        expected_version: int | None,
        rollouts: Rollouts | None = None,
    ) -> dict[str, Any]:
        """The kill switch: a disabled flag serves its default to everyone."""
        rollouts = rollouts or self._rollouts
        with self._unit_of_work(rollouts) as uow:
            session = uow.session
            row = _load(session, key)
            was_enabled = _enabled(row)
            version = row.version if expected_version is None else expected_version
            definition = {**row.definition, "enabled": enabled}
            _cas(uow, row, version, now, definition=definition)
            uow.record(
                at=now,
                actor=actor,
                action="flag.enable" if enabled else "flag.disable",
                flag=key,
                rollout=row.managed_by,
                version=version + 1,
                reason=reason or ("enabled" if enabled else "kill switch"),
            )
            if not enabled or not was_enabled:
                rollouts.follow_kill_switch(uow, key, enabled, actor=actor, now=now)
            session.flush()
            session.refresh(row)
            return flag_view(row)

    def delete(self, key: str, *, actor: str, now: datetime) -> None:
        with self._unit_of_work(self._rollouts) as uow:
            session = uow.session
            row = _load(session, key)
            holder = session.execute(
                select(RolloutRow).where(col(RolloutRow.flag_key) == key)
            ).scalar_one_or_none()
            if holder is not None:
                raise Refused(
                    f"flag {key!r} is driven by rollout {holder.name!r}; delete that first"
                )
            session.delete(row)
            uow.record(at=now, actor=actor, action="flag.delete", flag=key, reason="flag deleted")


def _load(session: Session, key: str) -> FlagRow:
    row = session.get(FlagRow, key)
    if row is None:
        raise NotFound(f"flag {key!r} not found")
    return row


def _enabled(row: FlagRow) -> bool:
    return row.definition.get("enabled", True) is not False


def _check_version(row: FlagRow, expected: int) -> None:
    if row.version != expected:
        raise VersionConflict(
            f"flag {row.key!r} is at version {row.version}, not {expected}: reload and try again",
            current_version=row.version,
        )


def _cas(uow: UnitOfWork, row: FlagRow, expected: int, now: datetime, **values: Any) -> None:
    _check_version(row, expected)  # so the swap below compares with ``expected``
    uow.compare_and_swap(
        row,
        version="version",
        values={**values, "version": expected + 1, "updated_at": now},
        conflict=f"flag {row.key!r} was changed by someone else; reload and try again",
    )


def _check_rollout_variants(session: Session, row: FlagRow, flag: Flag) -> None:
    if row.managed_by is None:
        return
    rollout = session.get(RolloutRow, row.managed_by)
    if rollout is None:
        return
    variants = rollout.plan.get("variants", {})
    needed = {variants.get("old", "off"), variants.get("new", "on")}
    missing = sorted(v for v in needed if v not in flag.variants)
    if missing:
        raise Invalid(
            f"flag {row.key!r} is driven by rollout {rollout.name!r}, which needs its variants",
            [{"field": "variants", "message": f"missing {', '.join(missing)}"}],
        )
