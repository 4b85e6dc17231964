"""Plan files: the runbook parses into effective exposure; bad plans name every problem."""

from __future__ import annotations

import copy
import json
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.plan import Gate, OnRollback, Plan, Stage
from stages.planfile import PlanError, Problem, parse_plan, parse_plan_data, plan_to_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
RUNBOOK = EXAMPLES / "memory-layer.yaml"
DEMO = EXAMPLES / "demo-seconds.yaml"
ALL_REGIONS = {"us-west-1", "us-east-1", "eu-west-1", "ap-southeast-1"}


def problems_of(source: str | object) -> list[Problem]:
    with pytest.raises(PlanError) as caught:
        if isinstance(source, str):
            parse_plan(textwrap.dedent(source))
        else:
            parse_plan_data(source)
    return caught.value.problems


def where(problems: list[Problem]) -> list[tuple[str, int | None]]:
    return [(p.path, p.line) for p in problems]


# --- the runbook -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runbook() -> Plan:
    return parse_plan(RUNBOOK.read_text())


def test_runbook_has_its_twelve_steps_in_stage_order(runbook: Plan) -> None:
    assert [step.stage for step in runbook.steps] == [
        Stage.SHADOW,
        *[Stage.CANARY] * 3,
        *[Stage.GRADUATED] * 3,
        *[Stage.REGIONAL] * 3,
        Stage.FULL,
        Stage.FULL,
    ]
    assert [step.percent for step in runbook.steps] == [
        0,
        1,
        2,
        5,
        10,
        25,
        50,
        50,
        50,
        50,
        100,
        100,
    ]


def test_runbook_regions_accumulate_and_keep_the_last_percent(runbook: Plan) -> None:
    pilot, second, rest = runbook.steps[7:10]

    assert (pilot.stage, pilot.regions, pilot.percent) == (
        Stage.REGIONAL,
        frozenset({"us-west-1"}),
        50,
    )
    assert second.regions == {"us-west-1", "us-east-1"}
    assert rest.regions == ALL_REGIONS
    assert runbook.steps[11].regions == ALL_REGIONS


def test_runbook_stops_dual_writes_only_at_the_end(runbook: Plan) -> None:
    assert [step.shadow for step in runbook.steps] == [True] * 11 + [False]
    assert runbook.steps[10].approval
    assert runbook.steps[0].hold == timedelta(days=7)
    assert runbook.steps[11].hold == timedelta(0)


def test_runbook_top_level_fields_and_defaults(runbook: Plan) -> None:
    assert (runbook.rollout, runbook.flag, runbook.salt) == (
        "memory-layer",
        "memory-layer",
        "memory-layer-v2",
    )
    assert runbook.interval == timedelta(minutes=1)
    assert (runbook.min_evaluations, runbook.max_gate_errors) == (3, 4)
    assert runbook.rollback_observe == timedelta(minutes=10)
    assert (runbook.old_variant, runbook.new_variant) == ("off", "on")


def test_runbook_gates_have_their_thresholds(runbook: Plan) -> None:
    gates = {gate.name: gate for gate in runbook.gates}

    # "canary error rate <= baseline + 0.1 %": a compare gate over the step so far.
    errors = gates["errors-vs-old"].compare
    assert errors is not None and errors.worse_by == 0.001
    assert "${step_window}" in errors.events and 'status="error"' in errors.events
    # Users differ: the gap a random 1 % of them has by chance is allowed for, and with
    # it a small step cannot show "not worse", so the gate is a guardrail.
    assert errors.user_spread == 0.0009
    assert errors.requires == "no_regression" and errors.on_regression == "rollback"
    slow = gates["slow-vs-old"].compare
    assert slow is not None and (slow.histogram, slow.slower_than) == (
        "memory_operation_latency_ms",
        200,
    )
    assert runbook.false_rollback_budget == 0.01
    # Gross breaches stay absolute, each with a minimum sample.
    assert gates["error-rate"].thresholds() == {"abort_above": 0.05}
    assert gates["error-rate"].min_samples == 100
    assert gates["error-rate"].sustain == gates["p99-latency-ms"].sustain == timedelta(minutes=5)
    assert gates["p99-latency-ms"].thresholds() == {"abort_above": 500, "rollback_above": 400}
    assert gates["circuit-breaker-opens"].thresholds() == {"rollback_above": 0}
    # Read gates never apply in shadow, where nobody reads the new side.
    reads = [gates[name] for name in ("errors-vs-old", "slow-vs-old", "error-rate")]
    assert all(Stage.SHADOW not in gate.stages for gate in reads)


