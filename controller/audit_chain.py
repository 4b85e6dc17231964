"""The audit log as a hash chain, over plain dicts (no database here).

Each event carries ``prev_hash`` (the previous event's ``hash``; 64 zeros for the
first) and ``hash = sha256(canonical JSON of its content + prev_hash)``. The content
includes the event's id, so changing, removing or reordering events breaks the chain.
Cutting events off the end is not detectable from the log alone: compare the count or
the last hash with a copy kept elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64

CONTENT_FIELDS = (
    "id",
    "at",
    "actor",
    "action",
    "rollout",
    "flag",
    "from_status",
    "to_status",
    "from_step",
    "to_step",
    "version",
    "reason",
    "details",
)


def json_safe(value: Any) -> Any:
    """What the event holds once stored as JSON: NaN and infinity as text (as the gate
    history spells them), tuples as lists, keys as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(
        json_safe(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def event_hash(event: Mapping[str, Any], prev_hash: str) -> str:
    content = {name: event.get(name) for name in CONTENT_FIELDS}
    payload = canonical_json(content) + prev_hash
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def seal(event: Mapping[str, Any], prev_hash: str) -> dict[str, Any]:
    """The event linked onto ``prev_hash``."""
    return {**event, "prev_hash": prev_hash, "hash": event_hash(event, prev_hash)}


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    first_bad: int | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad": self.first_bad,
            "problem": self.problem,
        }


class ChainWalk:
    """Checks events fed in id order, batch by batch; stops at the first bad one."""

    def __init__(self) -> None:
        self._prev_id: int | None = None
        self._prev_hash = GENESIS
        self._checked = 0
        self._failure: VerifyReport | None = None

    @property
    def broken(self) -> bool:
        return self._failure is not None

    def feed(self, events: Iterable[Mapping[str, Any]]) -> bool:
        """Check these events; False once the chain is broken."""
        for event in events:
            if self._failure is not None:
                break
            self._checked += 1
            problem = self._problem(event)
            if problem is not None:
                bad_id = event.get("id")
                bad = bad_id if isinstance(bad_id, int) and not isinstance(bad_id, bool) else None
                self._failure = VerifyReport(False, self._checked, bad, problem)
                break
            self._prev_id = event["id"]
            self._prev_hash = event["hash"]
        return self._failure is None

    def _problem(self, event: Mapping[str, Any]) -> str | None:
        event_id = event.get("id")
        if not isinstance(event_id, int) or isinstance(event_id, bool):
            return f"event {event_id!r} has no valid id"
        if self._prev_id is not None and event_id <= self._prev_id:
            return f"event {event_id} comes after event {self._prev_id} (ids must only increase)"
        if event.get("prev_hash") != self._prev_hash:
            after = "the start of the log" if self._prev_id is None else f"event {self._prev_id}"
            return f"event {event_id} does not follow {after} (an event was removed or reordered)"
        if event.get("hash") != event_hash(event, self._prev_hash):
            return f"event {event_id} changed (hash mismatch)"
        return None

    def report(self) -> VerifyReport:
        return self._failure or VerifyReport(True, self._checked)


def verify_chain(events: Iterable[Mapping[str, Any]]) -> VerifyReport:
    walk = ChainWalk()
    walk.feed(events)
    return walk.report()
