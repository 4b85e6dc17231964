"""The unit of work (``controller.unit_of_work``), on SQLite and PostgreSQL alike: the
audit event, the revision bump and the webhook outbox rows commit together or not at
all, and the after-commit hooks run once, after the commit, never after a rollback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from controller.audit import current_revision
from controller.auth import Role, TokenRegistry, hash_token
from controller.errors import VersionConflict
from controller.flagstore import Flags
from controller.notify.config import WebhookConfig
from controller.notify.webhooks import Outbox
from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.mapping import state_from_row
from controller.storage.store import Store
from controller.storage.tables import (
    AuditRow,
    FlagRow,
    GateEvaluationRow,
    RolloutRow,
    UiSessionRow,
    WebhookOutboxRow,
)
from controller.ui_sessions import UiSessions, session_hash
from controller.unit_of_work import UnitOfWork, unit_of_work
from stages.actions import Action
from stages.decisions import Advance
from stages.state import GateReading, Outcome
from tests.serving import plan_yaml

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HOOKS = [WebhookConfig(name="ops", url="http://127.0.0.1:9/ops")]  # type: ignore[arg-type]
FLAG = {"type": "boolean", "variants": {"off": False, "on": True}, "default_variant": "off"}


def revision(store: Store) -> int:
    with store.read() as s:
        return current_revision(s)


def count(store: Store, table: type[Any]) -> int:
    with store.read() as s:
        return int(s.execute(select(func.count()).select_from(table)).scalar_one())


def outbox_audit_ids(store: Store) -> list[int]:
    with store.read() as s:
        return list(s.execute(select(col(WebhookOutboxRow.audit_id))).scalars())


def started(store: Store, name: str = "uow") -> Rollouts:
    rollouts = Rollouts(store, lambda: None)
    plan, source = parse_plan_input(plan_yaml(name), None)
    rollouts.apply(plan, source, "test", T0)
    rollouts.act(name, Action.START, actor="test", now=T0)
    return rollouts


def record_pause(uow: UnitOfWork, name: str = "uow") -> AuditRow:
    """A transition's event, as a use case records it (before and after from the row)."""
    row = uow.session.get(RolloutRow, name)
    assert row is not None
    state = state_from_row(row)
    return uow.record_transition(
        at=T0,
        actor="test",
        action="pause",
        rollout=name,
        flag=row.flag_key,
        before=state,
        after=state,
        version=row.version,
        reason="a test transition",
        details={},
    )


def test_event_revision_and_outbox_commit_together_and_hooks_run_once_after(
    store: Store,
) -> None:
    started(store)
    outbox = Outbox(store, HOOKS, public_url=None, max_attempts=3)
    revision_before, events_before = revision(store), count(store, AuditRow)
    seen: list[tuple[str, int]] = []
    # Each hook reads through a transaction of its own: it sees only what has committed.
    on_change = lambda: seen.append(("snapshot", revision(store)))  # noqa: E731

    with unit_of_work(store, on_change=on_change, notify=outbox.enqueue) as uow:
        event = record_pause(uow)
        uow.record(at=T0, actor="test", action="note", reason="a second event, same unit")
        uow.after_commit(lambda: seen.append(("metrics", count(store, AuditRow))))
        assert seen == []

    # Two events, one revision step; the snapshot refresh first, then the others.
    assert seen == [("snapshot", revision_before + 1), ("metrics", events_before + 2)]
    assert revision(store) == revision_before + 1
    assert count(store, AuditRow) == events_before + 2
    assert event.id in outbox_audit_ids(store)


@dataclass(frozen=True)
class Before:
    """Made before the unit opens (on SQLite it holds the one write lock)."""

    stale_flag: FlagRow  # read before someone else changed the flag
    ui_session: str  # a session id already stored


def before_the_unit(store: Store) -> Before:
    with store.read() as s:
        stale = s.get(FlagRow, "uow")
    assert stale is not None
    Flags(store, lambda: None).put(
        "uow", {**FLAG, "description": "changed"}, actor="b", now=T0, expected_version=1
    )
    taken = UiSessions(store).open(hash_token("t"), T0, timedelta(hours=1))
    return Before(stale, taken)


def _raise_after_record(uow: UnitOfWork, before: Before) -> None:
    record_pause(uow)
    raise RuntimeError("crash after the events, before the commit")


def _stale_compare_and_swap(uow: UnitOfWork, before: Before) -> None:
    record_pause(uow)
    row = before.stale_flag
    uow.compare_and_swap(row, version="version", values={"version": 2}, conflict="stale")


def _fail_at_commit(uow: UnitOfWork, before: Before) -> None:
    record_pause(uow)
    # The same primary key again: refused by the database when the unit flushes.
    uow.session.add(
        UiSessionRow(
            id_hash=session_hash(before.ui_session),
            token_hash="x",
            created_at=T0,
            expires_at=T0 + timedelta(hours=1),
        )
    )


