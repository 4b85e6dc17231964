"""The Grafana dashboards and Prometheus rules in ``dashboards/``: promtool accepts and
passes the rules, and every dashboard query parses and names only series the controller
exports (``test_metrics`` checks this list against a real scrape) or the recording rules
define."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
RULES = DASHBOARDS / "rules"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# Every series name a scrape of the controller shows (``_created`` aside).
EXPORTED_SERIES = frozenset(
    {
        "rollout_status",
        "rollout_step",
        "rollout_percent",
        "rollout_store_up",
        "rollout_gate_value",
        "rollout_gate_threshold",
        "rollout_gate_baseline",
        "rollout_gate_outcome",
        "rollout_gate_last_evaluation_timestamp_seconds",
        "rollout_transitions_total",
        "rollout_flag_evaluations_total",
        "rollout_evaluation_latency_seconds_bucket",
        "rollout_evaluation_latency_seconds_count",
        "rollout_evaluation_latency_seconds_sum",
        "rollout_scheduler_lag_seconds",
        "rollout_scheduler_passes_total",
        "rollout_scheduler_last_pass_timestamp_seconds",
        "rollout_scheduler_check_lateness_seconds",
        "rollout_scheduler_checks_in_flight",
        "rollout_scheduler_slow_rollouts",
        "rollout_scheduler_failing_rollouts",
        "rollout_snapshot_revision",
        "rollout_snapshot_age_seconds",
        # Only where a webhook is configured (test_metrics configures one).
        "rollout_webhook_backlog",
        "rollout_webhook_dead",
        "rollout_webhook_oldest_pending_seconds",
        "rollout_webhook_deliveries_total",
    }
)

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
) | {"bool", "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub(" ", text)
    return {m for m in _IDENTIFIER.findall(text) if m.lower() not in _KEYWORDS}


def recorded_names() -> set[str]:
    data = yaml.safe_load((RULES / "rollout-recording.yml").read_text(encoding="utf-8"))
    return {r["record"] for g in data["groups"] for r in g["rules"] if "record" in r}


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # rows hold their panels when collapsed


def promql(expr: str) -> str:
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_is_installed() -> None:
    assert Path(PROMTOOL).exists(), "promtool is needed (apt-get install prometheus)"


def test_rules_pass_promtool_check() -> None:
    files = sorted(str(p) for p in RULES.glob("*.yml"))
    assert len(files) == 2
    result = run_promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    tests = sorted(str(p) for p in (RULES / "tests").glob("*.yml"))
    assert tests
    result = run_promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


def test_alerts_have_summary_and_description_and_use_exported_series() -> None:
    data = yaml.safe_load((RULES / "rollout-alerts.yml").read_text(encoding="utf-8"))
    alerts = [r for g in data["groups"] for r in g["rules"]]
    names = {a["alert"] for a in alerts}
    assert {"RolloutPaused", "RolloutRolledBack", "GateSourceDown", "SchedulerLagging"} <= names
    for alert in alerts:
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert metric_names(alert["expr"]) <= EXPORTED_SERIES, alert["alert"]
    recording = yaml.safe_load((RULES / "rollout-recording.yml").read_text(encoding="utf-8"))
    for rule in (r for g in recording["groups"] for r in g["rules"]):
        assert metric_names(rule["expr"]) <= EXPORTED_SERIES | recorded_names(), rule["record"]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_queries_parse_and_use_only_exported_series(path: Path, tmp_path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    known = EXPORTED_SERIES | recorded_names()
    exprs: list[str] = []
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            assert t["expr"].strip(), f"panel {panel['title']!r} has an empty query"
            names = metric_names(t["expr"])
            assert names, f"panel {panel['title']!r} selects no series: {t['expr']}"
            assert names <= known, f"panel {panel['title']!r}: {names - known}"
            exprs.append(promql(t["expr"]))
    for variable in variables.values():
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
            assert match, variable["definition"]
            assert metric_names(match.group(1)) <= EXPORTED_SERIES
            exprs.append(promql(match.group(1)))
    # promtool parses PromQL: every query as a recording rule of a throwaway file.
    rules = {"groups": [{"name": "q", "rules": [{"record": "q", "expr": e} for e in exprs]}]}
    file = tmp_path / "queries.yml"
    file.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = run_promtool("check", "rules", str(file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_are_the_three_dashboards() -> None:
    assert [p.name for p in dashboard_files()] == ["flags.json", "gates.json", "rollouts.json"]


def test_metric_names_finds_series_not_functions_or_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m]))) / on (job) '
        "group_left () b:rec:rate5m > bool 0 or vector(1) and c_total offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b:rec:rate5m", "c_total"}
