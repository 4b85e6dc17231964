"""The REST API on a real server process over HTTP (SQLite)."""

from __future__ import annotations

import itertools

import httpx
import pytest

from tests.serving import Server, plan_yaml

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def apply(client: httpx.Client, text: str) -> httpx.Response:
    return client.post("/api/v1/plans", json={"yaml": text})


def audit_count(client: httpx.Client, rollout: str) -> int:
    return len(client.get("/api/v1/audit", params={"rollout": rollout}).json()["events"])


# -- plans -------------------------------------------------------------------------


def test_apply_creates_then_is_idempotent(server: Server) -> None:
    name = unique("idem")
    with server.client() as c:
        first = apply(c, plan_yaml(name))
        second = apply(c, plan_yaml(name))
        assert first.status_code == 201, first.text
        assert first.json()["outcome"] == "created"
        assert second.status_code == 200
        assert second.json()["outcome"] == "unchanged"
        rollout = c.get(f"/api/v1/rollouts/{name}").json()
        assert rollout["status"] == "pending"
        assert rollout["version"] == 1
        assert audit_count(c, name) == 2  # apply + flag.create, once each
        flag = c.get(f"/api/v1/flags/{name}").json()
        assert flag["variants"] == {"off": False, "on": True}
        assert flag["managed_by"] == name


def test_bad_plan_is_rejected_whole_with_each_field_named(server: Server) -> None:
    name = unique("bad")
    text = (
        f"rollout: {name}\nflag: {name}\nsteps:\n"
        "  - {stage: canary, percent: 10}\n"
        "  - {stage: canary, percent: 5}\n"
        "gates:\n"
        "  - {name: g, query: up, rolback_above: 1}\n"
    )
    with server.client() as c:
        r = apply(c, text)
        assert r.status_code == 422
        body = r.json()
        fields = {p["field"] for p in body["problems"]}
        assert "steps[1].percent" in fields
        assert any(f.startswith("gates[0]") for f in fields)
        assert all(p["line"] for p in body["problems"])
        # Nothing half-applied: neither the rollout nor its flag exists.
        assert c.get(f"/api/v1/rollouts/{name}").status_code == 404
        assert c.get(f"/api/v1/flags/{name}").status_code == 404


def test_plan_body_must_be_yaml_or_plan(server: Server) -> None:
    with server.client() as c:
        r = c.post("/api/v1/plans", json={})
        assert r.status_code == 422
        assert r.json()["error"] == "invalid"
        r = c.post("/api/v1/plans", json={"yaml": "x: [", "extra": 1})
        assert r.status_code == 422
        assert "body.extra" in {p["field"] for p in r.json()["problems"]}


def test_yaml_syntax_error_names_the_line(server: Server) -> None:
    with server.client() as c:
        r = apply(c, "rollout: x\nflag: x\nsteps: [\n")
        assert r.status_code == 422
        assert r.json()["problems"][0]["line"] is not None


def test_dry_run_changes_nothing(server: Server) -> None:
    name = unique("dry")
    with server.client() as c:
        r = c.post("/api/v1/plans", params={"dry_run": "true"}, json={"yaml": plan_yaml(name)})
        assert r.status_code == 200
        assert r.json()["outcome"] == "valid"
        assert c.get(f"/api/v1/rollouts/{name}").status_code == 404


def test_a_second_rollout_for_the_same_flag_is_refused(server: Server) -> None:
    name = unique("owner")
    with server.client() as c:
        assert apply(c, plan_yaml(name)).status_code == 201
        r = apply(c, plan_yaml(unique("intruder"), flag=name))
        assert r.status_code == 409
        assert name in r.json()["message"]


def test_updating_a_running_plan_may_not_move_the_served_step(server: Server) -> None:
    name = unique("live")
    with server.client() as c:
        apply(c, plan_yaml(name))
        c.post(f"/api/v1/rollouts/{name}/actions/start", json={})
        c.post(f"/api/v1/rollouts/{name}/actions/advance", json={})  # canary 5 %
        moved = plan_yaml(name, steps="  - {stage: shadow}\n  - {stage: canary, percent: 7}\n")
        r = apply(c, moved)
        assert r.status_code == 409
        assert c.get(f"/api/v1/rollouts/{name}").json()["serving"]["percent"] == 5
        # Changing what is not served yet is fine.
        longer = plan_yaml(
            name,
            steps="  - {stage: shadow, hold: 1h}\n  - {stage: canary, percent: 5, hold: 2h}\n"
            "  - {stage: full}\n",
        )
        r = apply(c, longer)
        assert r.status_code == 200, r.text
        assert r.json()["outcome"] == "updated"
        assert r.json()["rollout"]["step"] == 1


# -- actions and compare-and-swap -----------------------------------------------------