def test_demo_plan_is_the_runbook_in_seconds(runbook: Plan) -> None:
    demo = parse_plan(DEMO.read_text())

    assert [s.stage for s in demo.steps] == [s.stage for s in runbook.steps]
    assert [s.percent for s in demo.steps] == [s.percent for s in runbook.steps]
    assert [s.regions for s in demo.steps] == [s.regions for s in runbook.steps]
    assert all(step.hold <= timedelta(seconds=10) for step in demo.steps)
    assert demo.interval == timedelta(seconds=2)
    assert demo.min_evaluations == 2
    assert [g.name for g in demo.gates] == [g.name for g in runbook.gates]


@pytest.mark.parametrize("path", [RUNBOOK, DEMO], ids=["runbook", "demo"])
def test_examples_round_trip_through_json(path: Path) -> None:
    plan = parse_plan(path.read_text())
    data = json.loads(json.dumps(plan_to_dict(plan)))

    assert parse_plan_data(data) == plan


def test_canonical_form_lists_the_regions_each_step_adds(runbook: Plan) -> None:
    steps = plan_to_dict(runbook)["steps"]

    assert [step.get("regions") for step in steps[7:10]] == [
        ["us-west-1"],
        ["us-east-1"],
        ["ap-southeast-1", "eu-west-1"],
    ]
    assert "percent" not in steps[7]
    gates = plan_to_dict(runbook)["gates"]
    assert (gates[0]["kind"], gates[0]["worse_by"]) == ("compare", 0.001)
    assert (gates[2]["for"], gates[2]["min_samples"]) == ("5m", 100)


# --- more of the format ------------------------------------------------------------------

FULL_FEATURED = """\
rollout: checkout.v2
flag: Checkout_V2
description: new checkout
interval: 30s
min_evaluations: 5
max_gate_errors: 2
rollback_observe: 1h
variants: {old: legacy, new: "v2"}
labels: {team: payments, tier: "1"}
steps:
  - {stage: canary, percent: 0.05, hold: 1h30m, on_rollback: pause}
  - stage: graduated
    percent: 12.5
    approval: true
    gates:
      - {name: conversion, query: conv, samples: reqs, min_samples: 100, hold_below: 0.9,
         rollback_below: 0.8, abort_below: 0.5, delay: 2m, for: 90s}
  - {stage: full}
gates:
  - {name: errors, query: errs, abort_above: 0.1, stages: [canary, graduated]}
"""


def test_every_field_reaches_the_plan() -> None:
    plan = parse_plan(FULL_FEATURED)

    assert plan.description == "new checkout"
    assert (plan.interval, plan.min_evaluations, plan.max_gate_errors) == (
        timedelta(seconds=30),
        5,
        2,
    )
    assert plan.rollback_observe == timedelta(hours=1)
    assert (plan.old_variant, plan.new_variant) == ("legacy", "v2")
    assert plan.labels == (("team", "payments"), ("tier", "1"))
    assert plan.salt is None
    assert plan.steps[0].on_rollback is OnRollback.PAUSE
    assert plan.steps[1].percent == 12.5
    assert plan.steps[2].percent == 100
    assert plan.steps[1].gates == (
        Gate(
            name="conversion",
            query="conv",
            samples="reqs",
            min_samples=100,
            hold_below=0.9,
            rollback_below=0.8,
            abort_below=0.5,
            delay=timedelta(minutes=2),
            sustain=timedelta(seconds=90),
        ),
    )
    assert plan.gates[0].stages == {Stage.CANARY, Stage.GRADUATED}
    assert parse_plan_data(json.loads(json.dumps(plan_to_dict(plan)))) == plan


def test_a_plan_of_one_full_step_is_a_switch() -> None:
    plan = parse_plan_data({"rollout": "r", "flag": "f", "steps": [{"stage": "full"}]})

    assert plan.steps[0].percent == 100
    assert plan.gates == ()


def test_dual_write_stays_off_once_a_full_step_stops_it() -> None:
    plan = parse_plan_data(
        {
            "rollout": "r",
            "flag": "f",
            "steps": [{"stage": "full", "shadow": False}, {"stage": "full", "hold": "1d"}],
        }
    )

    assert [step.shadow for step in plan.steps] == [False, False]


