"""``rollout serve`` says at start which Prometheus its gates read and whether it answers:
a real server process against a real Prometheus, a dead port, one that hangs, and none
configured. The check never stops the server and is bounded."""

from __future__ import annotations

import re
import time
from pathlib import Path

from controller.demo.prometheus_process import PrometheusProcess
from tests.hostile import HostilePeer, hang
from tests.serving import free_port, running_server

LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) controller\.gates\.startup_check: (?P<text>.*)$")


def start_lines(log: Path) -> list[tuple[str, str]]:
    return [
        (m["level"], m["text"]) for line in log.read_text().splitlines() if (m := LINE.match(line))
    ]


def serve_with(workdir: Path, prometheus_url: str | None) -> tuple[list[tuple[str, str]], float]:
    """The start check's log lines, and the seconds the server took to become healthy."""
    env = {"ROLLOUT_LOG_LEVEL": "info"}
    if prometheus_url is not None:
        env["ROLLOUT_PROMETHEUS_URL"] = prometheus_url
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with running_server(workdir, extra_env=env) as server:
        took = time.monotonic() - began
        with server.client() as client:
            assert client.get("/healthz").status_code == 200
        return start_lines(server.log), took


def test_a_reachable_prometheus_is_named_at_start(tmp_path: Path) -> None:
    with PrometheusProcess([]) as prometheus:
        lines, _ = serve_with(tmp_path, prometheus.url)

    assert lines == [
        ("INFO", f"prometheus: {prometheus.url} answers queries (ROLLOUT_PROMETHEUS_URL)")
    ]


def test_a_dead_port_is_a_warning_and_the_server_starts_anyway(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    lines, _ = serve_with(tmp_path, url)

    assert len(lines) == 1, lines
    level, text = lines[0]
    assert level == "WARNING"
    assert text.startswith(
        f"prometheus: cannot query {url} (ROLLOUT_PROMETHEUS_URL): "
        f"prometheus unreachable at {url}: connection refused."
    ), text
    assert "rollouts with gates hold, then pause. Set-up: docs/prometheus.md" in text


def test_a_prometheus_that_hangs_costs_the_start_at_most_the_check_bound(tmp_path: Path) -> None:
    # A baseline start against a dead port (refused at once), then one against a peer
    # that accepts and never answers: the difference is the check's 2 s bound, not more.
    _, baseline = serve_with(tmp_path / "dead", f"http://127.0.0.1:{free_port()}")
    with HostilePeer(hang()) as peer:
        lines, took = serve_with(tmp_path / "hung", peer.url)

    assert lines[0][0] == "WARNING"
    assert "no answer within 2s" in lines[0][1], lines
    assert took - baseline < 2.0 + 1.5, (took, baseline)


def test_an_unset_url_says_so_and_which_default_it_reads(tmp_path: Path) -> None:
    lines, _ = serve_with(tmp_path, None)

    assert len(lines) == 1, lines
    level, text = lines[0]
    assert level == "WARNING"
    # Reachable or not (something may listen on 9090), the line names the setting.
    assert "ROLLOUT_PROMETHEUS_URL is not set" in text, text
    assert "http://127.0.0.1:9090" in text, text
