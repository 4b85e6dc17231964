"""Rate limiting of changes on a real server: a burst over the limit is refused with
429 and Retry-After, the refused change is not made, and evaluation is never limited."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.serving import Server, plan_yaml, running_server

BURST = 3
# One token every 10 s: nothing refills noticeably while a test runs.
LIMITS = {"ROLLOUT_RATE_LIMIT_PER_MIN": "6", "ROLLOUT_RATE_LIMIT_BURST": str(BURST)}


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("ratelimit"), extra_env=LIMITS) as s:
        yield s


def test_a_burst_over_the_limit_is_refused_and_changes_nothing(server: Server) -> None:
    operator = server.token("operator")
    with server.client(operator) as c:
        assert c.post("/api/v1/plans", json={"yaml": plan_yaml("limited")}).status_code == 201
        assert c.post("/api/v1/rollouts/limited/actions/start", json={}).status_code == 200
        assert c.post("/api/v1/rollouts/limited/actions/pause", json={}).status_code == 200

        refused = c.post("/api/v1/rollouts/limited/actions/resume", json={"reason": "go"})

        assert refused.status_code == 429
        body = refused.json()
        assert body["error"] == "rate_limited"
        assert isinstance(body["retry_after"], int) and body["retry_after"] >= 1
        assert refused.headers["retry-after"] == str(body["retry_after"])
        # The refused resume was not done: still paused, and no resume in the audit log.
        assert c.get("/api/v1/rollouts/limited").json()["status"] == "paused"
        actions = [
            e["action"]
            for e in c.get("/api/v1/audit", params={"rollout": "limited"}).json()["events"]
        ]
        assert "resume" not in actions

    # Another principal has a bucket of its own.
    with server.client() as admin:
        assert admin.post("/api/v1/plans", json={"yaml": plan_yaml("other")}).status_code == 201


def test_evaluations_and_reads_are_never_limited(server: Server) -> None:
    sdk = server.token("sdk")
    with server.client() as admin:
        assert admin.post("/api/v1/plans", json={"yaml": plan_yaml("busy")}).status_code == 201
        # Creating the sdk token and applying the plan took two of the burst.
        statuses = [admin.post("/api/v1/flags/busy/enable", json={}).status_code for _ in range(2)]
        assert statuses == [200, 429]
        for i in range(3 * BURST):
            assert admin.get("/api/v1/rollouts/busy").status_code == 200
            r = admin.post("/api/v1/evaluate/busy", json={"context": {"targetingKey": f"u{i}"}})
            assert r.status_code == 200
    with server.client(sdk) as c:
        for i in range(10 * BURST):
            r = c.post("/ofrep/v1/evaluate/flags/busy", json={"context": {"targetingKey": f"u{i}"}})
            assert r.status_code == 200, r.text


def test_requests_without_a_valid_token_are_limited_by_address(server: Server) -> None:
    with server.client(token="not-a-real-token") as c:
        answers = [
            c.post("/api/v1/plans", json={"yaml": "x"}).status_code for _ in range(BURST + 1)
        ]
    assert answers == [401] * BURST + [429]
    # The address's bucket is not any principal's.
    with server.client() as admin:
        assert admin.post("/api/v1/plans", json={"yaml": plan_yaml("fine")}).status_code == 201
