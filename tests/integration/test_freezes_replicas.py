"""A freeze on two replicas sharing one PostgreSQL, each running its scheduler: a freeze
made through one replica holds the advances of every rollout in scope, whichever
replica holds its lease; a rollback through the other still happens while frozen;
unfreezing lets them all go on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import select

from controller.storage.store import Store
from controller.storage.tables import LeaseRow
from tests.databases import fresh_database
from tests.serving import Server, running_server
from tests.waiting import wait_until

ROLLOUTS = [f"fast-{i}" for i in range(6)]
OTHER = "fast-other"


def fast_plan(name: str, team: str) -> str:
    return f"""
rollout: {name}
flag: {name}
interval: 1s
labels: {{team: {team}}}
steps:
  - {{stage: shadow, hold: 1s}}
  - {{stage: canary, percent: 1, hold: 1s}}
  - {{stage: canary, percent: 5, hold: 1s}}
  - {{stage: full}}
"""


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    workdir = tmp_path_factory.mktemp("freeze-replicas")
    env = {"ROLLOUT_SCHEDULER": "true", "ROLLOUT_SCHEDULER_TICK": "0.2"}
    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    with (
        fresh_database("postgres", workdir) as url,
        running_server(
            workdir / "a", database_url=url, extra_env={**env, "ROLLOUT_REPLICA_ID": "replica-a"}
        ) as a,
        running_server(
            workdir / "b", database_url=url, extra_env={**env, "ROLLOUT_REPLICA_ID": "replica-b"}
        ) as b,
    ):
        yield a, b


def state(server: Server, name: str) -> dict[str, Any]:
    with server.client() as c:
        answer = c.get(f"/api/v1/rollouts/{name}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def test_a_freeze_holds_advances_on_both_replicas(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    with a.client() as on_a, b.client() as on_b:
        for name in ROLLOUTS:
            assert on_a.post("/api/v1/plans", json={"yaml": fast_plan(name, "memory")}).is_success
        assert on_a.post("/api/v1/plans", json={"yaml": fast_plan(OTHER, "search")}).is_success
        made = on_b.post(
            "/api/v1/freezes", json={"reason": "INC-123", "until": "1h", "scope": ["team=memory"]}
        )
        assert made.status_code == 201, made.text
        freeze = made.json()
        assert freeze["rollouts"] == ROLLOUTS
        for i, name in enumerate([*ROLLOUTS, OTHER]):
            started = (on_a if i % 2 else on_b).post(
                f"/api/v1/rollouts/{name}/actions/start", json={}
            )
            assert started.status_code == 200, started.text

        # The rollout outside the scope runs to the end; those inside stay in shadow and
        # say why, through either replica.
        wait_until(lambda: state(a, OTHER)["status"] == "completed", 30, "unfrozen completes")
        for name in ROLLOUTS:
            wait_until(
                lambda n=name: "ready to advance, but frozen: INC-123" in state(b, n)["reason"],
                30,
                f"{name} held by the freeze",
            )

        def held_long() -> bool:
            views = [state(a, n) for n in ROLLOUTS]
            assert all(v["step"] == 0 and v["status"] == "running" for v in views), views
            return all((v["seconds_in_step"] or 0) >= 4 for v in views)

        # Four times the hold, checked every second: every replica's checks held.
        wait_until(held_long, 30, "the frozen rollouts held for 4 s")
        holders = lease_holders(a)
        print(f"\nleases of the frozen rollouts: {holders}")
        assert set(holders) <= {"replica-a", "replica-b"} and holders
        assert all(f["id"] == freeze["id"] for n in ROLLOUTS for f in state(a, n)["frozen_by"])

        # A rollback is never frozen, through the other replica than the freeze's.
        rolled = on_a.post(
            f"/api/v1/rollouts/{ROLLOUTS[0]}/actions/rollback",
            json={"immediate": True, "reason": "bad while frozen"},
        )
        assert rolled.status_code == 200 and rolled.json()["status"] == "rolled_back"

        assert on_a.delete(f"/api/v1/freezes/{freeze['id']}").status_code == 200
        for name in ROLLOUTS[1:]:
            wait_until(lambda n=name: state(b, n)["step"] >= 1, 30, f"{name} advances again")
        assert state(b, ROLLOUTS[0])["status"] == "rolled_back"


def lease_holders(server: Server) -> dict[str, int]:
    store = Store(server.database_url)
    try:
        with store.read() as session:
            rows = session.execute(select(LeaseRow)).scalars()
            counts: dict[str, int] = {}
            for row in rows:
                if row.name in ROLLOUTS:
                    counts[row.holder] = counts.get(row.holder, 0) + 1
            return counts
    finally:
        store.dispose()
