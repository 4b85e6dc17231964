"""What SDKs that evaluate locally report back: evaluation counts (added to the same
counts the flags page and ``rollout_flag_evaluations_total`` show) and sampled
impressions, kept in a small ring per flag for a person to look at.

Only flags and variants the current snapshot knows are taken, so a client cannot grow
the server's memory with made-up names; the rest are counted as ignored in the answer.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from controller.api.answers import (
    CHANGE_ERRORS,
    READ_ERRORS,
    FlagImpressions,
    ReportAnswer,
    errors,
)
from controller.errors import NotFound
from controller.runtime import Evaluator, Reader, RuntimeDep
from flags.model import Flag

router = APIRouter(tags=["evaluation"])

RING_SIZE = 100  # impressions kept per flag
MAX_ITEMS = 1_000  # counts, and impressions, in one report
_NAME = r"^[A-Za-z0-9_.-]{1,128}$"


class _Report(BaseModel):
    # Unknown fields are ignored, not refused (unlike the admin API): a newer SDK
    # reporting to an older controller must still have its counts taken.
    model_config = ConfigDict(extra="ignore")


class CountItem(_Report):
    flag: str = Field(pattern=_NAME)
    variant: str | None = Field(default=None, min_length=1, max_length=128)
    count: int = Field(ge=1, le=1_000_000_000)


class ImpressionItem(_Report):
    flag: str = Field(pattern=_NAME)
    variant: str = Field(min_length=1, max_length=128)
    key_hash: str = Field(pattern=r"^[0-9a-f]{8,64}$", description="hash of the targeting key")
    # Bounded so that it always converts to a date (up to 2100-01-01).
    at: float = Field(ge=0, le=4_102_444_800, allow_inf_nan=False, description="epoch seconds")


class Dropped(_Report):
    impressions: int = Field(default=0, ge=0, le=10**12)
    counts: int = Field(default=0, ge=0, le=10**12)


class ReportBody(_Report):
    counts: list[CountItem] = Field(default_factory=list, max_length=MAX_ITEMS)
    impressions: list[ImpressionItem] = Field(default_factory=list, max_length=MAX_ITEMS)
    dropped: Dropped = Field(default_factory=Dropped, description="what the SDK had to drop")


class CountSink(Protocol):
    def add_counts(self, flag: str, variant: str | None, count: int) -> None: ...


class ImpressionLog:
    """The last ``RING_SIZE`` impressions of each flag, newest last."""

    def __init__(self, ring_size: int = RING_SIZE) -> None:
        self._lock = threading.Lock()
        self._rings: dict[str, deque[ImpressionItem]] = {}
        self._ring_size = ring_size
        self.dropped_by_sdks = 0
        self.counts_dropped_by_sdks = 0

    def add(self, item: ImpressionItem) -> None:
        with self._lock:
            ring = self._rings.get(item.flag)
            if ring is None:
                ring = self._rings[item.flag] = deque(maxlen=self._ring_size)
            ring.append(item)

    def note_dropped(self, dropped: Dropped) -> None:
        with self._lock:
            self.dropped_by_sdks += dropped.impressions
            self.counts_dropped_by_sdks += dropped.counts

    def recent(self, flag: str) -> list[ImpressionItem]:
        with self._lock:
            return list(self._rings.get(flag, ()))


def _knows(flags: Mapping[str, Flag], flag: str, variant: str | None) -> bool:
    known = flags.get(flag)
    return known is not None and (variant is None or variant in known.variants)


@router.post(
    "/api/v1/evaluations/report",
    status_code=202,
    response_model=ReportAnswer,
    responses=errors(*CHANGE_ERRORS),
)
def report(
    body: ReportBody, request: Request, runtime: RuntimeDep, _who: Evaluator
) -> dict[str, Any]:
    """Counts and sampled impressions from an SDK, sent in batches off its request path."""
    flags = runtime.snapshots.current.flags
    counts: CountSink = request.app.state.evaluation_counts
    impressions: ImpressionLog = request.app.state.impressions
    taken = [c for c in body.counts if _knows(flags, c.flag, c.variant)]
    for item in taken:
        counts.add_counts(item.flag, item.variant, item.count)
    kept = [i for i in body.impressions if _knows(flags, i.flag, i.variant)]
    for impression in kept:
        impressions.add(impression)
    impressions.note_dropped(body.dropped)
    return {
        "counts": {"accepted": len(taken), "ignored": len(body.counts) - len(taken)},
        "impressions": {"accepted": len(kept), "ignored": len(body.impressions) - len(kept)},
    }


@router.get(
    "/api/v1/flags/{key}/impressions",
    response_model=FlagImpressions,
    responses=errors(404, *READ_ERRORS),
)
def flag_impressions(
    key: str, request: Request, runtime: RuntimeDep, _who: Reader
) -> dict[str, Any]:
    """The flag's latest sampled impressions, newest first."""
    if key not in runtime.snapshots.current.flags:
        raise NotFound(f"flag {key!r} not found")
    log: ImpressionLog = request.app.state.impressions
    return {
        "flag": key,
        "capacity": RING_SIZE,
        "dropped_by_sdks": log.dropped_by_sdks,
        "impressions": [
            {
                "variant": item.variant,
                "key_hash": item.key_hash,
                "at": datetime.fromtimestamp(item.at, UTC).isoformat(),
            }
            for item in reversed(log.recent(key))
        ],
    }


def install(app: FastAPI) -> None:
    """Give the app its impression rings and these routes (the composition root calls it)."""
    app.state.impressions = ImpressionLog()
    app.include_router(router)