# --- bad plans, one problem each ---------------------------------------------------------

HEAD = "rollout: demo\nflag: demo\n"  # lines 1-2
STEPS = "steps:\n  - {stage: canary, percent: 1}\n"  # lines 3-4
OK_GATE = "  - {name: ok, query: q, hold_above: 1}\n"

BAD_PLANS = [
    # (id, YAML, path, line, message fragment)
    ("missing-rollout", "flag: demo\n" + STEPS, "rollout", 1, "rollout is required"),
    ("bad-rollout-name", "rollout: Demo!\nflag: demo\n" + STEPS, "rollout", 1, "not a valid"),
    ("bad-flag-key", "rollout: demo\nflag: 'a b'\n" + STEPS, "flag", 2, "not a valid"),
    ("missing-steps", HEAD, "steps", 1, "steps is required"),
    ("empty-steps", HEAD + "steps: []\n", "steps", 3, "at least one step"),
    ("steps-not-a-list", HEAD + "steps: {stage: full}\n", "steps", 3, "must be a list"),
    ("step-not-a-mapping", HEAD + "steps:\n  - full\n", "steps[0]", 4, "must be a mapping"),
    (
        "unknown-top-field",
        HEAD + "intervall: 5m\n" + STEPS,
        "intervall",
        3,
        "unknown field 'intervall' (did you mean 'interval'?)",
    ),
    ("interval-too-short", HEAD + "interval: 500ms\n" + STEPS, "interval", 3, "at least 1s"),
    ("bad-interval", HEAD + "interval: soon\n" + STEPS, "interval", 3, "not a duration"),
    ("zero-min-evaluations", HEAD + "min_evaluations: 0\n" + STEPS, "min_evaluations", 3, "1"),
    ("float-max-errors", HEAD + "max_gate_errors: 2.5\n" + STEPS, "max_gate_errors", 3, "whole"),
    (
        "unquoted-off-variant",
        HEAD + "variants: {old: off, new: 'on'}\n" + STEPS,
        "variants.old",
        3,
        "quote on/off",
    ),
    ("same-variants", HEAD + "variants: {old: a, new: a}\n" + STEPS, "variants.new", 3, "differ"),
    ("label-not-text", HEAD + "labels: {tier: 1}\n" + STEPS, "labels.tier", 3, "string"),
    ("missing-stage", HEAD + "steps:\n  - {percent: 1}\n", "steps[0].stage", 4, "required"),
    (
        "unknown-stage",
        HEAD + "steps:\n  - {stage: canery, percent: 1}\n",
        "steps[0].stage",
        4,
        "one of",
    ),
    (
        "step-typo",
        HEAD + "steps:\n  - {stage: canary, percent: 1, hodl: 1d}\n",
        "steps[0].hodl",
        4,
        "did you mean 'hold'",
    ),
    ("bad-hold", HEAD + "steps:\n  - {stage: shadow, hold: 2 days}\n", "steps[0].hold", 4, "unit"),
    (
        "negative-hold",
        HEAD + "steps:\n  - {stage: shadow, hold: -1}\n",
        "steps[0].hold",
        4,
        "negative",
    ),
    (
        "canary-without-percent",
        HEAD + "steps:\n  - {stage: canary}\n",
        "steps[0].percent",
        4,
        "needs",
    ),
    (
        "canary-at-100",
        HEAD + "steps:\n  - {stage: canary, percent: 100}\n",
        "steps[0].percent",
        4,
        "below 100",
    ),
    (
        "percent-as-text",
        HEAD + "steps:\n  - {stage: canary, percent: 5%}\n",
        "steps[0].percent",
        4,
        "number",
    ),
    (
        "percent-too-fine",
        HEAD + "steps:\n  - {stage: canary, percent: 0.001}\n",
        "steps[0].percent",
        4,
        "2 decimals",
    ),
    (
        "percent-above-100",
        HEAD + "steps:\n  - {stage: canary, percent: 101}\n",
        "steps[0].percent",
        4,
        "between",
    ),
    (
        "shadow-with-percent",
        HEAD + "steps:\n  - {stage: shadow, percent: 5}\n",
        "steps[0].percent",
        4,
        "leave percent out",
    ),
    (
        "full-with-percent",
        HEAD + "steps:\n  - {stage: full, percent: 50}\n",
        "steps[0].percent",
        4,
        "leave percent out",
    ),
    (
        "regional-with-percent",
        HEAD + "steps:\n  - {stage: regional, regions: [eu], percent: 5}\n",
        "steps[0].percent",
        4,
        "keeps the last percent",
    ),
    (
        "regional-without-regions",
        HEAD + "steps:\n  - {stage: regional}\n",
        "steps[0].regions",
        4,
        "needs regions",
    ),
    (
        "regional-empty-regions",
        HEAD + "steps:\n  - {stage: regional, regions: []}\n",
        "steps[0].regions",
        4,
        "at least one region",
    ),
    (
        "regions-on-canary",
        HEAD + "steps:\n  - {stage: canary, percent: 1, regions: [eu]}\n",
        "steps[0].regions",
        4,
        "regional steps",
    ),
    (
        "regions-on-full",
        HEAD + "steps:\n  - {stage: full, regions: [eu]}\n",
        "steps[0].regions",
        4,
        "regional steps",
    ),
    (
        "region-twice",
        HEAD + "steps:\n  - stage: regional\n    regions:\n      - eu\n      - eu\n",
        "steps[0].regions[1]",
        7,
        "listed twice",
    ),
    (
        "percent-falls",
        HEAD + "steps:\n  - {stage: canary, percent: 10}\n  - {stage: canary, percent: 5}\n",
        "steps[1].percent",
        5,
        "percent must not fall: 5 after 10",
    ),
    (
        "percent-falls-after-regional",
        HEAD
        + "steps:\n  - {stage: graduated, percent: 50}\n  - {stage: regional, regions: [eu]}\n"
        + "  - {stage: graduated, percent: 25}\n",
        "steps[2].stage",
        6,
        "graduated after regional",
    ),
    (
        "region-not-new",
        HEAD + "steps:\n  - {stage: regional, regions: [eu, us]}\n"
        "  - {stage: regional, regions: [us]}\n",
        "steps[1].regions",
        5,
        "adds no new region",
    ),
    (
        "full-not-last",
        HEAD + "steps:\n  - {stage: full}\n  - {stage: regional, regions: [eu]}\n",
        "steps[1].stage",
        5,
        "full steps come last: regional after full",
    ),
    (
        "stage-goes-back",
        HEAD + "steps:\n  - {stage: graduated, percent: 10}\n  - {stage: canary, percent: 20}\n",
        "steps[1].stage",
        5,
        "canary after graduated",
    ),
    (
        "shadow-not-first",
        HEAD + "steps:\n  - {stage: canary, percent: 1}\n  - {stage: shadow}\n",
        "steps[1].stage",
        5,
        "shadow after canary",
    ),
    (
        "shadow-false-not-on-full",
        HEAD + "steps:\n  - {stage: canary, percent: 1, shadow: false}\n",
        "steps[0].shadow",
        4,
        "only a full step",
    ),
    (
        "dual-write-restarts",
        HEAD + "steps:\n  - {stage: full, shadow: false}\n  - {stage: full, shadow: true}\n",
        "steps[1].shadow",
        5,
        "cannot restart",
    ),
    (
        "approval-as-text",
        HEAD + "steps:\n  - {stage: full, approval: maybe}\n",
        "steps[0].approval",
        4,
        "true or false",
    ),
    (
        "bad-on-rollback",
        HEAD + "steps:\n  - {stage: full, on_rollback: stop}\n",
        "steps[0].on_rollback",
        4,
        "step_back, pause",
    ),
    ("gates-not-a-list", HEAD + STEPS + "gates: {name: x}\n", "gates", 5, "must be a list"),
    (
        "gate-without-name",
        HEAD + STEPS + "gates:\n  - {query: q, hold_above: 1}\n",
        "gates[0].name",
        6,
        "required",
    ),
    (
        "gate-without-query",
        HEAD + STEPS + "gates:\n  - {name: g, hold_above: 1}\n",
        "gates[0].query",
        6,
        "required",
    ),
    (
        "gate-empty-query",
        HEAD + STEPS + "gates:\n  - {name: g, query: ' ', hold_above: 1}\n",
        "gates[0].query",
        6,
        "empty",
    ),
    (
        "gate-without-threshold",
        HEAD + STEPS + "gates:\n  - {name: g, query: q}\n",
        "gates[0]",
        6,
        "at least one threshold",
    ),
    (
        "threshold-typo",
        HEAD
        + STEPS
        + "gates:\n  - name: g\n    query: q\n    hold_above: 1\n    rolback_above: 2\n",
        "gates[0].rolback_above",
        9,
        "did you mean 'rollback_above'",
    ),
    (
        "threshold-is-boolean",
        HEAD + STEPS + "gates:\n  - {name: g, query: q, abort_above: true}\n",
        "gates[0].abort_above",
        6,
        "not a boolean",
    ),
    (
        "threshold-is-text",
        HEAD + STEPS + "gates:\n  - {name: g, query: q, abort_above: high}\n",
        "gates[0].abort_above",
        6,
        "must be a number",
    ),
    (
        "above-out-of-order",
        HEAD
        + STEPS
        + "gates:\n  - name: g\n    query: q\n    hold_above: 0.01\n    rollback_above: 0.001\n",
        "gates[0].rollback_above",
        9,
        "rollback_above must be at least hold_above (0.01)",
    ),
    (
        "above-out-of-order-skipping-one",
        HEAD + STEPS + "gates:\n  - {name: g, query: q, hold_above: 5, abort_above: 1}\n",
        "gates[0].abort_above",
        6,
        "abort_above must be at least hold_above (5)",
    ),
    (
        "below-out-of-order",
        HEAD + STEPS + "gates:\n  - {name: g, query: q, rollback_below: 0.5, abort_below: 0.8}\n",
        "gates[0].abort_below",
        6,
        "abort_below must be at most rollback_below (0.5)",
    ),
    (
        "min-samples-without-samples",
        HEAD + STEPS + "gates:\n  - {name: g, query: q, hold_above: 1, min_samples: 50}\n",
        "gates[0].min_samples",
        6,
        "needs a samples query",
    ),
    (
        "negative-min-samples",
        HEAD
        + STEPS
        + "gates:\n  - {name: g, query: q, samples: s, hold_above: 1, min_samples: -1}\n",
        "gates[0].min_samples",
        6,
        "at least 0",
    ),
    (
        "bad-for",
        HEAD + STEPS + "gates:\n  - {name: g, query: q, hold_above: 1, for: 5 min}\n",
        "gates[0].for",
        6,
        "unit",
    ),
    (
        "bad-delay",
        HEAD + STEPS + "gates:\n  - {name: g, query: q, hold_above: 1, delay: [1]}\n",
        "gates[0].delay",
        6,
        "duration",
    ),
    (
        "unknown-gate-stage",
        HEAD + STEPS + "gates:\n  - {name: g, query: q, hold_above: 1, stages: [canary, ful]}\n",
        "gates[0].stages[1]",
        6,
        "not one of",
    ),
    (
        "duplicate-gate-name",
        HEAD + STEPS + "gates:\n" + OK_GATE + OK_GATE,
        "gates[1].name",
        7,
        "'ok' is already used by gates[0]",
    ),
    (
        "step-gate-reuses-plan-gate-name",
        HEAD
        + "steps:\n  - stage: canary\n    percent: 1\n    gates:\n  "
        + OK_GATE
        + "gates:\n"
        + OK_GATE,
        "steps[0].gates[0].name",
        7,
        "already used by gates[0]",
    ),
    (
        "duplicate-key",
        HEAD + "rollout: other\n" + STEPS,
        "rollout",
        3,
        "given twice",
    ),
    ("yaml-syntax-error", HEAD + "steps:\n  - {stage: full\n", "", 5, "YAML syntax error"),
    (
        "bad-indentation",
        HEAD + "steps:\n  - stage: full\n   hold: 1d\n",
        "",
        5,
        "YAML syntax error",
    ),
    ("not-a-mapping", "- rollout: demo\n", "", 1, "a plan must be a mapping"),
    ("empty-file", "# nothing yet\n", "", 1, "empty"),
]


