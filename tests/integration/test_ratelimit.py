"""Rate limiting of changes on a real server: a burst over the limit is refused with
429 and Retry-After, the refused change is not made, and evaluation is never limited."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from controller.ui.session import SESSION_COOKIE
from tests.serving import Server, plan_yaml, running_server
from tests.ui_sessions import ui_session

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


def test_ui_changes_count_against_the_person_not_the_address(server: Server) -> None:
    """Two people signed in to the UI from one address (one office proxy) each get their
    own bucket, as with API tokens; a made-up session cookie counts by address."""
    alice = ui_session(server.database_url, server.token("operator", "alice"))
    bob = ui_session(server.database_url, server.token("operator", "bob"))

    def ui_posts(session_id: str, count: int) -> list[int]:
        with httpx.Client(base_url=server.url, cookies={SESSION_COOKIE: session_id}) as c:
            # No CSRF token: the UI refuses these (403), but only after the limit counts.
            return [c.post("/ui/rollouts/none/actions/pause").status_code for _ in range(count)]

    first = ui_posts(alice, BURST + 1)
    assert first[-1] == 429 and 429 not in first[:-1], first
    assert 429 not in ui_posts(bob, BURST)  # bob's bucket is his own
    guessed = [ui_posts(secrets.token_urlsafe(32), 1)[0] for _ in range(BURST + 1)]
    assert guessed[-1] == 429, guessed  # new cookies each time: still one address
