"""The scheduler inside real processes: SIGTERM while a gate read hangs, /readyz when
passes stall, and a replica whose clock runs 30 minutes ahead (libfaketime)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.leases import Leases
from controller.storage.store import Store
from controller.storage.tables import LeaseRow
from stages.actions import Action
from tests.databases import fresh_database
from tests.hostile import HostilePeer, hang, prometheus_answer, respond
from tests.serving import running_server
from tests.waiting import wait_until

GATED = """
rollout: stuck
flag: stuck
interval: 1s
steps:
  - {stage: canary, percent: 5, hold: 1h}
  - {stage: full}
gates:
  - {name: errors, query: 'errors{rollout="${rollout}"}', rollback_above: 0.01}
"""

RAMP = """
rollout: skew
flag: skew
interval: 1s
steps:
  - {stage: canary, percent: 5, hold: 10m}
  - {stage: full}
"""


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", tmp_path) as url:
        yield url


def test_sigterm_stops_within_10s_while_a_gate_read_hangs(tmp_path: Path) -> None:
    with (
        HostilePeer(hang()) as prometheus,
        running_server(
            tmp_path,
            extra_env={
                "ROLLOUT_SCHEDULER": "true",
                "ROLLOUT_PROMETHEUS_URL": prometheus.url,
                "ROLLOUT_GATE_TIMEOUT": "60",  # the read hangs for as long as we look
            },
        ) as server,
    ):
        with server.client() as c:
            assert c.post("/api/v1/plans", json={"yaml": GATED}).status_code == 201
            assert c.post("/api/v1/rollouts/stuck/actions/start", json={}).status_code == 200
        # A gate's query, not the start-up check's `vector(1)` (which hangs as well).
        wait_until(
            lambda: any(
                r.path.endswith("/query") and r.params.get("query") != "vector(1)"
                for r in list(prometheus.requests)
            ),
            timeout=30,
            what="a gate read in flight",
        )
        store = Store(server.database_url)
        try:
            with store.read() as s:
                held = s.query(LeaseRow).count()
        finally:
            store.dispose()
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        took = time.monotonic() - began
        store = Store(server.database_url)
        try:
            with store.read() as s:
                leases = s.query(LeaseRow).count()
        finally:
            store.dispose()
    assert took < 10, took
    # uvicorn ends by the signal it got, after its shutdown ran (-15), or cleanly.
    assert server.process.returncode in {0, -signal.SIGTERM}, server.log.read_text()
    assert (held, leases) == (1, 0)  # released at shutdown: no replica waits 15 s


def test_readyz_says_not_ready_when_scheduler_passes_stall(tmp_path: Path, postgres: str) -> None:
    with (
        running_server(
            tmp_path, database_url=postgres, extra_env={"ROLLOUT_SCHEDULER": "true"}
        ) as server,
        httpx.Client(base_url=server.url, timeout=10) as c,
    ):
        wait_until(lambda: c.get("/readyz").status_code == 200, 30, "ready")
        # Another session locks the table every pass reads: passes block.
        with psycopg.connect(postgres) as lock:
            lock.execute("LOCK TABLE rollouts IN ACCESS EXCLUSIVE MODE")
            answers: list[tuple[float, httpx.Response]] = []

            def stalled() -> bool:
                began = time.monotonic()
                r = c.get("/readyz")
                answers.append((time.monotonic() - began, r))
                return r.status_code == 503

            wait_until(stalled, timeout=30, what="/readyz says the scheduler stalled")
            body = answers[-1][1].json()
            lock.rollback()
        wait_until(lambda: c.get("/readyz").status_code == 200, 30, "ready again")
    assert body["ready"] is False
    assert body["checks"]["scheduler"]["ok"] is False
    assert body["checks"]["scheduler"]["last_pass_age_seconds"] >= 3
    assert body["checks"]["database"]["ok"] is True  # the database answers; passes don't
    assert max(took for took, _ in answers) < 1.0


SKEWED = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime
    from controller.http.app import build_runtime
    from controller.storage.leases import Leases
    from controller.jobs.scheduler import Scheduler
    from controller.settings import Settings

    url, clock = sys.argv[1], sys.argv[2]
    runtime = build_runtime(Settings(database_url=url, scheduler=True, replica_id="skewed"))
    scheduler = runtime.scheduler
    if clock == "process":  # the old way, to show what the database clock prevents
        scheduler = Scheduler(
            runtime.store, runtime.rollouts, runtime.gates, runtime.leases,
            lambda: datetime.now(UTC),
        )
    result = scheduler.check("skew")
    print(json.dumps({
        "process_now": datetime.now(UTC).isoformat(),
        "decision": type(result.decision).__name__ if result.decision else None,
        "skipped": result.skipped,
        "stole_lease": Leases(runtime.store, "skewed").acquire("held"),
    }))
    """
)


