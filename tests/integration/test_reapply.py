"""Re-applying a plan never changes what users get without a recorded transition.

Through a real ``rollout serve`` on SQLite and PostgreSQL: a rollout is brought to
each status, a changed plan is applied, and what the flag serves (the evaluation API,
for users in every bucket range and a released region) is compared before and after.
An accepted plan serves exactly the same; a refused one is 409 with nothing written."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flags.bucketing import bucket
from tests.databases import fresh_database
from tests.serving import Server, running_server

_names = itertools.count()

STEPS = [
    "{stage: shadow, hold: 1h}",
    "{stage: canary, percent: 5, hold: 1h}",
    "{stage: graduated, percent: 25, approval: true, hold: 1h}",
]

# The changed plans, each as its list of steps.
VARIANTS: dict[str, list[str]] = {
    "append": [*STEPS, "{stage: graduated, percent: 50, hold: 1h}"],
    "widen_step_2": [STEPS[0], "{stage: canary, percent: 10, hold: 1h}", STEPS[2]],
    "first_step": ["{stage: canary, percent: 1, hold: 1h}", *STEPS[1:]],
    "holds": [s.replace("1h", "2h") for s in STEPS],
    "widen_last": [*STEPS[:2], "{stage: graduated, percent: 30, approval: true, hold: 1h}"],
    "shorten": STEPS[:2],
}

# How to bring a fresh rollout (pending) to each status: (action, body) in order.
SETUPS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "pending": [],
    "running": [("start", {}), ("advance", {})],
    "paused": [("start", {}), ("advance", {}), ("pause", {})],
    "awaiting_approval": [("start", {}), ("advance", {}), ("advance", {})],
    "rolling_back": [
        ("start", {}),
        ("advance", {}),
        ("advance", {}),
        ("approve", {}),
        ("rollback", {}),
    ],
    "completed": [
        ("start", {}),
        ("advance", {}),
        ("advance", {}),
        ("approve", {}),
        ("advance", {}),
    ],
    "rolled_back": [("start", {}), ("advance", {}), ("rollback", {"immediate": True})],
    "aborted": [("start", {}), ("advance", {}), ("abort", {})],
}

# The variants refused in each status; every other pair is accepted. Active rollouts
# serve step 2 (canary 5 %), a completed one its last step (graduated 25 %), a rolled
# back one its first step (shadow, 0 %); pending and aborted ones serve nothing.
REFUSED: dict[str, set[str]] = {
    "pending": set(),
    "running": {"widen_step_2"},
    "paused": {"widen_step_2"},
    "awaiting_approval": {"widen_step_2"},
    "rolling_back": {"widen_step_2"},
    "completed": {"append", "widen_last", "shorten"},
    "rolled_back": {"first_step"},
    "aborted": set(),
}

CASES = [(status, variant) for status in SETUPS for variant in VARIANTS]


def plan_text(name: str, steps: list[str]) -> str:
    lines = "".join(f"  - {s}\n" for s in steps)
    return f"rollout: {name}\nflag: {name}\ninterval: 1m\nsteps:\n{lines}"


def users(salt: str) -> list[dict[str, str]]:
    """A user in each bucket range the plans tell apart, and one in a region."""
    edges = [0, 100, 500, 1000, 2500, 3000, 5000, 10000]
    found: dict[int, str] = {}
    for i in itertools.count():
        key = f"user-{i}"
        b = bucket(salt, key)
        for n, (low, high) in enumerate(itertools.pairwise(edges)):
            if low <= b < high:
                found.setdefault(n, key)
        if len(found) == len(edges) - 1:
            break
    picked = [{"targetingKey": found[n]} for n in sorted(found)]
    return [*picked, {"targetingKey": found[0], "region": "us-west-1"}, {}]


def served(c: httpx.Client, flag: str) -> list[dict[str, Any]]:
    answers = []
    for context in users(flag):
        r = c.get(f"/api/v1/evaluate/{flag}", params=context)
        assert r.status_code == 200, r.text
        answer = r.json()
        rollout = dict(answer["rollout"])
        if rollout["step"] == -1:
            del rollout["stage"]  # a label only: nothing is served, whatever the plan says
        answers.append({**answer, "rollout": rollout, "flagVersion": None})
    return answers


def exposure(serving: dict[str, Any]) -> dict[str, Any]:
    if serving["step"] == -1:
        return {k: v for k, v in serving.items() if k != "stage"}
    return serving


def audit(c: httpx.Client, name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = c.get("/api/v1/audit", params={"rollout": name}).json()["events"]
    return events


def bring_to(c: httpx.Client, status: str) -> str:
    name = f"re-{status.replace('_', '-')}-{next(_names)}"
    r = c.post("/api/v1/plans", json={"yaml": plan_text(name, STEPS)})
    assert r.status_code == 201, r.text
    for action, body in SETUPS[status]:
        r = c.post(f"/api/v1/rollouts/{name}/actions/{action}", json=body)
        assert r.status_code == 200, (action, r.text)
    assert c.get(f"/api/v1/rollouts/{name}").json()["status"] == status
    return name


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"reapply-{request.param}")
    with (
        fresh_database(request.param, workdir) as url,
        running_server(workdir, database_url=url) as s,
    ):
        yield s


@pytest.mark.parametrize(("status", "variant"), CASES)
def test_reapplying_never_moves_users_without_a_transition(
    server: Server, status: str, variant: str
) -> None:
    with server.client() as c:
        name = bring_to(c, status)
        before = c.get(f"/api/v1/rollouts/{name}").json()
        answers = served(c, name)
        events = audit(c, name)

        r = c.post("/api/v1/plans", json={"yaml": plan_text(name, VARIANTS[variant])})

        after = c.get(f"/api/v1/rollouts/{name}").json()
        # The key property: whatever happened, every user gets what they got before.
        assert served(c, name) == answers
        assert exposure(after["serving"]) == exposure(before["serving"])
        assert after["status"] == before["status"]
        if variant in REFUSED[status]:
            assert r.status_code == 409, r.text
            assert r.json()["error"] == "conflict"
            assert "steps[" in r.json()["message"]
            # Nothing written: same plan, same version, no audit event.
            assert after["plan"] == before["plan"]
            assert after["version"] == before["version"]
            assert audit(c, name) == events
        else:
            assert r.status_code == 200, r.text
            assert r.json()["outcome"] == "updated"
            assert len(after["plan"]["steps"]) == len(VARIANTS[variant])
            new_events = audit(c, name)
            assert [e["action"] for e in new_events[: len(new_events) - len(events)]] == ["apply"]


def test_the_refusal_of_a_completed_rollout_says_how_and_that_path_is_recorded(
    server: Server,
) -> None:
    """The issue's case: a rollout completed at 25 % and a plan that adds a 50 % step."""
    with server.client() as c:
        name = bring_to(c, "completed")
        longer = plan_text(name, VARIANTS["append"])
        refused = c.post("/api/v1/plans", json={"yaml": longer})
        assert refused.status_code == 409
        message = refused.json()["message"]
        assert "graduated 25%" in message and "steps[3] (graduated 50%" in message
        assert f"rollout rollback {name} --immediate" in message
        assert f"rollout retry {name}" in message

        # The way the message gives: every move is a recorded transition.
        r = c.post(f"/api/v1/rollouts/{name}/actions/rollback", json={"immediate": True})
        assert r.status_code == 200, r.text
        assert c.post("/api/v1/plans", json={"yaml": longer}).status_code == 200
        r = c.post(f"/api/v1/rollouts/{name}/actions/retry", json={})
        assert r.status_code == 200, r.text
        rollout = r.json()
        assert (rollout["status"], rollout["step"], rollout["step_count"]) == ("running", 0, 4)
        assert rollout["serving"]["percent"] == 0
        actions = [e["action"] for e in audit(c, name)][:3]
        assert actions == ["retry", "apply", "rollback"]


def test_a_plan_that_drops_the_step_awaiting_approval_completes_on_approve(
    server: Server,
) -> None:
    with server.client() as c:
        name = bring_to(c, "awaiting_approval")
        r = c.post("/api/v1/plans", json={"yaml": plan_text(name, VARIANTS["shorten"])})
        assert r.status_code == 200, r.text
        answers = served(c, name)
        r = c.post(f"/api/v1/rollouts/{name}/actions/approve", json={})
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["serving"]["percent"]) == ("completed", 5)
        # Completed serves its last step, the one it was at: the same users get the new side.
        assert [a["variant"] for a in served(c, name)] == [a["variant"] for a in answers]
        # Buckets below 100 and 500 are in at 5 %; the region user shares the first key.
        assert sum(a["variant"] == "on" for a in answers) == 3
