"""Alerts over HTTP on a real server, on SQLite and on PostgreSQL: Alertmanager's
notification exactly as it sends it (tests/data/alertmanager/) rolls a running rollout
back and its replay changes nothing; a hold stops a ready advance until the alert's
resolved notification; bad bodies are a 422 naming the field and write nothing; only the
alerts role (and admin) may post; a bad mapping file stops the server at start."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.storage.store import Store
from tests.databases import fresh_database
from tests.serving import EXAMPLES, Server, running_server
from tests.state_fingerprint import fingerprint
from tests.waiting import wait_until

DATA = Path(__file__).resolve().parent.parent / "data" / "alertmanager"
MAPPINGS = EXAMPLES / "alert-mappings.yaml"

ROLLBACK_PLAN = """
rollout: memory-layer
flag: memory-layer
interval: 1h
labels: {team: core}
steps:
  - {stage: shadow, hold: 1h}
  - {stage: canary, percent: 5, hold: 1h}
  - {stage: full}
"""
# A timed ramp of one-second steps: without the hold it would be done in seconds.
HOLD_PLAN = """
rollout: memory-api
flag: memory-api
interval: 1s
labels: {service: memory}
steps:
  - {stage: canary, percent: 1, hold: 1s}
  - {stage: canary, percent: 5, hold: 1s}
  - {stage: full}
