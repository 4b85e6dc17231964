"""The plan diff: each kind of change to the runbook, in the line a person reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.plan_diff import Change, created_summary, diff_plans, summary
from stages.planfile import parse_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
RUNBOOK = (EXAMPLES / "memory-layer.yaml").read_text(encoding="utf-8")


def edited(*pairs: tuple[str, str]) -> str:
    text = RUNBOOK
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def lines(old: str, new: str) -> list[str]:
    return [c.text for c in diff_plans(parse_plan(old), parse_plan(new))]


CASES = {
    "a threshold": (
        [("abort_above: 0.05", "abort_above: 0.03")],
        ["gates.error-rate.abort_above: 0.05 -> 0.03"],
    ),
    "a threshold added to a gate": (
        [("    rollback_above: 0\n", "    rollback_above: 0\n    hold_above: 0\n")],
        ["gates.circuit-breaker-opens.hold_above: (none) -> 0"],
    ),
    "a step's hold, numbered from 1": (
        [("{stage: canary, percent: 5, hold: 3d}", "{stage: canary, percent: 5, hold: 2d}")],
        ["step 4 (canary 5%): hold 3d -> 2d"],
    ),
    "a step's percent": (
        [("{stage: canary, percent: 5, hold: 3d}", "{stage: canary, percent: 4, hold: 3d}")],
        ["step 4 (canary 4%): percent 5 -> 4"],
    ),
    "a step inserted moves the later ones without changing them": (
        [
            (
                "  - {stage: graduated, percent: 10",
                "  - {stage: canary, percent: 7, hold: 1d}\n  - {stage: graduated, percent: 10",
            )
        ],
        ["step 5 (canary 7%): added (hold 1d)"],
    ),
    "a moved step that also changed says where it was": (
        [
            ("  - {stage: canary, percent: 2, hold: 2d}\n", ""),
            (
                "{stage: graduated, percent: 25, hold: 3d}",
                "{stage: graduated, percent: 25, hold: 4d}",
            ),
        ],
        ["step 3 (canary 2%): removed", "step 5 (graduated 25%, was step 6): hold 3d -> 4d"],
    ),
    "an approval": (
        [("{stage: full, approval: true, hold: 7d}", "{stage: full, hold: 7d}")],
        ["step 11 (full): approval true -> false"],
    ),
    "a gate removed": (
        [
            (
                "  - name: circuit-breaker-opens\n"
                '    query: sum(increase(circuit_breaker_open_total{variant="new"}[10m]))\n'
                "    rollback_above: 0\n",
                "",
            )
        ],
        ["gates.circuit-breaker-opens: removed"],
    ),
    "a gate added": (
        [("gates:\n", "gates:\n  - {name: up, query: up, hold_below: 1}\n")],
        ["gates.up: added (hold_below 1)"],
    ),
    "a gate's stages": (
        [
            (
                "    stages: [canary, graduated, regional, full]   # in shadow",
                "    stages: [canary, graduated]   # in shadow",
            )
        ],
        ["gates.error-rate.stages: [canary, graduated, regional, full] -> [canary, graduated]"],
    ),
    "a plan field": (
        [("interval: 1m ", "interval: 30s")],
        ["interval: 1m -> 30s"],
    ),
    "a label added": (
        [("steps:\n", "labels: {team: memory}\nsteps:\n")],
        ["labels.team: added (memory)"],
    ),
}


@pytest.mark.parametrize(("edits", "expected"), CASES.values(), ids=CASES.keys())
def test_each_kind_of_change(edits: list[tuple[str, str]], expected: list[str]) -> None:
    assert lines(RUNBOOK, edited(*edits)) == expected


def test_a_long_query_changed_at_its_end_shows_where() -> None:
    old = 'sum(rate(memory_operation_total{status="error",variant="new"}[5m])) / 100'
    new = old.replace("/ 100", "/ 1000")
    head = "rollout: r\nflag: r\nsteps: [{stage: full}]\ngates:\n"
    (change,) = lines_of(
        f"{head}  - {{name: e, query: '{old}', hold_above: 1}}\n",
        f"{head}  - {{name: e, query: '{new}', hold_above: 1}}\n",
    )
    assert change.before == old and change.after == new  # whole in the JSON
    assert change.text == "gates.e.query: '…t=\"new\"}[5m])) / 100' -> '…t=\"new\"}[5m])) / 1000'"


def lines_of(old: str, new: str) -> tuple[Change, ...]:
    return diff_plans(parse_plan(old), parse_plan(new))


def test_the_same_plan_written_differently_has_no_change() -> None:
    rewritten = RUNBOOK.replace("{stage: shadow, hold: 7d}", "{hold: 168h, stage: shadow}")
    assert lines(RUNBOOK, rewritten) == []
    assert summary(()) == "no change"


def test_paths_are_the_plan_files_and_json_is_plain() -> None:
    new = edited(("{stage: canary, percent: 5, hold: 3d}", "{stage: canary, percent: 5, hold: 2d}"))
    (change,) = diff_plans(parse_plan(RUNBOOK), parse_plan(new))
    assert change.as_dict() == {
        "path": "steps[3].hold",
        "kind": "changed",
        "before": "3d",
        "after": "2d",
        "text": "step 4 (canary 5%): hold 3d -> 2d",
    }


def test_summaries_for_the_history() -> None:
    plan = parse_plan(RUNBOOK)
    assert created_summary(plan) == "created: 12 steps, 5 gates"
    new = edited(("abort_above: 0.05", "abort_above: 0.03"), ("hold: 7d}", "hold: 6d}"))
    changes = diff_plans(plan, parse_plan(new))
    assert summary(changes, most=1) == "step 1 (shadow): hold 7d -> 6d; and 1 more"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([1, 2, 5, 10, 25, 50]), min_size=1, max_size=6, unique=True))
def test_a_plan_against_itself_and_back(percents: list[int]) -> None:
    """No change against itself; each added step is one line, and so is its removal."""

    def plan_of(ps: list[int]) -> str:
        steps = "".join(f"  - {{stage: canary, percent: {p}}}\n" for p in sorted(ps))
        return f"rollout: r\nflag: r\nsteps:\n{steps}  - {{stage: full}}\n"

    base = plan_of(percents[:1])
    grown = plan_of(percents)
    assert lines(grown, grown) == []
    added = lines(base, grown)
    assert len(added) == len(percents) - 1 and all(t.endswith("added (hold 0s)") for t in added)
    assert [t.endswith(": removed") for t in lines(grown, base)] == [True] * len(added)
