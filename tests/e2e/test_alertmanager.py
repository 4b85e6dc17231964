"""A real Alertmanager (Debian's ``prometheus-alertmanager``) configured from
docs/examples/alertmanager.yml, told of alerts through its own API, notifying a real
server configured with docs/examples/alert-mappings.yaml: a service's ticket holds its
rollout until it resolves, then its page rolls the rollout back."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import yaml

from tests.serving import EXAMPLES, Server, free_port, running_server, stop
from tests.waiting import wait_until

PLAN = """
rollout: memory-api
flag: memory-api
interval: 1s
labels: {service: memory}
steps:
  - {stage: canary, percent: 1, hold: 1s}
  - {stage: canary, percent: 5, hold: 1s}
  - {stage: full}
"""
STARTS = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "ROLLOUT_ALERT_MAPPINGS_FILE": str(EXAMPLES / "alert-mappings.yaml"),
        "ROLLOUT_SCHEDULER": "true",
        "ROLLOUT_SCHEDULER_TICK": "0.2",
    }
    with running_server(tmp_path_factory.mktemp("am-server"), extra_env=env) as s:
        yield s


@pytest.fixture(scope="module")
def alertmanager(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example configuration, pointed at this server and a file with an alerts
    token, with group waits of a test's length instead of a person's."""
    workdir = tmp_path_factory.mktemp("alertmanager")
    token_file = workdir / "rollout-controller.token"
    token_file.write_text(server.token("alerts", "alertmanager"), encoding="utf-8")
    config = yaml.safe_load((EXAMPLES / "alertmanager.yml").read_text(encoding="utf-8"))
    [route] = config["route"]["routes"]
    route.update(group_wait="0s", group_interval="1s")
    [receiver] = [r for r in config["receivers"] if r["name"] == "rollout-controller"]
    [webhook] = receiver["webhook_configs"]
    webhook["url"] = f"{server.url}/api/v1/alerts/alertmanager"
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    binary = shutil.which("prometheus-alertmanager") or "alertmanager"
    url = f"http://127.0.0.1:{free_port()}"
    log = (workdir / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--cluster.listen-address=",  # one instance: no gossip port
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _ready(url, process), 30, "Alertmanager is ready")
        yield url
    finally:
        stop(process)
        log.close()


def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "Alertmanager exited"
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def tell(alertmanager: str, name: str, labels: dict[str, str], *, ended: bool = False) -> None:
    """What Prometheus does: post the alert to Alertmanager's API; ended, with endsAt."""
    alert: dict[str, Any] = {
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} on {labels.get('service')}"},
        "generatorURL": f"http://prometheus.example:9090/graph?g0.expr={name}",
        "startsAt": STARTS.isoformat(),
    }
    if ended:
        alert["endsAt"] = datetime.now(UTC).isoformat()
    r = httpx.post(f"{alertmanager}/api/v2/alerts", json=[alert], timeout=5)
    assert r.status_code == 200, r.text


def test_alertmanager_holds_then_rolls_back(server: Server, alertmanager: str) -> None:
    with server.client() as c:
        assert c.post("/api/v1/plans", json={"yaml": PLAN}).status_code == 201

        def rollout() -> dict[str, Any]:
            return dict(c.get("/api/v1/rollouts/memory-api").json())

        def actions() -> list[str]:
            events = c.get("/api/v1/audit", params={"rollout": "memory-api"}).json()["events"]
            return [e["action"] for e in events]

        ticket = {"service": "memory", "severity": "ticket"}
        tell(alertmanager, "LatencyHigh", ticket)
        wait_until(lambda: "alert.hold" in actions(), 30, "Alertmanager's hold arrives")
        assert c.post("/api/v1/rollouts/memory-api/actions/start", json={}).status_code == 200
        wait_until(
            lambda: rollout()["reason"].startswith("ready to advance, but alert LatencyHigh"),
            30,
            "the ready advance is held",
        )
        assert rollout()["step"] == 0

        tell(alertmanager, "LatencyHigh", ticket, ended=True)
        wait_until(lambda: rollout()["status"] == "completed", 60, "resolved: the ramp goes on")

        tell(alertmanager, "ErrorBudgetBurn", {"service": "memory", "severity": "page"})
        wait_until(lambda: rollout()["status"] == "rolled_back", 30, "the page rolls it back")
        event = c.get("/api/v1/audit", params={"rollout": "memory-api"}).json()["events"][0]
        assert event["action"] == "rollback" and event["actor"] == "alertmanager (alerts)"
        assert "alert ErrorBudgetBurn firing since" in event["reason"]
        assert "service-pages-roll-back" in event["reason"]
        assert event["reason"].endswith("graph?g0.expr=ErrorBudgetBurn")
