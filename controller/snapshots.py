"""The in-memory flag snapshot that evaluation reads: rebuilt from the database after
every change, swapped in one assignment so readers never see half of it, and kept
as it is when the database is unreachable."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from sqlmodel import select

from controller.audit import current_revision
from controller.mapping import state_from_row
from controller.store import Store
from controller.tables import FlagRow, RolloutRow
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

    def refresh(self) -> Snapshot:
        """Load every flag with its rollout overlay. Raises if the database is down;
        the previous snapshot stays in place."""
        with self._lock:
            snapshot = self._load()
            self.current = snapshot
            self.loaded = True
            return snapshot

    def _load(self) -> Snapshot:
        with self._store.read() as session:
            revision = current_revision(session)
            flag_rows = list(session.execute(select(FlagRow)).scalars())
            rollout_rows = {r.flag_key: r for r in session.execute(select(RolloutRow)).scalars()}
        flags: dict[str, Flag] = {}
        for row in flag_rows:
            flag = flag_from_dict(row.definition, key=row.key)
            rollout = rollout_rows.get(row.key)
            overlay = _overlay(rollout) if rollout is not None else None
            flags[row.key] = replace(flag, version=row.version, rollout=overlay)
        return Snapshot(revision=revision, flags=flags)


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
