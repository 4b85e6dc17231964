"""Two controller processes, each with its scheduler, on one PostgreSQL database.

A change made through one replica is served by the other within about a second (the
revision poll), a token revoked on one is refused on the other, and concurrent
actions through both replicas while their schedulers run a timed plan lose no
update: the database's compare-and-swap decides, and the audit log shows it."""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.databases import fresh_database
from tests.serving import Server, running_server

PROPAGATION_LIMIT = 3.0  # seconds; the poll is 0.5 s, so ~1 s is expected
SEED = random.randrange(2**32)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    workdir = tmp_path_factory.mktemp("replicas")
    env = {
        "ROLLOUT_SCHEDULER": "true",
        "ROLLOUT_SCHEDULER_TICK": "0.2",
        "ROLLOUT_RATE_LIMIT_PER_MIN": "0",  # the race below sends hundreds of actions
    }
    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    with (
        fresh_database("postgres", workdir) as url,
        # One after the other: the second starts once the first has made the schema.
        running_server(
            workdir / "a", database_url=url, extra_env={**env, "ROLLOUT_REPLICA_ID": "replica-a"}
        ) as a,
        running_server(
            workdir / "b", database_url=url, extra_env={**env, "ROLLOUT_REPLICA_ID": "replica-b"}
        ) as b,
    ):
        yield a, b


def seconds_until(check: Callable[[], bool], limit: float = PROPAGATION_LIMIT) -> float:
    """How long until ``check`` holds; fails the test past ``limit``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            raise AssertionError(f"not within {limit} s")
        time.sleep(0.01)
    return time.monotonic() - started


def report(what: str, latencies: list[float]) -> None:
    print(
        f"\n{what}: n={len(latencies)} median={statistics.median(latencies) * 1000:.0f} ms "
        f"max={max(latencies) * 1000:.0f} ms"
    )


FLAG = {
    "type": "string",
    "variants": {"a": "blue", "b": "green"},
    "default_variant": "a",
}


def test_changes_through_one_replica_are_served_by_the_other(
    replicas: tuple[Server, Server],
) -> None:
    a, b = replicas
    sdk = a.token("sdk", "replica-sdk")
    with a.client() as on_a, b.client(token=sdk) as sdk_b:
        seconds_until(lambda: sdk_b.get("/api/v1/evaluate/colour").status_code != 401)
        latencies = []
        for i in range(10):
            variant = "b" if i % 2 == 0 else "a"
            body = {**FLAG, "default_variant": variant, **({"version": i} if i else {})}
            assert on_a.put("/api/v1/flags/colour", json=body).status_code in (200, 201)
            latencies.append(
                seconds_until(
                    lambda v=variant: (
                        sdk_b.get("/api/v1/evaluate/colour").json().get("variant") == v
                    )
                )
            )
        report("flag change on A served by B", latencies)

        plan = "rollout: shared\nflag: shared\nsteps:\n  - {stage: canary, percent: 5, hold: 1h}\n"
        assert on_a.post("/api/v1/plans", json={"yaml": plan}).status_code == 201
        action_latencies = []
        for action, status in (("start", "running"), ("pause", "paused"), ("resume", "running")):
            assert on_a.post(f"/api/v1/rollouts/shared/actions/{action}", json={}).is_success

            def served_status(expected: str = status) -> bool:
                answer = sdk_b.get("/api/v1/evaluate/shared", params={"targetingKey": "u1"})
                return (answer.json().get("rollout") or {}).get("status") == expected

            action_latencies.append(seconds_until(served_status))
        report("rollout action on A served by B", action_latencies)


def test_a_token_revoked_on_one_replica_is_refused_on_the_other(
    replicas: tuple[Server, Server],
) -> None:
    a, b = replicas
    with a.client() as admin_a, b.client() as admin_b:
        created = admin_a.post("/api/v1/tokens", json={"name": "short-lived", "role": "viewer"})
        token = created.json()["token"]
        with b.client(token=token) as viewer_b:
            known = seconds_until(lambda: viewer_b.get("/api/v1/rollouts").status_code == 200)
            assert admin_a.delete(f"/api/v1/tokens/{created.json()['id']}").status_code == 200
            # A change made on B right after refreshes B's snapshot past the revocation's
            # revision; the revocation must reach B's tokens all the same.
            assert admin_b.put("/api/v1/flags/after-revoke", json=FLAG).status_code == 201
            refused = seconds_until(lambda: viewer_b.get("/api/v1/rollouts").status_code == 401)
            assert viewer_b.get("/api/v1/evaluate/after-revoke").status_code == 401
    report("token created on A known to B", [known])
    report("token revoked on A refused by B", [refused])


RACE_PLAN = """
rollout: race
flag: race
interval: 1s
min_evaluations: 1
steps:
  - {stage: shadow, hold: 1s}
  - {stage: canary, percent: 1, hold: 1s}
  - {stage: canary, percent: 2, hold: 1s}
  - {stage: canary, percent: 5, hold: 1s}
  - {stage: graduated, percent: 10, hold: 1s}
  - {stage: graduated, percent: 25, hold: 1s}
  - {stage: graduated, percent: 50, hold: 1s}
  - {stage: regional, regions: [us-west-1], hold: 1s}
  - {stage: regional, regions: [us-east-1], hold: 1s}
  - {stage: full, hold: 1s}
  - {stage: full, shadow: false}
