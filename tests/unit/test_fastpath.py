"""The lean evaluation handler answers byte for byte as the FastAPI routes it shadows.

Each case is sent, as a raw ASGI request, to two apps over the same snapshot and token
registry: the documented FastAPI routes, and an app whose only way to answer is the
fast path (it has no routes of its own, so anything passed on would be a 404).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Histogram

from controller.api import evaluation
from controller.api.evaluation import EvaluationCounts
from controller.auth import Principal, Role
from controller.errors import Unauthorized
from controller.http import errors as http_errors
from controller.http.body_limit import BodySizeLimit
from controller.http.fastpath import EvaluationFastPath, FastPathApp, Route, match
from controller.http.metrics import LATENCY_SAMPLE_EVERY
from flags.bucketing import bucket
from flags.model import Flag, FlagType, RolloutServing, Rule
from flags.snapshot import Snapshot

SDK_TOKEN = "sdk-secret"
AUTH = [(b"authorization", f"Bearer {SDK_TOKEN}".encode())]
MAX_BODY = 2_000


def rollout_flag(key: str, percent: float, regions: frozenset[str] = frozenset()) -> Flag:
    serving = RolloutServing(key, "running", "canary", 2, percent, regions, True, "on", "off")
    return Flag(key, FlagType.BOOLEAN, {"on": True, "off": False}, "off", rollout=serving)


class Unreadable(Mapping[str, Any]):
    """Variants that fail when read: the flag answers ERROR."""

    def __getitem__(self, name: str) -> Any:
        raise RuntimeError("corrupt variant")

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Any:
        return iter(["on"])

    def __len__(self) -> int:
        return 1


SNAPSHOT = Snapshot(
    revision=7,
    flags={
        "canary": rollout_flag("canary", 5, frozenset({"us-west-1"})),
        "static": Flag("static", FlagType.STRING, {"a": "x", "b": "ü"}, "b"),
        "rules": Flag(
            "rules",
            FlagType.STRING,
            {"a": "x", "b": "y"},
            "a",
            rules=(Rule(variant="b"),),
        ),
        "broken": Flag("broken", FlagType.BOOLEAN, Unreadable(), "on", rules=(Rule(variant="on"),)),
    },
)


@dataclass
class FakeTokens:
    """The token registry's evaluation-facing surface: authenticate and generation."""

    live: dict[str, Principal] = field(
        default_factory=lambda: {SDK_TOKEN: Principal("svc", Role.SDK, "t1")}
    )
    generation: int = 0
    calls: int = 0

    def admit(self, principal: Principal) -> Principal:
        # A cached principal checked again; the fake's tokens never expire.
        return principal

    def authenticate(self, authorization: str | None) -> Principal:
        self.calls += 1
        if not authorization:
            raise Unauthorized("missing bearer token (Authorization: Bearer TOKEN)")
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("malformed Authorization header: expected 'Bearer TOKEN'")
        principal = self.live.get(secret.strip())
        if principal is None:
            raise Unauthorized("unknown or revoked token")
        return principal

    def revoke(self, secret: str) -> None:
        del self.live[secret]
        self.generation += 1


@dataclass
class Apps:
    reference: FastAPI
    fast: FastPathApp
    tokens: FakeTokens
    holder: SimpleNamespace
    counts: EvaluationCounts
    registry: CollectorRegistry


def make_apps() -> Apps:
    holder = SimpleNamespace(current=SNAPSHOT)
    tokens = FakeTokens()
    counts = EvaluationCounts()
    reference = FastAPI()
    reference.state.runtime = SimpleNamespace(snapshots=holder, tokens=tokens)
    reference.state.evaluation_counts = EvaluationCounts()
    http_errors.install(reference)
    reference.add_middleware(BodySizeLimit, max_bytes=MAX_BODY)
    reference.include_router(evaluation.router)
    registry = CollectorRegistry()
    latency = Histogram("eval_latency_seconds", "test", registry=registry)
    fast = FastPathApp()  # no routes: whatever it passes on to FastAPI is a 404
    fast.evaluation_fast_path = EvaluationFastPath(
        holder,  # type: ignore[arg-type]
        tokens,  # type: ignore[arg-type]
        counts,
        max_body_bytes=MAX_BODY,
        latency=latency,
    )
    return Apps(reference, fast, tokens, holder, counts, registry)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = AUTH,
    chunks: Sequence[bytes] = (b"",),
) -> Answer:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": list(headers),
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }
    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return Answer(start["status"], [tuple(h) for h in start["headers"]], body)


def both(apps: Apps, method: str, path: str, **kwargs: Any) -> tuple[Answer, Answer]:
    async def run() -> tuple[Answer, Answer]:
        return (
            await call(apps.reference, method, path, **kwargs),
            await call(apps.fast, method, path, **kwargs),
        )

    return asyncio.run(run())


