"""A real Prometheus loaded with known history, for ``rollout backtest`` tests.

The history is written as OpenMetrics with timestamps and backfilled with ``promtool
tsdb create-blocks-from openmetrics`` (Debian's ``prometheus`` package); Prometheus
serves the blocks found in its data directory at start. Its retention is long: the
demo's Prometheus keeps 2 h, which would delete the older blocks of a longer history.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from controller.demo.prometheus_process import free_port
from tests.waiting import wait_until

SCRAPE = timedelta(seconds=15)
REQUESTS_PER_SCRAPE = 600  # 40 requests/s in all
OLD_ERROR_RATE = 0.005


@dataclass(frozen=True)
class History:
    """Per-variant request counters from ``begin`` to ``end``; the new side's share of
    requests follows ``shares`` ((since, share), in order) and its error rate jumps from
    ``OLD_ERROR_RATE`` to ``bad_rate`` at ``jump``."""

    begin: datetime
    end: datetime
    shares: tuple[tuple[datetime, float], ...]
    jump: datetime
    bad_rate: float = 0.2

    def share_at(self, at: datetime) -> float:
        return [share for since, share in self.shares if since <= at][-1]

    def openmetrics(self) -> str:
        totals = {(v, s): 0.0 for v in ("new", "old") for s in ("ok", "error")}
        samples: dict[tuple[str, str], list[str]] = {key: [] for key in totals}
        at = self.begin
        while at <= self.end:
            new = REQUESTS_PER_SCRAPE * self.share_at(at)
            new_rate = self.bad_rate if at >= self.jump else OLD_ERROR_RATE
            added = {
                ("new", "error"): new * new_rate,
                ("new", "ok"): new * (1 - new_rate),
                ("old", "error"): (REQUESTS_PER_SCRAPE - new) * OLD_ERROR_RATE,
                ("old", "ok"): (REQUESTS_PER_SCRAPE - new) * (1 - OLD_ERROR_RATE),
            }
            for key, count in added.items():
                totals[key] += count
                samples[key].append(f"{totals[key]:.3f} {at.timestamp():.0f}")
            at += SCRAPE
        lines = [
            "# HELP app_requests requests by variant and status",
            "# TYPE app_requests counter",
        ]
        for (variant, status), points in samples.items():
            labels = f'{{variant="{variant}",status="{status}"}}'
            lines += [f"app_requests_total{labels} {point}" for point in points]
        return "\n".join([*lines, "# EOF", ""])


@contextmanager
def backfilled_prometheus(history: History, workdir: Path) -> Iterator[str]:
    """A Prometheus serving ``history`` only (it scrapes nothing); yields its URL."""
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if promtool is None or prometheus is None:
        raise RuntimeError("promtool and prometheus are needed: apt-get install prometheus")
    data = workdir / "data"
    source = workdir / "history.om"
    source.write_text(history.openmetrics())
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    config = workdir / "prometheus.yml"
    config.write_text("global: {scrape_interval: 15s}\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=3650d",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _serves(url, history.end), 30, f"prometheus at {url} serving history")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _serves(url: str, at: datetime) -> bool:
    query = urllib.parse.quote("count(app_requests_total)")
    try:
        with urllib.request.urlopen(
            f"{url}/api/v1/query?query={query}&time={at.timestamp():.0f}", timeout=1
        ) as answer:
            body = json.load(answer)
    except (OSError, ValueError):  # refused while starting; 503 while it opens the blocks
        return False
    result = body.get("data", {}).get("result", [])
    return bool(result) and result[0]["value"][1] == "4"
