"""The database goes away under a running controller, and comes back.

A private PostgreSQL cluster (never the machine's shared one) is stopped while a
client keeps evaluating: evaluation answers from the last snapshot, readiness says
the database is gone, writes get a clear 503, and when the cluster is back the
controller is ready again, serves changes and its scheduler resumes the rollout."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pgcluster import PrivateCluster, postgres_bin, private_cluster
from tests.serving import Server, running_server

pytestmark = pytest.mark.skipif(
    postgres_bin() is None, reason="needs PostgreSQL server binaries (initdb)"
)

HOLD_SECONDS = 8
PLAN = f"""
rollout: memory
flag: memory
interval: 1s
steps:
  - {{stage: canary, percent: 5, hold: {HOLD_SECONDS}s}}
  - {{stage: canary, percent: 10, hold: 1h}}
  - {{stage: full}}
"""
CHECKOUT = {
    "type": "string",
    "variants": {"a": "blue", "b": "green"},
    "default_variant": "a",
    "rules": [{"when": [{"attribute": "country", "op": "in", "values": ["NL"]}], "variant": "b"}],
}
USERS = [f"user-{i:03d}" for i in range(40)]


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as c:
        yield c


def answers(sdk: httpx.Client) -> dict[str, Any]:
    """Every user's answer for both flags, by native GET and by OFREP."""
    out: dict[str, Any] = {}
    for i, user in enumerate(USERS):
        country = "NL" if i % 2 else "DE"
        native = sdk.get("/api/v1/evaluate/memory", params={"targetingKey": user})
        ofrep = sdk.post(
            "/ofrep/v1/evaluate/flags/checkout",
            json={"context": {"targetingKey": user, "country": country}},
        )
        assert (native.status_code, ofrep.status_code) == (200, 200), (native.text, ofrep.text)
        n, o = native.json(), ofrep.json()
        r = n["rollout"]
        out[user] = (
            (n["value"], n["variant"], n["reason"], r["status"], r["step"], r["percent"]),
            (o["value"], o["variant"], o["reason"], o["metadata"]["flagVersion"]),
        )
    return out


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def test_evaluation_survives_a_database_outage_and_the_controller_resumes(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    env = {
        "ROLLOUT_SCHEDULER": "true",
        "ROLLOUT_SCHEDULER_TICK": "0.2",
        "ROLLOUT_SNAPSHOT_POLL": "0.2",
        "ROLLOUT_RATE_LIMIT_PER_MIN": "0",
    }
    with (
        running_server(tmp_path, database_url=cluster.url, extra_env=env) as server,
        server.client() as admin,
    ):
        assert admin.put("/api/v1/flags/checkout", json=CHECKOUT).status_code == 201
        assert admin.post("/api/v1/plans", json={"yaml": PLAN}).status_code == 201
        started = admin.post("/api/v1/rollouts/memory/actions/start", json={})
        assert started.status_code == 200
        started_at = time.monotonic()
        with server.client(token=server.token("sdk")) as sdk:
            before = answers(sdk)
            assert {a[0][3:] for a in before.values()} == {("running", 0, 5)}
            assert {a[1][1] for a in before.values()} == {"a", "b"}

            cluster.stop()
            _during_outage(server, admin, sdk, before, until=started_at + HOLD_SECONDS + 2)

            cluster.start()
            with server.client(None) as anonymous:
                wait_for("ready again", lambda: anonymous.get("/readyz").status_code == 200, 10)
            # A change is served again ...
            killed = admin.post("/api/v1/flags/checkout/disable", json={"reason": "back"})
            assert killed.status_code == 200, killed.text
            after = answers(sdk)
            assert {a[1][:3] for a in after.values()} == {("blue", "a", "DISABLED")}
            # ... and the scheduler takes the step whose dwell ran out during the outage.
            wait_for(
                "automatic advance after the outage",
                lambda: answers(sdk)[USERS[0]][0][3:] == ("running", 1, 10),
                10,
            )
        events = _audit(admin)
    automatic = [
        (e["action"], e["from_step"], e["to_step"]) for e in events if e["actor"] == "controller"
    ]
    assert automatic == [("advance", 0, 1)]
    log = server.log.read_text()
    # Logged once per outage, not once per poll or tick.
    assert log.count("snapshot refresh failed") == 1, log
    assert log.count("scheduler pass failed") == 1, log
    assert log.count("snapshot refresh works again") == 1, log


def _during_outage(
    server: Server,
    admin: httpx.Client,
    sdk: httpx.Client,
    before: dict[str, Any],
    *,
    until: float,
) -> None:
    with server.client(None) as anonymous:
        ready = anonymous.get("/readyz")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["database"]["ok"] is False
        assert checks["snapshot"]["ok"] is True  # still serving what it has
        # Public: the error's kind only, never where the database is.
        port = str(urllib.parse.urlsplit(server.database_url).port)
        assert port not in ready.text and "127.0.0.1" not in ready.text, ready.text
    for write in (
        lambda: admin.post("/api/v1/rollouts/memory/actions/pause", json={}),
        lambda: admin.put("/api/v1/flags/other", json=CHECKOUT),
    ):
        refused = write()
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "database_unavailable"
    rounds = 0
    while time.monotonic() < until or rounds < 3:
        assert answers(sdk) == before, f"answers changed in round {rounds} of the outage"
        rounds += 1
    with server.client(None) as anonymous:
        snapshot = anonymous.get("/readyz").json()["checks"]["snapshot"]
    assert snapshot["age_seconds"] > 1
    assert snapshot["last_error"]
    metrics = admin.get("/metrics").text
    assert "rollout_store_up 0.0" in metrics
    age = [line for line in metrics.splitlines() if line.startswith("rollout_snapshot_age_seconds")]
    assert age and float(age[0].split()[1]) > 1


def _audit(admin: httpx.Client) -> list[dict[str, Any]]:
    """The rollout's audit events, oldest first."""
    page = admin.get("/api/v1/audit", params={"rollout": "memory", "limit": 1000})
    return list(reversed(page.json()["events"]))