def body(value: Any) -> dict[str, Any]:
    return {"chunks": (json.dumps(value).encode(),), "headers": [*AUTH, CONTENT_JSON]}


CONTENT_JSON = (b"content-type", b"application/json")
OVERSIZE = b'{"context": {"x": "' + b"y" * MAX_BODY + b'"}}'

# (name, method, path, keyword arguments of call)
CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("get in", "GET", "/api/v1/evaluate/canary", {"query": b"targetingKey=user-4"}),
    ("get out", "GET", "/api/v1/evaluate/canary", {"query": b"targetingKey=user-0"}),
    ("get no key", "GET", "/api/v1/evaluate/canary", {}),
    ("get empty key", "GET", "/api/v1/evaluate/canary", {"query": b"targetingKey="}),
    (
        "get region, repeats, escapes",
        "GET",
        "/api/v1/evaluate/canary",
        {"query": b"region=eu&targetingKey=a%20b&region=us-west-1&plan=p+q"},
    ),
    ("get static", "GET", "/api/v1/evaluate/static", {"query": b"targetingKey=u"}),
    ("get rules", "GET", "/api/v1/evaluate/rules", {}),
    ("get unknown", "GET", "/api/v1/evaluate/nope", {"query": b"targetingKey=u"}),
    ("get error answer", "GET", "/api/v1/evaluate/broken", {}),
    ("get no token", "GET", "/api/v1/evaluate/canary", {"headers": []}),
    (
        "get wrong scheme",
        "GET",
        "/api/v1/evaluate/canary",
        {"headers": [(b"authorization", b"Basic abc")]},
    ),
    (
        "get unknown token",
        "GET",
        "/api/v1/evaluate/canary",
        {"headers": [(b"authorization", b"Bearer nope")]},
    ),
    ("post", "POST", "/api/v1/evaluate/canary", body({"context": {"targetingKey": "user-4"}})),
    ("post no body", "POST", "/api/v1/evaluate/canary", {}),
    ("post null context", "POST", "/api/v1/evaluate/canary", body({"context": None})),
    ("post list context", "POST", "/api/v1/evaluate/canary", body({"context": [1]})),
    ("post int key", "POST", "/api/v1/evaluate/canary", body({"context": {"targetingKey": 7}})),
    ("post array body", "POST", "/api/v1/evaluate/canary", body([1, 2])),
    ("post not json", "POST", "/api/v1/evaluate/canary", {"chunks": (b"{oops",)}),
    ("post bad utf-8", "POST", "/api/v1/evaluate/canary", {"chunks": (b'{"a": "\xff"}',)}),
    (
        "post in chunks",
        "POST",
        "/api/v1/evaluate/canary",
        {"chunks": (b'{"context": {"targe', b'tingKey": "user-4", "region": "us-west-1"}}')},
    ),
    ("post unknown", "POST", "/api/v1/evaluate/nope", body({})),
    ("post no token", "POST", "/api/v1/evaluate/canary", {"headers": [], "chunks": (b"{oops",)}),
    (
        "post too large, declared",
        "POST",
        "/api/v1/evaluate/canary",
        {"headers": [*AUTH, (b"content-length", str(len(OVERSIZE)).encode())], "chunks": (b"",)},
    ),
    ("post too large, streamed", "POST", "/api/v1/evaluate/canary", {"chunks": (OVERSIZE, b"")}),
    ("ofrep", "POST", "/ofrep/v1/evaluate/flags/canary", body({"context": {"targetingKey": "u"}})),
    ("ofrep no body", "POST", "/ofrep/v1/evaluate/flags/canary", {}),
    ("ofrep unicode value", "POST", "/ofrep/v1/evaluate/flags/static", body({})),
    ("ofrep unknown", "POST", "/ofrep/v1/evaluate/flags/nope", body({"context": {}})),
    ("ofrep error answer", "POST", "/ofrep/v1/evaluate/flags/broken", body({})),
    ("ofrep list context", "POST", "/ofrep/v1/evaluate/flags/canary", body({"context": [1]})),
    ("ofrep not json", "POST", "/ofrep/v1/evaluate/flags/canary", {"chunks": (b"{oops",)}),
    ("ofrep no token", "POST", "/ofrep/v1/evaluate/flags/canary", {"headers": []}),
    ("bulk", "POST", "/ofrep/v1/evaluate/flags", body({"context": {"targetingKey": "user-4"}})),
    ("bulk no body", "POST", "/ofrep/v1/evaluate/flags", {}),
    ("bulk bad context", "POST", "/ofrep/v1/evaluate/flags", body({"context": "x"})),
    (
        "bulk etag matches",
        "POST",
        "/ofrep/v1/evaluate/flags",
        {
            "chunks": (b'{"context": {"targetingKey": "u"}}',),
            "headers": [
                *AUTH,
                (b"if-none-match", evaluation.bulk_etag(SNAPSHOT, {"targetingKey": "u"}).encode()),
            ],
        },
    ),
    (
        "bulk etag differs",
        "POST",
        "/ofrep/v1/evaluate/flags",
        {"chunks": (b"{}",), "headers": [*AUTH, (b"if-none-match", b'"7-0000"')]},
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_fast_path_answers_byte_for_byte_as_the_fastapi_route(
    method: str, path: str, kwargs: dict[str, Any]
) -> None:
    apps = make_apps()
    expected, got = both(apps, method, path, **kwargs)
    assert got == expected
    assert got.status != 404 or b"FLAG_NOT_FOUND" in got.body  # answered, not passed on


def test_the_cases_cover_every_status_the_routes_give() -> None:
    apps = make_apps()
    statuses = {both(apps, m, p, **kw)[1].status for _, m, p, kw in CASES}
    assert statuses == {200, 304, 400, 401, 404, 413}


def test_answers_follow_the_bucket_of_each_user() -> None:
    apps = make_apps()
    users = [f"user-{i}" for i in range(100)]

    async def run() -> list[bool]:
        answers = []
        for user in users:
            got = await call(
                apps.fast, "GET", "/api/v1/evaluate/canary", query=f"targetingKey={user}".encode()
            )
            answers.append(got.json()["value"])
        return answers

    assert asyncio.run(run()) == [bucket("canary", u) < 500 for u in users]


def test_a_new_snapshot_is_served_at_once() -> None:
    apps = make_apps()
    query = b"targetingKey=user-0"  # out at 5 %
    assert both(apps, "GET", "/api/v1/evaluate/canary", query=query)[1].json()["value"] is False
    apps.holder.current = Snapshot(revision=8, flags={"canary": rollout_flag("canary", 100)})
    after = both(apps, "GET", "/api/v1/evaluate/canary", query=query)[1].json()
    assert (after["value"], after["rollout"]["percent"]) == (True, 100)


def test_a_revoked_token_is_refused_on_the_next_request() -> None:
    apps = make_apps()

    async def run() -> list[int]:
        path = "/api/v1/evaluate/static"
        statuses = [(await call(apps.fast, "GET", path)).status for _ in range(3)]
        apps.tokens.revoke(SDK_TOKEN)
        statuses.append((await call(apps.fast, "GET", path)).status)
        return statuses

    assert asyncio.run(run()) == [200, 200, 200, 401]
    assert apps.tokens.calls == 2  # once, then again only after the generation moved


def test_every_answer_is_counted() -> None:
    apps = make_apps()

    async def run() -> None:
        for i in range(10):
            await call(
                apps.fast, "GET", "/api/v1/evaluate/static", query=f"targetingKey=u{i}".encode()
            )
        await call(apps.fast, "POST", "/ofrep/v1/evaluate/flags", chunks=(b"{}",))
        await call(apps.fast, "GET", "/api/v1/evaluate/static", headers=[])  # refused: not counted

    asyncio.run(run())
    counts = apps.counts.by_flag()
    assert counts["static"] == {"b": 11}
    assert counts["rules"] == {"b": 1}
    assert counts["canary"] == {"off": 1}  # no targeting key: the default


def test_latency_is_sampled_into_the_histogram() -> None:
    apps = make_apps()

    async def run() -> None:
        for _ in range(2 * LATENCY_SAMPLE_EVERY):
            await call(apps.fast, "GET", "/api/v1/evaluate/static")

    asyncio.run(run())
    assert apps.registry.get_sample_value("eval_latency_seconds_count") == 2


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/v1/evaluate/k", (Route.NATIVE_GET, "k")),
        ("POST", "/api/v1/evaluate/k", (Route.NATIVE_POST, "k")),
        ("POST", "/ofrep/v1/evaluate/flags/k", (Route.OFREP_SINGLE, "k")),
        ("POST", "/ofrep/v1/evaluate/flags", (Route.OFREP_BULK, "")),
        ("HEAD", "/api/v1/evaluate/k", None),
        ("PUT", "/api/v1/evaluate/k", None),
        ("GET", "/api/v1/evaluate/", None),
        ("GET", "/api/v1/evaluate/k/", None),
        ("GET", "/api/v1/evaluate/a/b", None),
        ("GET", "/ofrep/v1/evaluate/flags/k", None),
        ("POST", "/ofrep/v1/evaluate/flags/", None),
        ("GET", "/api/v1/snapshot", None),
        ("GET", "/api/v1/rollouts", None),
    ],
)
def test_only_the_evaluation_routes_are_taken(
    method: str, path: str, expected: tuple[Route, str] | None
) -> None:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    assert match(scope) == expected


def test_other_requests_reach_fastapi() -> None:
    apps = make_apps()

    @apps.fast.get("/api/v1/other")
    def other() -> dict[str, str]:
        return {"from": "fastapi"}

    got = asyncio.run(call(apps.fast, "GET", "/api/v1/other"))
    assert (got.status, got.json()) == (200, {"from": "fastapi"})
