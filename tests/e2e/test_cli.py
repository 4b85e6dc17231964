"""The ``rollout`` command against a real server: output a person reads, exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving import EXAMPLES, Server, free_port, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("cli")) as s:
        yield s


def rollout(
    server: Server, *args: str, token: str | None = "admin", stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = server.cli_env() if token == "admin" else server.cli_env(token)
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )


def test_runbook_walkthrough(server: Server) -> None:
    plan = EXAMPLES / "memory-layer.yaml"
    applied = rollout(server, "apply", "-f", str(plan))
    assert applied.returncode == 0, applied.stderr
    assert "rollout/memory-layer created" in applied.stdout
    again = rollout(server, "apply", "-f", str(plan))
    assert "rollout/memory-layer unchanged" in again.stdout

    started = rollout(server, "start", "memory-layer", "--reason", "kick-off")
    assert started.returncode == 0, started.stderr
    assert "now running at step 1/12 (shadow)" in started.stdout

    advanced = rollout(server, "advance", "memory-layer", "--reason", "shadow is clean")
    assert "step 2/12 (canary 1%)" in advanced.stdout

    status = rollout(server, "status", "memory-layer")
    assert status.returncode == 0
    assert "status:   running" in status.stdout
    assert "-> " in status.stdout and "canary 1%" in status.stdout

    listing = rollout(server, "status")
    assert "memory-layer" in listing.stdout and "running" in listing.stdout

    evaluated = rollout(server, "eval", "memory-layer", "--key", "user-1", "--attr", "region=x")
    assert evaluated.returncode == 0
    assert "memory-layer = " in evaluated.stdout and "reason=SPLIT" in evaluated.stdout

    paused = rollout(server, "pause", "memory-layer", "--reason", "p99 looks odd")
    assert "now paused" in paused.stdout

    rolled = rollout(server, "rollback", "memory-layer", "--immediate", "--reason", "bad")
    assert "now rolled_back" in rolled.stdout

    audit = rollout(server, "audit", "--rollout", "memory-layer")
    assert "p99 looks odd" in audit.stdout
    assert "rollback" in audit.stdout


def test_bad_plan_lists_every_problem_and_exits_1(server: Server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rollout: broken\nflag: broken\nsteps:\n"
        "  - {stage: canary, percent: 10}\n"
        "  - {stage: canary, percent: 5}\n"
        "  - {stage: bogus}\n"
    )
    result = rollout(server, "apply", "-f", str(bad))
    assert result.returncode == 1
    assert "plan rejected, nothing applied" in result.stderr
    assert "steps[1].percent (line 5)" in result.stderr
    assert "steps[2].stage (line 6)" in result.stderr
    assert rollout(server, "status", "broken").returncode == 1


def test_refused_action_exits_1_with_reason(server: Server) -> None:
    rollout(server, "apply", "-f", "-", stdin="rollout: r1\nflag: r1\nsteps: [{stage: full}]\n")
    result = rollout(server, "approve", "r1")
    assert result.returncode == 1
    assert "approve" in result.stderr and "pending" in result.stderr


def test_viewer_token_is_refused_a_mutation(server: Server) -> None:
    viewer = server.token("viewer")
    result = rollout(server, "pause", "r1", token=viewer)
    assert result.returncode == 1
    assert "error (403)" in result.stderr
    assert rollout(server, "status", token=viewer).returncode == 0


def test_missing_token_unreadable_file_and_unreachable_server(server: Server) -> None:
    no_token = rollout(server, "status", token=None)
    assert no_token.returncode == 2
    assert "ROLLOUT_TOKEN" in no_token.stderr
    missing_file = rollout(server, "apply", "-f", "/nonexistent/plan.yaml")
    assert missing_file.returncode == 2
    assert "cannot read /nonexistent/plan.yaml" in missing_file.stderr
    unreachable = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller",
            "status",
            "--server",
            f"http://127.0.0.1:{free_port()}",
            "--token",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 3
    assert "cannot reach the server" in unreachable.stderr


def test_bad_attr_is_a_usage_error(server: Server) -> None:
    result = rollout(server, "eval", "r1", "--key", "u", "--attr", "novalue")
    assert result.returncode == 2
    assert "NAME=VALUE" in result.stderr


def test_serve_applies_plan_files_at_start(tmp_path: Path) -> None:
    plan = EXAMPLES / "memory-layer.yaml"
    with running_server(tmp_path, args=("--apply", str(plan))) as s, s.client() as c:
        r = c.get("/api/v1/rollouts/memory-layer")
        assert r.status_code == 200
        assert r.json()["status"] == "pending"