"""


def notification(name: str) -> dict[str, Any]:
    return dict(json.loads((DATA / f"{name}.json").read_text(encoding="utf-8")))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Store, str]]:
    workdir = tmp_path_factory.mktemp(f"alerts-{request.param}")
    env = {
        "ROLLOUT_ALERT_MAPPINGS_FILE": str(MAPPINGS),
        "ROLLOUT_SCHEDULER": "true",
        "ROLLOUT_SCHEDULER_TICK": "0.2",
    }
    with (
        fresh_database(request.param, workdir) as url,
        running_server(workdir, database_url=url, extra_env=env) as server,
    ):
        store = Store(url)
        try:
            yield server, store, server.token("alerts", "alertmanager")
        finally:
            store.dispose()


def post(server: Server, token: str | None, path: str, body: Any) -> httpx.Response:
    with server.client(token) as c:
        return c.post(path, json=body)


def audit(server: Server, rollout: str) -> list[dict[str, Any]]:
    with server.client() as c:
        r = c.get("/api/v1/audit", params={"rollout": rollout, "limit": 1000})
        r.raise_for_status()
        return list(r.json()["events"])


def test_alertmanager_rolls_a_running_rollout_back_once(
    served: tuple[Server, Store, str],
) -> None:
    server, store, token = served
    with server.client() as c:
        assert c.post("/api/v1/plans", json={"yaml": ROLLBACK_PLAN}).status_code == 201
        for action in ("start", "advance"):
            r = c.post(f"/api/v1/rollouts/memory-layer/actions/{action}", json={})
            assert r.status_code == 200, r.text
        assert c.get("/api/v1/rollouts/memory-layer").json()["step"] == 1

    r = post(server, token, "/api/v1/alerts/alertmanager", notification("rollback-firing"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "received": 1,
        "results": [
            {
                "alert": "HighErrorRate",
                "fingerprint": "b1290b0eb5959070",
                "status": "firing",
                "rollout": "memory-layer",
                "action": "rollback",
                "outcome": "acted",
                "message": "rollout memory-layer is rolled_back",
            }
        ],
    }
    with server.client() as c:
        rollout = c.get("/api/v1/rollouts/memory-layer").json()
    assert rollout["status"] == "rolled_back" and rollout["serving"]["percent"] == 0
    event = audit(server, "memory-layer")[0]  # newest first
    assert (event["action"], event["actor"]) == ("rollback", "alertmanager (alerts)")
    assert event["reason"].startswith("alert HighErrorRate firing since ")
    for part in ("rollout=memory-layer", "service=memory", "severity=page", "named-rollout"):
        assert part in event["reason"]
    assert event["reason"].endswith("; http://prometheus.example:9090/graph?g0.expr=x")

    # Resent every repeat_interval, or retried: nothing changes, not even the revision.
    before = fingerprint(store)
    for _ in range(2):
        again = post(server, token, "/api/v1/alerts/alertmanager", notification("rollback-firing"))
        assert [x["outcome"] for x in again.json()["results"]] == ["replayed"]
    assert fingerprint(store) == before
    # Its resolution leaves the rollback as it is (a person retries), once.
    outcomes = [
        post(
            server, token, "/api/v1/alerts/alertmanager", notification("rollback-resolved")
        ).json()["results"][0]["outcome"]
        for _ in range(2)
    ]
    assert outcomes == ["resolved", "replayed"]
    after = fingerprint(store)
    assert (after["audit_head"], after["rollouts"], after["revision"]) == (
        before["audit_head"],
        before["rollouts"],
        before["revision"],
    )


def test_a_hold_stops_the_advance_until_the_alert_resolves(
    served: tuple[Server, Store, str],
) -> None:
    server, _store, token = served
    with server.client() as c:
        assert c.post("/api/v1/plans", json={"yaml": HOLD_PLAN}).status_code == 201
    held = post(server, token, "/api/v1/alerts/alertmanager", notification("hold-firing"))
    assert [(x["rollout"], x["outcome"]) for x in held.json()["results"]] == [
        ("memory-api", "held")
    ]
    with server.client() as c:
        assert c.post("/api/v1/rollouts/memory-api/actions/start", json={}).status_code == 200

        def rollout() -> dict[str, Any]:
            return dict(c.get("/api/v1/rollouts/memory-api").json())

        wait_until(
            lambda: rollout()["reason"].startswith("ready to advance, but alert LatencyHigh"),
            30,
            "the scheduler holds the ready advance for the alert",
        )
        held_view = rollout()
        assert (held_view["status"], held_view["step"]) == ("running", 0)
        assert held_view["reason"].endswith(" UTC (severity=ticket)")

        holds = c.get("/api/v1/alerts", params={"holding": "true", "rollout": "memory-api"})
        assert [(h["alert"], h["fingerprint"], h["action"]) for h in holds.json()["alerts"]] == [
            ("LatencyHigh", "9457475f35d760cf", "hold")
        ]
        assert holds.json()["alerts"][0]["starts_at"] == "2026-12-04T12:07:30.512000+00:00"
        cleared = post(server, token, "/api/v1/alerts/alertmanager", notification("hold-resolved"))
        assert [x["outcome"] for x in cleared.json()["results"]] == ["cleared"]
        wait_until(lambda: rollout()["status"] == "completed", 30, "the ramp goes on")
        holds = c.get("/api/v1/alerts", params={"holding": "true", "rollout": "memory-api"})
        assert holds.json()["alerts"] == []
    actions = [e["action"] for e in reversed(audit(server, "memory-api"))]
    assert actions.index("alert.hold") < actions.index("alert.resolve") < actions.index("advance")


def test_the_plain_form(served: tuple[Server, Store, str]) -> None:
    server, _store, token = served
    body = {
        "name": "CheckoutErrors",
        "status": "firing",
        "labels": {"rollout": "memory-layer", "action": "abort"},
        "url": "https://grafana.example/d/checkout",
        "id": "INC-123",
    }
    first = post(server, token, "/api/v1/alerts", body).json()["results"]
    assert [(x["outcome"], x["action"], x["fingerprint"]) for x in first] == [
        ("acted", "abort", "INC-123")
    ]
    again = post(server, token, "/api/v1/alerts", body).json()["results"]
    assert [x["outcome"] for x in again] == ["replayed"]
    event = audit(server, "memory-layer")[0]
    assert event["action"] == "abort" and "https://grafana.example/d/checkout" in event["reason"]
    nowhere = post(server, token, "/api/v1/alerts", {**body, "labels": {}, "id": "x"}).json()
    assert nowhere["results"][0]["outcome"] == "ignored"
    assert nowhere["results"][0]["message"] == "no mapping matches the alert's labels"


def _broken(change: Any) -> dict[str, Any]:
    body = notification("rollback-firing")
    change(body)
    return body


BAD_BODIES: dict[str, tuple[str, Any, str]] = {
    "unknown version": (
        "/api/v1/alerts/alertmanager",
        _broken(lambda b: b.update(version="3")),
        "body.version",
    ),
    "alert status": (
        "/api/v1/alerts/alertmanager",
        _broken(lambda b: b["alerts"][0].update(status="burning")),
        "body.alerts.0.status",
    ),
    "no fingerprint": (
        "/api/v1/alerts/alertmanager",
        _broken(lambda b: b["alerts"][0].pop("fingerprint")),
        "body.alerts.0.fingerprint",
    ),
    "startsAt without a zone": (
        "/api/v1/alerts/alertmanager",
        _broken(lambda b: b["alerts"][0].update(startsAt="2026-12-04T12:03:00")),
        "body.alerts.0.startsAt",
    ),
    "startsAt with no year in UTC": (
        "/api/v1/alerts/alertmanager",
        _broken(lambda b: b["alerts"][0].update(startsAt="0001-01-01T00:00:00+14:00")),
        "body.alerts.0.startsAt",
    ),
    "a label with a lone surrogate": (
        "/api/v1/alerts",
        b'{"name": "X", "status": "firing", "labels": {"rollout": "\\ud800"}}',
        "body.labels.rollout",
    ),
    "a label that is not text": (
        "/api/v1/alerts/alertmanager",
        _broken(lambda b: b["alerts"][0]["labels"].update(severity=3)),
        "body.alerts.0.labels.severity",
    ),
    "a NUL in a label": (
        "/api/v1/alerts/alertmanager",
        _broken(lambda b: b["alerts"][0]["labels"].update(rollout="memory\x00layer")),
        "body.alerts.0.labels.rollout",
    ),
    "alerts not a list": (
        "/api/v1/alerts/alertmanager",
        _broken(lambda b: b.update(alerts={})),
        "body.alerts",
    ),
    "plain: a typo": (
        "/api/v1/alerts",
        {"nmae": "X", "status": "firing"},
        "body.nmae",
    ),
    "plain: no status": ("/api/v1/alerts", {"name": "X"}, "body.status"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_a_bad_body_names_the_field_and_writes_nothing(
    served: tuple[Server, Store, str], case: str
) -> None:
    server, store, token = served
    path, body, field = BAD_BODIES[case]
    before = fingerprint(store)
    if isinstance(body, bytes):  # JSON that httpx would not write
        with server.client(token) as c:
            r = c.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        r = post(server, token, path, body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid"
    assert field in [p["field"] for p in r.json()["problems"]], r.json()
    assert fingerprint(store) == before


def test_a_body_that_is_not_json(served: tuple[Server, Store, str]) -> None:
    server, store, token = served
    before = fingerprint(store)
    with server.client(token) as c:
        r = c.post(
            "/api/v1/alerts/alertmanager",
            content=b'{"version": "4", "alerts": [',
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == 422 and r.json()["problems"][0]["field"].startswith("body")
    assert fingerprint(store) == before


@pytest.mark.parametrize("role", ["sdk", "viewer", "operator"])
def test_other_roles_may_not_post_alerts(served: tuple[Server, Store, str], role: str) -> None:
    server, store, _token = served
    secret = server.token(role, f"not-alertmanager-{role}")
    before = fingerprint(store)
    for path, body in (
        ("/api/v1/alerts/alertmanager", notification("hold-firing")),
        ("/api/v1/alerts", {"name": "X", "status": "firing", "labels": {"rollout": "memory-api"}}),
    ):
        r = post(server, secret, path, body)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "forbidden"
    assert fingerprint(store) == before


def test_a_bad_mapping_file_stops_the_server_with_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "mappings.yaml"
    bad.write_text("mappings:\n  - rollouts_by: labels\n    action: rollbak\n", encoding="utf-8")
    env = {
        "ROLLOUT_ALERT_MAPPINGS_FILE": str(bad),
        "ROLLOUT_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "controller", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"ROLLOUT_ALERT_MAPPINGS_FILE: Value error, {bad}: " in done.stderr
    assert "mappings[0].plan_labels (line 2): rollouts_by: labels needs plan_labels" in done.stderr
    assert "mappings[0].action (line 3): 'rollbak' is not one of: hold, rollback, abort" in (
        done.stderr
    )


def test_over_the_rate_limit_an_alert_source_is_told_to_retry(tmp_path: Path) -> None:
    """Alertmanager drops a notification answered 4xx and retries a 5xx: a 503."""
    env = {"ROLLOUT_RATE_LIMIT_PER_MIN": "1", "ROLLOUT_RATE_LIMIT_BURST": "1"}
    with running_server(tmp_path, extra_env=env) as server:
        token = server.token("alerts")
        body = {"name": "X", "status": "firing", "labels": {"rollout": "none"}}
        first = post(server, token, "/api/v1/alerts", body)
        second = post(server, token, "/api/v1/alerts", body)
    assert first.status_code == 200, first.text
    assert second.status_code == 503, second.text
    assert second.json()["error"] == "rate_limited" and int(second.headers["retry-after"]) >= 1
