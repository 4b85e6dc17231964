"""The controller's own /metrics, scraped from a real ``rollout serve`` with its scheduler
reading gates from a fake Prometheus."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_dashboards import EXPORTED_SERIES
from tests.serving import Server, plan_yaml, running_server

GOOD_VALUE = 0.25
EVALUATIONS = 200

GATED_PLAN = """\
rollout: metrics-gated
flag: metrics-gated
interval: 1s
max_gate_errors: 2
steps:
  - {stage: canary, percent: 5, hold: 1h}
  - {stage: full, hold: 1h}
gates:
  - name: good
    query: metric_good
    baseline: metric_baseline
    hold_above: 0.5
    rollback_above: 0.75
  - name: broken
    query: metric_broken
    hold_above: 0.5
"""


class FakePrometheus(BaseHTTPRequestHandler):
    """Every query is 0.25 but ``metric_broken``, which Prometheus refuses."""

    def _answer(self, query: str) -> None:
        if urlsplit(self.path).path == "/api/v1/format_query":
            # Every query parses at apply (controller.plan_checks); the broken one fails
            # only when run, which is what this test reads.
            self._send(200, {"status": "success", "data": query})
            return
        if "metric_broken" in query:
            status = 400
            body: dict[str, Any] = {
                "status": "error",
                "errorType": "bad_data",
                "error": "parse error",
            }
        else:
            status = 200
            result = [{"metric": {}, "value": [time.time(), str(GOOD_VALUE)]}]
            body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        self._send(status, body)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._answer(parse_qs(urlsplit(self.path).query).get("query", [""])[0])

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        query = form.get("query") or parse_qs(urlsplit(self.path).query).get("query", [""])
        self._answer(query[0])

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, prometheus: str) -> Iterator[Server]:
    env = {
        "ROLLOUT_SCHEDULER": "true",
        "ROLLOUT_SCHEDULER_TICK": "0.2",
        "ROLLOUT_PROMETHEUS_URL": prometheus,
        # A webhook, so that its series are in the scrape too; the fake Prometheus
        # answers any POST with 200, which is all a webhook receiver needs to do.
        "ROLLOUT_WEBHOOKS": json.dumps([{"name": "ops", "url": f"{prometheus}/hook"}]),
    }
    with running_server(tmp_path_factory.mktemp("metrics"), extra_env=env) as server:
        yield server


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server, token: str | None) -> Samples:
    with server.client(token=token) as c:
        r = c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def wait_for_status(server: Server, name: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    with server.client() as c:
        while time.monotonic() < deadline:
            if c.get(f"/api/v1/rollouts/{name}").json()["status"] == status:
                return
            time.sleep(0.1)
    raise AssertionError(f"rollout {name} did not become {status} in {timeout}s")


@pytest.fixture(scope="module")
def samples(live: Server) -> Samples:
    """A manual rollout at canary 5 % evaluated 200 times, and a gated rollout that the
    controller paused because one of its gates kept failing."""
    with live.client() as c:
        assert c.post("/api/v1/plans", json={"yaml": plan_yaml("metrics-manual")}).is_success
        for action in ("start", "advance"):
            r = c.post(f"/api/v1/rollouts/metrics-manual/actions/{action}", json={})
            assert r.status_code == 200, r.text
        assert c.post("/api/v1/plans", json={"yaml": GATED_PLAN}).status_code == 201
        assert c.post("/api/v1/rollouts/metrics-gated/actions/start", json={}).is_success
    with live.client(token=live.token("sdk")) as c:
        for i in range(EVALUATIONS):
            r = c.get("/api/v1/evaluate/metrics-manual", params={"targetingKey": f"u{i}"})
            assert r.status_code == 200
    wait_for_status(live, "metrics-gated", "paused")
    return scrape(live, live.token("viewer"))


def test_status_step_and_percent_of_each_rollout(samples: Samples) -> None:
    assert value(samples, "rollout_status", rollout="metrics-manual", status="running") == 1
    assert value(samples, "rollout_status", rollout="metrics-manual", status="pending") == 0
    assert value(samples, "rollout_status", rollout="metrics-gated", status="paused") == 1
    assert value(samples, "rollout_step", rollout="metrics-manual") == 2
    assert value(samples, "rollout_percent", rollout="metrics-manual") == 5
    assert value(samples, "rollout_step", rollout="metrics-gated") == 1
    assert value(samples, "rollout_store_up") == 1


def test_manual_and_automatic_transitions_are_counted(samples: Samples) -> None:
    t = "rollout_transitions_total"
    assert value(samples, t, rollout="metrics-manual", action="start") == 1
    assert value(samples, t, rollout="metrics-manual", action="advance") == 1
    assert value(samples, t, rollout="metrics-gated", action="start") == 1
    # The controller's own decision, recorded by the scheduler.
    assert value(samples, t, rollout="metrics-gated", action="pause") == 1


def test_latest_gate_values_thresholds_and_outcomes(samples: Samples) -> None:
    gated = {"rollout": "metrics-gated"}
    assert value(samples, "rollout_gate_value", gate="good", **gated) == GOOD_VALUE
    assert value(samples, "rollout_gate_baseline", gate="good", **gated) == GOOD_VALUE
    threshold = "rollout_gate_threshold"
    assert value(samples, threshold, gate="good", threshold="hold_above", **gated) == 0.5
    assert value(samples, threshold, gate="good", threshold="rollback_above", **gated) == 0.75
    assert value(samples, threshold, gate="broken", threshold="hold_above", **gated) == 0.5
    assert math.isnan(value(samples, "rollout_gate_value", gate="broken", **gated))
    outcome = "rollout_gate_outcome"
    assert value(samples, outcome, gate="good", outcome="ok", **gated) == 1
    assert value(samples, outcome, gate="good", outcome="error", **gated) == 0
    assert value(samples, outcome, gate="broken", outcome="error", **gated) == 1
    at = value(samples, "rollout_gate_last_evaluation_timestamp_seconds", gate="good", **gated)
    assert abs(at - time.time()) < 60


def test_evaluations_by_flag_and_variant_and_sampled_latency(samples: Samples) -> None:
    by_variant = {
        dict(labels)["variant"]: v
        for (name, labels), v in samples.items()
        if name == "rollout_flag_evaluations_total" and dict(labels)["flag"] == "metrics-manual"
    }
    assert sum(by_variant.values()) == EVALUATIONS
    # At canary 5 %, about 10 of 200 users get the new side (bucketing is deterministic).
    assert set(by_variant) == {"off", "on"}
    assert by_variant["on"] < by_variant["off"]
    # 1 in 64 requests is timed: requests 0, 64, 128 and 192 of 200.
    assert value(samples, "rollout_evaluation_latency_seconds_count") == 4
    assert 0 < value(samples, "rollout_evaluation_latency_seconds_sum") < 4


def test_scheduler_passes_and_lag(samples: Samples) -> None:
    assert value(samples, "rollout_scheduler_passes_total") > 5
    assert 0 <= value(samples, "rollout_scheduler_lag_seconds") < 5
    last = value(samples, "rollout_scheduler_last_pass_timestamp_seconds")
    assert abs(last - time.time()) < 30


def test_every_exported_series_is_in_the_list_the_dashboards_are_checked_against(
    samples: Samples,
) -> None:
    names = {name for name, _ in samples if not name.endswith("_created")}
    assert names == EXPORTED_SERIES


def test_metrics_need_a_viewer_token(live: Server) -> None:
    with live.client(token=None) as c:
        assert c.get("/metrics").status_code == 401
    with live.client(token=live.token("sdk", "metrics-sdk")) as c:
        assert c.get("/metrics").status_code == 403
    for role in ("viewer", "operator"):
        with live.client(token=live.token(role, f"metrics-{role}")) as c:
            assert c.get("/metrics").status_code == 200


def test_metrics_public_serves_without_a_token(tmp_path: Path) -> None:
    env = {"ROLLOUT_METRICS_PUBLIC": "true"}
    with running_server(tmp_path, extra_env=env) as server:
        with server.client(token=None) as c:
            r = c.get("/metrics")
        assert r.status_code == 200
        assert "rollout_store_up 1.0" in r.text
        # The scheduler is off on this replica: no scheduler series rather than zeros.
        assert "rollout_scheduler_lag_seconds" not in r.text
