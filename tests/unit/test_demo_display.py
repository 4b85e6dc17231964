"""The demo's gate table: every gate of the plan with its thresholds, compare gates with
their margin, before and after readings arrive. Rendered with rich to plain text."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from controller.demo.display import gates_table, plan_gates, thresholds_text

COMPARE_ERRORS = {
    "name": "errors-vs-old",
    "kind": "compare",
    "worse_by": 0.001,
    "on_regression": "rollback",
}
COMPARE_SLOW = {
    "name": "slow-vs-old",
    "kind": "compare",
    "histogram": "memory_operation_latency_ms",
    "slower_than": 200,
    "worse_by": 0.05,
    "on_regression": "rollback",
}
P99 = {"name": "p99-latency-ms", "query": "q", "rollback_above": 400, "abort_above": 500}
BREAKER = {"name": "circuit-breaker-opens", "query": "q", "rollback_above": 0}
FLOOR = {"name": "success-rate", "query": "q", "hold_below": 0.99, "abort_below": 0.9}


def text(table: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(table)
    return out.getvalue()


def test_compare_gates_show_their_margin_in_percentage_points() -> None:
    assert thresholds_text(COMPARE_ERRORS) == "worse_by 0.10 pp"
    # Of requests slower than 200 (ms): the histogram's share above that bound.
    assert thresholds_text(COMPARE_SLOW) == "worse_by 5.00 pp (>200)"
    # A regression that aborts rather than rolls back says so.
    assert thresholds_text({**COMPARE_ERRORS, "on_regression": "abort"}) == (
        "worse_by 0.10 pp -> abort"
    )


def test_threshold_gates_show_every_level_mildest_first() -> None:
    assert thresholds_text(P99) == "rollback_above 400, abort_above 500"
    # A threshold of 0 is a threshold, not a missing one.
    assert thresholds_text(BREAKER) == "rollback_above 0"
    assert thresholds_text(FLOOR) == "hold_below 0.99, abort_below 0.9"


def test_the_table_lists_every_plan_gate_before_any_reading() -> None:
    rendered = text(gates_table([], [COMPARE_ERRORS, P99]))

    rows = {line.split()[0]: line.split()[1:] for line in rendered.splitlines()[2:] if line}
    assert rows["errors-vs-old"] == ["-", "-", "worse_by", "0.10", "pp"]
    assert rows["p99-latency-ms"] == ["-", "-", "rollback_above", "400,", "abort_above", "500"]


def test_a_reading_shows_its_value_and_outcome_beside_the_thresholds() -> None:
    reading = {
        "gate": "p99-latency-ms",
        "value": 975.0,
        "outcome": "abort",
        "threshold": "abort_above",
        "threshold_value": 500,
        "step": 3,
    }
    lines = text(gates_table([reading], [P99])).splitlines()

    row = next(line for line in lines if "p99-latency-ms" in line)
    assert row.split() == [
        "p99-latency-ms",
        "975",
        "abort",
        "rollback_above",
        "400,",
        "abort_above",
        "500",
        "4",
    ]


def test_step_gates_are_listed_once_after_the_plan_gates() -> None:
    rollout = {"plan": {"gates": [P99], "steps": [{"gates": [BREAKER]}, {"gates": [BREAKER, P99]}]}}

    assert [g["name"] for g in plan_gates(rollout)] == ["p99-latency-ms", "circuit-breaker-opens"]
