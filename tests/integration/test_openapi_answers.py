"""What ``/openapi.json`` says the REST API answers, held against what it answers.

Every operation under /api/v1 documents its 2xx body with a schema of its own
(controller/api/answers.py), not an empty or "any object" one. The answers of a real
server, seeded with a gated rollout, a flag, tokens, a webhook delivery, gate history and
impressions, validate against those models' JSON schemas, use no key that a model does
not declare (FastAPI drops such a key), and equal what the use cases build from the same
database: the response models dropped nothing and changed no value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jsonschema_rs
import pytest
from pydantic import BaseModel, SecretStr

from controller.api import answers
from controller.gates import history as gate_history
from controller.http.app import build_runtime
from controller.runtime import Runtime
from controller.settings import Settings
from stages.state import GateReading, Outcome
from tests.serving import ADMIN_TOKEN, Server, running_server

ROLLOUT = "answers-gated"
FLAG = "answers-flag"
GATED_PLAN = f"""\
rollout: {ROLLOUT}
flag: {ROLLOUT}
interval: 1m
steps:
  - {{stage: canary, percent: 5, hold: 1h}}
  - {{stage: full, approval: true}}
gates:
  - {{name: errors, query: "sum(rate(errors_total[5m]))", rollback_above: 1}}
"""
# Seconds since an instant: they move between two reads of the same row.
MOVING = {"seconds_in_step", "seconds_until_may_advance"}

# The answer model of each operation. Writing the table is the point: a new route
# fails test_every_operation_documents_its_answer until it has a model here.
ANSWERS: dict[tuple[str, str], tuple[type[BaseModel], ...]] = {
    ("post", "/api/v1/plans"): (answers.ApplyAnswer, answers.DryRunAnswer),
    ("post", "/api/v1/plans/diff"): (answers.PlanDiffAnswer,),
    ("get", "/api/v1/rollouts/{name}/plans"): (answers.PlanRevisions,),
    ("get", "/api/v1/rollouts/{name}/plans/{revision}"): (answers.PlanRevisionDetail,),
    ("get", "/api/v1/rollouts"): (answers.RolloutList,),
    ("get", "/api/v1/rollouts/{name}"): (answers.RolloutAnswer,),
    ("post", "/api/v1/rollouts/{name}/actions/{action}"): (answers.RolloutAnswer,),
    ("get", "/api/v1/audit"): (answers.AuditEvents,),
    ("get", "/api/v1/audit/verify"): (answers.VerifyAnswer,),
    ("get", "/api/v1/rollouts/{name}/gates"): (answers.GateEvaluations,),
    ("post", "/api/v1/rollouts/{name}/gates/test"): (answers.RolloutGateTest,),
    ("post", "/api/v1/gates/test"): (answers.GateTest,),
    ("get", "/api/v1/flags"): (answers.FlagList,),
    ("get", "/api/v1/flags/{key}"): (answers.FlagAnswer,),
    ("put", "/api/v1/flags/{key}"): (answers.PutFlagAnswer,),
    ("post", "/api/v1/flags/{key}/enable"): (answers.FlagAnswer,),
    ("post", "/api/v1/flags/{key}/disable"): (answers.FlagAnswer,),
    ("get", "/api/v1/flags/{key}/impressions"): (answers.FlagImpressions,),
    ("post", "/api/v1/evaluations/report"): (answers.ReportAnswer,),
    ("get", "/api/v1/tokens"): (answers.TokenList,),
    ("post", "/api/v1/tokens"): (answers.CreatedToken,),
    ("delete", "/api/v1/tokens/{token_id}"): (answers.TokenAnswer,),
    ("get", "/api/v1/webhooks/deliveries"): (answers.DeliveryList,),
    ("post", "/api/v1/webhooks/deliveries/{delivery}/retry"): (answers.DeliveryAnswer,),
    ("get", "/api/v1/evaluate/{key}"): (answers.EvaluationAnswer,),
    ("post", "/api/v1/evaluate/{key}"): (answers.EvaluationAnswer,),
    ("get", "/api/v1/snapshot"): (answers.SnapshotAnswer,),
    # 204 No Content: no body to describe.
    ("delete", "/api/v1/flags/{key}"): (),
    ("delete", "/api/v1/rollouts/{name}"): (),
}
# Operations still without a documented answer or error body. Empty: kept so that a new
# route without them fails the tests below with its name.
NOT_YET_DECLARED: set[tuple[str, str]] = set()
# Answered from the in-memory snapshot and token registry, never the database: no 503.
MEMORY_ONLY = {
    ("get", "/api/v1/evaluate/{key}"),
    ("post", "/api/v1/evaluate/{key}"),
    ("get", "/api/v1/snapshot"),
}


@dataclass
class Seeded:
    server: Server
    runtime: Runtime  # the use cases, in this process, on the server's database
    document: dict[str, Any]
    revoked_token: dict[str, Any]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    workdir = tmp_path_factory.mktemp("answers")
    # A receiver that is not there: the delivery stays pending with its last error.
    hooks = [{"name": "ops", "url": "http://127.0.0.1:9/hook", "format": "json"}]
    env = {"ROLLOUT_WEBHOOKS": json.dumps(hooks), "ROLLOUT_WEBHOOK_POLL": "60"}
    with running_server(workdir, extra_env=env) as server, server.client() as c:
        ok(c.post("/api/v1/plans", json={"yaml": GATED_PLAN}), 201)
        ok(c.post(f"/api/v1/rollouts/{ROLLOUT}/actions/start", json={"reason": "seed"}))
        ok(c.put(f"/api/v1/flags/{FLAG}", json=plain_flag()), 201)
        spare = ok(c.post("/api/v1/tokens", json={"name": "spare", "role": "viewer"}), 201)
        revoked = ok(c.delete(f"/api/v1/tokens/{spare['id']}"))
        runtime = build_runtime(
            Settings(
                database_url=server.database_url,
                admin_token=SecretStr(ADMIN_TOKEN),
                scheduler=False,
            )
        )
        try:
            store_gate_history(runtime)
            yield Seeded(server, runtime, ok(c.get("/openapi.json")), revoked)
        finally:
            runtime.store.dispose()


def plain_flag() -> dict[str, Any]:
    return {
        "type": "string",
        "variants": {"old": "old-side", "new": "new-side"},
        "default_variant": "old",
        "rules": [{"when": [], "split": {"new": 50, "old": 50}}],
    }


def store_gate_history(runtime: Runtime) -> None:
    """Gate evaluations as the scheduler writes them: one infinite (written as text)."""
    now = datetime.now(UTC)
    readings = [
        GateReading("errors", Outcome.OK, now - timedelta(minutes=2), "q", 0.25, None, 12.0),
        GateReading("errors", Outcome.HOLD, now - timedelta(minutes=1), "q", float("inf")),
        GateReading("errors", Outcome.ERROR, now, "q", error="ConnectError", duration_ms=3.5),
    ]
    with runtime.store.write() as session:
        session.add_all(gate_history.rows_for(ROLLOUT, 0, readings))


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


# -- the document ------------------------------------------------------------------


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, items in document["paths"].items():
        if path.startswith("/api/v1/"):
            for method, operation in items.items():
                yield method, path, operation


def answer_schemas(operation: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON schemas of the operation's 2xx bodies (204 has none)."""
    found = []
    for status, response in operation["responses"].items():
        if status.startswith("2") and status != "204":
            found.append(response.get("content", {}).get("application/json", {}).get("schema"))
    return found


