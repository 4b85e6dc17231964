"""Idempotency-Key on a real server, on SQLite and on PostgreSQL; and the key store's
races and the 5xx rule on both databases directly."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controller.auth import TokenRegistry
from controller.http.idempotency import (
    Idempotency,
    IdempotencyKeys,
    InProgress,
    Mismatch,
    Replay,
    Reserved,
)
from controller.storage.store import Store
from tests.databases import fresh_database
from tests.serving import ADMIN_TOKEN, Server, plan_yaml, running_server

_names = itertools.count()
# Rate limiting is tested on its own (test_ratelimit.py); here it would only get in the way.
_NO_LIMIT = {"ROLLOUT_RATE_LIMIT_PER_MIN": "0"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}-{next(_names)}"


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def audit_actions(client: httpx.Client, rollout: str) -> list[str]:
    events = client.get("/api/v1/audit", params={"rollout": rollout}).json()["events"]
    return [e["action"] for e in events]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"idem-{request.param}")
    with (
        fresh_database(request.param, workdir) as url,
        running_server(workdir, database_url=url, extra_env=_NO_LIMIT) as s,
    ):
        yield s


def applied(client: httpx.Client, name: str) -> None:
    r = client.post("/api/v1/plans", json={"yaml": plan_yaml(name)})
    assert r.status_code == 201, r.text


# -- over HTTP -------------------------------------------------------------------------


def test_retried_action_gets_the_first_answer_and_acts_once(server: Server) -> None:
    name = unique("retry")
    key = str(uuid.uuid4())
    with server.client() as c:
        applied(c, name)
        path = f"/api/v1/rollouts/{name}/actions/start"
        first = c.post(path, json={"reason": "go"}, headers=keyed(key))
        again = c.post(path, json={"reason": "go"}, headers=keyed(key))
        # Without the key the same request runs again, and is refused: already running.
        unkeyed = c.post(path, json={"reason": "go"})

        assert first.status_code == 200, first.text
        assert "idempotent-replayed" not in first.headers
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["content-type"] == first.headers["content-type"]
        assert again.content == first.content
        assert unkeyed.status_code == 409
        assert audit_actions(c, name).count("start") == 1


def test_retried_plan_apply_replays_created(server: Server) -> None:
    name = unique("plan")
    key = f'"{uuid.uuid4()}"'  # the draft's structured-field form
    body = {"yaml": plan_yaml(name)}
    with server.client() as c:
        first = c.post("/api/v1/plans", json=body, headers=keyed(key))
        again = c.post("/api/v1/plans", json=body, headers=keyed(key))
        assert first.status_code == 201, first.text
        assert first.json()["outcome"] == "created"
        assert (again.status_code, again.json()) == (201, first.json())
        assert again.headers["idempotent-replayed"] == "true"
        assert audit_actions(c, name).count("apply") == 1


def test_same_key_for_another_request_is_422_and_changes_nothing(server: Server) -> None:
    name, other = unique("reuse"), unique("reuse-other")
    key = str(uuid.uuid4())
    with server.client() as c:
        first = c.post("/api/v1/plans", json={"yaml": plan_yaml(name)}, headers=keyed(key))
        assert first.status_code == 201
        other_body = c.post("/api/v1/plans", json={"yaml": plan_yaml(other)}, headers=keyed(key))
        other_path = c.post(
            f"/api/v1/rollouts/{name}/actions/start", json={"reason": "x"}, headers=keyed(key)
        )
        for refused in (other_body, other_path):
            assert refused.status_code == 422
            assert refused.json()["error"] == "idempotency_key_reused"
            assert "Idempotency-Key was used for a different request" in refused.json()["message"]
            assert refused.json()["problems"][0]["field"] == "Idempotency-Key"
        assert c.get(f"/api/v1/rollouts/{other}").status_code == 404
        assert c.get(f"/api/v1/rollouts/{name}").json()["status"] == "pending"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "1 to 255"),
        ("x" * 256, "1 to 255"),
        ("has space", "visible ASCII"),
        ('"unterminated \\"', "backslash"),
    ],
)
def test_bad_key_is_400_naming_the_header(server: Server, value: str, why: str) -> None:
    name = unique("badkey")
    with server.client() as c:
        r = c.post("/api/v1/plans", json={"yaml": plan_yaml(name)}, headers=keyed(value))
        assert r.status_code == 400, r.text
        assert r.json()["problems"][0]["field"] == "Idempotency-Key"
        assert why in r.json()["message"]
        assert c.get(f"/api/v1/rollouts/{name}").status_code == 404


def test_concurrent_duplicates_run_exactly_once(server: Server) -> None:
    name = unique("race")
    key = str(uuid.uuid4())
    with server.client() as c:
        applied(c, name)
    path = f"/api/v1/rollouts/{name}/actions/start"
    threads = 8
    barrier = threading.Barrier(threads)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        with server.client() as client:
            barrier.wait(timeout=10)
            r = client.post(path, json={"reason": "race"}, headers=keyed(key))
        with lock:
            answers.append(r)

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)

    assert len(answers) == threads
    assert {r.status_code for r in answers} <= {200, 409}
    executed = [
        r for r in answers if r.status_code == 200 and "idempotent-replayed" not in r.headers
    ]
    assert len(executed) == 1
    for r in answers:
        if r.status_code == 200:
            assert r.content == executed[0].content
        else:
            assert r.json()["error"] == "idempotency_key_in_progress"
            assert r.headers["retry-after"]
    with server.client() as c:
        assert audit_actions(c, name).count("start") == 1


def test_principals_keys_are_independent(server: Server) -> None:
    name = unique("scoped")
    key = str(uuid.uuid4())
    body = {"yaml": plan_yaml(name)}
    with (
        server.client(server.token("operator")) as alice,
        server.client(server.token("operator")) as bob,
    ):
        first = alice.post("/api/v1/plans", json=body, headers=keyed(key))
        second = bob.post("/api/v1/plans", json=body, headers=keyed(key))
        # Bob's request ran (it found the plan already applied); it was not Alice's replay.
        assert (first.status_code, first.json()["outcome"]) == (201, "created")
        assert (second.status_code, second.json()["outcome"]) == (200, "unchanged")
        assert "idempotent-replayed" not in second.headers


def test_token_creation_replay_withholds_the_secret(server: Server) -> None:
    key = str(uuid.uuid4())
    body = {"name": unique("tok"), "role": "viewer"}
    with server.client() as c:
        first = c.post("/api/v1/tokens", json=body, headers=keyed(key))
        again = c.post("/api/v1/tokens", json=body, headers=keyed(key))
        assert first.status_code == again.status_code == 201
        assert first.json()["token"]
        assert again.json()["token"] is None
        assert again.json()["id"] == first.json()["id"]
        assert "revoke this token" in again.json()["note"]
        names = [t["name"] for t in c.get("/api/v1/tokens").json()["tokens"]]
        assert names.count(body["name"]) == 1


def test_reads_and_evaluations_ignore_the_header(server: Server) -> None:
    name = unique("read")
    key = str(uuid.uuid4())
    with server.client() as c:
        applied(c, name)
        for _ in range(2):
            got = c.get(f"/api/v1/rollouts/{name}", headers=keyed(key))
            evaluated = c.post(
                f"/api/v1/evaluate/{name}",
                json={"context": {"targetingKey": "u1"}},
                headers=keyed(key),
            )
            assert got.status_code == evaluated.status_code == 200
            assert "idempotent-replayed" not in got.headers
            assert "idempotent-replayed" not in evaluated.headers
        # The key was not taken by those: a change may still use it.
        start = c.post(f"/api/v1/rollouts/{name}/actions/start", json={}, headers=keyed(key))
        assert start.status_code == 200
        assert "idempotent-replayed" not in start.headers


def test_keys_expire_after_the_ttl(tmp_path: Path) -> None:
    name = unique("ttl")
    key = str(uuid.uuid4())
    body = {"yaml": plan_yaml(name)}
    env = {**_NO_LIMIT, "ROLLOUT_IDEMPOTENCY_TTL": "1s"}
    with running_server(tmp_path, extra_env=env) as server, server.client() as c:
        first = c.post("/api/v1/plans", json=body, headers=keyed(key))
        assert first.status_code == 201
        deadline = time.monotonic() + 10
        while True:
            again = c.post("/api/v1/plans", json=body, headers=keyed(key))
            if "idempotent-replayed" not in again.headers or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # Expired: the request ran again (and found the plan applied).
        assert "idempotent-replayed" not in again.headers
        assert (again.status_code, again.json()["outcome"]) == (200, "unchanged")


# -- the key store on both databases ---------------------------------------------------

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_store_reserve_replay_mismatch_in_progress(store: Store) -> None:
    keys = IdempotencyKeys(store, ttl=timedelta(hours=24))
    found = keys.reserve("tok1", "k", "print-a", NOW)
    assert isinstance(found, Reserved)
    assert keys.reserve("tok1", "k", "print-a", NOW) == InProgress()
    assert keys.reserve("tok1", "k", "print-b", NOW) == Mismatch()
    assert isinstance(keys.reserve("tok2", "k", "print-a", NOW), Reserved)

    keys.complete("tok1", "k", found.claim, Replay(201, "application/json", b'{"a":1}'), NOW)
    assert keys.reserve("tok1", "k", "print-a", NOW) == Replay(201, "application/json", b'{"a":1}')
    later = NOW + timedelta(hours=24, seconds=1)
    assert isinstance(keys.reserve("tok1", "k", "print-b", later), Reserved)


def test_store_abandoned_reservation_is_taken_over_once(store: Store) -> None:
    keys = IdempotencyKeys(store, ttl=timedelta(hours=1), pending_timeout=timedelta(minutes=2))
    old = keys.reserve("tok", "k", "p", NOW)
    assert isinstance(old, Reserved)
    later = NOW + timedelta(minutes=3)
    new = keys.reserve("tok", "k", "p", later)
    assert isinstance(new, Reserved)
    assert keys.reserve("tok", "k", "p", later) == InProgress()
    # The first holder finishing late does not overwrite the new holder's reservation.
    keys.complete("tok", "k", old.claim, Replay(200, None, b"stale"), later)
    assert keys.reserve("tok", "k", "p", later) == InProgress()
    keys.complete("tok", "k", new.claim, Replay(200, None, b"fresh"), later)
    assert keys.reserve("tok", "k", "p", later) == Replay(200, None, b"fresh")


def test_store_racing_reservations_have_one_winner(store: Store) -> None:
    keys = IdempotencyKeys(store, ttl=timedelta(hours=1))
    racers = 6
    barrier = threading.Barrier(racers)
    results: list[object] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait(timeout=10)
        found = keys.reserve("tok", "same", "p", NOW)
        with lock:
            results.append(found)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == racers
    assert sum(isinstance(r, Reserved) for r in results) == 1
    assert results.count(InProgress()) == racers - 1


def test_prune_removes_only_expired_keys(store: Store) -> None:
    keys = IdempotencyKeys(store, ttl=timedelta(seconds=10))
    for key in ("a", "b"):
        found = keys.reserve("tok", key, "p", NOW)
        assert isinstance(found, Reserved)
        keys.complete("tok", key, found.claim, Replay(200, None, b""), NOW)
    assert keys.prune(NOW + timedelta(seconds=5)) == 0
    assert keys.prune(NOW + timedelta(seconds=11)) == 2


def test_server_errors_are_not_kept_so_a_retry_runs_again(store: Store) -> None:
    """A 5xx answer releases the key (the retry runs); a 4xx answer is replayed."""
    calls: list[str] = []

    async def flaky(request: Request) -> Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return JSONResponse({"error": "boom"}, status_code=503)
        return JSONResponse({"error": "nope", "call": len(calls)}, status_code=409)

    inner = Starlette(routes=[Route("/api/v1/thing", flaky, methods=["POST"])])
    app = Idempotency(
        inner,
        keys=IdempotencyKeys(store, ttl=timedelta(hours=1)),
        tokens=TokenRegistry(store, ADMIN_TOKEN),
        clock=lambda: datetime.now(UTC),
    )
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": "k1"}

    async def three_tries() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.post("/api/v1/thing", json={}, headers=headers) for _ in range(3)]

    failed, retried, replayed = anyio.run(three_tries)
    assert failed.status_code == 503
    assert (retried.status_code, retried.json()["call"]) == (409, 2)
    assert "idempotent-replayed" not in retried.headers
    assert (replayed.status_code, replayed.json()["call"]) == (409, 2)
    assert replayed.headers["idempotent-replayed"] == "true"
    assert len(calls) == 2


def test_a_busy_answer_is_not_kept_so_a_retry_runs(store: Store) -> None:
    """429 means nothing was done (a gate-test slot was taken): the CLI retries it with
    the same key, which must run the request, not replay the 429."""
    calls: list[str] = []

    async def busy_once(request: Request) -> Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return JSONResponse({"error": "busy"}, status_code=429, headers={"Retry-After": "1"})
        return JSONResponse({"call": len(calls)}, status_code=200)

    inner = Starlette(routes=[Route("/api/v1/thing", busy_once, methods=["POST"])])
    app = Idempotency(
        inner,
        keys=IdempotencyKeys(store, ttl=timedelta(hours=1)),
        tokens=TokenRegistry(store, ADMIN_TOKEN),
        clock=lambda: datetime.now(UTC),
    )
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": "k429"}

    async def three_tries() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.post("/api/v1/thing", json={}, headers=headers) for _ in range(3)]

    busy, ran, replayed = anyio.run(three_tries)
    assert busy.status_code == 429
    assert (ran.status_code, ran.json()["call"]) == (200, 2)
    assert replayed.headers["idempotent-replayed"] == "true" and replayed.json()["call"] == 2
    assert len(calls) == 2