def test_a_replica_30_minutes_ahead_cuts_no_hold_short_and_steals_no_lease(
    tmp_path: Path, postgres: str
) -> None:
    store = Store(postgres)
    try:
        store.prepare_schema(upgrade=False)
        rollouts = Rollouts(store, lambda: None)
        p, source = parse_plan_input(RAMP, None)
        now = store.now()
        rollouts.apply(p, source, "test", now)
        rollouts.act("skew", Action.START, actor="test", now=now)
        assert Leases(store, "honest").acquire("held")

        def skewed(clock: str) -> dict[str, object]:
            out = subprocess.run(
                ["faketime", "-f", "+30m", sys.executable, "-c", SKEWED, postgres, clock],
                capture_output=True,
                timeout=120,
                cwd=tmp_path,
                env={k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")},
                check=True,
            )
            answer: dict[str, object] = json.loads(out.stdout.decode().strip().splitlines()[-1])
            return answer

        with_db_clock = skewed("database")
        ahead = datetime.fromisoformat(str(with_db_clock["process_now"])) - datetime.now(UTC)
        assert ahead.total_seconds() > 25 * 60  # faketime really moved its clock
        assert with_db_clock["decision"] == "Hold"  # the 10 m hold has 10 m to go
        assert with_db_clock["stole_lease"] is False
        assert rollouts.get("skew", store.now())["step"] == 0
        assert Leases(store, "honest").holder_of("held") == "honest"
        # The same replica trusting its own clock would have advanced at once.
        with_own_clock = skewed("process")
        assert with_own_clock["decision"] == "Advance"
    finally:
        store.dispose()


def test_a_crashed_replicas_rollout_is_taken_over_within_the_lease(
    tmp_path: Path, postgres: str
) -> None:
    """SIGKILL leaves the lease behind: another replica takes the rollout over once it
    runs out, within max(15 s, one interval) of the crash (plus a tick), not 3 intervals."""
    healthy = respond(prometheus_answer(0.001))
    env = {"ROLLOUT_SCHEDULER": "true"}
    with HostilePeer(healthy) as prometheus:
        env["ROLLOUT_PROMETHEUS_URL"] = prometheus.url
        store = Store(postgres)
        try:
            with running_server(
                tmp_path, database_url=postgres, extra_env={**env, "ROLLOUT_REPLICA_ID": "a"}
            ) as a:
                with a.client() as c:
                    assert c.post("/api/v1/plans", json={"yaml": GATED}).status_code == 201
                    assert (
                        c.post("/api/v1/rollouts/stuck/actions/start", json={}).status_code == 200
                    )
                leases = Leases(store, "observer")
                wait_until(lambda: leases.holder_of("stuck") == "a", 30, "replica a holds it")
                with running_server(
                    tmp_path, database_url=postgres, extra_env={**env, "ROLLOUT_REPLICA_ID": "b"}
                ):
                    assert leases.holder_of("stuck") == "a"  # b waits while a lives
                    a.process.kill()
                    a.process.wait(timeout=30)
                    crashed = time.monotonic()
                    wait_until(lambda: leases.holder_of("stuck") == "b", 40, "b took over")
                    took = time.monotonic() - crashed
        finally:
            store.dispose()
    # The lease is 15 s from its last renewal (every 5 s or each check), the interval
    # 1 s, a pass every 1 s: at most 15 s + a tick after the crash.
    assert took <= 15 + 1 + 1.5, took
