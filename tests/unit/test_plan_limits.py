"""Plan limits: every one refused with a problem naming its field (and, for YAML, its line),
the largest plan within them accepted, and hostile YAML a problem rather than a crash."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stages.limits import (
    MAX_DEPTH,
    MAX_DURATION,
    MAX_GATES,
    MAX_LABELS,
    MAX_NAME_CHARS,
    MAX_PLAN_BYTES,
    MAX_QUERY_CHARS,
    MAX_REGIONS,
    MAX_STEPS,
    MAX_YAML_NODES,
)
from stages.plan import Plan
from stages.planfile import (
    PlanError,
    Problem,
    parse_plan,
    parse_plan_data,
    parse_stored_plan,
    plan_to_dict,
)

HEAD = "rollout: demo\nflag: demo\n"
FULL = "steps:\n  - {stage: full}\n"


def problems_of(source: str | object) -> list[Problem]:
    with pytest.raises(PlanError) as caught:
        if isinstance(source, str):
            parse_plan(source)
        else:
            parse_plan_data(source)
    return caught.value.problems


def good() -> dict[str, Any]:
    """A small valid plan as decoded JSON, with one of each duration field."""
    return {
        "rollout": "demo",
        "flag": "demo",
        "interval": "1m",
        "rollback_observe": "10m",
        "steps": [
            {"stage": "canary", "percent": 1, "hold": "1h"},
            {
                "stage": "full",
                "hold": "1h",
                "gates": [{"name": "step-gate", "query": "q", "hold_above": 1}],
            },
        ],
        "gates": [{"name": "errors", "query": "q", "abort_above": 1, "for": "5m", "delay": "1m"}],
    }


def with_value(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    data = good()
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


# --- durations ---------------------------------------------------------------------------

DURATION_FIELDS = [
    ("interval",),
    ("rollback_observe",),
    ("steps", 0, "hold"),
    ("gates", 0, "for"),
    ("gates", 0, "delay"),
    ("steps", 1, "gates", 0, "for"),
    ("steps", 1, "gates", 0, "delay"),
]


def rendered(path: tuple[str | int, ...]) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else f".{key}" if out else key
    return out


@pytest.mark.parametrize("path", DURATION_FIELDS, ids=rendered)
@pytest.mark.parametrize(
    "value",
    ["367d", "99999999d", "53w", 366 * 86_400 + 1, 10**30, 1e300, "9" * 40 + "d"],
    ids=["367d", "99999999d", "53w", "seconds", "10**30", "1e300", "40-digit-days"],
)
def test_a_duration_over_366_days_is_refused_naming_its_field(
    path: tuple[str | int, ...], value: object
) -> None:
    problems = problems_of(with_value(path, value))

    assert [p.path for p in problems] == [rendered(path)], problems
    assert "must be at most" in problems[0].message


@pytest.mark.parametrize("path", DURATION_FIELDS[1:], ids=rendered)  # interval: below
def test_366_days_is_accepted_and_keeps_datetimes_in_range(path: tuple[str | int, ...]) -> None:
    plan = parse_plan_data(with_value(path, "366d"))

    all_gates = [*plan.gates, *(g for s in plan.steps for g in s.gates)]
    spans = [plan.rollback_observe, *(s.hold for s in plan.steps)]
    spans += [g.sustain for g in all_gates] + [g.delay for g in all_gates]
    assert max(spans) == MAX_DURATION
    # What the scheduler computes (start + hold, now - for) stays a datetime.
    late_start = datetime(9000, 1, 1, tzinfo=UTC)
    assert late_start + 3 * max(spans) < datetime.max.replace(tzinfo=UTC)


def test_the_yaml_attack_hold_names_the_step_and_line() -> None:
    source = HEAD + "steps:\n  - {stage: shadow}\n  - {stage: full, hold: 99999999d}\n"

    problems = problems_of(source)

    assert [(p.path, p.line) for p in problems] == [("steps[1].hold", 5)]
    assert problems[0].message == "must be at most 366d, not '99999999d'"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be at least 1s, not 0"),
        ("1ms", "must be at least 1s, not '1ms'"),
        ("999ms", "must be at least 1s, not '999ms'"),
        ("1d1s", "must be at most 1d, not '1d1s'"),
        ("7d", "must be at most 1d, not '7d'"),
    ],
)
def test_interval_is_from_one_second_to_one_day(value: object, message: str) -> None:
    problems = problems_of(with_value(("interval",), value))

    assert [(p.path, p.message) for p in problems] == [("interval", message)]


@pytest.mark.parametrize(("value", "seconds"), [("1s", 1), (1, 1), ("1d", 86_400)])
def test_interval_bounds_themselves_are_accepted(value: object, seconds: int) -> None:
    assert parse_plan_data(with_value(("interval",), value)).interval == timedelta(seconds=seconds)


# --- counts and lengths ------------------------------------------------------------------


def steps(n: int) -> list[dict[str, Any]]:
    return [{"stage": "shadow"}] * (n - 1) + [{"stage": "full"}]


def gates(n: int, prefix: str = "g") -> list[dict[str, Any]]:
    return [{"name": f"{prefix}{i}", "query": "q", "hold_above": 1} for i in range(n)]


def regional(regions: list[list[str]]) -> list[dict[str, Any]]:
    return [{"stage": "regional", "regions": r} for r in regions] + [{"stage": "full"}]


def region_names(n: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def plan_with(**fields: Any) -> dict[str, Any]:
    return {"rollout": "demo", "flag": "demo", "steps": steps(1), **fields}


OVER_LIMITS = [
    ("steps", plan_with(steps=steps(MAX_STEPS + 1)), "steps", "at most 100 steps, not 101"),
    ("plan-gates", plan_with(gates=gates(MAX_GATES + 1)), "gates", "at most 50 gates, not 51"),
    (
        "step-gates",
        plan_with(steps=[{"stage": "full", "gates": gates(MAX_GATES + 1)}]),
        "steps[0].gates",
        "at most 50 gates, not 51",
    ),
    (
        "gates-in-all",
        plan_with(
            gates=gates(30),
            steps=[
                {"stage": "shadow", "gates": gates(15, "a")},
                {"stage": "full"},
                {"stage": "full", "gates": gates(6, "b")},
            ],
        ),
        "steps[2].gates",
        "a plan has at most 50 gates, its own and its steps'; this makes 51",
    ),
    (
        "regions-in-a-step",
        plan_with(steps=regional([region_names(MAX_REGIONS + 1)])),
        "steps[0].regions",
        "at most 100 regions, not 101",
    ),
    (
        "regions-in-all",
        plan_with(steps=regional([region_names(60, "a"), region_names(41, "b")])),
        "steps[1].regions",
        "a plan releases at most 100 regions; this makes 101",
    ),
    (
        "labels",
        plan_with(labels={f"k{i}": "v" for i in range(MAX_LABELS + 1)}),
        "labels",
        "at most 64 labels, not 65",
    ),
    (
        "label-name",
        plan_with(labels={"k" * (MAX_NAME_CHARS + 1): "v"}),
        "labels",
        "label names have at most 128 characters",
    ),
    (
        "gate-name",
        plan_with(gates=[{"name": "n" * (MAX_NAME_CHARS + 1), "query": "q", "hold_above": 1}]),
        "gates[0].name",
        "at most 128 characters, not 129",
    ),
    (
        "region-name",
        plan_with(steps=regional([["r" * (MAX_NAME_CHARS + 1)]])),
        "steps[0].regions[0]",
        "at most 128 characters, not 129",
    ),
]
for _field in ("query", "baseline", "samples"):
    _gate: dict[str, Any] = {"name": "g", "query": "q", "hold_above": 1}
    _gate[_field] = "q" * (MAX_QUERY_CHARS + 1)
    OVER_LIMITS.append(
        (
            _field,
            plan_with(gates=[_gate]),
            f"gates[0].{_field}",
            "at most 4000 characters, not 4001",
        )
    )


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [case[1:] for case in OVER_LIMITS],
    ids=[case[0] for case in OVER_LIMITS],
)
def test_over_a_limit_is_one_problem_naming_the_field(
    data: object, path: str, message: str
) -> None:
    problems = problems_of(data)

    assert [p.path for p in problems] == [path], problems
    assert message in problems[0].message


def largest_plan() -> dict[str, Any]:
    """Every count and length at its limit at once (within the plan body limit)."""
    ramp = [{"stage": "shadow", "hold": "366d"}] * (MAX_STEPS - 2)
    last_regions = [region_names(MAX_REGIONS)]
    per_step = [{"stage": "regional", "regions": r, "gates": gates(10, "s")} for r in last_regions]
    query = "sum(rate(x[5m]))" + " " * (MAX_QUERY_CHARS - 16)
    plan_gates = [{"name": "n" * 126 + f"{i:02}", "query": "q", "hold_above": 1} for i in range(40)]
    plan_gates[0]["query"] = query
    return plan_with(
        interval="1d",
        rollback_observe="366d",
        description="d" * 20_000,
        labels={"k" * (MAX_NAME_CHARS - 2) + f"{i:02}": "v" * 1000 for i in range(MAX_LABELS)},
        steps=[*ramp, *per_step, {"stage": "full"}],
        gates=plan_gates,
    )


def test_a_plan_at_every_limit_is_accepted_and_round_trips() -> None:
    data = largest_plan()

    plan = parse_plan_data(data)

    assert len(plan.steps) == MAX_STEPS
    assert len(plan.gates) + sum(len(s.gates) for s in plan.steps) == MAX_GATES
    assert len(plan.steps[-1].regions) == MAX_REGIONS
    assert parse_plan_data(plan_to_dict(plan)) == plan
    assert parse_plan(json.dumps(data)) == plan  # JSON is YAML: the file form too


# --- flag keys and rollout names ---------------------------------------------------------


@pytest.mark.parametrize("key", [".", ".."])
def test_flag_keys_dot_and_dot_dot_are_refused_as_the_flag_api_refuses_them(key: str) -> None:
    for problems in (
        problems_of(f"rollout: demo\nflag: '{key}'\n{FULL}"),
        problems_of(plan_with(flag=key)),
    ):
        assert [p.path for p in problems] == ["flag"]
        assert "not addressable in a URL" in problems[0].message


@pytest.mark.parametrize("key", ["a.b", "...", ".hidden", "v1..2"])
def test_flag_keys_with_dots_in_them_are_still_accepted(key: str) -> None:
    assert parse_plan_data(plan_with(flag=key)).flag == key


@pytest.mark.parametrize("name", [".", "..", ".a"])
def test_rollout_names_cannot_be_dots_either(name: str) -> None:
    problems = problems_of(plan_with(rollout=name))

    assert [p.path for p in problems] == ["rollout"]


# --- the plan body -----------------------------------------------------------------------


def test_plan_text_over_256_kib_is_refused_before_it_is_read() -> None:
    source = HEAD + FULL + "# " + "x" * MAX_PLAN_BYTES + "\n"

    started = time.perf_counter()
    problems = problems_of(source)

    assert time.perf_counter() - started < 0.5
    assert [(p.path, p.line) for p in problems] == [("", None)]
    assert problems[0].message == (
        f"the plan text is {len(source)} bytes, more than {MAX_PLAN_BYTES} (256 KiB)"
    )
    assert str(problems[0]).startswith("plan: the plan text is")


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    padding = "é" * (MAX_PLAN_BYTES // 2)  # two bytes each
    source = HEAD + FULL + f"# {padding}\n"
    assert len(source) < MAX_PLAN_BYTES < len(source.encode())

    assert "the plan text is" in problems_of(source)[0].message


def test_plan_text_just_under_the_limit_is_read() -> None:
    source = HEAD + FULL
    source += "#" + "x" * (MAX_PLAN_BYTES - len(source) - 2) + "\n"
    assert len(source.encode()) == MAX_PLAN_BYTES

    assert parse_plan(source).rollout == "demo"


def aliased_plan(gate_count: int) -> str:
    """A short file whose gates all share one long query through an alias."""
    query = "sum(rate(x[5m]))" + " " * (MAX_QUERY_CHARS - 20) + "> 0"
    lines = [HEAD, FULL, f"description: &q '{query}'\n", "gates:\n"]
    lines += [
        f"  - {{name: g{i}, query: *q, baseline: *q, hold_above: 1}}\n" for i in range(gate_count)
    ]
    return "".join(lines)


def test_a_short_file_that_expands_past_the_limit_when_stored_is_refused() -> None:
    source = aliased_plan(MAX_GATES)
    assert len(source.encode()) < 12_000

    problems = problems_of(source)

    assert [p.path for p in problems] == [""]
    assert "the plan as stored" in problems[0].message
    assert "more than 262144 (256 KiB)" in problems[0].message


def test_every_accepted_plan_reads_back_from_its_stored_form() -> None:
    # The same expansion, within the limit: what apply stores, load reads again.
    plan = parse_plan(aliased_plan(20))

    stored = json.loads(json.dumps(plan_to_dict(plan)))
    assert parse_plan_data(stored) == plan


# --- hostile YAML ------------------------------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def alias_chain(links: int = 200) -> str:
    """Each anchor nests the one before 20 deep: shallow as written, 4,000 deep when read."""
    lines = ["x0: &x0 1"]
    lines += [f"x{i}: &x{i} " + "[" * 20 + f"*x{i - 1}" + "]" * 20 for i in range(1, links)]
    return "\n".join(lines) + "\n"


HOSTILE = [
    ("flow-10000-deep", "a: " + "[" * 10_000 + "]" * 10_000, 1, "nests too deeply (more than 32"),
    ("flow-maps-10000", "a: " + "{a: " * 10_000 + "1" + "}" * 10_000, 1, "nests too deeply (more"),
    ("one-per-line", "a: " + "[\n" * 10_000 + "]" * 10_000, MAX_DEPTH, "nests too deeply (more"),
    ("alias-bomb", alias_bomb(), 1, f"too large (more than {MAX_YAML_NODES} YAML nodes)"),
    ("alias-chain", alias_chain(), 2, "nests too deeply (more than 32"),
    ("many-nodes", "a: [" + "x," * 60_000 + "x]\n", 1, "too large (more than 20000 YAML nodes)"),
]


@pytest.mark.parametrize(
    ("source", "line", "message"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_hostile_yaml_is_one_clear_problem_quickly(source: str, line: int, message: str) -> None:
    started = time.perf_counter()
    problems = problems_of(source)
    elapsed = time.perf_counter() - started

    assert [(p.path, p.line) for p in problems] == [("", line)], problems
    assert message in problems[0].message
    # Measured at 0.03 to 0.6 s on a busy 2-core machine; unbounded it was seconds or a crash.
    assert elapsed < 10


@pytest.mark.parametrize(
    ("source", "path", "message"),
    [
        (
            HEAD + "steps:\n  - {stage: canary, percent: " + "9" * 5000 + "}\n",
            "steps[0].percent",
            "cannot read this value",
        ),
        (
            HEAD + "steps:\n  - {stage: full, hold: 0x" + "f" * 5000 + "}\n",
            "steps[0].hold",
            "must be at most 366d, not a number too long to show",
        ),
        (HEAD + "steps:\n  - {stage: full, hold: 2024-13-45}\n", "steps[0].hold", "month must be"),
    ],
    ids=["5000-digit-int", "huge-hex", "bad-timestamp"],
)
def test_a_scalar_python_cannot_read_is_a_problem_on_its_field(
    source: str, path: str, message: str
) -> None:
    problems = problems_of(source)

    assert path in [p.path for p in problems]
    assert any(message in p.message for p in problems if p.path == path), problems


def test_a_deeply_nested_json_value_is_a_problem_not_a_recursion_error() -> None:
    deep: list[object] = []
    for _ in range(10_000):  # deeper than any stack; a decoder might build it so
        deep = [deep]
    data = copy.deepcopy(good())
    data["steps"][0]["stage"] = deep
    data["gates"][0]["stages"] = deep

    problems = problems_of(data)

    assert {"steps[0].stage", "gates[0].stages[0]"} <= {p.path for p in problems}


def test_limits_leave_the_runbook_alone() -> None:
    from tests.unit.test_planfile import RUNBOOK

    plan: Plan = parse_plan(RUNBOOK.read_text())
    assert len(plan.steps) == 12


# --- plans stored before the limits --------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        with_value(("steps", 0, "hold"), "99999999d"),
        with_value(("interval",), "2d"),
        *(case[1] for case in OVER_LIMITS),
    ],
    ids=["hold-99999999d", "interval-2d", *(case[0] for case in OVER_LIMITS)],
)
def test_a_stored_plan_over_a_limit_still_loads(data: dict[str, Any]) -> None:
    # Refused at apply, but a row stored by an older version must be shown, fixed, aborted.
    with pytest.raises(PlanError):
        parse_plan_data(data)

    assert parse_stored_plan(data).rollout == "demo"


def test_a_stored_plan_keeps_the_hold_it_was_stored_with() -> None:
    plan = parse_stored_plan(with_value(("steps", 0, "hold"), "99999999d"))

    assert plan.steps[0].hold == timedelta(days=99_999_999)


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (with_value(("steps", 0, "percent"), 101), "steps[0].percent"),
        (with_value(("interval",), "500ms"), "interval"),
        (with_value(("steps", 0, "hold"), "9" * 40 + "d"), "steps[0].hold"),  # no timedelta
        (plan_with(flag=".."), "flag"),
    ],
    ids=["percent", "interval-below-1s", "beyond-timedelta", "flag-dot-dot"],
)
def test_a_stored_plan_is_still_checked_for_everything_but_the_limits(
    data: dict[str, Any], path: str
) -> None:
    with pytest.raises(PlanError) as caught:
        parse_stored_plan(data)

    assert [p.path for p in caught.value.problems] == [path]