def test_stale_version_gets_409_and_changes_nothing(server: Server) -> None:
    name = unique("cas")
    with server.client() as c:
        apply(c, plan_yaml(name))
        started = c.post(f"/api/v1/rollouts/{name}/actions/start", json={"version": 1})
        assert started.status_code == 200, started.text
        assert started.json()["version"] == 2
        events_before = audit_count(c, name)

        stale = c.post(
            f"/api/v1/rollouts/{name}/actions/pause", json={"version": 1, "reason": "stale"}
        )
        assert stale.status_code == 409
        assert stale.json()["error"] == "version_conflict"
        assert stale.json()["current_version"] == 2

        after = c.get(f"/api/v1/rollouts/{name}").json()
        assert after["status"] == "running"
        assert after["version"] == 2
        assert audit_count(c, name) == events_before


def test_refused_action_says_why_and_changes_nothing(server: Server) -> None:
    name = unique("refuse")
    with server.client() as c:
        apply(c, plan_yaml(name))
        r = c.post(f"/api/v1/rollouts/{name}/actions/resume", json={})
        assert r.status_code == 409
        assert r.json()["error"] == "action_refused"
        assert "pending" in r.json()["message"]
        assert c.get(f"/api/v1/rollouts/{name}").json()["version"] == 1


def test_actions_walk_a_rollout_and_are_audited(server: Server) -> None:
    name = unique("walk")
    with server.client() as c:
        apply(c, plan_yaml(name))
        for action, body, status, step in [
            ("start", {}, "running", 0),
            ("advance", {"reason": "shadow clean"}, "running", 1),
            ("pause", {"reason": "looking at p99"}, "paused", 1),
            ("resume", {}, "running", 1),
            ("advance", {}, "running", 2),
            ("advance", {}, "running", 3),
            ("advance", {}, "awaiting_approval", 3),
            ("approve", {"reason": "CAB ok"}, "running", 4),
            ("rollback", {"reason": "bug"}, "rolling_back", 3),
            ("rollback", {"immediate": True}, "rolled_back", 0),
            ("retry", {}, "running", 0),
            ("abort", {"reason": "done testing"}, "aborted", 0),
        ]:
            r = c.post(f"/api/v1/rollouts/{name}/actions/{action}", json=body)
            assert r.status_code == 200, (action, r.text)
            assert (r.json()["status"], r.json()["step"]) == (status, step), action
        events = c.get("/api/v1/audit", params={"rollout": name}).json()["events"]
        pause = next(e for e in events if e["action"] == "pause")
        assert pause["reason"] == "looking at p99"
        assert pause["actor"] == "bootstrap-admin (admin)"
        assert (pause["from_status"], pause["to_status"]) == ("running", "paused")