@pytest.mark.parametrize(
    ("source", "path", "line", "message"),
    [case[1:] for case in BAD_PLANS],
    ids=[case[0] for case in BAD_PLANS],
)
def test_a_bad_plan_names_its_problem_by_path_and_line(
    source: str, path: str, line: int, message: str
) -> None:
    problems = problems_of(source)

    assert where(problems) == [(path, line)], problems
    assert message in problems[0].message


def test_problems_read_one_per_line_with_path_and_line() -> None:
    source = HEAD + "steps:\n  - {stage: canary, percent: 10}\n  - {stage: canary, percent: 5}\n"

    with pytest.raises(PlanError) as caught:
        parse_plan(source)

    assert str(caught.value) == "steps[1].percent (line 5): percent must not fall: 5 after 10"


def test_every_problem_is_reported_not_just_the_first() -> None:
    source = """\
        rollout: Bad Name
        flag: demo
        interval: 1x
        steps:
          - {stage: shadow, hold: 7d}
          - {stage: canary, percent: 10}
          - {stage: canary, percent: 5}
          - {stage: regional, regions: [eu]}
          - {stage: regional, regions: [eu]}
          - {stage: full, shadow: false}
          - {stage: canary, percent: 50}
        gates:
          - name: errors
            query: q
            hold_above: 0.1
            rolback_above: 0.2
            abort_above: 0.05
          - {name: errors, query: q, hold_below: true}
    """

    problems = problems_of(source)

    assert where(problems) == [
        ("rollout", 1),
        ("interval", 3),
        ("steps[2].percent", 7),
        ("steps[4].regions", 9),
        ("steps[6].stage", 11),
        ("gates[0].rolback_above", 16),
        ("gates[0].abort_above", 17),
        ("gates[1].hold_below", 18),
        ("gates[1].name", 18),
    ]
    assert str(PlanError(problems)).count("\n") == len(problems) - 1


