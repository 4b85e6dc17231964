"""Where a placeholder stands in a gate query, and plans refused when no escaping is safe."""

from __future__ import annotations

import textwrap

import pytest

from stages.planfile import PlanError, parse_plan, parse_plan_data
from stages.query_templates import Context, placeholders, template_problems


@pytest.mark.parametrize(
    ("template", "contexts"),
    [
        ('x{r="${rollout}"}', [Context.STRING]),
        ('x{r=~"${rollout}"}', [Context.REGEX]),
        ('x{r!~ "a|${rollout}"}', [Context.REGEX]),
        ('x{a=~"b", r="${rollout}"}', [Context.STRING]),
        ("x{r='${rollout}'}", [Context.SINGLE]),
        ("x{r=`${rollout}`}", [Context.BACKTICK]),
        ("x > ${step}", [Context.BARE]),
        ('x # see "${rollout}"\n+ y{r="${flag}"}', [Context.COMMENT, Context.STRING]),
        ('x{r="a\\"${rollout}"}', [Context.STRING]),  # an escaped quote does not end it
        ("x{r='it\\'s ${rollout}'}", [Context.SINGLE]),
        ('x{r="#${rollout}"}', [Context.STRING]),  # "#" in a string is no comment
        ("x{r=`\\`}${rollout}", [Context.BARE]),  # no escapes in backticks
        ('x{r=~${step}, a="${flag}"}', [Context.BARE, Context.STRING]),
    ],
)
def test_each_placeholder_knows_where_it_stands(template: str, contexts: list[Context]) -> None:
    assert [p.context for p in placeholders(template)] == contexts


def test_a_placeholder_knows_its_line_and_column() -> None:
    found = placeholders('sum(x)\n  / sum(y{r="${rollout}"})')
    assert (found[0].name, found[0].line, found[0].column) == ("rollout", 2, 14)


@pytest.mark.parametrize(
    "template",
    [
        'x{r="${rollout}",v=~"${new_variant}|${old_variant}"}',
        "x > ${step} and y < ${percent}",
        'x{path=~".*/api$"}',
        "cost $$5",
    ],
)
def test_safe_templates_have_no_problems(template: str) -> None:
    assert template_problems(template) == []


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        (
            "x{r='${rollout}'}",
            "${rollout} stands in a single-quoted string; write it inside double",
        ),
        ("x{r=`${flag}`}", "${flag} stands in a backtick string"),
        ("${rollout}_total", "${rollout} stands outside any string"),
        ("x # ${rollout}", "${rollout} stands in a comment"),
        ('x{r="${rollout"}', "invalid placeholder"),
        ('x{r="${bad-name}"}', "invalid placeholder ${bad-name}"),
        ('x{r="${rollout"', "unterminated placeholder"),
    ],
)
def test_unsafe_templates_are_named(template: str, problem: str) -> None:
    problems = template_problems(template)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_a_multiline_template_says_which_line() -> None:
    (problem,) = template_problems("sum(x)\n/ sum(y{r='${rollout}'})")
    assert problem.endswith("(template line 2, column 12)")


PLAN = """\
rollout: tmpl
flag: tmpl
steps:
  - stage: canary
    percent: 5
gates:
  - name: ok-gate
    query: 'sum(x{rollout="${rollout}"})'
    hold_above: 1
  - name: single
    query: "sum(x{rollout='${rollout}'})"
    baseline: "sum(x{v=`${old_variant}`})"
    hold_above: 1
  - name: bare
    query: |
      sum(x)
        / ${flag}_total
    samples: 'sum(y{v="${new_variant}"}) > ${percent}'
    hold_above: 1
"""


def test_a_plan_is_refused_with_every_misplaced_placeholder_by_path_and_line() -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(PLAN)
    got = [(p.path, p.line, p.message) for p in caught.value.problems]
    assert got == [
        (
            "gates[1].query",
            11,
            "${rollout} stands in a single-quoted string; write it inside double quotes",
        ),
        (
            "gates[1].baseline",
            12,
            "${old_variant} stands in a backtick string; write it inside double quotes",
        ),
        (
            "gates[2].query",
            15,
            "${flag} stands outside any string; write it inside double quotes,"
            ' e.g. {rollout="${rollout}"} (template line 2, column 5)',
        ),
    ]


def test_the_same_check_applies_to_plans_sent_as_json() -> None:
    data = {
        "rollout": "tmpl",
        "flag": "tmpl",
        "steps": [{"stage": "full"}],
        "gates": [{"name": "g", "query": "x{r='${rollout}'}", "hold_above": 1}],
    }
    with pytest.raises(PlanError) as caught:
        parse_plan_data(data)
    assert [p.path for p in caught.value.problems] == ["gates[0].query"]


def test_a_plan_with_safe_templates_parses() -> None:
    plan = parse_plan(textwrap.dedent(PLAN).split("  - name: single")[0])
    assert plan.gates[0].query == 'sum(x{rollout="${rollout}"})'
