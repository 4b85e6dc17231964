"""Evaluation over HTTP: native and OFREP endpoints, and the CLI, agree per user."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from flags.bucketing import bucket
from tests.serving import Server, plan_yaml

USERS = [f"user-{i:04d}" for i in range(300)]


@pytest.fixture(scope="module")
def canary(server: Server) -> str:
    """A rollout at canary 5 % with a region released later in the plan."""
    name = "eval-canary"
    with server.client() as c:
        assert c.post("/api/v1/plans", json={"yaml": plan_yaml(name)}).status_code == 201
        c.post(f"/api/v1/rollouts/{name}/actions/start", json={})
        r = c.post(f"/api/v1/rollouts/{name}/actions/advance", json={})
        assert r.json()["serving"]["percent"] == 5
    return name


def test_native_get_and_post_and_ofrep_agree_for_every_user(server: Server, canary: str) -> None:
    sdk = server.token("sdk")
    with server.client(token=sdk) as c:
        for user in USERS:
            got = c.get(f"/api/v1/evaluate/{canary}", params={"targetingKey": user}).json()
            posted = c.post(
                f"/api/v1/evaluate/{canary}", json={"context": {"targetingKey": user}}
            ).json()
            ofrep = c.post(
                f"/ofrep/v1/evaluate/flags/{canary}", json={"context": {"targetingKey": user}}
            ).json()
            bulk = c.post("/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": user}})
            in_bulk = next(f for f in bulk.json()["flags"] if f["key"] == canary)
            expected = bucket(canary, user) < 500  # 5 % in hundredths of a percent
            answers = {
                (a["value"], a["variant"], a["reason"]) for a in (got, posted, ofrep, in_bulk)
            }
            assert answers == {(expected, "on" if expected else "off", "SPLIT")}, user


def test_cli_eval_agrees_with_the_server(server: Server, canary: str) -> None:
    for user in USERS[:15]:
        out = subprocess.run(
            [sys.executable, "-m", "controller", "eval", canary, "--key", user, "--json"],
            env=server.cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        cli = json.loads(out.stdout)
        with server.client() as c:
            http = c.get(f"/api/v1/evaluate/{canary}", params={"targetingKey": user}).json()
        assert (cli["value"], cli["variant"], cli["reason"]) == (
            http["value"],
            http["variant"],
            http["reason"],
        )


def test_native_answer_carries_rollout_metadata(server: Server, canary: str) -> None:
    with server.client() as c:
        e = c.get(f"/api/v1/evaluate/{canary}", params={"targetingKey": "u1"}).json()
        assert e["rollout"]["name"] == canary
        assert (e["rollout"]["stage"], e["rollout"]["percent"], e["rollout"]["shadow"]) == (
            "canary",
            5,
            True,
        )
        ofrep = c.post(
            f"/ofrep/v1/evaluate/flags/{canary}", json={"context": {"targetingKey": "u1"}}
        )
        meta = ofrep.json()["metadata"]
        assert (meta["stage"], meta["percent"], meta["shadow"]) == ("canary", 5, True)
        assert all(isinstance(v, (str, int, float, bool)) for v in meta.values())


def test_missing_targeting_key_gets_the_old_side_not_an_error(server: Server, canary: str) -> None:
    with server.client() as c:
        native = c.get(f"/api/v1/evaluate/{canary}")
        assert native.status_code == 200
        assert native.json()["value"] is False
        assert native.json()["reason"] == "DEFAULT"
        assert native.json()["errorCode"] == "TARGETING_KEY_MISSING"
        ofrep = c.post(f"/ofrep/v1/evaluate/flags/{canary}", json={})
        assert ofrep.status_code == 200
        assert (ofrep.json()["value"], ofrep.json()["reason"]) == (False, "DEFAULT")


def test_ofrep_accepts_a_body_without_context_and_no_body(server: Server, canary: str) -> None:
    with server.client() as c:
        assert c.post(f"/ofrep/v1/evaluate/flags/{canary}", json={}).status_code == 200
        assert c.post(f"/ofrep/v1/evaluate/flags/{canary}").status_code == 200
        assert c.post("/ofrep/v1/evaluate/flags").status_code == 200


def test_ofrep_errors_follow_the_spec(server: Server, canary: str) -> None:
    with server.client() as c:
        missing = c.post("/ofrep/v1/evaluate/flags/no-such-flag", json={"context": {}})
        assert missing.status_code == 404
        assert missing.json() == {
            "key": "no-such-flag",
            "errorCode": "FLAG_NOT_FOUND",
            "errorDetails": missing.json()["errorDetails"],
        }
        bad_context = c.post(f"/ofrep/v1/evaluate/flags/{canary}", json={"context": [1, 2]})
        assert bad_context.status_code == 400
        assert bad_context.json()["errorCode"] == "INVALID_CONTEXT"
        bad_key = c.post(
            f"/ofrep/v1/evaluate/flags/{canary}", json={"context": {"targetingKey": 7}}
        )
        assert bad_key.status_code == 400
        assert bad_key.json()["errorCode"] == "INVALID_CONTEXT"
        not_json = c.post(
            f"/ofrep/v1/evaluate/flags/{canary}",
            content=b"{oops",
            headers={"content-type": "application/json"},
        )
        assert not_json.status_code == 400
        assert not_json.json()["errorCode"] == "PARSE_ERROR"


def test_ofrep_bulk_etag_covers_revision_and_context(server: Server, canary: str) -> None:
    with server.client() as c:
        ctx = {"context": {"targetingKey": "user-0001"}}
        first = c.post("/ofrep/v1/evaluate/flags", json=ctx)
        etag = first.headers["etag"]
        same = c.post("/ofrep/v1/evaluate/flags", json=ctx, headers={"If-None-Match": etag})
        assert same.status_code == 304
        other = c.post(
            "/ofrep/v1/evaluate/flags",
            json={"context": {"targetingKey": "user-0002"}},
            headers={"If-None-Match": etag},
        )
        assert other.status_code == 200
        assert other.headers["etag"] != etag
        # A change to any flag changes the revision, so the old ETag no longer matches.
        c.put(
            "/api/v1/flags/etag-bump",
            json={
                "type": "boolean",
                "variants": {"off": False, "on": True},
                "default_variant": "off",
            },
        )
        after = c.post("/ofrep/v1/evaluate/flags", json=ctx, headers={"If-None-Match": etag})
        assert after.status_code == 200
        assert after.headers["etag"] != etag


def test_snapshot_endpoint_supports_etag(server: Server, canary: str) -> None:
    with server.client(token=server.token("sdk")) as c:
        first = c.get("/api/v1/snapshot")
        assert first.status_code == 200
        assert canary in first.json()["flags"]
        again = c.get("/api/v1/snapshot", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304


def test_regional_step_releases_region_and_keeps_percent(server: Server) -> None:
    name = "eval-regional"
    with server.client() as c:
        c.post("/api/v1/plans", json={"yaml": plan_yaml(name)})
        c.post(f"/api/v1/rollouts/{name}/actions/start", json={})
        for _ in range(3):
            c.post(f"/api/v1/rollouts/{name}/actions/advance", json={})
        pilot = [
            c.get(
                f"/api/v1/evaluate/{name}", params={"targetingKey": u, "region": "us-west-1"}
            ).json()
            for u in USERS[:50]
        ]
        assert {(e["value"], e["reason"]) for e in pilot} == {(True, "TARGETING_MATCH")}
        elsewhere = [
            c.get(
                f"/api/v1/evaluate/{name}", params={"targetingKey": u, "region": "eu-west-1"}
            ).json()
            for u in USERS
        ]
        expected = [bucket(name, u) < 5000 for u in USERS]
        assert [e["value"] for e in elsewhere] == expected


def test_evaluation_needs_a_token(server: Server, canary: str) -> None:
    with httpx.Client(base_url=server.url) as c:
        assert c.post(f"/ofrep/v1/evaluate/flags/{canary}", json={}).status_code == 401
