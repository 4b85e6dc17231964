"""The audit log's hash chain on SQLite and PostgreSQL: it verifies after real use,
catches an edit, a removal and a reorder made straight in the database, and stays one
unforked chain under concurrent writers. Then the same through ``rollout audit verify``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlmodel import col, select

from controller import audit
from controller.audit_chain import GENESIS, VerifyReport
from controller.flagstore import Flags
from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.store import Store
from controller.storage.tables import AuditRow
from stages.actions import Action
from stages.decisions import Advance
from tests.serving import Server, plan_yaml, running_server

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def verify(store: Store, batch_size: int = 3) -> VerifyReport:
    # A small batch, so the walk crosses batch boundaries.
    with store.read() as session:
        return audit.verify(session, batch_size=batch_size)


def use(store: Store) -> int:
    """A series of real use cases; returns how many events they wrote."""
    rollouts, flags = Rollouts(store, lambda: None), Flags(store, lambda: None)
    for name in ("r1", "r2"):
        plan, source = parse_plan_input(plan_yaml(name), None)
        rollouts.apply(plan, source, "tester", T0)
    later = T0 + timedelta(seconds=1.5)
    rollouts.act("r1", Action.START, actor="alice", now=later, reason="go")
    rollouts.act("r1", Action.PAUSE, actor="bob", now=later, reason="p99 looks odd")
    rollouts.act("r1", Action.RESUME, actor="bob", now=later)
    rollouts.act("r2", Action.START, actor="alice", now=later)
    row_version = rollouts.get("r2", later)["version"]  # a start bumps both alike
    rollouts.record_decision("r2", row_version, Advance(1, "dwell done"), [], later)
    flags.put(
        "colors",
        {"type": "string", "variants": {"a": "x", "b": "y"}, "default_variant": "a"},
        actor="carol",
        now=T0,
        expected_version=None,
    )
    flags.set_enabled(
        "colors", False, actor="carol", now=T0, reason="kill switch", expected_version=None
    )
    with store.read() as session:
        return len(session.execute(select(AuditRow)).scalars().all())


def test_chain_verifies_after_real_use(store: Store) -> None:
    count = use(store)
    assert count == 11
    report = verify(store)
    assert report == VerifyReport(ok=True, checked=count)
    with store.read() as session:
        events = audit.list_events(session, limit=1000)[::-1]
    assert events[0]["prev_hash"] == GENESIS
    assert all(len(e["hash"]) == 64 for e in events)
    assert [e["prev_hash"] for e in events[1:]] == [e["hash"] for e in events[:-1]]
    assert [e["id"] for e in events] == list(range(1, count + 1))


def test_an_empty_log_verifies(store: Store) -> None:
    assert verify(store) == VerifyReport(ok=True, checked=0)


def test_a_reason_edited_in_sql_is_caught_at_that_event(store: Store) -> None:
    use(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET reason = 'nothing happened' WHERE id = 7"))
    report = verify(store)
    assert (report.ok, report.first_bad, report.checked) == (False, 7, 7)
    assert report.problem == "event 7 changed (hash mismatch)"


def test_a_deleted_event_is_caught(store: Store) -> None:
    use(store)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE id = 5"))
    report = verify(store)
    assert (report.ok, report.first_bad) == (False, 6)
    assert report.problem == "event 6 does not follow event 4 (an event was removed or reordered)"


def test_swapped_events_are_caught(store: Store) -> None:
    use(store)
    moved = ["at", "actor", "action", "rollout", "flag", "from_status", "to_status"]
    moved += ["from_step", "to_step", "version", "reason", "details", "prev_hash", "hash"]
    with store.write() as session:
        a, b = session.get(AuditRow, 4), session.get(AuditRow, 6)
        assert a is not None and b is not None
        values_a = {name: getattr(a, name) for name in moved}
        for name in moved:
            setattr(a, name, getattr(b, name))
            setattr(b, name, values_a[name])
    report = verify(store)
    assert (report.ok, report.first_bad) == (False, 4)


def test_nan_in_details_is_stored_and_hashed_as_text(store: Store) -> None:
    with store.write() as session:
        audit.record(
            session, at=T0, actor="t", action="x", details={"value": float("nan"), "n": (1, 2)}
        )
    with store.read() as session:
        (event,) = audit.list_events(session)
    assert event["details"] == {"value": "nan", "n": [1, 2]}
    assert verify(store).ok


def test_concurrent_writers_make_one_unforked_chain(store: Store) -> None:
    rollouts = Rollouts(store, lambda: None)
    names = [f"c{i}" for i in range(6)]
    for name in names:
        plan, source = parse_plan_input(plan_yaml(name), None)
        rollouts.apply(plan, source, "tester", T0)
    start = threading.Barrier(len(names))
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            start.wait()
            rollouts.act(name, Action.START, actor=name, now=T0)
            for _ in range(3):
                rollouts.act(name, Action.PAUSE, actor=name, now=T0)
                rollouts.act(name, Action.RESUME, actor=name, now=T0)
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = verify(store, batch_size=7)
    assert report.ok, report
    assert report.checked == len(names) * (2 + 7)  # apply + flag.create, 7 actions each
    with store.read() as session:
        prev = list(session.execute(select(col(AuditRow.prev_hash))).scalars())
    assert len(prev) == len(set(prev))  # no event was chained onto twice


# -- through the server and the CLI ------------------------------------------------


def rollout(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env=server.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rollout_audit_verify_exits_1_once_the_file_is_tampered(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        fresh = rollout(server, "audit", "verify")
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr
        assert "intact" in fresh.stdout

        with server.client() as c:
            c.post("/api/v1/plans", json={"yaml": plan_yaml("cli")}).raise_for_status()
            c.post("/api/v1/rollouts/cli/actions/start", json={}).raise_for_status()
        with server.client(server.token("viewer")) as viewer:
            body = viewer.get("/api/v1/audit/verify").json()
            events = viewer.get("/api/v1/audit", params={"rollout": "cli"}).json()["events"]
        assert body["ok"] is True and body["first_bad"] is None and body["problem"] is None
        assert body["checked"] >= 3
        assert {"prev_hash", "hash"} <= set(events[0])
        assert rollout(server, "audit", "verify").returncode == 0
        listing = rollout(server, "audit", "--rollout", "cli")
        assert listing.returncode == 0 and "start" in listing.stdout

        start_id = events[0]["id"]
        db = sqlite3.connect(server.database_url.removeprefix("sqlite:///"))
        with db:
            db.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = ?", (start_id,))
        db.close()
        broken = rollout(server, "audit", "verify")
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert f"event {start_id} changed (hash mismatch)" in broken.stdout