FAILURES: dict[str, tuple[Callable[[UnitOfWork, Before], None], type[Exception]]] = {
    "an exception after record()": (_raise_after_record, RuntimeError),
    "a compare-and-swap on a stale row": (_stale_compare_and_swap, VersionConflict),
    "the database refusing the flush at commit": (_fail_at_commit, IntegrityError),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_unit_writes_no_event_revision_or_outbox_row_and_runs_no_hook(
    store: Store, failure: str
) -> None:
    started(store)
    outbox = Outbox(store, HOOKS, public_url=None, max_attempts=3)
    fail, error = FAILURES[failure]
    before = before_the_unit(store)
    revision_before = revision(store)
    events_before, outbox_before = count(store, AuditRow), count(store, WebhookOutboxRow)
    ran: list[str] = []

    with (
        pytest.raises(error),
        unit_of_work(store, on_change=lambda: ran.append("snapshot"), notify=outbox.enqueue) as uow,
    ):
        uow.after_commit(lambda: ran.append("metrics"))
        fail(uow, before)

    assert ran == []
    assert revision(store) == revision_before
    assert count(store, AuditRow) == events_before
    assert count(store, WebhookOutboxRow) == outbox_before
    with store.read() as s:
        flag = s.get(FlagRow, "uow")
    assert flag is not None and flag.version == 2  # as the other writer left it


def test_a_unit_that_records_nothing_moves_no_revision_but_runs_its_hooks(store: Store) -> None:
    started(store)
    revision_before = revision(store)
    ran: list[str] = []
    with unit_of_work(store, on_change=lambda: ran.append("snapshot")) as uow:
        uow.after_commit(lambda: ran.append("hook"))
    assert ran == ["hook"]
    assert revision(store) == revision_before


def test_a_failing_hook_is_logged_and_the_others_still_run(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    started(store)
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("metrics are down")

    with (
        caplog.at_level(logging.ERROR, logger="controller.unit_of_work"),
        unit_of_work(store, on_change=broken) as uow,
    ):
        event = record_pause(uow)
        uow.after_commit(lambda: ran.append("reload"))
    assert ran == ["reload"]
    assert "the change is committed" in caplog.text
    with store.read() as s:
        assert s.get(AuditRow, event.id) is not None


# -- the use cases on it --------------------------------------------------------------


def test_a_decision_that_lost_the_race_tells_no_hook_and_stores_no_reading(
    store: Store,
) -> None:
    changes: list[int] = []
    transitions: list[tuple[str, str]] = []
    started(store)
    rollouts = Rollouts(store, lambda: changes.append(1), lambda n, a: transitions.append((n, a)))
    reading = GateReading(gate="errors", outcome=Outcome.OK, at=T0, query="q", value=0.0)
    revision_before = revision(store)

    with pytest.raises(VersionConflict):
        rollouts.record_decision("uow", 1, Advance(1, "dwell done"), [reading], T0)
    assert (changes, transitions, revision(store)) == ([], [], revision_before)
    assert count(store, GateEvaluationRow) == 0

    with store.read() as s:
        row = s.get(RolloutRow, "uow")
    assert row is not None
    rollouts.record_decision("uow", row.row_version, Advance(1, "dwell done"), [reading], T0)
    assert (changes, transitions, revision(store)) == (
        [1],
        [("uow", "advance")],
        revision_before + 1,
    )
    assert count(store, GateEvaluationRow) == 1


def test_a_kill_switch_pause_commits_with_the_flag_change_and_is_told_after(
    store: Store,
) -> None:
    outbox = Outbox(store, HOOKS, public_url=None, max_attempts=3)
    told: list[str] = []
    rollouts = started(store)
    rollouts.notify = outbox.enqueue
    rollouts.on_transition = lambda name, action: told.append(f"{name} {action}")
    flags = Flags(store, lambda: told.append("snapshot"), rollouts)
    revision_before, outbox_before = revision(store), count(store, WebhookOutboxRow)

    flags.set_enabled("uow", False, actor="test", now=T0, reason="", expected_version=None)

    # One unit: the flag's event and the pause's event, one revision step, its webhook.
    assert told == ["snapshot", "uow pause"]
    assert revision(store) == revision_before + 1
    assert count(store, WebhookOutboxRow) == outbox_before + 1
    assert rollouts.get("uow", T0)["status"] == "paused"


def test_a_token_change_reloads_the_registry_and_serves_its_revision_after_commit(
    store: Store,
) -> None:
    tokens = TokenRegistry(store, None)
    refreshed: list[int] = []
    tokens.on_change = lambda: refreshed.append(revision(store))
    revision_before = revision(store)

    info, secret = tokens.create(name="ci", role=Role.SDK, created_by="admin", now=T0)
    assert tokens.authenticate(f"Bearer {secret}").token_id == info.id
    assert refreshed == [revision_before + 1]

    tokens.revoke(info.id, actor="admin", now=T0)
    tokens.revoke(info.id, actor="admin", now=T0)  # revoked already: no event, no revision
    assert refreshed == [revision_before + 1, revision_before + 2]
    assert revision(store) == revision_before + 2
