"""Following one rollout as it changes: what ``status --watch`` and ``wait`` share.

Each look is two reads (the rollout, the newest gate readings). A server that stops
answering after the first look (a restart, a deploy) is waited out: the look says so
and the next one tries again. Anything else (a 404, a refusal, a wrong server) ends
the command as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.cli import format as fmt
from controller.cli.exits import Unreachable
from controller.cli.transport import Api

# Where a rollout stays until a person acts (retry restarts a rolled-back one).
FINAL_STATUSES = frozenset({"completed", "rolled_back", "aborted"})
STATUSES = (
    "pending",
    "running",
    "paused",
    "awaiting_approval",
    "rolling_back",
    "rolled_back",
    "completed",
    "aborted",
)


@dataclass(frozen=True, slots=True)
class Look:
    at: datetime
    rollout: dict[str, Any] | None  # None: the server did not answer this time
    latest: list[dict[str, Any]]
    error: str | None = None

    @property
    def status(self) -> str | None:
        return None if self.rollout is None else str(self.rollout["status"])

    @property
    def ended(self) -> bool:
        return self.status in FINAL_STATUSES


def looks(
    api: Api,
    name: str,
    *,
    interval: float,
    sleep: Callable[[float], None],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Iterator[Look]:
    """A look now, then one every ``interval`` seconds, for as long as the caller wants."""
    answered = False
    while True:
        try:
            rollout = api.call("GET", f"/api/v1/rollouts/{name}")
            gates = api.call("GET", f"/api/v1/rollouts/{name}/gates", params={"limit": 1})
            answered = True
            yield Look(now(), rollout, list(gates.get("latest") or []))
        except Unreachable as exc:
            if not answered:
                raise
            yield Look(now(), None, [], error=str(exc))
        sleep(interval)


def summary(look: Look) -> str:
    """One line that changes only when something a person cares about does (not the
    seconds in the step): what non-terminal output prints on each change."""
    if look.rollout is None:
        return f"server not answering ({look.error}); trying again"
    r = look.rollout
    line = (
        f"rollout/{r['name']} {r['status']} at step {r['step'] + 1}/{r['step_count']} "
        f"({r['step_label']}), serving {fmt.serving_text(r['serving'])}, "
        f"gates: {fmt.gates_text(r['last_outcomes'])}"
    )
    # While running, the reason counts the dwell down ("dwell: 1d3h left"): a line
    # for each tick of it would bury the changes. Otherwise it says why it stopped.
    if r.get("reason") and r["status"] != "running":
        line += f"; reason: {r['reason']}"
    return line


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%H:%M:%SZ")
