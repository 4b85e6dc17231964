"""Freezes and label filters over HTTP on a real server: who may freeze, what a bad
freeze says (422 naming the field, nothing written), the 409 of an advance while
frozen and an admin's recorded force, and ``GET /api/v1/rollouts?label=``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from controller.storage.store import Store
from tests.serving import Server, plan_yaml, running_server
from tests.state_fingerprint import fingerprint


def labelled(name: str, **labels: str) -> str:
    pairs = ", ".join(f"{k}: {v}" for k, v in labels.items())
    return plan_yaml(name) + f"labels: {{{pairs}}}\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("freezes-api")) as s, s.client() as c:
        for name, labels in (
            ("api-memory", {"team": "memory", "environment": "production"}),
            ("api-memory-staging", {"team": "memory", "environment": "staging"}),
            ("api-search", {"team": "search", "environment": "production"}),
        ):
            assert (
                c.post("/api/v1/plans", json={"yaml": labelled(name, **labels)}).status_code == 201
            )
            assert c.post(f"/api/v1/rollouts/{name}/actions/start", json={}).status_code == 200
        yield s


def names(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [r["name"] for r in answer.json()["rollouts"]]


def test_rollouts_filter_by_labels_all_of_them(server: Server) -> None:
    with server.client() as c:
        assert names(c.get("/api/v1/rollouts", params={"label": "team=memory"})) == [
            "api-memory",
            "api-memory-staging",
        ]
        both = [("label", "team=memory"), ("label", "environment=production")]
        assert names(c.get("/api/v1/rollouts", params=both)) == ["api-memory"]
        assert names(c.get("/api/v1/rollouts", params={"label": "team=nobody"})) == []
        bad = c.get("/api/v1/rollouts", params={"label": "team"})
    assert bad.status_code == 422
    assert bad.json()["problems"][0]["field"] == "query.label"


def test_a_viewer_may_list_freezes_but_not_make_or_end_them(server: Server) -> None:
    viewer = server.token("viewer", "freeze-viewer")
    store = Store(server.database_url)
    try:
        with server.client() as admin, server.client(viewer) as c:
            made = admin.post(
                "/api/v1/freezes",
                json={"reason": "INC-1", "until": "1h", "scope": ["rollout=nothing-here"]},
            )
            assert made.status_code == 201, made.text
            before = fingerprint(store)
            refused = c.post("/api/v1/freezes", json={"reason": "INC-2", "until": "1h"})
            not_ended = c.delete(f"/api/v1/freezes/{made.json()['id']}")
            listed = c.get("/api/v1/freezes")
            assert fingerprint(store) == before
            assert admin.delete(f"/api/v1/freezes/{made.json()['id']}").status_code == 200
    finally:
        store.dispose()
    assert refused.status_code == 403 and not_ended.status_code == 403
    assert listed.status_code == 200
    assert [f["reason"] for f in listed.json()["freezes"]] == ["INC-1"]


BAD = [
    ("until in the past", {"reason": "INC-3", "until": "2001-01-01T00:00:00Z"}, "body.until"),
    ("unknown scope syntax", {"reason": "INC-3", "until": "1h", "scope": ["team"]},
     "body.scope[0]"),
    ("missing reason", {"until": "1h"}, "body.reason"),
    ("empty reason", {"reason": "", "until": "1h"}, "body.reason"),
    ("missing until", {"reason": "INC-3"}, "body.until"),
    ("unknown field", {"reason": "INC-3", "until": "1h", "scop": []}, "body.scop"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_freeze_is_a_422_naming_the_field_and_writes_nothing(
    server: Server, body: dict[str, Any], field: str
) -> None:
    store = Store(server.database_url)
    try:
        before = fingerprint(store)
        with server.client() as c:
            answer = c.post("/api/v1/freezes", json=body)
        assert fingerprint(store) == before
    finally:
        store.dispose()
    assert answer.status_code == 422, answer.text
    assert field in {p["field"] for p in answer.json()["problems"]}


def test_advance_while_frozen_is_a_409_naming_it_and_an_admin_may_force(server: Server) -> None:
    operator = server.token("operator", "freeze-operator")
    with server.client(operator) as op, server.client() as admin:
        made = op.post(
            "/api/v1/freezes", json={"reason": "INC-77", "until": "2h", "scope": ["team=search"]}
        )
        assert made.status_code == 201, made.text
        freeze = made.json()
        assert freeze["rollouts"] == ["api-search"] and freeze["created_by"].startswith(
            "freeze-operator"
        )
        listed = op.get("/api/v1/rollouts").json()["rollouts"]
        frozen = {r["name"]: [f["id"] for f in r["frozen_by"]] for r in listed}
        assert frozen == {"api-memory": [], "api-memory-staging": [], "api-search": [freeze["id"]]}

        refused = op.post("/api/v1/rollouts/api-search/actions/advance", json={"force": True})
        assert refused.status_code == 409
        assert f"freeze {freeze['id']} (frozen: INC-77 until" in refused.json()["message"]
        assert op.post("/api/v1/rollouts/api-memory/actions/advance", json={}).status_code == 200

        forced = admin.post(
            "/api/v1/rollouts/api-search/actions/advance", json={"force": True, "reason": "fix"}
        )
        assert forced.status_code == 200, forced.text
        assert forced.json()["step"] == 1
        assert "forced past freeze" in forced.json()["reason"]
        ended = op.delete(f"/api/v1/freezes/{freeze['id']}")
        again = op.delete(f"/api/v1/freezes/{freeze['id']}")
        events = admin.get("/api/v1/audit", params={"limit": 10}).json()["events"]
    assert ended.status_code == 200 and ended.json()["end_reason"] == "unfrozen"
    assert again.status_code == 409
    assert [e["action"] for e in events[:3]] == ["unfreeze", "advance", "advance"]
    assert "INC-77" in events[0]["reason"]
