"""Rollouts driven by a real Prometheus scraping a real target whose error rate and
latency the test controls: advance, gradual rollback, abort, outage, no data."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.demo.prometheus_process import PrometheusProcess
from tests.metrics_target import MetricsTarget
from tests.serving import Server, running_server
from tests.waiting import wait_until

ERROR_RATIO = (
    'sum(rate(memory_operation_total{status="error",variant="new"}[5s]))'
    ' / sum(rate(memory_operation_total{variant="new"}[5s]))'
)
P99 = (
    "histogram_quantile(0.99, sum by (le) "
    '(rate(memory_operation_latency_ms_bucket{variant="new"}[5s])))'
)
SAMPLES = 'sum(increase(memory_operation_total{variant="new"}[5s]))'


def plan(name: str, *, hold: str = "1s", last_hold: str = "1s", extra: str = "") -> str:
    return f"""
rollout: {name}
flag: {name}
interval: 1s
min_evaluations: 2
max_gate_errors: 3
rollback_observe: 3s
steps:
  - {{stage: shadow, hold: {hold}}}
  - {{stage: canary, percent: 5, hold: {hold}}}
  - {{stage: graduated, percent: 50, hold: {last_hold}}}
  - {{stage: regional, regions: [us-west-1], hold: {hold}}}
  - {{stage: full, hold: {hold}}}
  - {{stage: full, shadow: false}}