def refs(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        own = {schema["$ref"].rsplit("/", 1)[-1]} if "$ref" in schema else set()
        return own.union(*(refs(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(refs(v) for v in schema))
    return set()


def test_every_operation_documents_its_answer(seeded: Seeded) -> None:
    undeclared: set[tuple[str, str]] = set()
    for method, path, operation in operations(seeded.document):
        op = (method, path)
        assert op in ANSWERS, f"{method.upper()} {path}: no answer model in this test's table"
        schemas = answer_schemas(operation)
        if not ANSWERS[op]:
            assert not schemas and "204" in operation["responses"], op
            continue
        if all(s == {} or refs(s) == set() for s in schemas):  # {} or "any object"
            undeclared.add(op)
            continue
        # Each 2xx body names some of the models (201 created, 200 one of two), all of them.
        named = [refs(s) for s in schemas]
        assert set().union(*named) == {m.__name__ for m in ANSWERS[op]}, (op, schemas)
        assert all(named), (op, schemas)
    assert undeclared == NOT_YET_DECLARED


def test_error_bodies_are_documented_with_the_field_they_name(seeded: Seeded) -> None:
    schemas = seeded.document["components"]["schemas"]
    problem = schemas["Problem"]
    assert {"field", "message"} <= set(problem["required"])
    undeclared: set[tuple[str, str]] = set()
    for method, path, operation in operations(seeded.document):
        documented = {
            status: refs(r.get("content", {}).get("application/json", {}).get("schema"))
            for status, r in operation["responses"].items()
            if status[0] in "45"
        }
        expected = {"401", "403"} if (method, path) in MEMORY_ONLY else {"401", "403", "422", "503"}
        if not expected <= set(documented):
            undeclared.add((method, path))
            continue
        # A 404 of an evaluation is an answer (FLAG_NOT_FOUND, with the default value).
        if (method, path) in MEMORY_ONLY and "404" in documented:
            assert documented.pop("404") == {"EvaluationAnswer"}, (method, path)
        assert all(names == {"ErrorAnswer"} for names in documented.values()), documented
    assert undeclared == NOT_YET_DECLARED


# -- answers against the models ----------------------------------------------------


def check(answer: Any, model: type[BaseModel]) -> None:
    """The answer validates against the model's JSON schema, and every key it has is
    one the model declares (or an open-ended part of it)."""
    schema = model.model_json_schema(mode="serialization")
    errors = [e.message for e in jsonschema_rs.Draft202012Validator(schema).iter_errors(answer)]
    assert not errors, (model.__name__, errors)
    assert not list(unknown_keys(answer, schema, schema.get("$defs", {}), "")), model.__name__


def unknown_keys(
    value: Any, schema: dict[str, Any], defs: dict[str, Any], at: str
) -> Iterator[str]:
    if "$ref" in schema:
        yield from unknown_keys(value, defs[schema["$ref"].rsplit("/", 1)[-1]], defs, at)
        return
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        # The key set of at least one fitting alternative covers the value.
        fits = [o for o in options if jsonschema_rs.is_valid({**o, "$defs": defs}, value)]
        if fits and all(list(unknown_keys(value, o, defs, at)) for o in fits):
            yield from unknown_keys(value, fits[0], defs, at)
        return
    if isinstance(value, dict):
        declared = schema.get("properties")
        if declared is not None:
            for key, item in value.items():
                if key not in declared:
                    if schema.get("additionalProperties") is not True:
                        yield f"{at}.{key}"
                else:
                    yield from unknown_keys(item, declared[key], defs, f"{at}.{key}")
        elif isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                yield from unknown_keys(item, schema["additionalProperties"], defs, f"{at}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from unknown_keys(item, schema["items"], defs, f"{at}[{i}]")


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def still(rollout: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rollout.items() if k not in MOVING}


def test_unknown_keys_are_found() -> None:
    # The checker itself: a key no model declares is reported, nested too.
    schema = answers.RolloutList.model_json_schema(mode="serialization")
    fake = {"rollouts": [{"serving": {"surprise": 1}}]}
    assert ".rollouts[0].serving.surprise" in set(unknown_keys(fake, schema, schema["$defs"], ""))


def test_rollout_answers(seeded: Seeded) -> None:
    now = datetime.now(UTC)
    with seeded.server.client() as c:
        one = ok(c.get(f"/api/v1/rollouts/{ROLLOUT}"))
        applied = ok(c.post("/api/v1/plans", json={"yaml": GATED_PLAN}))
        dry = ok(c.post("/api/v1/plans", params={"dry_run": "true"}, json={"yaml": GATED_PLAN}))
        paused = ok(c.post(f"/api/v1/rollouts/{ROLLOUT}/actions/pause", json={}))
        resumed = ok(c.post(f"/api/v1/rollouts/{ROLLOUT}/actions/resume", json={}))
        listed = ok(c.get("/api/v1/rollouts"))
    check(one, answers.RolloutAnswer)
    check(listed, answers.RolloutList)
    check(applied, answers.ApplyAnswer)
    check(dry, answers.DryRunAnswer)
    check(paused, answers.RolloutAnswer)
    check(resumed, answers.RolloutAnswer)
    assert applied["outcome"] == "unchanged" and dry["outcome"] == "valid"
    expected = as_json(seeded.runtime.rollouts.get(ROLLOUT, now))
    assert still(resumed) == still(expected)
    assert set(one) == set(expected) and set(one["serving"]) == set(expected["serving"])
    assert [still(r) for r in listed["rollouts"]] == [
        still(as_json(r)) for r in seeded.runtime.rollouts.list_all(now)
    ]


def test_plan_history_answers(seeded: Seeded) -> None:
    changed = GATED_PLAN.replace("rollback_above: 1", "rollback_above: 2")
    with seeded.server.client() as c:
        listed = ok(c.get(f"/api/v1/rollouts/{ROLLOUT}/plans", params={"changes": "true"}))
        short = ok(c.get(f"/api/v1/rollouts/{ROLLOUT}/plans"))
        first = ok(c.get(f"/api/v1/rollouts/{ROLLOUT}/plans/1"))
        diff = ok(c.post("/api/v1/plans/diff", json={"yaml": changed}))
        dry = ok(c.post("/api/v1/plans", params={"dry_run": "true"}, json={"yaml": changed}))
    check(listed, answers.PlanRevisions)
    check(short, answers.PlanRevisions)
    check(first, answers.PlanRevisionDetail)
    check(diff, answers.PlanDiffAnswer)
    check(dry, answers.DryRunAnswer)
    assert "changes" in listed["revisions"][0] and "changes" not in short["revisions"][0]
    assert diff["changes"] == ["gates.errors.rollback_above: 1 -> 2"] == dry["changes"]
    assert first["revision"] == 1 and first["source"] == GATED_PLAN


def test_audit_answers(seeded: Seeded) -> None:
    with seeded.server.client() as c:
        events = ok(c.get("/api/v1/audit", params={"limit": 1000}))
        report = ok(c.get("/api/v1/audit/verify"))
    check(events, answers.AuditEvents)
    check(report, answers.VerifyAnswer)
    assert events["events"] == as_json(seeded.runtime.read_models.audit_events(limit=1000))
    assert report["ok"] is True and report["checked"] >= len(events["events"])


def test_gate_answers(seeded: Seeded) -> None:
    with seeded.server.client() as c:
        evaluations = ok(c.get(f"/api/v1/rollouts/{ROLLOUT}/gates", params={"limit": 5000}))
        tried = ok(c.post(f"/api/v1/rollouts/{ROLLOUT}/gates/test", json={}))
        adhoc = ok(
            c.post(
                "/api/v1/gates/test", json={"gate": {"name": "g", "query": "up", "hold_below": 1}}
            )
        )
    check(evaluations, answers.GateEvaluations)
    check(tried, answers.RolloutGateTest)
    check(adhoc, answers.GateTest)
    assert evaluations == as_json(
        seeded.runtime.read_models.gate_evaluations(ROLLOUT, gate=None, since=None, limit=5000)
    )
    assert "inf" in {row["value"] for row in evaluations["history"]}
    assert [r["gate"] for r in tried["readings"]] == ["errors"]


def test_flag_answers(seeded: Seeded) -> None:
    with seeded.server.client() as c:
        disabled = ok(c.post(f"/api/v1/flags/{FLAG}/disable", json={"reason": "test"}))
        enabled = ok(c.post(f"/api/v1/flags/{FLAG}/enable", json={}))
        version = enabled["version"]
        replaced = ok(c.put(f"/api/v1/flags/{FLAG}", json={**plain_flag(), "version": version}))
        one = ok(c.get(f"/api/v1/flags/{FLAG}"))
        listed = ok(c.get("/api/v1/flags"))
    for flag in (one, disabled, enabled):
        check(flag, answers.FlagAnswer)
    check(listed, answers.FlagList)
    check(replaced, answers.PutFlagAnswer)
    assert replaced["outcome"] == "unchanged" and disabled["enabled"] is False
    assert "unreadable" not in one  # absent, not null
    assert one == enabled == replaced["flag"] == as_json(seeded.runtime.flags.get(FLAG))
    assert listed["flags"] == as_json(seeded.runtime.flags.list_all())


def test_token_answers(seeded: Seeded) -> None:
    with seeded.server.client() as c:
        created = ok(c.post("/api/v1/tokens", json={"name": "answers", "role": "operator"}), 201)
        listed = ok(c.get("/api/v1/tokens"))
    check(created, answers.CreatedToken)
    check(listed, answers.TokenList)
    check(seeded.revoked_token, answers.TokenAnswer)
    assert created["token"] and seeded.revoked_token["revoked_at"]
    shown = {t["id"]: t for t in listed["tokens"]}
    assert shown[created["id"]] == {k: v for k, v in created.items() if k != "token"}
    assert listed["tokens"] == [t.view() for t in seeded.runtime.tokens.list()]


def test_webhook_answers(seeded: Seeded) -> None:
    with seeded.server.client() as c:
        listed = ok(c.get("/api/v1/webhooks/deliveries"))
        assert listed["deliveries"], "the start of the rollout was not told to the webhook"
        retried = ok(c.post(f"/api/v1/webhooks/deliveries/{listed['deliveries'][-1]['id']}/retry"))
    check(listed, answers.DeliveryList)
    check(retried, answers.DeliveryAnswer)
    stored = as_json(seeded.runtime.outbox.list(status=None, webhook=None, limit=100))
    # The list as it was before the retry; the retried one as it is now.
    assert listed["deliveries"][:-1] == stored[:-1]
    assert retried == stored[-1] and retried["attempts"] == 0


def test_impression_answers(seeded: Seeded) -> None:
    report = {
        "counts": [{"flag": FLAG, "variant": "new", "count": 3}, {"flag": "nope", "count": 1}],
        "impressions": [{"flag": FLAG, "variant": "new", "key_hash": "0123abcd", "at": 1.5e9}],
    }
    with seeded.server.client() as c:
        taken = ok(c.post("/api/v1/evaluations/report", json=report), 202)
        shown = ok(c.get(f"/api/v1/flags/{FLAG}/impressions"))
    check(taken, answers.ReportAnswer)
    check(shown, answers.FlagImpressions)
    assert taken["counts"] == {"accepted": 1, "ignored": 1}
    assert shown["impressions"][0] == {
        "variant": "new",
        "key_hash": "0123abcd",
        "at": datetime.fromtimestamp(1.5e9, UTC).isoformat(),
    }


def test_evaluation_and_health_answers(seeded: Seeded) -> None:
    with seeded.server.client() as c:
        native = ok(c.get(f"/api/v1/evaluate/{ROLLOUT}", params={"targetingKey": "u-1"}))
        missing = c.get("/api/v1/evaluate/no-such-flag").json()
        snapshot = ok(c.get("/api/v1/snapshot"))
        health = ok(c.get("/healthz"))
        ready = c.get("/readyz").json()
    check(native, answers.EvaluationAnswer)
    check(missing, answers.EvaluationAnswer)
    check(snapshot, answers.SnapshotAnswer)
    check(health, answers.Health)
    check(ready, answers.Readiness)
    assert native["rollout"]["name"] == ROLLOUT and missing["errorCode"] == "FLAG_NOT_FOUND"


def test_error_answers(seeded: Seeded) -> None:
    with seeded.server.client() as c:
        refused = c.post(f"/api/v1/flags/{FLAG}/enable", json={"version": 0})
        invalid = c.post(f"/api/v1/flags/{FLAG}/enable", json={"reason": 1})
        missing = c.get("/api/v1/flags/no-such-flag")
    with seeded.server.client(token=None) as anonymous:
        unauthenticated = anonymous.get("/api/v1/flags")
    assert [r.status_code for r in (refused, invalid, missing, unauthenticated)] == [
        409,
        422,
        404,
        401,
    ]
    for r in (refused, invalid, missing, unauthenticated):
        check(r.json(), answers.ErrorAnswer)
    assert refused.json()["current_version"] >= 1
    assert invalid.json()["problems"][0]["field"] == "body.reason"