def test_unknown_action_and_bad_body_name_the_field(server: Server) -> None:
    name = unique("body")
    with server.client() as c:
        apply(c, plan_yaml(name))
        r = c.post(f"/api/v1/rollouts/{name}/actions/explode", json={})
        assert r.status_code == 422
        assert any(p["field"] == "path.action" for p in r.json()["problems"])
        r = c.post(f"/api/v1/rollouts/{name}/actions/start", json={"forse": True})
        assert r.status_code == 422
        assert "body.forse" in {p["field"] for p in r.json()["problems"]}
        r = c.post(f"/api/v1/rollouts/{name}/actions/start", json={"version": "two"})
        assert r.status_code == 422
        assert "body.version" in {p["field"] for p in r.json()["problems"]}
        r = c.post(
            f"/api/v1/rollouts/{name}/actions/start",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422
        assert c.get(f"/api/v1/rollouts/{name}").json()["status"] == "pending"


def test_missing_rollout_is_404(server: Server) -> None:
    with server.client() as c:
        r = c.post("/api/v1/rollouts/nope/actions/start", json={})
        assert r.status_code == 404
        assert r.json()["error"] == "not_found"


# -- flags ---------------------------------------------------------------------------


def test_flag_put_validates_every_field_and_cas(server: Server) -> None:
    key = unique("checkout")
    good = {
        "type": "string",
        "variants": {"a": "blue", "b": "green"},
        "default_variant": "a",
        "rules": [
            {"when": [{"attribute": "country", "op": "in", "values": ["NL"]}], "variant": "b"}
        ],
    }
    with server.client() as c:
        bad = {**good, "default_variant": "zzz", "variants": {"a": 1, "b": "green"}}
        r = c.put(f"/api/v1/flags/{key}", json=bad)
        assert r.status_code == 422
        fields = {p["field"] for p in r.json()["problems"]}
        assert {"default_variant", "variants.a"} <= fields
        assert c.get(f"/api/v1/flags/{key}").status_code == 404

        created = c.put(f"/api/v1/flags/{key}", json=good)
        assert created.status_code == 201
        assert created.json()["flag"]["version"] == 1

        no_version = c.put(f"/api/v1/flags/{key}", json={**good, "default_variant": "b"})
        assert no_version.status_code == 422
        stale = c.put(f"/api/v1/flags/{key}", json={**good, "default_variant": "b", "version": 0})
        assert stale.status_code == 409
        ok = c.put(f"/api/v1/flags/{key}", json={**good, "default_variant": "b", "version": 1})
        assert ok.status_code == 200
        assert c.get(f"/api/v1/flags/{key}").json()["default_variant"] == "b"


def test_kill_switch_serves_default_to_everyone(server: Server) -> None:
    name = unique("kill")
    with server.client() as c:
        apply(c, plan_yaml(name))
        c.post(f"/api/v1/rollouts/{name}/actions/start", json={})
        for _ in range(3):
            c.post(f"/api/v1/rollouts/{name}/actions/advance", json={})  # regional + 50 %
        on = [
            c.get(f"/api/v1/evaluate/{name}", params={"targetingKey": f"u{i}"}).json()["value"]
            for i in range(40)
        ]
        assert any(on)
        r = c.post(f"/api/v1/flags/{name}/disable", json={"reason": "incident 42"})
        assert r.status_code == 200
        for i in range(40):
            e = c.get(f"/api/v1/evaluate/{name}", params={"targetingKey": f"u{i}"}).json()
            assert (e["value"], e["reason"]) == (False, "DISABLED")


# -- auth ----------------------------------------------------------------------------


MUTATIONS = [
    ("post", "/api/v1/plans", {"yaml": "rollout: x\nflag: x\nsteps: [{stage: full}]\n"}),
    ("post", "/api/v1/rollouts/x/actions/pause", {}),
    ("put", "/api/v1/flags/x", {"type": "boolean"}),
    ("post", "/api/v1/flags/x/disable", {}),
    ("delete", "/api/v1/flags/x", None),
    ("delete", "/api/v1/rollouts/x", None),
    ("post", "/api/v1/tokens", {"name": "x", "role": "admin"}),
]


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
def test_mutation_without_token_is_401(
    server: Server, method: str, path: str, body: object
) -> None:
    with server.client(token=None) as c:
        r = c.request(method, path, json=body)
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
def test_viewer_and_sdk_may_not_mutate(
    server: Server, method: str, path: str, body: object
) -> None:
    for role in ("viewer", "sdk"):
        with server.client(token=server.token(role)) as c:
            r = c.request(method, path, json=body)
            assert r.status_code == 403, (role, r.text)
            assert r.json()["error"] == "forbidden"


def test_roles_read_and_evaluate_as_documented(server: Server) -> None:
    viewer, sdk, operator = server.token("viewer"), server.token("sdk"), server.token("operator")
    with server.client(token=viewer) as c:
        assert c.get("/api/v1/rollouts").status_code == 200
        assert c.get("/api/v1/tokens").status_code == 403
    with server.client(token=sdk) as c:
        assert c.get("/api/v1/rollouts").status_code == 403
        assert c.post("/ofrep/v1/evaluate/flags", json={}).status_code == 200
    with server.client(token=operator) as c:
        assert c.post("/api/v1/tokens", json={"name": "x", "role": "admin"}).status_code == 403
    with server.client(token="not-a-token") as c:
        assert c.get("/api/v1/rollouts").status_code == 401
        assert c.post("/ofrep/v1/evaluate/flags", json={}).status_code == 401
    with server.client(token=None) as c:
        assert c.get("/api/v1/evaluate/anything", params={"targetingKey": "u"}).status_code == 401
        assert c.get("/healthz").status_code == 200


def test_revoked_token_is_refused_at_once(server: Server) -> None:
    with server.client() as admin:
        created = admin.post("/api/v1/tokens", json={"name": "temp", "role": "viewer"}).json()
        with server.client(token=created["token"]) as c:
            assert c.get("/api/v1/rollouts").status_code == 200
            assert admin.delete(f"/api/v1/tokens/{created['id']}").status_code == 200
            assert c.get("/api/v1/rollouts").status_code == 401
        listed = admin.get("/api/v1/tokens").json()["tokens"]
        assert all("token" not in t and "token_hash" not in t for t in listed)


def test_oversized_body_is_413(server: Server) -> None:
    with server.client() as c:
        r = c.post("/api/v1/plans", json={"yaml": "#" * 2_000_000})
        assert r.status_code == 413
        assert r.json()["problems"][0]["field"] == "body"


def test_health_and_readiness(server: Server) -> None:
    with server.client(token=None) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["database"]["ok"] is True