"""
RACERS = 4
RACE_SECONDS = 8.0
MANUAL_STEPS = 4  # people advance from steps 0-3 only
RACE_LAST_STEP = 10


def test_concurrent_actions_on_both_replicas_lose_no_update(
    replicas: tuple[Server, Server],
) -> None:
    a, b = replicas
    with a.client() as admin:
        assert admin.post("/api/v1/plans", json={"yaml": RACE_PLAN}).status_code == 201
        tokens = [a.token("operator", f"racer-{i}") for i in range(RACERS)]
        with b.client(token=tokens[-1]) as last_on_b:
            seconds_until(lambda: last_on_b.get("/api/v1/rollouts/race").status_code == 200)
        assert admin.post("/api/v1/rollouts/race/actions/start", json={}).is_success

        results: list[list[dict[str, Any]]] = [[] for _ in range(RACERS)]
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_race,
                args=(a if i % 2 == 0 else b, tokens[i], i, results[i], stop),
                name=f"racer-{i}",
            )
            for i in range(RACERS)
        ]
        for t in threads:
            t.start()
        time.sleep(RACE_SECONDS)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        race_end = admin.get("/api/v1/audit", params={"limit": 1}).json()["events"][0]["id"]
        assert not any(t.is_alive() for t in threads)

        # Let the timed plan finish: resume it if a racer left it paused.
        def completed() -> bool:
            state = admin.get("/api/v1/rollouts/race").json()
            if state["status"] == "paused":
                admin.post("/api/v1/rollouts/race/actions/resume", json={})
            return bool(state["status"] == "completed")

        seconds_until(completed, limit=60)
        final = admin.get("/api/v1/rollouts/race").json()
        events = list(
            reversed(
                admin.get("/api/v1/audit", params={"rollout": "race", "limit": 1000}).json()[
                    "events"
                ]
            )
        )
        verified = admin.get("/api/v1/audit/verify").json()

    seed = f"(seed {SEED})"
    outcomes = Counter(r["status"] for rs in results for r in rs)
    print(
        f"\nrace {seed}: {dict(outcomes)}; {len(events)} audit events, "
        f"{sum(e['actor'] == 'controller' for e in events)} by the schedulers, "
        f"{sum(e['actor'] == 'controller' and e['id'] <= race_end for e in events)} of them "
        "while people acted"
    )
    assert set(outcomes) <= {200, 409}, (outcomes, seed)
    assert outcomes[200] > 0 and outcomes[409] > 0, (outcomes, seed)

    # Every accepted action is in the log exactly once, with the version it answered;
    # no refused one is (each request's reason is unique).
    for i, rs in enumerate(results):
        logged = {e["reason"]: e for e in events if e["actor"] == f"racer-{i} (operator)"}
        mine = [e for e in events if e["actor"] == f"racer-{i} (operator)"]
        assert len(logged) == len(mine), seed
        accepted = {r["reason"]: r for r in rs if r["status"] == 200}
        assert set(logged) == set(accepted), seed
        for reason, r in accepted.items():
            assert (logged[reason]["action"], logged[reason]["version"]) == (
                r["action"],
                r["version"],
            ), seed

    # No lost update: every version-moving write got its own version, in order, and the
    # rollout's version is the last one logged.
    versions = [
        e["version"]
        for e in events
        if e["version"] is not None and not e["action"].startswith("flag.")  # the flag's own
    ]
    assert versions == list(range(1, len(versions) + 1)), (versions, seed)
    assert final["version"] == versions[-1], seed

    # Each step was entered once, from the step before it, by a person or the controller.
    entered = [
        (e["from_step"], e["to_step"])
        for e in events
        if e["from_step"] is not None and e["to_step"] != e["from_step"]
    ]
    assert entered == [(i, i + 1) for i in range(len(entered))], (entered, seed)
    assert entered[-1][1] == RACE_LAST_STEP, seed
    automatic = Counter(
        (e["action"], e["from_step"], e["to_step"]) for e in events if e["actor"] == "controller"
    )
    assert all(n == 1 for n in automatic.values()), (automatic, seed)
    # Steps after MANUAL_STEPS, and completion, can only be the schedulers' work.
    assert sum(automatic.values()) >= RACE_LAST_STEP - MANUAL_STEPS + 1, (automatic, seed)
    assert sum(1 for e in events if e["action"] in ("advance", "complete")) >= 10, seed
    assert verified["ok"] is True, (verified, seed)


def _race(
    server: Server,
    token: str,
    index: int,
    out: list[dict[str, Any]],
    stop: threading.Event,
) -> None:
    rng = random.Random(SEED + index)
    with server.client(token=token) as c:
        n = 0
        while not stop.is_set():
            state = c.get("/api/v1/rollouts/race").json()
            if state["status"] == "completed":
                return
            # People advance only the first steps: the later ones are left to the
            # schedulers, which advance on the 1 s dwell between people's actions.
            if state["step"] < MANUAL_STEPS:
                action = rng.choices(("pause", "resume", "advance"), weights=(2, 5, 1))[0]
            else:
                # Mostly resume, so the rollout runs between pauses and the schedulers
                # advance it while people act.
                action = rng.choices(("pause", "resume"), weights=(1, 5))[0]
            reason = f"racer-{index}-{n}"
            n += 1
            r = _post(c, action, state["version"], reason)
            body = r.json()
            out.append(
                {
                    "status": r.status_code,
                    "action": action,
                    "reason": reason,
                    "sent": state["version"],
                    "version": body.get("version"),
                }
            )
            time.sleep(rng.uniform(0.05, 0.5))


def _post(c: httpx.Client, action: str, version: int, reason: str) -> httpx.Response:
    return c.post(
        f"/api/v1/rollouts/race/actions/{action}", json={"version": version, "reason": reason}
    )
