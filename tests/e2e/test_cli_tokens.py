"""Tokens through the CLI and the API of a real server: --expires, unique names,
the last-used time in ``rollout token list``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.serving import Server, running_server
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("cli-tokens")) as s:
        yield s


def rollout(
    server: Server, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = server.cli_env() if token is None else server.cli_env(token)
    result = subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def listed(server: Server, name: str) -> dict[str, object]:
    tokens = json.loads(rollout(server, "token", "list", "--json").stdout)
    [token] = [t for t in tokens if t["name"] == name and t["revoked_at"] is None]
    return dict(token)


def test_create_with_expiry_and_see_it_listed(server: Server) -> None:
    made = rollout(server, "token", "create", "ci-bot", "--role", "viewer", "--expires", "90d")
    assert made.returncode == 0, made.stderr
    headline, secret = made.stdout.strip().splitlines()
    assert "(viewer) for ci-bot, expires 20" in headline
    token = listed(server, "ci-bot")
    expires = datetime.fromisoformat(str(token["expires_at"]))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    assert token["expired"] is False and token["last_used_at"] is None
    table = rollout(server, "token", "list").stdout
    assert "EXPIRES" in table and "LAST USED" in table
    [row] = [line for line in table.splitlines() if " ci-bot " in line]
    assert "never" in row  # not used yet

    assert rollout(server, "status", token=secret).returncode == 0
    used = listed(server, "ci-bot")["last_used_at"]
    assert used is not None
    assert datetime.now(UTC) - datetime.fromisoformat(str(used)) < timedelta(minutes=5)
    [row] = [
        line for line in rollout(server, "token", "list").stdout.splitlines() if " ci-bot " in line
    ]
    assert "never" not in row


def test_an_expired_token_is_refused_with_401_saying_so(server: Server) -> None:
    made = rollout(server, "token", "create", "brief", "--role", "viewer", "--expires", "1s")
    secret = made.stdout.strip().splitlines()[-1]

    def refused() -> bool:
        return rollout(server, "status", token=secret).returncode == 1

    wait_until(refused, 30, "the 1s token to expire")
    result = rollout(server, "status", token=secret)
    assert "error (401)" in result.stderr and "expired at" in result.stderr
    with server.client(secret) as c:
        answer = c.get("/api/v1/rollouts")
        assert answer.status_code == 401
        assert "expired" in answer.json()["message"]
        # Evaluation (the fast path, which caches principals) refuses it too.
        assert c.post("/api/v1/evaluate/anything", json={}).status_code == 401
    assert listed(server, "brief")["expired"] is True
    assert "(EXPIRED)" in rollout(server, "token", "list").stdout


def test_a_second_token_with_the_same_name_is_refused_with_409(server: Server) -> None:
    first = rollout(server, "token", "create", "deploy", "--role", "operator")
    assert first.returncode == 0
    again = rollout(server, "token", "create", "deploy", "--role", "admin")
    assert again.returncode == 1
    assert "error (409): a token named 'deploy' already exists" in again.stderr
    assert "  - name: taken by live token" in again.stderr
    with server.client() as c:
        answer = c.post("/api/v1/tokens", json={"name": "deploy", "role": "viewer"})
        assert answer.status_code == 409
        body = answer.json()
        assert body["error"] == "already_exists"
        assert [p["field"] for p in body["problems"]] == ["name"]
        roles = [
            t["role"] for t in c.get("/api/v1/tokens").json()["tokens"] if t["name"] == "deploy"
        ]
        assert roles == ["operator"]  # nothing half-written
        token_id = str(listed(server, "deploy")["id"])
        assert c.delete(f"/api/v1/tokens/{token_id}").status_code == 200
    # Revoked: the name is free for the replacement.
    assert rollout(server, "token", "create", "deploy", "--role", "operator").returncode == 0


@pytest.mark.parametrize(
    ("expires", "message"),
    [("soon", "not a duration"), ("0s", "more than 0s"), ("99999d", "at most 3650d")],
)
def test_a_bad_expiry_is_a_422_naming_the_field(server: Server, expires: str, message: str) -> None:
    result = rollout(
        server, "token", "create", f"bad-{expires}", "--role", "viewer", "--expires", expires
    )
    assert result.returncode == 1
    assert "error (422)" in result.stderr
    assert "body.expires" in result.stderr and message in result.stderr
    assert all(
        t["name"] != f"bad-{expires}"
        for t in json.loads(rollout(server, "token", "list", "--json").stdout)
    )
