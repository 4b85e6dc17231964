"""Plan history, diff and an honest dry run, as a person runs them: ``rollout`` as a
subprocess against a real server whose gate queries a real Prometheus parses. Exit
codes, the lines printed, and never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.demo.prometheus_process import PrometheusProcess
from tests.serving import EXAMPLES, Server, free_port, running_server

V1 = EXAMPLES / "checkout-v1.yaml"
V2 = EXAMPLES / "checkout-v2.yaml"


@dataclass
class Stack:
    server: Server
    prometheus: PrometheusProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("plan-history")
    # Nothing to scrape: the server asks Prometheus only whether queries parse.
    with PrometheusProcess([], workdir=workdir / "prometheus") as prometheus:
        env = {"ROLLOUT_PROMETHEUS_URL": prometheus.url}
        with running_server(workdir, extra_env=env) as server:
            yield Stack(server, prometheus)


def rollout(
    server: Server, *args: str, stdin: str | None = None, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env=server.cli_env(token) if token else server.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def broken(gate_query_fix: str, into: str) -> str:
    return V1.read_text(encoding="utf-8").replace(gate_query_fix, into, 1)


def test_dry_run_and_apply_refuse_a_query_prometheus_cannot_parse(stack: Stack) -> None:
    # The p99 gate (gates[1]) loses its closing parenthesis.
    text = broken("[5m])))\n    hold_above", "[5m]))\n    hold_above")
    for args in (("apply", "--dry-run", "-f", "-"), ("apply", "-f", "-")):
        result = rollout(stack.server, *args, stdin=text)
        assert result.returncode == 1, result.stdout
        assert "plan rejected, nothing applied" in result.stderr
        assert "gates[1] p99-latency-ms: query: parse error at char 102: unclosed left " in (
            result.stderr
        )
        assert "gates[1].query (line 21): gate p99-latency-ms: parse error" in result.stderr
    assert rollout(stack.server, "status", "checkout").returncode == 1  # nothing was created


def test_an_unknown_variable_is_refused_by_both_too(stack: Stack) -> None:
    text = broken('variant="${new_variant}"}[5m])) /', 'team="${team}"}[5m])) /')
    for args in (("apply", "--dry-run", "-f", "-"), ("apply", "-f", "-")):
        result = rollout(stack.server, *args, stdin=text)
        assert result.returncode == 1
        assert "gates[0] error-rate: query: unknown variable ${team} (known: " in result.stderr


def test_two_applies_two_revisions_and_the_diff_between(stack: Stack) -> None:
    dry = rollout(stack.server, "apply", "--dry-run", "-f", str(V1))
    assert dry.returncode == 0, dry.stderr
    assert "valid; applying it now would create rollout/checkout (5 steps)" in dry.stdout
    assert dry.stderr == ""  # Prometheus parsed every query: no warning

    first = rollout(stack.server, "apply", "-f", str(V1), "--reason", "CHG-101 first plan")
    assert first.returncode == 0, first.stderr
    assert "rollout/checkout created, plan revision 1" in first.stdout

    same = rollout(stack.server, "diff", "-f", str(V1))
    assert same.returncode == 0, same.stderr
    assert "no change against rollout/checkout (plan revision 1)" in same.stdout

    diff = rollout(stack.server, "diff", "-f", str(V2))
    assert diff.returncode == 1, diff.stderr
    assert diff.stdout.splitlines()[1:] == [
        "  ~ step 3 (canary 5%): hold 3d -> 2d",
        "  ~ gates.error-rate.abort_above: 0.05 -> 0.03",
    ]
    as_json = json.loads(rollout(stack.server, "diff", "-f", str(V2), "--json").stdout)
    assert [c["path"] for c in as_json["diff"]] == ["steps[2].hold", "gates.error-rate.abort_above"]

    second = rollout(stack.server, "apply", "-f", str(V2), "--reason", "CHG-102 tighter abort")
    assert second.returncode == 0, second.stderr
    assert "rollout/checkout updated, plan revision 2" in second.stdout

    history = rollout(stack.server, "history", "checkout")
    assert history.returncode == 0, history.stderr
    rows = history.stdout.splitlines()
    assert len(rows) == 3 and rows[0].split() == ["REV", "APPLIED", "BY", "REASON", "CHANGES"]
    assert rows[1].startswith("1 ") and "CHG-101 first plan" in rows[1]
    assert "created: 5 steps, 2 gates" in rows[1]
    assert rows[2].startswith("2 ") and "CHG-102 tighter abort" in rows[2]
    assert "gates.error-rate.abort_above: 0.05 -> 0.03" in rows[2]

    one = rollout(stack.server, "history", "checkout", "2")
    assert one.returncode == 0
    assert "    ~ gates.error-rate.abort_above: 0.05 -> 0.03" in one.stdout
    assert "    abort_above: 0.03" in one.stdout  # its source as applied

    viewer = stack.server.token("viewer")
    assert rollout(stack.server, "history", "checkout", token=viewer).returncode == 0
    assert rollout(stack.server, "diff", "-f", str(V1), token=viewer).returncode == 1
    refused = rollout(stack.server, "apply", "-f", str(V1), token=viewer)
    assert refused.returncode == 1 and "error (403)" in refused.stderr


def test_diff_exit_codes_for_trouble(stack: Stack, tmp_path: Path) -> None:
    missing = rollout(stack.server, "diff", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    bad = rollout(stack.server, "diff", "-f", "-", stdin="rollout: x\nflag: x\nsteps: []\n")
    assert bad.returncode == 2 and "steps (line 3): a plan needs at least one step" in bad.stderr
    new = rollout(
        stack.server,
        "diff",
        "-f",
        "-",
        stdin="rollout: fresh\nflag: fresh\nsteps: [{stage: full}]\n",
    )
    assert new.returncode == 1 and "rollout fresh would be created: 1 step, 0 gates" in new.stdout
    gone = rollout(stack.server, "history", "no-such-rollout")
    assert gone.returncode == 1 and "rollout 'no-such-rollout' not found" in gone.stderr


def test_prometheus_down_is_a_warning_and_apply_still_works(tmp_path: Path) -> None:
    env = {"ROLLOUT_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}"}
    with running_server(tmp_path, extra_env=env) as server:
        dry = rollout(server, "apply", "--dry-run", "-f", str(V1))
        assert dry.returncode == 0, dry.stderr
        warning = "rollout: warning: gate query syntax not checked (3 of 3 queries): "
        assert f"{warning}prometheus unreachable at" in dry.stderr
        applied = rollout(server, "apply", "-f", str(V1))
        assert applied.returncode == 0 and "created, plan revision 1" in applied.stdout
        assert "warning: gate query syntax not checked" in applied.stderr
