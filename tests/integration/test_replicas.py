"""Two controller processes with schedulers on one SQLite file: one acts at a time."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.serving import running_server

RAMP = """
rollout: twin
flag: twin
interval: 1s
steps:
  - {stage: canary, percent: 1, hold: 1s}
  - {stage: canary, percent: 2, hold: 1s}
  - {stage: canary, percent: 5, hold: 1s}
  - {stage: graduated, percent: 10, hold: 1s}
  - {stage: graduated, percent: 25, hold: 1s}
  - {stage: graduated, percent: 50, hold: 1s}
  - {stage: full}
"""


def test_two_processes_never_both_act_on_one_rollout(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {"ROLLOUT_SCHEDULER": "true", "ROLLOUT_SCHEDULER_TICK": "0.2"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_server(
            tmp_path / "a",
            database_url=database,
            extra_env={**env, "ROLLOUT_REPLICA_ID": "replica-a"},
        ) as a,
        running_server(
            tmp_path / "b",
            database_url=database,
            extra_env={**env, "ROLLOUT_REPLICA_ID": "replica-b"},
        ) as b,
        a.client() as ca,
        b.client() as cb,
    ):
        assert ca.post("/api/v1/plans", json={"yaml": RAMP}).status_code == 201
        assert cb.post("/api/v1/rollouts/twin/actions/start", json={}).status_code == 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if ca.get("/api/v1/rollouts/twin").json()["status"] == "completed":
                break
            time.sleep(0.2)
        assert cb.get("/api/v1/rollouts/twin").json()["status"] == "completed"
        events = ca.get("/api/v1/audit", params={"rollout": "twin", "limit": 1000}).json()
        automatic = [
            (e["action"], e["to_step"]) for e in events["events"] if e["actor"] == "controller"
        ]
    counts = Counter(automatic)
    assert all(n == 1 for n in counts.values()), counts
    assert sorted(step for action, step in automatic if action == "advance") == [1, 2, 3, 4, 5, 6]
    assert counts[("complete", 6)] == 1
