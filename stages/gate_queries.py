"""Every query a plan's gates will send, rendered as a check renders it, so that a
plan can be tried before it is applied (``controller.plan_checks``).

A ``${name}`` no check knows is found here, without Prometheus. Syntax is
Prometheus' to judge; its parse error points into the rendered query, and
``template_position`` turns that point into one in the template a person wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stages.plan import Gate, Plan
from stages.query_templates import QueryTemplateError, placeholders, render_query

# What a gate query may refer to as ``${name}``: ``query_variables`` in
# controller/gates/reading.py gives each a value at every check
# (tests/unit/test_gate_queries.py holds them equal).
VARIABLES = (
    *("rollout", "flag", "stage", "step", "percent", "new_variant", "old_variant"),
    "step_window",
)
# A step that has just begun: syntax is the same for any window.
_PROBE_WINDOW = "60s"


@dataclass(frozen=True, slots=True)
class GateQuery:
    """One query template of one gate, where it is written, and how a check renders it."""

    gate_path: str  # "gates[2]", "steps[3].gates[0]"
    gate: str
    role: str  # query, baseline, samples, events, exposures
    field: str  # the plan field that holds it ("histogram" for a derived compare query)
    template: str
    variables: Mapping[str, str]
    rendered: str | None  # None: it cannot be rendered (``problem`` says why)
    problem: str | None

    @property
    def path(self) -> str:
        return f"{self.gate_path}.{self.field}"

    @property
    def where(self) -> str:
        """How a person finds it: ``gates[2] error-rate: query``."""
        return f"{self.gate_path} {self.gate}: {self.role}"


def gate_queries(plan: Plan) -> list[GateQuery]:
    """Each gate's templates, the plan's gates first, then each step's own."""
    out: list[GateQuery] = []
    for i, gate in enumerate(plan.gates):
        step = next((s for s in range(len(plan.steps)) if gate_applies(plan, gate, s)), 0)
        out += _queries(f"gates[{i}]", gate, variables_at(plan, step))
    for s, step_def in enumerate(plan.steps):
        for k, gate in enumerate(step_def.gates):
            out += _queries(f"steps[{s}].gates[{k}]", gate, variables_at(plan, s))
    return out


def gate_applies(plan: Plan, gate: Gate, step: int) -> bool:
    return gate.applies_to(plan.steps[step].stage)


def variables_at(plan: Plan, step: int) -> dict[str, str]:
    """The values a check at the start of ``step`` gives the variables."""
    at = plan.steps[step]
    return {
        "rollout": plan.rollout,
        "flag": plan.flag,
        "stage": at.stage.value,
        "step": str(step + 1),
        "percent": f"{at.percent:g}",
        "new_variant": plan.new_variant,
        "old_variant": plan.old_variant,
        "step_window": _PROBE_WINDOW,
    }


def _queries(gate_path: str, gate: Gate, variables: Mapping[str, str]) -> list[GateQuery]:
    out = []
    for role, field, template in _templates(gate):
        try:
            rendered: str | None = render_query(template, variables)
            problem = None
        except QueryTemplateError as exc:
            rendered, problem = None, str(exc)
        out.append(
            GateQuery(gate_path, gate.name, role, field, template, variables, rendered, problem)
        )
    return out


def _templates(gate: Gate) -> list[tuple[str, str, str]]:
    """(role, field, template) of each query the gate sends: the plan field a problem
    names, which for a compare gate's derived queries is ``histogram``."""
    derived = gate.compare is not None and gate.compare.histogram is not None
    return [
        (role, "histogram" if derived else role, template)
        for role, template in gate.query_templates()
    ]


# --- positions -----------------------------------------------------------------------------


def template_position(query: GateQuery, line: int, byte_column: int) -> tuple[int, int]:
    """Prometheus' ``line:column`` in the rendered query (1-based; the column counts
    UTF-8 bytes, as Go does) as (line, column) in the template, in characters. A point
    inside a substituted value is the placeholder's start."""
    rendered = query.rendered or ""
    offset = _char_offset(rendered, line, byte_column)
    template_offset = _template_offset(query.template, query.variables, offset)
    before = query.template[:template_offset]
    return before.count("\n") + 1, template_offset - (before.rfind("\n") + 1) + 1


def _char_offset(text: str, line: int, byte_column: int) -> int:
    lines = text.split("\n")
    line = max(1, min(line, len(lines)))
    start = sum(len(s) + 1 for s in lines[: line - 1])
    in_line = lines[line - 1].encode("utf-8")[: max(0, byte_column - 1)]
    return start + len(in_line.decode("utf-8", "ignore"))


def _template_offset(template: str, variables: Mapping[str, str], offset: int) -> int:
    # Each placeholder's span in both texts, from the rendered length of the template up
    # to its start and its end: a template is small and has few placeholders.
    template_at, rendered_at = 0, 0
    for p in _placeholder_spans(template):
        start, end = p
        rendered_start = len(render_query(template[:start], variables))
        if offset < rendered_start:
            break
        rendered_end = len(render_query(template[:end], variables))
        if offset < rendered_end:
            return start
        template_at, rendered_at = end, rendered_end
    return min(len(template), template_at + (offset - rendered_at))


def _placeholder_spans(template: str) -> Sequence[tuple[int, int]]:
    line_starts = [0] + [i + 1 for i, ch in enumerate(template) if ch == "\n"]
    spans = []
    for p in placeholders(template):
        start = line_starts[p.line - 1] + p.column - 1
        spans.append((start, start + len(p.name) + 3))
    return spans


__all__ = ["VARIABLES", "GateQuery", "gate_queries", "template_position", "variables_at"]
