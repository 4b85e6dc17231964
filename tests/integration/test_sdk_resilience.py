"""The SDK against a real ``rollout serve`` that stops and comes back: it keeps
answering from its snapshot, picks a change up within its poll interval once the
server is back, starts from a bootstrap file while the server is down, and its
batched counts and impressions reach the controller."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from flags.model import EvaluationContext, Reason
from flags.sdk.client import FlagClient, Source
from flags.sdk.reporting import hash_targeting_key
from tests.serving import Server, free_port, running_server

POLL = 1.0  # seconds: the SDK's poll interval in these tests
FLAG = "resilient"
USER = EvaluationContext("user-7")


def define(server: Server, default_variant: str) -> None:
    """Create the flag, or replace it at the version it has now."""
    body: dict[str, object] = {
        "key": FLAG,
        "type": "string",
        "variants": {"old": "old-side", "new": "new-side"},
        "default_variant": default_variant,
    }
    with server.client() as c:
        current = c.get(f"/api/v1/flags/{FLAG}")
        if current.status_code == 200:
            body["version"] = current.json()["version"]
        r = c.put(f"/api/v1/flags/{FLAG}", json=body)
        assert r.status_code in (200, 201), r.text


def eventually(check: Callable[[], bool], within: float) -> float:
    """Seconds until ``check`` held; fails the test past ``within``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            pytest.fail(f"not within {within}s")
        time.sleep(0.02)
    return time.monotonic() - start


def test_keeps_answering_while_the_server_is_down_and_picks_up_a_change_when_back(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path / 'rollout.db'}"
    port = free_port()
    with running_server(tmp_path, database_url=database, port=port) as server:
        define(server, "old")
        token = server.token("sdk")
    # The server is down before the client starts: it answers from nothing, then ...
    client = FlagClient(server.url, token, poll_interval=POLL, timeout=1.0)
    try:
        assert not client.wait_until_ready(0.5)
        assert client.string_value(FLAG, "caller-default", USER) == "caller-default"
        with running_server(tmp_path, database_url=database, port=port):
            assert client.wait_until_ready(POLL + 5)
            assert client.string_value(FLAG, "caller-default", USER) == "old-side"
        # ... stopped: the last snapshot keeps answering, marked stale.
        eventually(lambda: client.status.stale, within=POLL + 5)
        answer = client.evaluate(FLAG, USER)
        assert (answer.value, answer.variant, answer.reason) == ("old-side", "old", Reason.STATIC)
        # Changed on the same database while this client's server was down.
        with running_server(tmp_path, database_url=database) as other:
            define(other, "new")
        assert client.string_value(FLAG, "caller-default", USER) == "old-side"
        with running_server(tmp_path, database_url=database, port=port):
            took = eventually(
                lambda: client.string_value(FLAG, "", USER) == "new-side", within=POLL + 2
            )
            print(f"change picked up {took:.2f}s after the server was back (poll {POLL}s)")
            assert not client.status.stale
    finally:
        client.close(timeout=2)


def test_starts_from_a_bootstrap_file_while_the_server_is_down(
    tmp_path: Path, server: Server
) -> None:
    define(server, "new")
    token = server.token("sdk")
    bootstrap = tmp_path / "flags.json"
    with server.client(token) as c:
        bootstrap.write_bytes(c.get("/api/v1/snapshot").content)
    nobody = f"http://127.0.0.1:{free_port()}"
    with FlagClient(nobody, token, bootstrap_path=bootstrap, timeout=0.5) as client:
        assert client.wait_until_ready(5)
        assert client.status.source is Source.BOOTSTRAP
        assert client.string_value(FLAG, "caller-default", USER) == "new-side"


def test_the_cache_file_lets_the_next_start_answer_without_the_server(
    tmp_path: Path, server: Server
) -> None:
    define(server, "new")
    token = server.token("sdk")
    cache = tmp_path / "cache.json"
    with FlagClient(server.url, token, cache_path=cache) as client:
        assert client.wait_until_ready(5)
    assert json.loads(cache.read_text())["flags"][FLAG]["default_variant"] == "new"
    nobody = f"http://127.0.0.1:{free_port()}"
    with FlagClient(nobody, token, cache_path=cache, timeout=0.5) as restarted:
        assert restarted.status.source is Source.CACHE
        assert restarted.string_value(FLAG, "caller-default", USER) == "new-side"


def metric(server: Server, flag: str, variant: str) -> float:
    with server.client() as c:
        text = c.get("/metrics").text
    prefix = f'rollout_flag_evaluations_total{{flag="{flag}",variant="{variant}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


def test_batched_counts_and_impressions_reach_the_controller(server: Server) -> None:
    define(server, "new")
    token = server.token("sdk")
    before = metric(server, FLAG, "new")
    with FlagClient(server.url, token, flush_interval=0.2, impression_rate=1.0) as client:
        assert client.wait_until_ready(5)
        for i in range(25):
            client.evaluate(FLAG, EvaluationContext(f"reporter-{i}"))
        client.evaluate("no-such-flag", USER)
        # /metrics and the flags page read the same counts.
        eventually(lambda: metric(server, FLAG, "new") == before + 25, within=5)
    with server.client() as c:
        page = c.get(f"/api/v1/flags/{FLAG}/impressions").json()
    hashes = {hash_targeting_key(f"reporter-{i}") for i in range(25)}
    recent = page["impressions"]
    assert {i["key_hash"] for i in recent} >= hashes
    assert all(i["variant"] == "new" for i in recent)
    assert "reporter-" not in json.dumps(page)
    assert metric(server, "no-such-flag", "(none)") == 0  # unknown flags are not taken


def test_report_validation_and_roles(server: Server) -> None:
    define(server, "new")
    sdk = server.token("sdk")
    with server.client(sdk) as c:
        bad = c.post(
            "/api/v1/evaluations/report",
            json={
                "counts": [{"flag": FLAG, "variant": "new", "count": 0}],
                "impressions": [{"flag": FLAG, "variant": "new", "key_hash": "KEY", "at": 1}],
            },
        )
        assert bad.status_code == 422
        fields = {p["field"] for p in bad.json()["problems"]}
        assert fields == {"body.counts.0.count", "body.impressions.0.key_hash"}
        too_many = [{"flag": FLAG, "variant": "new", "count": 1}] * 1001
        assert c.post("/api/v1/evaluations/report", json={"counts": too_many}).status_code == 422
        ok = c.post(
            "/api/v1/evaluations/report",
            json={"counts": [{"flag": FLAG, "variant": "gone", "count": 2}], "sdk_version": "9"},
        )
        assert ok.status_code == 202
        assert ok.json()["counts"] == {"accepted": 0, "ignored": 1}
        assert c.get(f"/api/v1/flags/{FLAG}/impressions").status_code == 403
    anonymous = httpx.post(f"{server.url}/api/v1/evaluations/report", json={}, timeout=5)
    assert anonymous.status_code == 401
    with server.client() as c:
        assert c.get("/api/v1/flags/no-such-flag/impressions").status_code == 404
