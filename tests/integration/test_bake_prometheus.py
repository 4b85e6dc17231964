"""The bake after full through the real scheduler of ``rollout serve``, against a real
Prometheus scraping a target whose per-variant traffic and errors the test controls.

The target sends 95 % of requests to the new side and 5 % to the old, as a 5 % holdout
splits them. A healthy bake reads its gates (a compare gate of the new side against the
holdout among them, expecting a 95 % share), then completes and releases the holdout;
a breach during a bake steps back out of it and on to ``rolled_back``, as anywhere
else.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.demo.prometheus_process import PrometheusProcess
from controller.ui.session import SESSION_COOKIE
from flags.bucketing import bucket
from tests.metrics_target import MetricsTarget
from tests.serving import ADMIN_TOKEN, EXAMPLES, Server, running_server
from tests.ui_sessions import ui_session
from tests.waiting import wait_until

COMPARE = "errors-vs-holdout"
EXAMPLE = (EXAMPLES / "bake.yaml").read_text()


def plan(name: str, bake: str) -> str:
    """docs/examples/bake.yaml (shadow, canary 50 %, full, each a second; then the bake
    with a 5 % holdout), under another name and with another bake."""
    assert "bake: 30s " in EXAMPLE and "holdout: 5 " in EXAMPLE
    return EXAMPLE.replace("memory-layer-bake", name).replace("bake: 30s ", f"bake: {bake} ")


@dataclass
class Stack:
    target: MetricsTarget
    server: Server
    client: httpx.Client

    def begin(self, name: str, text: str) -> None:
        r = self.client.post("/api/v1/plans", json={"yaml": text})
        assert r.status_code == 201, r.text
        r = self.client.post(f"/api/v1/rollouts/{name}/actions/start", json={"reason": "test"})
        assert r.status_code == 200, r.text

    def rollout(self, name: str) -> dict[str, Any]:
        return dict(self.client.get(f"/api/v1/rollouts/{name}").json())

    def wait(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def check() -> bool:
            seen.clear()
            seen.update(self.rollout(name))
            return predicate(seen)

        try:
            wait_until(check, timeout, what, every=0.2)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; last: {seen.get('status')} at {seen.get('step')}: {seen.get('reason')}"
                f"\n{self.server.log.read_text()[-2000:]}"
            ) from None
        return seen

    def automatic(self, name: str) -> list[dict[str, Any]]:
        events = self.client.get("/api/v1/audit", params={"rollout": name, "limit": 1000})
        return [e for e in reversed(events.json()["events"]) if e["actor"] == "controller"]

    def compare_readings(self, name: str) -> list[dict[str, Any]]:
        body = self.client.get(
            f"/api/v1/rollouts/{name}/gates", params={"gate": COMPARE, "limit": 1000}
        ).json()
        return list(reversed(body["history"]))

    def variant(self, flag: str, key: str) -> str:
        r = self.client.get(f"/api/v1/evaluate/{flag}", params={"targetingKey": key})
        assert r.status_code == 200, r.text
        return str(r.json()["variant"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("bake")
    with MetricsTarget() as target:
        # As a 5 % holdout splits the requests.
        target.set_traffic(variant="new", requests_per_second=380)
        target.set_traffic(variant="old", requests_per_second=20)
        with PrometheusProcess([target.address], scrape_interval="1s", workdir=workdir) as prom:
            prom.wait_for_series('memory_operation_total{variant="old"}', timeout=30)
            env = {
                "ROLLOUT_SCHEDULER": "true",
                "ROLLOUT_SCHEDULER_TICK": "0.25",
                "ROLLOUT_PROMETHEUS_URL": prom.url,
                "ROLLOUT_GATE_TIMEOUT": "2",
            }
            with running_server(workdir, extra_env=env) as server, server.client() as client:
                yield Stack(target, server, client)


def users(salt: str) -> tuple[str, str]:
    """A user inside the 5 % holdout (the top buckets) and one outside it."""
    keys = (f"user-{i}" for i in range(100_000))
    held = next(k for k in keys if bucket(salt, k) >= 9500)
    kept = next(k for k in keys if bucket(salt, k) < 9500)
    return held, kept


def test_a_healthy_bake_reads_its_gates_then_completes_and_releases_the_holdout(
    stack: Stack,
) -> None:
    name = "bake-healthy"
    stack.begin(name, plan(name, bake="5s"))
    baking = stack.wait(name, lambda r: r["bake"] is not None, 60, "the bake to begin")
    assert (baking["status"], baking["step"], baking["serving"]["percent"]) == ("running", 2, 95)
    assert baking["bake"]["holdout_percent"] == 5
    held, kept = users(name)
    assert (stack.variant(name, held), stack.variant(name, kept)) == ("off", "on")

    final = stack.wait(name, lambda r: r["status"] == "completed", 60, "completed")
    assert final["serving"]["percent"] == 100 and final["bake"] is None
    assert stack.variant(name, held) == "on"  # released
    moves = [(e["action"], e["to_step"]) for e in stack.automatic(name)]
    assert moves == [("advance", 1), ("advance", 2), ("bake", 2), ("complete", 2)]
    bake_event, complete = stack.automatic(name)[2:]
    assert bake_event["details"]["serving_after"]["percent"] == 95
    assert "baking for 5s, 5 % held out on the old side" in bake_event["reason"]
    assert "bake 5s done" in complete["reason"]
    assert "holdout of 5 % released" in complete["reason"]
    assert complete["details"]["serving_after"]["percent"] == 100

    # The compare gate read only in the bake, the holdout as its old side.
    readings = stack.compare_readings(name)
    assert readings and {r["step"] for r in readings} == {2}
    last = readings[-1]["compare"]
    assert last["expected_share"] == 0.95
    assert 0.9 < last["share"] < 0.99
    assert last["old"]["exposures"] > 0 and last["verdict"] != "assignment_unhealthy"


def test_a_breach_during_the_bake_steps_back_and_rolls_back(stack: Stack) -> None:
    name = "bake-breach"
    stack.begin(name, plan(name, bake="1h"))
    baking = stack.wait(name, lambda r: r["bake"] is not None, 60, "the bake to begin")
    assert baking["serving"]["percent"] == 95

    status = subprocess.run(
        [sys.executable, "-m", "controller", "status", name],
        env=stack.server.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.strip().startswith("status:"))
    assert "running, baking, 59m" in line or "running, baking, 1h" in line, status.stdout
    assert "left, holdout 5 %" in line
    listed = subprocess.run(
        [sys.executable, "-m", "controller", "status"],
        env=stack.server.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    row = next(x for x in listed.stdout.splitlines() if x.startswith(name))
    assert "running (baking, " in row and "holdout 5 %)" in row
    # The web UI: the sentence under the status badge, and the bake in the plan.
    cookies = {SESSION_COOKIE: ui_session(stack.server.database_url, ADMIN_TOKEN)}
    page = httpx.get(f"{stack.server.url}/ui/rollouts/{name}", cookies=cookies, timeout=15)
    assert page.status_code == 200
    assert re.search(r'<p class="bake" data-bake>baking, (59m|1h)[^<]*, holdout 5 %</p>', page.text)
    assert 'class="step bake current"' in page.text
    overview = httpx.get(f"{stack.server.url}/", cookies=cookies, timeout=15)
    assert overview.status_code == 200 and "holdout 5 %" in overview.text

    # The new side breaks: 30 % errors, against the error-rate gate's 5 %.
    stack.target.set_traffic(variant="new", requests_per_second=380, error_ratio=0.3)
    final = stack.wait(name, lambda r: r["status"] == "rolled_back", 60, "rolled back")
    assert final["serving"]["percent"] == 0 and final["bake"] is None
    events = stack.automatic(name)
    actions = [(e["action"], e["from_step"], e["to_step"]) for e in events]
    assert actions[:3] == [("advance", 0, 1), ("advance", 1, 2), ("bake", 2, 2)]
    back = events[3]
    assert (back["action"], back["from_step"], back["to_step"]) == ("step_back", 2, 1)
    assert back["from_status"] == "running" and "rollback:" in back["reason"]
    assert back["details"]["serving_before"]["percent"] == 95
    assert back["details"]["serving_after"]["percent"] == 50
    assert events[-1]["action"] == "rollback"


def test_a_bad_bake_is_refused_whole_by_the_cli_with_path_and_line(
    stack: Stack, tmp_path: Path
) -> None:
    name = "bake-bad"
    bad = plan(name, bake="0s").replace("holdout: 5 ", "holdout: 60 ")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    r = subprocess.run(
        [sys.executable, "-m", "controller", "apply", "-f", str(path)],
        env=stack.server.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    said = r.stdout + r.stderr
    assert "bake (line 21): must be at least 1s" in said
    assert "holdout (line 22): a holdout is a percent above 0 and below 50, not 60" in said
    assert stack.client.get(f"/api/v1/rollouts/{name}").status_code == 404  # nothing applied
