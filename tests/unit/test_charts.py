"""The server-side SVG charts: well-formed, honest about missing data, and findable."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from controller.ui.charts import (
    GatePoint,
    PercentPoint,
    gate_chart,
    nearest_thresholds,
    nice_ticks,
    percent_axis_top,
    percent_chart,
)

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything that is not well-formed XML


def find_all(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(SVG + tag) if cls in (e.get("class") or "").split()]


def test_percent_chart_steps_up_at_each_transition_and_labels_it() -> None:
    points = [
        PercentPoint(at(0), 0, "created"),
        PercentPoint(at(10), 0, "start", "kick-off"),
        PercentPoint(at(100), 1, "advance"),
        PercentPoint(at(200), 5, "advance"),
    ]
    root = parse(percent_chart(points, end=at(300)))
    (line,) = find_all(root, "path", "step-line")
    assert line.get("d", "").count("V") == 3  # one rise per transition after creation
    markers = find_all(root, "g", "transition")
    assert [m.get("data-action") for m in markers] == ["start", "advance", "advance"]
    assert "kick-off" in "".join(markers[0].itertext())
    labels = [t.text for t in find_all(root, "text", "axis-label")]
    assert "10%" in labels and "100%" not in labels  # 5 % served: the axis ends at 10 %


def test_percent_chart_with_only_the_creation_point_draws_a_flat_line() -> None:
    root = parse(percent_chart([PercentPoint(at(0), 0, "created")], end=at(0)))
    (line,) = find_all(root, "path", "step-line")
    assert line.get("d", "").startswith("M") and "V" not in line.get("d", "")
    assert find_all(root, "g", "transition") == []


def test_percent_chart_without_history_says_so() -> None:
    root = parse(percent_chart([], end=T0))
    assert "no history yet" in "".join(root.itertext())


def test_gate_chart_draws_values_points_by_outcome_and_threshold_lines() -> None:
    points = [
        GatePoint(at(i), v, o)
        for i, (v, o) in enumerate([(20, "ok"), (30, "ok"), (240, "hold"), (40, "ok")])
    ]
    thresholds = {"abort_above": 500.0, "hold_above": 250.0}
    root = parse(gate_chart("p99-latency-ms", points, thresholds, end=at(10)))
    assert root.get("data-gate") == "p99-latency-ms"
    assert "gate-chart" in (root.get("class") or "")
    (line,) = find_all(root, "path", "value-line")
    assert line.get("d", "").count("L") == 3
    outcomes = [g.get("data-outcome") for g in find_all(root, "g", "point")]
    assert outcomes == ["ok", "ok", "hold", "ok"]
    groups = {g.get("data-threshold"): g for g in find_all(root, "g", "threshold")}
    assert set(groups) == {"abort_above", "hold_above"}
    assert groups["hold_above"].find(SVG + "line") is not None
    assert "threshold-hold" in (groups["hold_above"].get("class") or "")
    # Far above every value: named at the top edge instead of squashing the values.
    assert groups["abort_above"].find(SVG + "line") is None
    assert "↑ abort > 500" in "".join(groups["abort_above"].itertext())


@pytest.mark.parametrize("missing", [None, math.nan, math.inf])
def test_gate_chart_breaks_the_line_at_a_reading_without_a_value(missing: float | None) -> None:
    points = [
        GatePoint(at(0), 0.01, "ok"),
        GatePoint(at(1), 0.02, "ok"),
        GatePoint(at(2), missing, "no_data"),
        GatePoint(at(3), 0.01, "ok"),
    ]
    svg = gate_chart("error-rate", points, {"rollback_above": 0.05}, end=at(4))
    root = parse(svg)
    (line,) = find_all(root, "path", "value-line")
    assert line.get("d", "").count("M") == 2  # two segments around the gap
    assert "nan" not in svg.lower().replace("no_data", "")
    missing_marks = [g for g in find_all(root, "g", "point") if g.find(SVG + "circle") is None]
    assert [g.get("data-outcome") for g in missing_marks] == ["no_data"]


def test_gate_chart_with_a_single_point_or_none_at_all() -> None:
    single = parse(gate_chart("g", [GatePoint(at(0), 3.0, "ok")], {}, end=at(0)))
    assert len(find_all(single, "g", "point")) == 1
    assert all(math.isfinite(float(c.get("cy", "nan"))) for c in single.iter(SVG + "circle"))
    empty = parse(gate_chart("g", [], {"hold_above": 1.0}, end=at(0)))
    assert empty.get("data-gate") == "g"
    assert "no readings yet" in "".join(empty.itertext())


def test_gate_chart_with_only_missing_values_still_shows_thresholds() -> None:
    points = [GatePoint(at(i), None, "error") for i in range(3)]
    root = parse(gate_chart("g", points, {"hold_above": 250.0}, end=at(3)))
    assert len(find_all(root, "g", "point")) == 3
    (group,) = find_all(root, "g", "threshold")
    assert group.find(SVG + "line") is not None


def test_names_are_escaped() -> None:
    name = '<script>"x"&'
    root = parse(gate_chart(name, [GatePoint(at(0), 1.0, "ok")], {}, end=at(1)))
    assert root.get("data-gate") == name
    assert root.find(SVG + "script") is None
    label = PercentPoint(at(1), 5, "<b>advance</b>", 'a "reason" & more')
    parse(percent_chart([PercentPoint(at(0), 0, "created"), label], end=at(2)))


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 100, [0, 25, 50, 75, 100]),
        (0, 0.05, [0, 0.02, 0.04]),
        (-1, 1, [-1, -0.5, 0, 0.5, 1]),
        (5, 5, [5]),
    ],
)
def test_nice_ticks(low: float, high: float, expected: list[float]) -> None:
    assert nice_ticks(low, high) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("highest", "top"), [(0, 5), (2, 5), (5, 10), (25, 50), (50, 100), (100, 100)]
)
def test_percent_axis_leaves_room_above_what_is_served(highest: float, top: float) -> None:
    assert percent_axis_top(highest) == top


def test_nearest_thresholds_are_the_next_levels_on_each_side() -> None:
    assert nearest_thresholds([20, 30], [500, 250, 5]) == [250, 5]
    assert nearest_thresholds([20, 300], [500, 250]) == [250, 500]
    assert nearest_thresholds([], [500, 250]) == [500, 250]
