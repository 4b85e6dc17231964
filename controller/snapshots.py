"""The in-memory flag snapshot that evaluation reads: rebuilt from the database after
every change, swapped in one assignment so readers never see half of it, and kept
as it is when the database is unreachable.

The holder also remembers when the database last confirmed the snapshot (a load, or
a poll that found the revision unchanged), so /readyz and /metrics can say how stale
the answers may be while the database is down."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

from sqlmodel import select

from controller.audit import current_revision
from controller.storage.mapping import state_from_row
from controller.storage.store import Store
from controller.storage.tables import FlagRow, RolloutRow
from flags.codec import flag_from_dict
from flags.model import Flag, RolloutServing
from flags.snapshot import Snapshot
from stages.state import serving

log = logging.getLogger(__name__)


class SnapshotHolder:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self.current: Snapshot = Snapshot.empty()
        self.loaded = False
        # Wall time for people, monotonic time for the age (wall clocks jump).
        self.confirmed_at: datetime | None = None
        self._confirmed_monotonic: float | None = None
        # Logged once per change, not on every reload.
        self._reported_unreadable: dict[str, str] = {}

    def refresh(self) -> Snapshot:
        """Load every flag with its rollout overlay. Raises if the database is down;
        the previous snapshot stays in place."""
        with self._lock:
            snapshot = self._load()
            self.current = snapshot
            self.loaded = True
            self._confirm()
            return snapshot

    def stored_revision(self) -> int:
        """The database's revision: one primary-key read. Raises if it is down."""
        with self._store.read() as session:
            return current_revision(session)

    def confirm(self, revision: int) -> bool:
        """Record that the database still has ``revision``; False (nothing recorded) if
        the snapshot held now is not that one."""
        with self._lock:
            if self.current.revision != revision:
                return False
            self._confirm()
            return True

    def age_seconds(self) -> float | None:
        """Seconds since the database last confirmed the snapshot; None before the first."""
        confirmed = self._confirmed_monotonic
        return None if confirmed is None else time.monotonic() - confirmed

    def _confirm(self) -> None:
        self.confirmed_at = datetime.now(UTC)
        self._confirmed_monotonic = time.monotonic()

    def _load(self) -> Snapshot:
        with self._store.read() as session:
            revision = current_revision(session)
            flag_rows = list(session.execute(select(FlagRow)).scalars())
            rollout_rows = {r.flag_key: r for r in session.execute(select(RolloutRow)).scalars()}
        flags: dict[str, Flag] = {}
        unreadable: dict[str, str] = {}
        for row in flag_rows:
            try:
                flags[row.key] = _served_flag(row, rollout_rows.get(row.key))
            except Exception as exc:  # one bad row must not hide the others
                unreadable[row.key] = f"{type(exc).__name__}: {exc}"[:500]
        if unreadable != self._reported_unreadable:
            for key, why in sorted(unreadable.items()):
                log.error(
                    "flag %r left out of the snapshot, its stored row is unreadable: %s", key, why
                )
            self._reported_unreadable = unreadable
        return Snapshot(revision=revision, flags=flags, unreadable=unreadable)


def _served_flag(row: FlagRow, rollout: RolloutRow | None) -> Flag:
    flag = flag_from_dict(row.definition, key=row.key)
    overlay = _overlay(rollout) if rollout is not None else None
    return replace(flag, version=row.version, rollout=overlay)


def _overlay(row: RolloutRow) -> RolloutServing:
    state = state_from_row(row)
    served = serving(state)
    return RolloutServing(
        rollout=row.name,
        status=state.status.value,
        stage=served.stage.value,
        step=served.step,
        percent=served.percent,
        regions=served.regions,
        shadow=served.shadow,
        on_variant=state.plan.new_variant,
        off_variant=state.plan.old_variant,
    )
