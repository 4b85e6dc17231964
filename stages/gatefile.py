"""Reading one gate of a plan file: a threshold gate (a query against thresholds) or a
compare gate (new side against old, ``kind: compare``), each in ``mode: enforce`` or
``mode: observe``. ``stages.planfile`` reads the rest of the plan.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from datetime import timedelta

from stages.fields import (
    Reader,
    at_least,
    choice,
    duration,
    field,
    known_fields,
    label,
    matching,
    number,
    required,
    stage_set,
    text,
)
from stages.limits import MAX_QUERY_CHARS
from stages.plan import Comparison, Gate, GateMode, Stage
from stages.problems import Path, Report
from stages.query_templates import placeholders, query_template

ABOVE = ("hold_above", "rollback_above", "abort_above")
BELOW = ("hold_below", "rollback_below", "abort_below")
_COMMON = ("name", "kind", "mode", "delay", "stages")
THRESHOLD_FIELDS = (
    *_COMMON,
    *("query", "baseline", "samples", "min_samples", *ABOVE, *BELOW, "for"),
)
COMPARE_FIELDS = (
    *_COMMON,
    *("events", "exposures", "histogram", "slower_than", "worse_by", "min_samples"),
    *("on_regression", "requires", "by", "new", "old", "srm_tolerance"),
    "user_spread",
)
# Both sides are read only here: in shadow nobody reads the new side, at full nobody
# the old one.
COMPARE_STAGES = frozenset({Stage.CANARY, Stage.GRADUATED, Stage.REGIONAL})
# Full too, when written: a bake's holdout is an old side there (stages.bakefile checks
# that the plan has one). Never shadow, where nobody reads the new side.
COMPARE_STAGES_WRITTEN = COMPARE_STAGES | {Stage.FULL}
_KINDS = ("threshold", "compare")
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ON_REGRESSION = ("rollback", "abort")
_REQUIRES = ("not_worse", "no_regression")


def gate_kind(report: Report, path: Path, value: object) -> str:
    """``threshold`` (the default) or ``compare``; the fields allowed depend on it."""
    if isinstance(value, Mapping):
        kind = value.get("kind")
        if kind is None:
            return "threshold"
        if kind in _KINDS:
            return str(kind)
        report.add((*path, "kind"), f"{kind!r} is not one of: {', '.join(_KINDS)}")
        return "invalid"
    return "threshold"


def read_gate(report: Report, path: Path, value: object) -> Gate | None:
    kind = gate_kind(report, path, value)
    allowed = COMPARE_FIELDS if kind == "compare" else THRESHOLD_FIELDS
    fields = known_fields(report, path, value, allowed, f"a {kind} gate")
    if fields is None or kind == "invalid":
        return None
    if kind == "compare":
        return _compare_gate(report, path, fields)
    return _threshold_gate(report, path, fields)


def _threshold_gate(report: Report, path: Path, fields: Mapping[str, object]) -> Gate | None:
    name = required(report, fields, path, "name", label)
    query = required(report, fields, path, "query", read_query)
    if fields.get("min_samples") is not None and fields.get("samples") is None:
        report.add((*path, "min_samples"), "min_samples needs a samples query to count")
    thresholds = _thresholds(report, path, fields)
    gate = Gate(
        name=name or "",
        query=query or "",
        baseline=field(report, fields, path, "baseline", read_query, None),
        samples=field(report, fields, path, "samples", read_query, None),
        min_samples=field(report, fields, path, "min_samples", at_least(0), 0.0),
        sustain=field(report, fields, path, "for", duration, timedelta(0)),
        delay=field(report, fields, path, "delay", duration, timedelta(0)),
        stages=field(report, fields, path, "stages", stage_set, frozenset()),
        mode=field(report, fields, path, "mode", choice(GateMode), GateMode.ENFORCE),
        hold_above=thresholds.get("hold_above"),
        hold_below=thresholds.get("hold_below"),
        rollback_above=thresholds.get("rollback_above"),
        rollback_below=thresholds.get("rollback_below"),
        abort_above=thresholds.get("abort_above"),
        abort_below=thresholds.get("abort_below"),
    )
    # Without a name it cannot be checked for duplicates; its problem is reported.
    return gate if name is not None else None


def _compare_gate(report: Report, path: Path, fields: Mapping[str, object]) -> Gate | None:
    name = required(report, fields, path, "name", label)
    comparison = _comparison(report, path, fields)
    stages = field(report, fields, path, "stages", stage_set, COMPARE_STAGES)
    if not stages <= COMPARE_STAGES_WRITTEN:
        wrong = ", ".join(sorted(stage.value for stage in stages - COMPARE_STAGES_WRITTEN))
        message = "a compare gate reads both sides, which only canary, graduated and"
        message += " regional steps serve, and a full step's bake with a holdout"
        report.add((*path, "stages"), f"{message} (not {wrong})")
    if name is None or comparison is None:
        return None
    return Gate(
        name=name,
        query=comparison.events,
        min_samples=field(report, fields, path, "min_samples", at_least(0), 0.0),
        delay=field(report, fields, path, "delay", duration, timedelta(0)),
        stages=stages,
        compare=comparison,
        mode=field(report, fields, path, "mode", choice(GateMode), GateMode.ENFORCE),
    )


def _comparison(report: Report, path: Path, fields: Mapping[str, object]) -> Comparison | None:
    by = field(report, fields, path, "by", matching(_LABEL_NAME, "a label name"), "variant")
    worse_by = required(report, fields, path, "worse_by", _margin)
    queries = _counts(report, path, fields, by)
    if worse_by is None or queries is None:
        return None
    events, exposures = queries
    return Comparison(
        events=events,
        exposures=exposures,
        worse_by=worse_by,
        on_regression=field(report, fields, path, "on_regression", _regression_level, "rollback"),
        requires=field(report, fields, path, "requires", _requirement, "not_worse"),
        by=by,
        new=field(report, fields, path, "new", text, "new"),
        old=field(report, fields, path, "old", text, "old"),
        srm_tolerance=field(report, fields, path, "srm_tolerance", at_least(0), 0.5),
        histogram=_histogram_name(fields),
        slower_than=field(report, fields, path, "slower_than", number, None),
        user_spread=field(report, fields, path, "user_spread", _margin, 0.0),
    )


def _counts(
    report: Report, path: Path, fields: Mapping[str, object], by: str
) -> tuple[str, str] | None:
    """The events and exposures templates: written, or derived from a histogram."""
    histogram = fields.get("histogram")
    written = [key for key in ("events", "exposures") if fields.get(key) is not None]
    if histogram is not None:
        if written:
            report.add((*path, written[0]), "give events and exposures, or histogram, not both")
            return None
        metric = required(report, fields, path, "histogram", matching(_METRIC, "a metric name"))
        bound = required(report, fields, path, "slower_than", at_least(0))
        if metric is None or bound is None:
            return None
        return latency_queries(metric, bound, by)
    if fields.get("slower_than") is not None:
        report.add((*path, "slower_than"), "slower_than needs a histogram to count")
    events = required(report, fields, path, "events", _step_query)
    exposures = required(report, fields, path, "exposures", _step_query)
    if events is None or exposures is None:
        return None
    return events, exposures


def _histogram_name(fields: Mapping[str, object]) -> str | None:
    value = fields.get("histogram")
    return value if isinstance(value, str) else None


def latency_queries(metric: str, bound: float, by: str) -> tuple[str, str]:
    """Requests slower than ``bound`` and all requests, per side, over the step so far:
    the histogram's count less its ``le`` bucket. ``le`` is written ``250`` by some
    clients and ``250.0`` by others, so the matcher takes both."""
    bound = float(bound)
    shown = f"{bound:g}" if bound.is_integer() and abs(bound) < 1e15 else repr(bound)
    le = re.escape(shown).replace("\\", "\\\\")
    le += "(\\\\.0+)?" if bound.is_integer() else ""
    window = "[${step_window}]"
    total = f"sum by ({by}) (increase({metric}_count{window}))"
    within = f'sum by ({by}) (increase({metric}_bucket{{le=~"{le}"}}{window}))'
    return f"{total} - {within}", total


def read_query(report: Report, path: Path, value: object) -> str | None:
    # Checked before the template scan, which would otherwise read all of it.
    if isinstance(value, str) and len(value) > MAX_QUERY_CHARS:
        message = f"at most {MAX_QUERY_CHARS} characters, not {len(value)}"
        if report.limit(path, message):
            return None
    return query_template(report, path, value)


def _step_query(report: Report, path: Path, value: object) -> str | None:
    query = read_query(report, path, value)
    if query is None:
        return None
    try:
        names = {p.name for p in placeholders(query)}
    except ValueError:
        return query  # its problem is already reported
    if "step_window" not in names:
        report.add(
            path,
            "a compare gate counts over the current step: write the range as "
            "${step_window}, e.g. sum by (variant) (increase(requests_total[${step_window}]))",
        )
        return None
    return query


def _margin(report: Report, path: Path, value: object) -> float | None:
    margin = number(report, path, value)
    if margin is not None and not 0 <= margin < 1:
        report.add(path, f"an absolute difference of rates, from 0 to under 1, not {margin:g}")
        return None
    return margin


def _one_of(values: tuple[str, ...]) -> Reader[str]:
    def read(report: Report, path: Path, value: object) -> str | None:
        if value in values:
            return str(value)
        report.add(path, f"{value!r} is not one of: {', '.join(values)}")
        return None

    return read


_regression_level = _one_of(_ON_REGRESSION)
_requirement = _one_of(_REQUIRES)


def _thresholds(report: Report, path: Path, fields: Mapping[str, object]) -> dict[str, float]:
    names = (*ABOVE, *BELOW)
    if all(fields.get(name) is None for name in names):
        report.add(path, f"a gate needs at least one threshold: {', '.join(names)}")
    values = {name: field(report, fields, path, name, number, None) for name in names}
    _check_order(report, path, values, ABOVE, "at least")
    _check_order(report, path, values, BELOW, "at most")
    return {name: value for name, value in values.items() if value is not None}


def _check_order(
    report: Report,
    path: Path,
    values: Mapping[str, float | None],
    names: tuple[str, ...],
    relation: str,
) -> None:
    # hold, rollback, abort mark ever worse levels; checking neighbours covers every pair.
    present = [(name, value) for name in names if (value := values[name]) is not None]
    for (low, low_value), (high, high_value) in itertools.pairwise(present):
        wrong = high_value < low_value if relation == "at least" else high_value > low_value
        if wrong:
            report.add((*path, high), f"{high} must be {relation} {low} ({low_value:g})")
