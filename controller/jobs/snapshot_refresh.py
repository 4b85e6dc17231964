"""Keeps every replica's snapshot and token registry current with the database.

A replica refreshes its own snapshot after its own changes (``Runtime.changed``);
changes made through another replica reach it here: a daemon thread reads the one
``revision`` row every ``ROLLOUT_SNAPSHOT_POLL`` seconds and, when it moved, reloads
the tokens and the snapshot. Every change to what evaluation serves, and every token
created or revoked, bumps that row in the same transaction, so one primary-key read
is all an idle poll costs.

While the database is down the poll fails: the last snapshot and tokens stay in
place, the outage is logged once (and its end once), and the snapshot's age grows in
/readyz and ``rollout_snapshot_age_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time

from controller.auth import TokenRegistry
from controller.snapshots import SnapshotHolder

log = logging.getLogger(__name__)


class SnapshotRefresher:
    def __init__(
        self, snapshots: SnapshotHolder, tokens: TokenRegistry, *, interval: float
    ) -> None:
        self._snapshots = snapshots
        self._tokens = tokens
        self._interval = interval
        # The revision this refresher last loaded, kept apart from the snapshot's own:
        # a local change refreshes the snapshot (not the tokens) past a token change
        # made elsewhere, and that change must still be loaded here.
        self._seen: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.outage_started: float | None = None  # monotonic; None while polls succeed
        self.last_error: str | None = None
        self.polls = 0
        self.reloads = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="snapshot-refresher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
            self._tokens.save_last_used(all_pending=True)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll()
            # This thread already talks to the database every poll; the write is
            # at most one a minute per token in use (controller.auth.UseLog).
            self._tokens.save_last_used()

    # -- one poll ----------------------------------------------------------------------

    def poll(self) -> bool:
        """Reload if the revision moved; True if it did. Never raises."""
        self.polls += 1
        try:
            revision = self._snapshots.stored_revision()
            reloaded = revision != self._seen
            if reloaded:
                # Tokens first: a revocation should not wait for a slower snapshot load.
                self._tokens.reload()
                self._snapshots.refresh()
                self._seen = revision
                self.reloads += 1
            else:
                # Not confirmed if a local change loaded a newer snapshot meanwhile: the
                # next poll reads that revision and confirms it.
                self._snapshots.confirm(revision)
        except Exception as exc:
            self._failed(exc)
            return False
        self._recovered()
        return reloaded

    def _failed(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        if self.outage_started is None:
            self.outage_started = time.monotonic()
            log.warning(
                "snapshot refresh failed (%s); serving revision %s until the database is back",
                self.last_error,
                self._snapshots.current.revision,
            )

    def _recovered(self) -> None:
        if self.outage_started is not None:
            log.warning(
                "snapshot refresh works again after %.1f s; serving revision %s",
                time.monotonic() - self.outage_started,
                self._snapshots.current.revision,
            )
            self.outage_started = None
            self.last_error = None
