"""The gate-query checks a plan passes before it is applied: the one function that both
``rollout apply`` and ``rollout apply --dry-run`` run (``Rollouts.apply``), so that
what dry-run calls valid, apply accepts.

- A ``${name}`` no check knows: refused, without asking Prometheus.
- A query the configured Prometheus cannot parse: refused, with Prometheus' message
  and where in the template it points ("gates[2] error-rate: query: parse error at
  char 17: unclosed left parenthesis").
- Prometheus unreachable, too slow or not Prometheus: a warning, and the plan is
  applied unchecked. A query that later fails to parse reads as ``error`` at every
  check: the rollout holds, then pauses; it never advances on it.

Every query is checked once (identical ones share the answer), and the whole check
has one time budget: a hanging Prometheus delays an apply by at most that.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controller.gates.prometheus import SyntaxUnchecked
from stages.gate_queries import GateQuery, gate_queries, template_position
from stages.plan import Plan
from stages.problems import Report, render
from stages.yamlsource import read_yaml

# Prometheus' parse errors: 'invalid parameter "query": 1:19: parse error: unclosed ...'.
_POSITIONED = re.compile(r"(\d+):(\d+): parse error: (.*)", re.DOTALL)
_UNPOSITIONED = re.compile(r"parse error: (.*)", re.DOTALL)


class QuerySyntax(Protocol):
    """What can tell whether a PromQL query parses (``PrometheusGates``)."""

    url: str

    def parse_error(self, query: str, timeout: float) -> str | None:
        """The parse error, or ``None``; raises ``SyntaxUnchecked`` when it cannot say."""
        ...


@dataclass(frozen=True)
class QueryCheck:
    problems: list[dict[str, object]] = field(default_factory=list)  # each refuses the plan
    warnings: list[str] = field(default_factory=list)  # said, and the plan still applies
    checked: int = 0  # queries Prometheus parsed

    def as_dict(self) -> dict[str, object]:
        return {"problems": self.problems, "warnings": self.warnings, "checked": self.checked}


def check_gate_queries(
    plan: Plan, source: str, syntax: QuerySyntax | None, budget_seconds: float
) -> QueryCheck:
    """Unknown variables and syntax of every query of every gate of ``plan``."""
    lines = _lines(source)
    queries = gate_queries(plan)
    problems = [_problem(q, str(q.problem), lines) for q in queries if q.problem is not None]
    renderable = [q for q in queries if q.rendered is not None]
    if not renderable:
        return QueryCheck(problems)
    if syntax is None:
        return QueryCheck(problems, ["no Prometheus is configured: gate query syntax unchecked"])
    deadline = time.monotonic() + budget_seconds
    verdicts: dict[str, str | None] = {}
    warnings: list[str] = []
    for q in renderable:
        text = q.rendered or ""
        if text not in verdicts:
            left = deadline - time.monotonic()
            if left <= 0:
                why = f"Prometheus at {syntax.url} did not answer in time"
                warnings.append(_unchecked(renderable, verdicts, why))
                break
            try:
                verdicts[text] = syntax.parse_error(text, left)
            except SyntaxUnchecked as exc:
                warnings.append(_unchecked(renderable, verdicts, str(exc)))
                break
        error = verdicts[text]
        if error is not None:
            problems.append(_problem(q, _parse_message(q, error), lines))
    return QueryCheck(problems, warnings, len(verdicts))


def refusal(check: QueryCheck) -> str:
    """The refusal's one line: the first problem as a person finds it."""
    first = check.problems[0]
    more = len(check.problems) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{first['where']}: {first['detail']}{tail}; nothing was applied"


def _unchecked(queries: list[GateQuery], verdicts: Mapping[str, object], why: str) -> str:
    every = {q.rendered for q in queries}
    return (
        f"gate query syntax not checked ({len(every - set(verdicts))} of {len(every)} "
        f"queries): {why}. The plan is valid otherwise and applies; a query that does not "
        "parse reads as error at every check, which holds and then pauses the rollout"
    )


def _parse_message(q: GateQuery, error: str) -> str:
    positioned = _POSITIONED.search(error)
    if positioned is None:
        bare = _UNPOSITIONED.search(error)
        return f"parse error: {bare.group(1) if bare else error}"
    line, column = template_position(q, int(positioned.group(1)), int(positioned.group(2)))
    at = f"char {column}" if "\n" not in q.template else f"line {line}, char {column}"
    derived = " of the query derived from it" if q.field == "histogram" else ""
    return f"parse error at {at}{derived}: {positioned.group(3)}"


def _problem(q: GateQuery, detail: str, lines: Mapping[str, int]) -> dict[str, object]:
    return {
        "field": q.path,
        "line": lines.get(q.path) or lines.get(q.gate_path),
        "message": f"gate {q.gate}: {detail}",
        "where": q.where,
        "detail": detail,
    }


def _lines(source: str) -> dict[str, int]:
    """The YAML line of each path of the plan text (none for a JSON body)."""
    if not source:
        return {}
    report = Report({})
    read_yaml(source, report)
    return {render(path): line for path, line in report.lines.items()}


__all__ = ["QueryCheck", "QuerySyntax", "check_gate_queries", "refusal"]
