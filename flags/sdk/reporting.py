"""What the SDK tells the controller about its local evaluations: how often each flag
answered each variant, and a sample of impressions. Recorded on the caller's thread
at the cost of a dict update, sent in batches by the client's background thread.

Counts are per thread and only ever grow, so recording takes no lock and loses no
increment; a flush reads each thread's counts (``dict.copy`` is atomic under the GIL)
and sends what grew since the last accepted report. A report that fails is sent
again next time, since nothing was marked as sent.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_COUNT_KEYS = 10_000  # distinct (flag, variant) pairs per thread before we stop counting
MAX_BATCH_COUNTS = 1_000  # the server's bound on one report's counts
MAX_BATCH_IMPRESSIONS = 1_000  # and on its impressions

CountKey = tuple[str, str | None]  # (flag, variant); None: an answer without a variant


@dataclass(frozen=True, slots=True)
class Impression:
    flag: str
    variant: str
    key_hash: str  # never the targeting key itself, though it is a pseudonym already
    at: float  # seconds since the epoch


def hash_targeting_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Batch:
    counts: dict[CountKey, int]
    impressions: list[Impression]
    dropped_impressions: int
    dropped_counts: int

    @property
    def empty(self) -> bool:
        return not (
            self.counts or self.impressions or self.dropped_impressions or self.dropped_counts
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": [
                {"flag": flag, "variant": variant, "count": n}
                for (flag, variant), n in sorted(self.counts.items(), key=_by_name)
            ],
            "impressions": [
                {"flag": i.flag, "variant": i.variant, "key_hash": i.key_hash, "at": i.at}
                for i in self.impressions
            ],
            "dropped": {"impressions": self.dropped_impressions, "counts": self.dropped_counts},
        }


class Recorder:
    """Counts every evaluation and samples impressions; ``take``/``sent``/``unsent``
    hand batches to the flusher."""

    def __init__(
        self,
        *,
        impression_rate: float = 0.0,
        max_impressions: int = 1_000,
        clock: Callable[[], float],
        chance: Callable[[], float] = random.random,
    ) -> None:
        if not 0.0 <= impression_rate <= 1.0:
            raise ValueError("impression_rate must be between 0 and 1")
        self._impression_rate = impression_rate
        self._max_impressions = max_impressions
        self._clock = clock
        self._chance = chance
        self._local = threading.local()
        self._registry_lock = threading.Lock()  # taken once per thread, not per count
        self._per_thread: list[tuple[threading.Thread, dict[CountKey, int]]] = []
        # Counts of threads that have ended, folded together so a service that starts
        # a thread per request does not keep one table per request.
        self._retired: Counter[CountKey] = Counter()
        self._reported: Counter[CountKey] = Counter()
        self._impressions: list[Impression] = []
        self._impressions_lock = threading.Lock()  # only sampled evaluations take it
        self.dropped_impressions = 0
        self.dropped_counts = 0  # evaluations past MAX_COUNT_KEYS pairs, never counted
        self._dropped_counts_sent = 0

    def record(self, flag: str, variant: str | None, targeting_key: str | None) -> None:
        # Every evaluation passes here: one dict update in this thread's table, no lock.
        # (try/except: the common case, a pair seen before, costs no extra lookup.)
        key = (flag, variant)
        try:
            counts: dict[CountKey, int] = self._local.counts
        except AttributeError:
            counts = self._register_thread()
        try:
            counts[key] += 1
        except KeyError:
            if len(counts) < MAX_COUNT_KEYS:
                counts[key] = 1
            else:
                self.dropped_counts += 1  # a racy total is fine for a diagnostic
        rate = self._impression_rate
        if rate and targeting_key and variant is not None and self._chance() < rate:
            self._sample(flag, variant, targeting_key)

    def _register_thread(self) -> dict[CountKey, int]:
        counts: dict[CountKey, int] = {}
        self._local.counts = counts
        with self._registry_lock:
            self._per_thread.append((threading.current_thread(), counts))
        return counts

    def _sample(self, flag: str, variant: str, targeting_key: str) -> None:
        impression = Impression(flag, variant, hash_targeting_key(targeting_key), self._clock())
        with self._impressions_lock:
            if len(self._impressions) < self._max_impressions:
                self._impressions.append(impression)
            else:
                self.dropped_impressions += 1

    def take(self) -> Batch:
        """What grew since the last report, up to the server's bounds per batch."""
        with self._registry_lock:
            live = []
            for thread, counts in self._per_thread:
                if thread.is_alive():
                    live.append((thread, counts))
                else:  # it will never count again: no race in reading it whole
                    self._retired.update(counts)
            self._per_thread = live
            tables = [counts.copy() for _, counts in live]
        total = self._retired.copy()
        for table in tables:
            total.update(table)
        grown = {
            key: n - self._reported[key] for key, n in total.items() if n > self._reported[key]
        }
        counts = dict(sorted(grown.items(), key=_by_name)[:MAX_BATCH_COUNTS])
        with self._impressions_lock:
            impressions = self._impressions[:MAX_BATCH_IMPRESSIONS]
            del self._impressions[:MAX_BATCH_IMPRESSIONS]
            dropped = self.dropped_impressions
        return Batch(counts, impressions, dropped, self.dropped_counts - self._dropped_counts_sent)

    def sent(self, batch: Batch) -> None:
        """The controller accepted ``batch``: its counts are not sent again."""
        self._reported.update(batch.counts)
        self._dropped_counts_sent += batch.dropped_counts
        with self._impressions_lock:
            self.dropped_impressions -= batch.dropped_impressions

    def unsent(self, batch: Batch) -> None:
        """``batch`` did not get through: its counts stay due; its impressions go back
        while there is room, and the rest are dropped (and counted)."""
        with self._impressions_lock:
            room = max(0, self._max_impressions - len(self._impressions))
            self._impressions[:0] = batch.impressions[:room]
            self.dropped_impressions += max(0, len(batch.impressions) - room)

    def rejected(self, batch: Batch) -> None:
        """The controller refused ``batch`` as malformed: resending cannot help."""
        self._reported.update(batch.counts)
        with self._impressions_lock:
            self.dropped_impressions += len(batch.impressions)


def _by_name(item: tuple[CountKey, int]) -> tuple[str, str]:
    (flag, variant), _ = item
    return flag, variant or ""
