"""SIGKILL a controller at random moments of a running rollout, many times, on SQLite
and on PostgreSQL, while a client keeps flipping another flag's kill switch (so that
many kills land in the middle of a write transaction). After every restart the
rollout is in a state its plan allows, the audit log is a path that never skips or
repeats a step and agrees with the stored state (nothing half-written), the hash
chain verifies, and in the end the rollout completes.

The kill delays come from a seeded RNG; the seed is in every failure message, and
``ROLLOUT_CHAOS_SEED`` replays a run (``ROLLOUT_CHAOS_KILLS`` sets the kills per
database).

The restarted scheduler goes on advancing while the test looks, so state and log are
read in one database snapshot (``tests.state_fingerprint.snapshot``), never by two
requests: a transition committed between them is not a half-written one."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.audit import bump_revision, current_revision, list_events, record, verify
from controller.storage.store import Store
from controller.storage.tables import FlagRow, RolloutRow
from tests.databases import fresh_database
from tests.serving import running_server
from tests.state_fingerprint import snapshot

SEED = int(os.environ.get("ROLLOUT_CHAOS_SEED") or random.randrange(2**32))
KILLS = int(os.environ.get("ROLLOUT_CHAOS_KILLS") or 10)
MAX_KILL_DELAY = 2.5  # seconds after the restarted controller answers /healthz

STEPS = [
    "{stage: shadow, hold: 3s}",
    "{stage: canary, percent: 1, hold: 3s}",
    "{stage: canary, percent: 2, hold: 3s}",
    "{stage: canary, percent: 5, hold: 3s}",
    "{stage: graduated, percent: 10, hold: 3s}",
    "{stage: graduated, percent: 25, hold: 3s}",
    "{stage: graduated, percent: 50, hold: 3s}",
    "{stage: regional, regions: [us-west-1], hold: 3s}",
    "{stage: regional, regions: [us-east-1], hold: 3s}",
    "{stage: regional, regions: [eu-west-1], hold: 3s}",
    "{stage: full, hold: 3s}",
    "{stage: full, shadow: false}",
]
PLAN = "rollout: chaos\nflag: chaos\ninterval: 1s\nsteps:\n" + "".join(f"  - {s}\n" for s in STEPS)
LAST = len(STEPS) - 1
# A gate-less plan with no person acting: only these statuses are possible.
ALLOWED = {"running", "completed"}
ENV = {
    "ROLLOUT_SCHEDULER": "true",
    "ROLLOUT_SCHEDULER_TICK": "0.2",
    # The same name after each restart, as a restarted pod keeps its name: the new
    # process renews its own lease instead of waiting out the dead one's.
    "ROLLOUT_REPLICA_ID": "chaos-replica",
    "ROLLOUT_RATE_LIMIT_PER_MIN": "0",  # the kill-switch flipper writes all the time
}
LOG_LIMIT = 1_000_000  # every event: the flipper writes hundreds per run
NOISE = {"type": "boolean", "variants": {"off": False, "on": True}, "default_variant": "off"}


@contextmanager
def reader(url: str) -> Iterator[Store]:
    """The test's own connection to the server's database, to read it in snapshots."""
    store = Store(url)
    try:
        yield store
    finally:
        store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_at_random_moments_never_corrupts_a_rollout(backend: str, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-{backend}")
    kills: list[str] = []
    in_flight: list[str] = []  # a write was sent and unanswered when the kill came

    def why() -> str:
        return f"seed {SEED} ({backend}); kills so far: {', '.join(kills) or 'none'}"

    with fresh_database(backend, tmp_path) as url, reader(url) as store:
        for n in range(KILLS + 1):
            workdir = tmp_path / f"run-{n}"
            workdir.mkdir()
            with running_server(workdir, database_url=url, extra_env=ENV) as server:
                with server.client() as c:
                    if n == 0:
                        assert c.post("/api/v1/plans", json={"yaml": PLAN}).status_code == 201
                        assert c.post("/api/v1/rollouts/chaos/actions/start", json={}).is_success
                        assert c.put("/api/v1/flags/noise", json=NOISE).status_code == 201
                    state = check_consistent(c, store, why())
                    check_noise_consistent(store, why())
                    if n == KILLS:
                        finish(c, store, why())
                        print(f"\nchaos: {why()}; a write in flight at {len(in_flight)} kills")
                        return
                delay = rng.uniform(0, MAX_KILL_DELAY)
                flipper = threading.Thread(
                    target=flip_until_refused, args=(server.client(), in_flight)
                )
                flipper.start()
                time.sleep(delay)
                server.process.kill()
                server.process.wait(timeout=10)
                flipper.join(timeout=30)
                kills.append(f"#{n + 1} at step {state['step']} +{delay:.2f}s")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_snapshot_sees_one_moment_while_another_process_writes(
    backend: str, tmp_path: Path
) -> None:
    """What the chaos test relies on: a transition committed in the middle of its read
    is seen whole or not at all (PostgreSQL's READ COMMITTED would see it half-way)."""
    with fresh_database(backend, tmp_path) as url, reader(url) as store, reader(url) as writer:
        writer.create_schema()
        with snapshot(store) as session:
            before = current_revision(session), len(list_events(session))
            with writer.write() as other:
                record(other, at=datetime.now(UTC), actor="test", action="flag.create", flag="x")
                bump_revision(other)
            assert (current_revision(session), len(list_events(session))) == before
        with snapshot(store) as session:
            assert (current_revision(session), len(list_events(session))) == (
                before[0] + 1,
                before[1] + 1,
            )


def check_consistent(c: httpx.Client, store: Store, why: str) -> dict[str, Any]:
    """The stored state and its audit log agree. Both are read in one snapshot of the
    database: the restarted scheduler keeps advancing the rollout, and a state read
    by one request and a log read by the next can straddle a transition."""
    with snapshot(store) as session:
        row = session.get(RolloutRow, "chaos")
        assert row is not None, why
        state = {"status": row.status, "step": row.step, "version": row.version}
        events = list_events(session, rollout="chaos", limit=LOG_LIMIT)[::-1]
        chain = verify(session).as_dict()
    assert state["status"] in ALLOWED, (state["status"], why)
    assert 0 <= state["step"] <= LAST, (state["step"], why)
    automatic = [e for e in events if e["actor"] == "controller"]
    advances = [(e["from_step"], e["to_step"]) for e in automatic if e["action"] == "advance"]
    # A path: each advance goes from step i to i + 1, none is missing or repeated.
    assert advances == [(i, i + 1) for i in range(len(advances))], (advances, why)
    completes = [e for e in automatic if e["action"] == "complete"]
    assert {e["action"] for e in automatic} <= {"advance", "complete"}, (automatic, why)
    assert len(completes) <= 1 and (not completes or completes[0] is automatic[-1]), why
    # The stored state and the log agree: a transition is written whole or not at all.
    assert state["step"] == len(advances), (state, advances, why)
    assert (state["status"] == "completed") == bool(completes), (state["status"], why)
    versions = [e["version"] for e in events if not e["action"].startswith("flag.")]
    assert versions == list(range(1, len(versions) + 1)), (versions, why)
    assert state["version"] == versions[-1], (state, versions[-1], why)
    assert chain["ok"] is True, (chain, why)
    # And as a user sees it: the server's own walk of the chain.
    verified = c.get("/api/v1/audit/verify").json()
    assert verified["ok"] is True, (verified, why)
    return state


def finish(c: httpx.Client, store: Store, why: str) -> None:
    deadline = time.monotonic() + 90
    while c.get("/api/v1/rollouts/chaos").json()["status"] != "completed":
        assert time.monotonic() < deadline, f"not completed within 90 s; {why}"
        time.sleep(0.25)
    state = check_consistent(c, store, why)
    assert state["step"] == LAST, why


def flip_until_refused(c: httpx.Client, in_flight: list[str]) -> None:
    """Flip the noise flag's kill switch until the controller dies under it."""
    with c:
        for n in range(100_000):
            try:
                c.post(f"/api/v1/flags/noise/{'disable' if n % 2 else 'enable'}", json={})
            except httpx.ConnectError:
                return
            except httpx.HTTPError as exc:  # sent, then the connection died
                in_flight.append(type(exc).__name__)
                return
            time.sleep(0.005)


def check_noise_consistent(store: Store, why: str) -> None:
    """Each flip is written whole: the flag's version and switch match its log."""
    with snapshot(store) as session:
        flag = session.get(FlagRow, "noise")
        assert flag is not None, why
        events = list_events(session, flag="noise", limit=LOG_LIMIT)[::-1]
    assert [e["version"] for e in events] == list(range(1, flag.version + 1)), why
    last = events[-1]["action"]
    enabled = flag.definition.get("enabled", True)
    assert enabled == (last != "flag.disable"), (enabled, last, why)