def alias_bomb(levels: int = 6) -> str:
    """Each level lists the one before ten times: 10**levels nodes from six short lines."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("source", "line", "message"),
    [
        (HEAD + 'steps:\n  - {stage: full}\ndescription: "a\x07b"\n', 5, "#x0007"),
        ("a: " + "[" * 3000 + "]" * 3000, 1, "nests too deeply"),
        (alias_bomb(), 1, "too large"),
        (HEAD + STEPS + "---\nrollout: other\n", 5, "single document"),
        (HEAD + "steps: [{stage: !custom full}]\n", 3, "tag '!custom'"),
    ],
    ids=["control-character", "deep-nesting", "alias-bomb", "two-documents", "unknown-tag"],
)
def test_hostile_yaml_is_one_problem_with_its_line(source: str, line: int, message: str) -> None:
    problems = problems_of(source)

    assert where(problems) == [("", line)], problems
    assert message in problems[0].message


def test_a_self_referencing_alias_is_a_problem_not_a_hang() -> None:
    problems = problems_of(HEAD + "steps: &s [*s]\n")

    assert ("steps[0]", 3) in where(problems)


def test_merge_keys_share_step_fields_and_written_fields_win() -> None:
    source = HEAD + (
        "steps:\n"
        "  - &canary {stage: canary, percent: 1, hold: 2d}\n"
        "  - {<<: *canary, percent: 2}\n"
        "  - {stage: full}\n"
    )

    plan = parse_plan(source)

    assert [(step.percent, step.hold) for step in plan.steps[:2]] == [
        (1, timedelta(days=2)),
        (2, timedelta(days=2)),
    ]


@pytest.mark.parametrize("path", [RUNBOOK, DEMO], ids=["runbook", "demo"])
def test_the_canonical_form_dumped_as_yaml_reads_back(path: Path) -> None:
    plan = parse_plan(path.read_text())

    assert parse_plan(yaml.safe_dump(plan_to_dict(plan))) == plan


# --- decoded data: same rules, no lines --------------------------------------------------

GOOD: dict[str, Any] = {
    "rollout": "demo",
    "flag": "demo",
    "steps": [{"stage": "canary", "percent": 1}, {"stage": "full"}],
    "gates": [{"name": "errors", "query": "q", "abort_above": 0.1}],
}


def changed(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (["not", "a", "mapping"], ""),
        (changed(("rollout",), 42), "rollout"),
        (changed(("steps",), "canary"), "steps"),
        (changed(("steps", 0), ["canary"]), "steps[0]"),
        (changed(("steps", 0, "percent"), "1"), "steps[0].percent"),
        (changed(("steps", 0, "hold"), {"days": 1}), "steps[0].hold"),
        (changed(("steps", 1), {"stage": "regional", "regions": "eu"}), "steps[1].regions"),
        (changed(("gates", 0), "errors > 0.1"), "gates[0]"),
        (changed(("gates", 0, "abort_above"), [0.1]), "gates[0].abort_above"),
        (changed(("gates", 0, "abort_above"), float("nan")), "gates[0].abort_above"),
        (changed(("gates", 0, "abort_above"), 10**400), "gates[0].abort_above"),
        (changed(("gates", 0, "stages"), "canary"), "gates[0].stages"),
        (changed(("gates", 0, "name"), "errors\x00"), "gates[0].name"),
        (changed(("gates", 0, "name"), "errors\nforged line"), "gates[0].name"),
        (changed(("steps", 1), {"stage": "regional", "regions": ["eu\t"]}), "steps[1].regions[0]"),
        (changed(("labels",), ["team"]), "labels"),
        (changed(("variants",), "off/on"), "variants"),
        ({**GOOD, 3: "three"}, ""),
    ],
)
def test_type_errors_in_decoded_data_are_problems(data: object, path: str) -> None:
    problems = problems_of(data)

    assert where(problems) == [(path, None)], problems


def test_decoded_data_accepts_null_as_absent() -> None:
    plan = parse_plan_data({**GOOD, "salt": None, "gates": None})

    assert plan.salt is None
    assert plan.gates == ()


# --- properties --------------------------------------------------------------------------

FIELD_NAMES = st.sampled_from(
    [
        "rollout",
        "flag",
        "steps",
        "gates",
        "stage",
        "percent",
        "regions",
        "hold",
        "shadow",
        "name",
        "query",
        "samples",
        "min_samples",
        "hold_above",
        "abort_below",
        "for",
        "stages",
        "variants",
        "old",
        "labels",
        "interval",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["canary", "full", "regional", "5m", "demo", "us-west-1", "pause"])
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(FIELD_NAMES | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=300)
@given(JUNK)
def test_junk_raises_plan_error_and_nothing_else(data: object) -> None:
    try:
        parse_plan_data(data)
    except PlanError as exc:
        assert exc.problems
        assert all(isinstance(problem.path, str) for problem in exc.problems)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.sampled_from(["steps", "gates"]), st.integers(0, 1), FIELD_NAMES)), JUNK
)
def test_junk_inside_a_good_plan_raises_plan_error_or_parses(
    places: list[tuple[str, int, str]], junk: object
) -> None:
    data = copy.deepcopy(GOOD)
    for section, index, field in places:
        items = data[section]
        items[min(index, len(items) - 1)][field] = junk
    try:
        plan = parse_plan_data(data)
    except PlanError:
        return
    assert parse_plan_data(plan_to_dict(plan)) == plan


@settings(max_examples=200)
@given(st.text(max_size=60))
def test_any_text_raises_plan_error_or_parses(text: str) -> None:
    try:
        parse_plan(text)
    except PlanError as exc:
        assert all(problem.line is None or problem.line >= 1 for problem in exc.problems)


PERCENTS = st.integers(1, 9999).map(lambda hundredths: hundredths / 100)


@st.composite
def valid_plans(draw: st.DrawFn) -> dict[str, Any]:
    """Plans that widen by construction: sorted percents, new regions, full last."""
    steps: list[dict[str, Any]] = []
    if draw(st.booleans()):
        steps.append({"stage": "shadow", "hold": draw(st.sampled_from(["0s", "7d", "90s"]))})
    for percent in sorted(draw(st.lists(PERCENTS, max_size=4))):
        stage = "canary" if percent < 5 else "graduated"
        steps.append({"stage": stage, "percent": percent, "approval": draw(st.booleans())})
    regions = draw(st.lists(st.sampled_from(sorted(ALL_REGIONS)), unique=True, max_size=4))
    for region in regions:
        steps.append({"stage": "regional", "regions": [region], "on_rollback": "pause"})
    steps.append({"stage": "full", "shadow": draw(st.booleans())})
    gates = [
        {"name": f"g{i}", "query": "q", "rollback_above": level, "abort_above": level * 2}
        for i, level in enumerate(draw(st.lists(st.floats(0, 1e6), max_size=3)))
    ]
    return {"rollout": "prop", "flag": "prop", "steps": steps, "gates": gates}


@given(valid_plans())
def test_valid_plans_round_trip_and_only_widen(data: dict[str, Any]) -> None:
    plan = parse_plan_data(data)

    assert parse_plan_data(json.loads(json.dumps(plan_to_dict(plan)))) == plan
    for before, after in zip(plan.steps, plan.steps[1:], strict=False):
        assert after.percent >= before.percent
        assert after.regions >= before.regions
