"""A property-based fuzz of the REST API from its own ``/openapi.json`` (schemathesis),
on a real server seeded with a realistic state (a flag, a running rollout, a pending
one), as an admin and as a viewer.

For every operation, with inputs that fit the schema and inputs that break it:
no 5xx, every 4xx is a JSON object, and a refused (4xx) request changed nothing in
the database. Seeded (derandomized) so a run in CI is the same as a run here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation

from controller.storage.store import Store
from tests.databases import fresh_database
from tests.serving import ADMIN_TOKEN, Server, plan_yaml, running_server
from tests.state_fingerprint import fingerprint

EXAMPLES = 30  # per operation and generation mode
FLAG = "fuzz-flag"
RUNNING = "fuzz-running"
PENDING = "fuzz-pending"
# Expected 5xx: this test runs no Prometheus, so the readiness check says "not ready".
NOT_READY = ("GET", "/readyz")

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]


@dataclass
class Target:
    server: Server
    store: Store
    tokens: dict[str, str]
    spare_token_id: str  # a real token the admin run may revoke


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    workdir = tmp_path_factory.mktemp("fuzz")
    with (
        fresh_database(request.param, workdir) as url,
        running_server(workdir, database_url=url) as server,
    ):
        with server.client() as admin:
            for name in (RUNNING, PENDING):
                r = admin.post("/api/v1/plans", json={"yaml": plan_yaml(name)})
                assert r.status_code == 201, r.text
            r = admin.post(f"/api/v1/rollouts/{RUNNING}/actions/start", json={"reason": "seed"})
            assert r.status_code == 200, r.text
            flag = {
                "type": "string",
                "variants": {"old": "old-side", "new": "new-side"},
                "default_variant": "old",
                "rules": [
                    {
                        "when": [{"attribute": "region", "op": "in", "values": ["eu"]}],
                        "variant": "new",
                    },
                    {"when": [], "split": {"new": 50, "old": 50}},
                ],
            }
            r = admin.put(f"/api/v1/flags/{FLAG}", json=flag)
            assert r.status_code == 201, r.text
            r = admin.post("/api/v1/tokens", json={"name": "fuzz-spare", "role": "sdk"})
            assert r.status_code == 201, r.text
            spare = str(r.json()["id"])
        tokens = {"admin": ADMIN_TOKEN, "viewer": server.token("viewer", "fuzz-viewer")}
        store = Store(server.database_url)
        try:
            yield Target(server, store, tokens, spare)
        finally:
            store.dispose()


def real_path_parameters(target: Target) -> dict[str, Any]:
    """Values that name seeded objects, so that some generated requests reach them."""
    return {
        "key": FLAG,
        "name": RUNNING,
        "token_id": target.spare_token_id,
        "delivery": 1,
    }


def cases(operation: Operation, mode: GenerationMode, real: dict[str, Any]) -> Any:
    generated = operation.as_strategy(mode)
    names = {p.name for p in operation.path_parameters}
    if not names:
        return generated
    fixed = {name: real[name] for name in names if name in real}
    # Only where the generated values could still break the schema elsewhere, or fit it.
    return st.one_of(generated, operation.as_strategy(mode, path_parameters=fixed))


def check_response(case: AnyCase, target: Target, session: requests.Session, token: str) -> int:
    before = fingerprint(target.store)
    # The schema declares the bearer scheme, so schemathesis makes up Authorization
    # values of its own (and drops them in negative cases): the role under test is ours.
    # Missing and bad tokens are test_role_matrix.py's job.
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    response = case.call(base_url=target.server.url, session=session, timeout=15)
    status = response.status_code
    what = f"{status} {response.text[:400]}\n{case.as_curl_command()}"
    if (case.method.upper(), case.path) == NOT_READY:
        assert status in (200, 503), what
        return status
    assert status < 500, what
    if 400 <= status < 500:
        content_type = ",".join(response.headers.get("content-type", []))
        assert content_type.startswith("application/json"), what
        body = response.json()
        assert isinstance(body, dict), what
        assert "error" in body or "errorCode" in body, what
        if status == 422:  # as /openapi.json documents it: each problem names its field
            assert all("field" in p for p in body["problems"]), what
        assert fingerprint(target.store) == before, f"a refused request changed state: {what}"
    return status


@dataclass
class Run:
    """One fuzzing run: who calls, and what it saw."""

    target: Target
    token: str
    session: requests.Session
    max_examples: int
    seen: Counter[str] = field(default_factory=Counter)  # "METHOD /path status"
    failures: list[str] = field(default_factory=list)

    def operation(self, operation: Operation, mode: GenerationMode) -> None:
        @settings(
            max_examples=self.max_examples,
            deadline=None,
            derandomize=True,
            database=None,
            # A failure is reported with its curl command; shrinking it would replay
            # requests against a state that has moved on.
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases(operation, mode, real_path_parameters(self.target)))
        def run(case: AnyCase) -> None:
            status = check_response(case, self.target, self.session, self.token)
            self.seen[f"{operation.label} {status}"] += 1

        try:
            run()
        except Unsatisfiable:
            # Nothing in this operation can break its schema (e.g. a lone string path
            # parameter): there is no negative case to send.
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as exc:
            self.failures.append(f"{operation.label} ({mode.value}): {exc}")


def fuzz(target: Target, role: str, max_examples: int) -> Run:
    """Every operation in the live schema, in both generation modes."""
    schema = schemathesis.openapi.from_url(f"{target.server.url}/openapi.json")
    with requests.Session() as session:
        run = Run(target, target.tokens[role], session, max_examples)
        for result in schema.get_all_operations():
            if not isinstance(result, Ok):
                run.failures.append(f"the schema has an unusable operation: {result.err()}")
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run.operation(result.ok(), mode)
    return run


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_no_server_error_and_refusals_change_nothing(target: Target, role: str) -> None:
    started = time.monotonic()
    run = fuzz(target, role, EXAMPLES)
    print(f"{role}: {run.seen.total()} requests in {time.monotonic() - started:.1f}s")
    for line, count in sorted(run.seen.items()):
        print(f"  {count:4d}  {line}")
    assert not run.failures, "\n\n".join(run.failures)
    # Not a run of refusals: the token worked, and reads answered.
    statuses = {line.rsplit(" ", 1)[1] for line in run.seen}
    assert "401" not in statuses
    assert ("403" in statuses) == (role == "viewer")
    assert run.seen["GET /api/v1/rollouts 200"] > 0


# Inputs the generated cases reach rarely or not at all, each once a 500 (or, on
# PostgreSQL, a database error): what comes back, and the field it names.
HOSTILE: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("GET", f"/api/v1/audit?before={2**70}", {}, 422, "query.before"),
    ("POST", f"/api/v1/webhooks/deliveries/{2**70}/retry", {}, 422, "path.delivery"),
    ("GET", f"/api/v1/rollouts/{RUNNING}/gates?since=2020-01-01T00:00:00", {}, 422, "query.since"),
    (
        "GET",
        f"/api/v1/rollouts/{RUNNING}/gates?since=0001-01-01T00:00:00%2B14:00",
        {},
        422,
        "query.since",
    ),
    ("GET", "/api/v1/flags/%00", {}, 422, "path.key"),
    ("GET", "/api/v1/rollouts/a%00b", {}, 422, "path.name"),
    ("DELETE", "/api/v1/tokens/%00", {}, 422, "path.token_id"),
    ("GET", "/api/v1/audit?rollout=%00", {}, 422, "query.rollout"),
    ("GET", "/api/v1/webhooks/deliveries?webhook=%00", {}, 422, "query.webhook"),
    ("POST", "/api/v1/tokens", {"json": {"name": "a\x00", "role": "viewer"}}, 422, "body.name"),
    (
        "POST",
        f"/api/v1/rollouts/{RUNNING}/actions/pause",
        {"json": {"reason": "because\x00"}},
        422,
        "body.reason",
    ),
    ("POST", f"/api/v1/flags/{FLAG}/disable", {"json": {"reason": "\x00"}}, 422, "body.reason"),
    ("POST", f"/api/v1/rollouts/{RUNNING}/actions/START", {"json": {}}, 422, "path.action"),
    (
        "POST",
        "/api/v1/plans",
        {"content": b"rollout: x", "headers": {"Content-Type": "text/plain"}},
        422,
        "body",
    ),
    (
        "PUT",
        "/api/v1/flags/xml",
        {"content": b"<flag/>", "headers": {"Content-Type": "application/xml"}},
        422,
        "body",
    ),
    ("POST", "/api/v1/plans", {"json": [1, 2]}, 422, "body"),
    (
        "PUT",
        # Not FLAG, which the admin fuzz may have deleted: a rollout holds this one.
        f"/api/v1/flags/{RUNNING}",
        {
            "json": {
                "type": "boolean",
                "variants": {"off": False, "on": True},
                "default_variant": "off",
                "version": 10**30,
            }
        },
        409,
        "",
    ),
    (
        "PUT",
        "/api/v1/flags/huge-number",
        {"json": {"type": "number", "variants": {"a": 10**400}, "default_variant": "a"}},
        422,
        "variants.a",
    ),
]


@pytest.mark.parametrize(("method", "path", "request_args", "status", "field"), HOSTILE)
def test_hostile_input_is_a_clear_refusal(
    target: Target,
    method: str,
    path: str,
    request_args: dict[str, Any],
    status: int,
    field: str,
) -> None:
    before = fingerprint(target.store)
    with target.server.client() as admin:
        r = admin.request(method, path, **request_args)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    if field:
        assert field in {p["field"] for p in r.json()["problems"]}, r.text
    assert fingerprint(target.store) == before
