"""Gate queries checked before apply: unknown variables, Prometheus' parse errors placed
in the template, and a Prometheus that cannot answer (a fake; the real one is in
tests/e2e/test_plan_history_cli.py)."""

from __future__ import annotations

import json
import textwrap

import pytest

from controller.gates.prometheus import SyntaxUnchecked
from controller.gates.reading import query_variables
from controller.plan_checks import check_gate_queries, refusal
from stages.gate_queries import VARIABLES, gate_queries, template_position
from stages.planfile import parse_plan
from stages.state import RolloutState
from tests.unit.plans import T0

PLAN = textwrap.dedent(
    """\
    rollout: checkout
    flag: checkout
    steps:
      - {stage: shadow}
      - {stage: canary, percent: 5}
      - stage: full
        gates:
          - {name: step-gate, query: 'up{job="${flag}"}', hold_below: 1}
    gates:
      - name: error-rate
        query: sum(rate(errors_total{rollout="${rollout}"}[5m]))
        baseline: sum(rate(errors_total{variant="${old_variant}"}[5m]))
        abort_above: 0.05
        stages: [canary]
    """
)


def test_the_variables_are_the_ones_every_check_gives() -> None:
    plan = parse_plan(PLAN)
    assert set(VARIABLES) == set(query_variables(RolloutState(plan=plan), T0))


def test_each_template_is_rendered_with_the_first_step_it_applies_to() -> None:
    queries = gate_queries(parse_plan(PLAN))
    assert [(q.path, q.where) for q in queries] == [
        ("gates[0].query", "gates[0] error-rate: query"),
        ("gates[0].baseline", "gates[0] error-rate: baseline"),
        ("steps[2].gates[0].query", "steps[2].gates[0] step-gate: query"),
    ]
    assert queries[0].variables["stage"] == "canary" and queries[0].variables["step"] == "2"
    assert queries[0].rendered == 'sum(rate(errors_total{rollout="checkout"}[5m]))'
    assert queries[2].rendered == 'up{job="checkout"}'


POSITIONS = {
    # (template, Prometheus' line:column in the rendered query, expected (line, column))
    "no placeholder": ("sum(rate(x[5m])", (1, 16), (1, 16)),
    "after a longer value": ('x{rollout="${rollout}"} +', (1, 32), (1, 26)),
    "inside a value points at its placeholder": ('x{a="${rollout}"}', (1, 8), (1, 6)),
    "a second line": ('x{a="${flag}"}\n  / (', (2, 6), (2, 6)),
    "UTF-8 bytes before the point": ('x{a="é"} +', (1, 12), (1, 11)),
}


@pytest.mark.parametrize(("template", "rendered_at", "expected"), POSITIONS.values(), ids=POSITIONS)
def test_a_parse_error_is_placed_in_the_template(
    template: str, rendered_at: tuple[int, int], expected: tuple[int, int]
) -> None:
    plan = parse_plan(
        "rollout: checkout-service\nflag: checkout-service\nsteps: [{stage: full}]\n"
        f"gates:\n  - {{name: g, hold_above: 1, query: {json.dumps(template)}}}\n"
    )
    (query,) = gate_queries(plan)
    assert template_position(query, *rendered_at) == expected


class FakeSyntax:
    """Answers like Prometheus' format_query: a bad_data error for what it lists."""

    url = "http://prometheus.test"

    def __init__(self, errors: dict[str, str] | None = None, down: bool = False) -> None:
        self.errors = errors or {}
        self.down = down
        self.asked: list[str] = []

    def parse_error(self, query: str, timeout: float) -> str | None:
        self.asked.append(query)
        if self.down:
            raise SyntaxUnchecked("prometheus unreachable at http://prometheus.test: refused")
        return self.errors.get(query)


def test_a_query_that_does_not_parse_is_a_problem_naming_gate_field_and_line() -> None:
    bad = 'sum(rate(errors_total{rollout="checkout"}[5m])'
    syntax = FakeSyntax(
        {bad: 'invalid parameter "query": 1:47: parse error: unclosed left parenthesis'}
    )
    source = PLAN.replace("[5m]))\n    baseline", "[5m])\n    baseline")
    check = check_gate_queries(parse_plan(source), source, syntax, 5.0)
    assert check.problems == [
        {
            "field": "gates[0].query",
            "line": 11,
            "message": "gate error-rate: parse error at char 49: unclosed left parenthesis",
            "where": "gates[0] error-rate: query",
            "detail": "parse error at char 49: unclosed left parenthesis",
        }
    ]
    assert refusal(check) == (
        "gates[0] error-rate: query: parse error at char 49: unclosed left parenthesis; "
        "nothing was applied"
    )
    assert check.warnings == [] and check.checked == 3


def test_an_unknown_variable_is_refused_without_asking_prometheus() -> None:
    source = PLAN.replace('up{job="${flag}"}', 'up{team="${team}"}')
    syntax = FakeSyntax()
    check = check_gate_queries(parse_plan(source), source, syntax, 5.0)
    (problem,) = check.problems
    assert problem["field"] == "steps[2].gates[0].query" and problem["line"] == 8
    assert "unknown variable ${team} (known: flag, new_variant" in str(problem["message"])
    assert len(syntax.asked) == 2  # the two other queries: the broken one is not sent


def test_prometheus_down_is_one_warning_and_no_problem() -> None:
    syntax = FakeSyntax(down=True)
    check = check_gate_queries(parse_plan(PLAN), PLAN, syntax, 5.0)
    assert check.problems == [] and check.checked == 0
    (warning,) = check.warnings
    assert warning.startswith("gate query syntax not checked (3 of 3 queries): prometheus unr")
    assert "prometheus unreachable" in warning and "applies" in warning
    assert len(syntax.asked) == 1  # it stops asking at the first failure


def test_no_time_left_is_a_warning_too() -> None:
    check = check_gate_queries(parse_plan(PLAN), PLAN, FakeSyntax(), 0.0)
    assert check.problems == [] and "did not answer in time" in check.warnings[0]


def test_a_query_used_twice_is_asked_once_and_a_json_plan_has_no_lines() -> None:
    plan = parse_plan(PLAN.replace('variant="${old_variant}"', 'rollout="${rollout}"'))
    syntax = FakeSyntax()
    check = check_gate_queries(plan, "", syntax, 5.0)
    assert check.checked == 2 and len(syntax.asked) == 2
    assert check_gate_queries(plan, "", None, 5.0).warnings == [
        "no Prometheus is configured: gate query syntax unchecked"
    ]
