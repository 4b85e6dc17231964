"""Plan limits through a real server (SQLite and PostgreSQL) and the ``rollout`` CLI:
422 naming the field, the CLI showing the problem the core reports, nothing stored,
and a rollout that keeps its old plan when a changed one is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stages.limits import MAX_PLAN_BYTES
from stages.planfile import PlanError, parse_plan
from tests.databases import fresh_database
from tests.serving import Server, plan_yaml, running_server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"plan-limits-{request.param}")
    with (
        fresh_database(request.param, workdir) as url,
        running_server(workdir, database_url=url) as server,
    ):
        yield server


def bad(name: str, **overrides: Any) -> str:
    return plan_yaml(name, **overrides)


HOLD_STEPS = "  - {stage: shadow, hold: 1h}\n  - {stage: full, hold: 99999999d}\n"
MANY_STEPS = "  - {stage: shadow}\n" * 101
TOO_MANY_GATES = "".join(f"  - {{name: g{i}, query: q, hold_above: 1}}\n" for i in range(51))

# (id, plan file text, field, line, message): what the core says is what the API says.
REFUSED = [
    ("hold-overflow", bad("limits-hold", steps=HOLD_STEPS), "steps[1].hold", 6, "at most 366d"),
    (
        "interval-zero",
        bad("limits-interval").replace("interval: 1m", "interval: 0"),
        "interval",
        3,
        "at least 1s",
    ),
    ("steps", bad("limits-steps", steps=MANY_STEPS), "steps", 4, "at most 100 steps, not 101"),
    (
        "gates",
        bad("limits-gates") + "gates:\n" + TOO_MANY_GATES,
        "gates",
        10,
        "at most 50 gates, not 51",
    ),
    ("flag-dot-dot", bad("limits-flag", flag="'..'"), "flag", 2, "not addressable in a URL"),
]


def post_plan(server: Server, body: dict[str, Any], **params: str) -> httpx.Response:
    with server.client() as c:
        return c.post("/api/v1/plans", json=body, params=params)


def rollout_status(server: Server, name: str) -> int:
    with server.client() as c:
        return c.get(f"/api/v1/rollouts/{name}").status_code


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env=server.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def core_problem(source: str) -> str:
    with pytest.raises(PlanError) as caught:
        parse_plan(source)
    assert len(caught.value.problems) == 1, caught.value.problems
    return str(caught.value.problems[0])


@pytest.mark.parametrize(
    ("source", "field", "line", "message"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_a_plan_over_a_limit_is_422_naming_the_field_and_stores_nothing(
    backend_server: Server, source: str, field: str, line: int, message: str
) -> None:
    name = yaml.safe_load(source)["rollout"]
    for params in ({"dry_run": "true"}, {}):
        r = post_plan(backend_server, {"yaml": source}, **params)

        assert r.status_code == 422, r.text
        problems = r.json()["problems"]
        assert [(p["field"], p["line"]) for p in problems] == [(field, line)]
        assert message in problems[0]["message"]
    assert rollout_status(backend_server, name) == 404


@pytest.mark.parametrize(
    ("source", "field"), [(case[1], case[2]) for case in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_the_same_plan_as_json_is_refused_naming_the_same_field(
    backend_server: Server, source: str, field: str
) -> None:
    data = yaml.safe_load(source)

    r = post_plan(backend_server, {"plan": data})

    assert r.status_code == 422, r.text
    assert [p["field"] for p in r.json()["problems"]] == [field]
    assert rollout_status(backend_server, data["rollout"]) == 404


def test_a_refused_change_keeps_the_rollout_and_its_old_plan(backend_server: Server) -> None:
    source = plan_yaml("limits-keep")
    assert post_plan(backend_server, {"yaml": source}).status_code == 201
    with backend_server.client() as c:
        before = c.get("/api/v1/rollouts/limits-keep").json()
        events_before = c.get("/api/v1/audit", params={"rollout": "limits-keep"}).json()

    changed = source.replace("{stage: shadow, hold: 1h}", "{stage: shadow, hold: 99999999d}")
    r = post_plan(backend_server, {"yaml": changed})

    assert r.status_code == 422, r.text
    assert [p["field"] for p in r.json()["problems"]] == ["steps[0].hold"]
    with backend_server.client() as c:
        after = c.get("/api/v1/rollouts/limits-keep").json()
        events_after = c.get("/api/v1/audit", params={"rollout": "limits-keep"}).json()
    assert after["version"] == before["version"]
    assert after["plan"] == before["plan"]
    assert after["plan"]["steps"][0]["hold"] == "1h"
    assert events_after == events_before


@pytest.mark.parametrize(
    ("source", "field"), [(case[1], case[2]) for case in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_the_cli_shows_the_problem_the_core_reports(
    backend_server: Server, tmp_path: Path, source: str, field: str
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(source)
    expected = core_problem(source)  # what a local read of the file says
    assert expected.startswith(field)

    for args in (("apply", "--dry-run", "-f", str(path)), ("apply", "-f", str(path))):
        done = cli(backend_server, *args)

        assert done.returncode != 0, done.stdout
        assert "plan rejected, nothing applied" in done.stderr
        assert f"  - {expected}" in done.stderr.splitlines()
    assert rollout_status(backend_server, yaml.safe_load(source)["rollout"]) == 404


# --- the plan body limit ------------------------------------------------------------------


def test_plan_text_over_256_kib_is_422_naming_plan(backend_server: Server) -> None:
    # Fewer characters than pydantic's limit on the field, more bytes than the plan's.
    source = plan_yaml("limits-big-text") + "# " + "é" * (MAX_PLAN_BYTES // 2) + "\n"
    assert len(source) < MAX_PLAN_BYTES < len(source.encode())

    r = post_plan(backend_server, {"yaml": source})

    assert r.status_code == 422, r.text
    [problem] = r.json()["problems"]
    assert problem["field"] == "plan"
    assert problem["message"] == core_problem(source).removeprefix("plan: ")
    assert rollout_status(backend_server, "limits-big-text") == 404


def test_plan_json_over_256_kib_is_422_naming_plan(backend_server: Server) -> None:
    data = yaml.safe_load(plan_yaml("limits-big-json"))
    data["labels"] = {f"k{i}": "v" * 128 for i in range(2500)}
    assert len(json.dumps(data)) > MAX_PLAN_BYTES

    r = post_plan(backend_server, {"plan": data})

    assert r.status_code == 422, r.text
    [problem] = r.json()["problems"]
    assert problem["field"] == "plan"
    assert f"more than {MAX_PLAN_BYTES} (256 KiB)" in problem["message"]
    assert rollout_status(backend_server, "limits-big-json") == 404


def test_a_short_file_that_expands_past_the_limit_is_refused(backend_server: Server) -> None:
    query = "sum(rate(x[5m]))" + " " * 3980 + "> 0"
    gates = "".join(
        f"  - {{name: g{i}, query: *q, baseline: *q, hold_above: 1}}\n" for i in range(50)
    )
    source = plan_yaml("limits-aliases") + f"description: &q '{query}'\ngates:\n{gates}"
    assert len(source.encode()) < 12_000

    r = post_plan(backend_server, {"yaml": source})

    assert r.status_code == 422, r.text
    [problem] = r.json()["problems"]
    assert "the plan as stored" in problem["message"]
    assert rollout_status(backend_server, "limits-aliases") == 404


# --- hostile YAML -------------------------------------------------------------------------


def alias_bomb() -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("a: " + "[" * 10_000 + "]" * 10_000, "nests too deeply (more than 32 levels)"),
        (alias_bomb(), "too large (more than 20000 YAML nodes)"),
    ],
    ids=["10000-deep", "alias-bomb"],
)
def test_hostile_yaml_is_a_422_and_the_server_stays_well(
    backend_server: Server, source: str, message: str
) -> None:
    started = time.monotonic()
    r = post_plan(backend_server, {"yaml": source})

    assert r.status_code == 422, r.text
    assert message in r.json()["problems"][0]["message"]
    assert time.monotonic() - started < 10
    with backend_server.client() as c:
        assert c.get("/healthz").status_code == 200
