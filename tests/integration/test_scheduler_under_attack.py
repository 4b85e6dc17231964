"""A real ``rollout serve`` with its scheduler, 53 rollouts and a Prometheus that is a
hostile loopback peer: one rollout's queries hang, one rollout's stored plan (from before
the plan limits) holds a duration past what a datetime can reach, and one rollout's gate
breaches while a viewer floods "test a gate now". What an on-call engineer must see: the
breaching rollout is rolled back within its interval + the gate timeout + 2 s, the 50
healthy rollouts go on being checked, and ``/readyz`` answers within 1 s the whole time.

The Prometheus here is a fake on a real socket (tests/hostile.py) so that the test
decides per query what is healthy, breaching or hanging; the real-Prometheus paths are
in test_rollouts_prometheus.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col

from controller.storage.store import Store
from controller.storage.tables import RolloutRow
from tests.hostile import Connection, HostilePeer, http_response, prometheus_answer
from tests.serving import Server, running_server
from tests.waiting import wait_until

INTERVAL = 5.0
GATE_TIMEOUT = 2.0
HEALTHY = [f"healthy-{i:02d}" for i in range(50)]
HANGER, HUGE, BREACHER = "hanger", "huge-duration", "breacher"


def plan(name: str) -> str:
    return f"""
rollout: {name}
flag: {name}
interval: {INTERVAL:g}s
min_evaluations: 1
max_gate_errors: 1000
steps:
  - {{stage: canary, percent: 5, hold: 1h}}
  - {{stage: full}}
gates:
  - name: errors
    query: 'sum(errors{{rollout="${{rollout}}"}})'
    rollback_above: 0.01
    abort_above: 0.1
"""


@dataclass
class FakePrometheus:
    """Answers per rollout: healthy, breaching once told to, or never (hangs)."""

    breaching: threading.Event = field(default_factory=threading.Event)
    hung: int = 0

    def __call__(self, conn: Connection) -> None:
        query = conn.request.params.get("query", "")
        if not conn.request.path.endswith("/query"):  # readiness ping and the like
            conn.send(http_response(b'{"status":"success","data":{}}'))
        elif f'rollout="{HANGER}"' in query or "hang_me" in query:
            self.hung += 1
            conn.wait(3600)  # until the peer stops: the client's deadline must end it
        elif f'rollout="{BREACHER}"' in query and self.breaching.is_set():
            conn.send(prometheus_answer(0.5))
        else:
            conn.send(prometheus_answer(0.001))


@pytest.fixture
def attacked(tmp_path: Path) -> Iterator[tuple[Server, FakePrometheus]]:
    fake = FakePrometheus()
    with (
        HostilePeer(fake) as prometheus,
        running_server(
            tmp_path,
            extra_env={
                "ROLLOUT_SCHEDULER": "true",
                "ROLLOUT_PROMETHEUS_URL": prometheus.url,
                "ROLLOUT_GATE_TIMEOUT": str(GATE_TIMEOUT),
                "ROLLOUT_SCHEDULER_WORKERS": "4",
                "ROLLOUT_GATE_TEST_CONCURRENCY": "4",
            },
        ) as server,
    ):
        yield server, fake


def start(c: httpx.Client, name: str) -> None:
    assert c.post("/api/v1/plans", json={"yaml": plan(name)}).status_code == 201
    assert c.post(f"/api/v1/rollouts/{name}/actions/start", json={}).status_code == 200


def break_the_stored_plan(database_url: str, name: str) -> None:
    """A plan stored by an older version, before durations were bounded: the check
    meets a hold that no datetime can hold (OverflowError, or a refused plan)."""
    store = Store(database_url)
    try:
        with store.write() as s:
            row = s.get(RolloutRow, name)
            assert row is not None
            stored = dict(row.plan)
            stored["steps"] = [{**stored["steps"][0], "hold": "99999999d"}, *stored["steps"][1:]]
            s.execute(update(RolloutRow).where(col(RolloutRow.name) == name).values(plan=stored))
    finally:
        store.dispose()


class ReadyzWatch(threading.Thread):
    """Asks /readyz every 0.1 s and keeps how long each answer took."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[tuple[float, int, dict[str, Any]]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self.stopping.is_set():
                began = time.monotonic()
                r = c.get("/readyz")
                self.answers.append((time.monotonic() - began, r.status_code, r.json()))
                self.stopping.wait(0.1)