gates:
  # As in the runbook: the rollback level must be sustained, the abort level acts at once
  # (and reads a shorter window, so a collapse is seen before the slower gate has built up).
  - name: error-rate
    query: '{ERROR_RATIO}'
    samples: '{SAMPLES}'
    min_samples: 10
    rollback_above: 0.05
    for: 3s
  - name: error-collapse
    query: '{ERROR_RATIO.replace("[5s]", "[3s]")}'
    abort_above: 0.5
  - name: p99-latency-ms
    query: '{P99}'
    hold_above: 250
{extra}"""


@dataclass
class Stack:
    target: MetricsTarget
    prometheus: PrometheusProcess
    server: Server
    client: httpx.Client

    def apply_and_start(self, text: str, name: str) -> None:
        r = self.client.post("/api/v1/plans", json={"yaml": text})
        assert r.status_code == 201, r.text
        r = self.client.post(f"/api/v1/rollouts/{name}/actions/start", json={"reason": "test"})
        assert r.status_code == 200, r.text

    def rollout(self, name: str) -> dict[str, Any]:
        return dict(self.client.get(f"/api/v1/rollouts/{name}").json())

    def wait(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            view = self.rollout(name)
            seen.append(view)
            if predicate(view):
                return view
            time.sleep(0.25)
        last = seen[-1] if seen else {}
        raise AssertionError(
            f"timed out after {timeout}s; last: {last.get('status')} at {last.get('step')}: "
            f"{last.get('reason')}\n{self.server.log.read_text()[-2000:]}"
        )

    def scalar(self, query: str) -> float | None:
        """One instant query's single value, or None when its result is empty."""
        r = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": query}, timeout=5)
        result = r.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def windows_full(self) -> None:
        """Wait until the gates' 5 s windows hold five scrapes of the traffic set now."""
        scrapes = 'min(count_over_time(memory_operation_total{variant="new"}[5s]))'
        wait_until(lambda: (self.scalar(scrapes) or 0) >= 5, 30, "five scrapes in the window")

    def checks_of(self, name: str, gate: str) -> int:
        history = self.client.get(f"/api/v1/rollouts/{name}/gates").json()["history"]
        return sum(1 for g in history if g["gate"] == gate)

    def automatic(self, name: str) -> list[dict[str, Any]]:
        events = self.client.get("/api/v1/audit", params={"rollout": name, "limit": 1000}).json()[
            "events"
        ]
        return [e for e in reversed(events) if e["actor"] == "controller"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with MetricsTarget() as target:
        target.set_traffic(variant="new", requests_per_second=200, latency_ms=20)
        target.set_traffic(variant="old", requests_per_second=200, latency_ms=20)
        with PrometheusProcess([target.address], scrape_interval="1s", workdir=tmp_path) as prom:
            prom.wait_for_series('memory_operation_total{variant="new"}', timeout=30)
            env = {
                "ROLLOUT_SCHEDULER": "true",
                "ROLLOUT_SCHEDULER_TICK": "0.25",
                "ROLLOUT_PROMETHEUS_URL": prom.url,
                "ROLLOUT_GATE_TIMEOUT": "2",
            }
            with running_server(tmp_path, extra_env=env) as server, server.client() as client:
                yield Stack(target, prom, server, client)


def served_percents(events: list[dict[str, Any]]) -> list[float]:
    return [e["details"].get("serving_after", {}).get("percent", -1) for e in events]


def test_healthy_rollout_advances_through_every_step_to_completed(stack: Stack) -> None:
    stack.windows_full()  # the 5 s rate windows hold healthy traffic
    stack.apply_and_start(plan("healthy"), "healthy")
    final = stack.wait("healthy", lambda r: r["status"] == "completed", timeout=90)
    assert final["serving"] == {
        "stage": "full",
        "step": 5,
        "percent": 100.0,
        "regions": ["us-west-1"],
        "shadow": False,
        "kill_switch": False,
    }
    steps = [(e["action"], e["to_step"]) for e in stack.automatic("healthy")]
    assert steps == [("advance", i) for i in range(1, 6)] + [("complete", 5)]
    gates = stack.client.get("/api/v1/rollouts/healthy/gates").json()
    latest = {g["gate"]: g for g in gates["latest"]}
    assert latest["error-rate"]["outcome"] == "ok"
    assert latest["error-rate"]["samples"] >= 10
    assert 'variant="new"' in latest["error-rate"]["query"]
    assert latest["p99-latency-ms"]["value"] <= 250
    assert len(gates["history"]) >= 3 * 6  # three gates, at least one check per step


def test_error_spike_above_rollback_above_rolls_back_gradually(stack: Stack) -> None:
    stack.windows_full()
    stack.apply_and_start(plan("spike", last_hold="1h"), "spike")
    stack.wait("spike", lambda r: r["step"] == 2, timeout=60)
    stack.target.set_traffic(variant="new", requests_per_second=200, error_ratio=0.2)
    final = stack.wait("spike", lambda r: r["status"] == "rolled_back", timeout=60)
    assert final["serving"]["percent"] == 0
    events = stack.automatic("spike")
    backs = [e for e in events if e["action"] == "step_back"]
    # 50 % -> 5 %, one step at a time; from 5 % the step back would land in shadow, which
    # serves nobody the new side: that is rolled_back, said so.
    assert [e["to_step"] for e in backs] == [1]
    ended = events[-1]
    assert (ended["action"], ended["to_step"]) == ("rollback", 0)
    assert "serves nobody the new side" in ended["reason"]
    assert "error-rate" in backs[0]["reason"] and "rollback_above" in backs[0]["reason"]
    reading = next(r for r in backs[0]["details"]["readings"] if r["gate"] == "error-rate")
    assert reading["outcome"] == "rollback" and reading["value"] > 0.05
    after_spike = served_percents(events[events.index(backs[0]) :])
    assert after_spike == sorted(after_spike, reverse=True)  # never rises while rolling back


def test_error_spike_above_abort_above_rolls_back_at_once(stack: Stack) -> None:
    stack.windows_full()
    stack.apply_and_start(plan("abort", last_hold="1h"), "abort")
    stack.wait("abort", lambda r: r["step"] == 2, timeout=60)
    stack.target.set_traffic(variant="new", requests_per_second=200, error_ratio=0.9)
    final = stack.wait("abort", lambda r: r["status"] == "rolled_back", timeout=30)
    assert final["serving"]["percent"] == 0
    events = stack.automatic("abort")
    last = events[-1]
    assert (last["action"], last["from_step"], last["to_step"]) == ("rollback", 2, 0)
    assert "abort_above" in last["reason"]
    assert not [e for e in events if e["action"] == "step_back"]


def test_prometheus_stopped_gives_holds_then_pause_and_never_advances(stack: Stack) -> None:
    stack.windows_full()
    stack.apply_and_start(plan("outage", hold="2s"), "outage")
    before = stack.wait("outage", lambda r: r["step"] == 1, timeout=60)
    stack.prometheus.stop()
    final = stack.wait("outage", lambda r: r["status"] == "paused", timeout=30)
    assert final["step"] == before["step"]  # held at the step it had, never advanced
    assert "gate source unavailable" in final["reason"]
    events = stack.automatic("outage")
    after_stop = events[[e["to_step"] for e in events].index(1) + 1 :]
    assert [e["action"] for e in after_stop] == ["pause"]
    latest = stack.client.get("/api/v1/rollouts/outage/gates").json()["latest"]
    assert {g["outcome"] for g in latest} == {"error"}
    assert all(g["error"] for g in latest)


def test_empty_result_and_too_few_samples_hold_with_no_data(stack: Stack) -> None:
    extra = """  - name: missing-series
    query: 'sum(rate(no_such_metric_total[5s]))'
    hold_above: 1
"""
    text = plan("quiet", hold="1s", extra=extra).replace(
        "max_gate_errors: 3", "max_gate_errors: 50"
    )
    stack.target.set_traffic(variant="new", requests_per_second=1)  # ~5 samples per window
    wait_until(lambda: (stack.scalar(SAMPLES) or 0) < 10, 30, "the window holds the quiet rate")
    stack.apply_and_start(text, "quiet")
    # Dwell is 1 s: with evidence it would have advanced within a few checks.
    wait_until(lambda: stack.checks_of("quiet", "error-rate") >= 6, 60, "six checks")
    view = stack.rollout("quiet")
    assert (view["status"], view["step"]) == ("running", 0)
    assert "no data" in view["reason"]
    latest = {
        g["gate"]: g for g in stack.client.get("/api/v1/rollouts/quiet/gates").json()["latest"]
    }
    assert latest["missing-series"]["outcome"] == "no_data"
    assert latest["missing-series"]["value"] is None
    assert latest["error-rate"]["outcome"] == "no_data"
    assert latest["error-rate"]["samples"] < 10
    assert stack.automatic("quiet") == []


def test_test_query_reads_gates_now_and_changes_nothing(stack: Stack) -> None:
    stack.windows_full()
    stack.apply_and_start(plan("probe", hold="1h"), "probe")
    version = stack.rollout("probe")["version"]
    tried = stack.client.post("/api/v1/rollouts/probe/gates/test", json={}).json()
    assert {r["gate"] for r in tried["readings"]} == {
        "error-rate",
        "error-collapse",
        "p99-latency-ms",
    }
    assert tried["would_decide"]["decision"] == "Hold"
    adhoc = stack.client.post(
        "/api/v1/gates/test",
        json={"gate": {"name": "t", "query": ERROR_RATIO, "rollback_above": -1}},
    ).json()
    assert adhoc["reading"]["outcome"] == "rollback"
    bad = stack.client.post("/api/v1/gates/test", json={"gate": {"name": "t", "query": "up"}})
    assert bad.status_code == 422
    assert bad.json()["problems"][0]["field"].startswith("gate")
    assert stack.rollout("probe")["version"] == version  # holding checks do not move it

    tested = rollout_cli(stack.server, "test-gate", "probe", "--gate", "error-rate")
    assert tested.returncode == 0, tested.stderr
    assert "error-rate" in tested.stdout and "would decide now: Hold" in tested.stdout
    history = rollout_cli(stack.server, "gates", "probe")
    assert history.returncode == 0, history.stderr
    assert "latest:" in history.stdout and "p99-latency-ms" in history.stdout
    missing = rollout_cli(stack.server, "test-gate", "probe", "--gate", "nope")
    assert missing.returncode == 1
    assert "no gate 'nope'" in missing.stderr


def rollout_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env=server.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