def checked_at(c: httpx.Client, name: str) -> str | None:
    latest = c.get(f"/api/v1/rollouts/{name}/gates").json()["latest"]
    return max((r["at"] for r in latest), default=None)


def test_one_breaching_rollout_rolls_back_in_time_whatever_the_others_do(
    attacked: tuple[Server, FakePrometheus],
) -> None:
    server, fake = attacked
    with server.client() as c:
        for name in [*HEALTHY, HANGER, HUGE, BREACHER]:
            start(c, name)
        break_the_stored_plan(server.database_url, HUGE)
        # Steady state first: every healthy rollout and the breacher checked once.
        wait_until(
            lambda: all(checked_at(c, n) for n in [*HEALTHY, BREACHER]),
            timeout=60,
            what="every rollout checked once",
        )
        wait_until(lambda: fake.hung >= 1, timeout=30, what="the hanging rollout checked")

        watch = ReadyzWatch(server.url)
        watch.start()
        try:
            viewer = server.token("viewer")
            breach_began = time.monotonic()
            fake.breaching.set()
            with (
                httpx.Client(
                    base_url=server.url,
                    headers={"Authorization": f"Bearer {viewer}"},
                    timeout=30,
                ) as v,
                ThreadPoolExecutor(30) as pool,
            ):
                # A viewer floods "test a gate now" with a query that hangs.
                flood = [
                    pool.submit(
                        v.post,
                        "/api/v1/gates/test",
                        json={"gate": {"name": "g", "query": "hang_me", "rollback_above": 1}},
                    )
                    for _ in range(30)
                ]
                wait_until(
                    lambda: c.get(f"/api/v1/rollouts/{BREACHER}").json()["status"] == "rolled_back",
                    timeout=60,
                    what="the breaching rollout rolled back",
                )
                rolled_back_after = time.monotonic() - breach_began
                answers = [f.result() for f in flood]
            healthy_seen = {n: checked_at(c, n) for n in HEALTHY}
            wait_until(
                lambda: all(checked_at(c, n) != healthy_seen[n] for n in HEALTHY),
                timeout=INTERVAL * 2 + GATE_TIMEOUT + 5,
                what="every healthy rollout checked again after the breach",
            )
            huge = c.get(f"/api/v1/rollouts/{HUGE}").json()
            hanger = c.get(f"/api/v1/rollouts/{HANGER}").json()
            hanger_gates = c.get(f"/api/v1/rollouts/{HANGER}/gates").json()["latest"]
        finally:
            watch.stopping.set()
            watch.join(timeout=15)

    # The breaching rollout: rolled back within its interval + the gate timeout + 2 s.
    assert rolled_back_after <= INTERVAL + GATE_TIMEOUT + 2, rolled_back_after
    # The viewer's flood: a few ran (each ended by the gate timeout), the rest were
    # refused at once with 429 and a Retry-After; nothing queued up behind them.
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) >= 1
    assert all(a.headers.get("Retry-After") for a in answers if a.status_code == 429)
    assert all(a.json()["error"] == "busy" for a in answers if a.status_code == 429)
    assert all(a.json()["reading"]["outcome"] == "error" for a in answers if a.status_code == 200)
    # /readyz: within 1 s every time, and ready (the scheduler's passes go on).
    assert len(watch.answers) >= 10
    slowest = max(took for took, _, _ in watch.answers)
    assert slowest < 1.0, slowest
    assert {status for _, status, _ in watch.answers} == {200}
    assert all(body["checks"]["scheduler"]["ok"] for _, _, body in watch.answers)
    # The broken ones are errors for themselves alone: the hanging one's readings are
    # errors that say why, the overflowing one is paused with the error as its reason.
    assert hanger["status"] in {"running", "paused"}
    assert hanger_gates and all(r["outcome"] == "error" for r in hanger_gates)
    # The one whose stored hold no datetime can reach: it reads and shows, and holds.
    assert huge["status"] == "running", huge
    assert huge["reason"].startswith("dwell: 99999998d"), huge["reason"]
    print(
        f"\nrolled back {rolled_back_after:.2f}s after the breach began; slowest /readyz"
        f" {slowest * 1000:.0f} ms of {len(watch.answers)}; gate tests {statuses.count(200)}"
        f" ran, {statuses.count(429)} got 429"
    )
