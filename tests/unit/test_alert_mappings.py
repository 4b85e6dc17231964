"""Alert mappings, pure: which rollouts an alert selects and what it does to them,
the sentences it leaves, and the mapping file's problems by path and line."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from stages.alert_mappings import (
    DEFAULT_MAPPINGS,
    Alert,
    AlertAction,
    AlertMapping,
    AlertMappingError,
    AlertStatus,
    RolloutRef,
    RolloutsBy,
    Target,
    audit_reason,
    hold_reason,
    parse_mappings,
    route,
)

RECEIVED = datetime(2026, 12, 4, 12, 10, tzinfo=UTC)
ROLLOUTS = (
    RolloutRef("memory-layer", "memory-layer", {"service": "memory", "team": "core"}),
    RolloutRef("memory-api", "memory-api-v2", {"service": "memory", "team": "api"}),
    RolloutRef("checkout", "checkout", {"service": "payments"}),
)


def alert(**labels: str) -> Alert:
    return Alert(
        key="b1290b0eb5959070",
        name=labels.get("alertname", "HighErrorRate"),
        status=AlertStatus.FIRING,
        labels={"alertname": "HighErrorRate", **labels},
        annotations={},
        starts_at=datetime(2026, 12, 4, 12, 3, tzinfo=UTC),
        url="http://prometheus.example:9090/graph?g0.expr=x",
    )


BY_SERVICE = AlertMapping(
    RolloutsBy.LABELS, AlertAction.HOLD, plan_labels=("service",), name="by-service"
)
PAGE_ROLLS_BACK = AlertMapping(
    RolloutsBy.ROLLOUT, AlertAction.ROLLBACK, match=(("severity", "page"),), name="page"
)
BY_FLAG = AlertMapping(RolloutsBy.FLAG, AlertAction.ABORT, name="by-flag")

# name: (alert labels, mappings, expected (rollout, action) pairs, or the why of none)
CASES: dict[str, tuple[dict[str, str], tuple[AlertMapping, ...], object]] = {
    "default: rollout label, action label": (
        {"rollout": "checkout", "action": "rollback"},
        DEFAULT_MAPPINGS,
        [("checkout", "rollback")],
    ),
    "default: no action anywhere": (
        {"rollout": "checkout"},
        DEFAULT_MAPPINGS,
        "no action label or annotation",
    ),
    "default: an unknown action is none": (
        {"rollout": "checkout", "action": "explode"},
        DEFAULT_MAPPINGS,
        "no action label or annotation",
    ),
    "default: no rollout label matches no mapping": (
        {"service": "memory", "action": "hold"},
        DEFAULT_MAPPINGS,
        "no mapping matches",
    ),
    "default: an unknown rollout": (
        {"rollout": "nope", "action": "abort"},
        DEFAULT_MAPPINGS,
        "no rollout named 'nope'",
    ),
    "plan labels select every rollout that has them": (
        {"service": "memory"},
        (BY_SERVICE,),
        [("memory-api", "hold"), ("memory-layer", "hold")],
    ),
    "plan labels: a value no plan has": (
        {"service": "search"},
        (BY_SERVICE,),
        "no rollout's plan has the labels service=search",
    ),
    "plan labels: an alert without the label falls through": (
        {"rollout": "checkout", "action": "abort"},
        (BY_SERVICE, *DEFAULT_MAPPINGS),
        [("checkout", "abort")],
    ),
    "match labels: the first mapping that matches decides": (
        {"rollout": "memory-layer", "severity": "page", "service": "memory"},
        (PAGE_ROLLS_BACK, BY_SERVICE),
        [("memory-layer", "rollback")],
    ),
    "match labels: not matched, the next decides": (
        {"rollout": "memory-layer", "severity": "ticket", "service": "memory"},
        (PAGE_ROLLS_BACK, BY_SERVICE),
        [("memory-api", "hold"), ("memory-layer", "hold")],
    ),
    "flag label: the rollout that drives the flag": (
        {"flag": "memory-api-v2"},
        (BY_FLAG,),
        [("memory-api", "abort")],
    ),
    "the mapping's action beats the alert's": (
        {"rollout": "checkout", "severity": "page", "action": "hold"},
        (PAGE_ROLLS_BACK,),
        [("checkout", "rollback")],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_route(case: str) -> None:
    labels, mappings, expected = CASES[case]
    routing = route(alert(**labels), mappings, ROLLOUTS)
    if isinstance(expected, str):
        assert routing.targets == ()
        assert expected in routing.why
    else:
        assert sorted((t.rollout, t.action.value) for t in routing.targets) == expected
        assert routing.why == ""


def test_the_action_annotation_counts_when_there_is_no_label() -> None:
    a = replace(alert(rollout="checkout"), annotations={"action": "abort"})
    assert [t.action for t in route(a, DEFAULT_MAPPINGS, ROLLOUTS).targets] == [AlertAction.ABORT]


def test_a_new_firing_is_a_new_occurrence_and_a_resend_is_not() -> None:
    first = alert(rollout="checkout")
    resent = replace(first, annotations={"summary": "changed text"})
    again = replace(first, starts_at=datetime(2026, 12, 4, 13, 0, tzinfo=UTC))
    assert first.occurrence == resent.occurrence != again.occurrence
    assert replace(first, starts_at=None).occurrence == "-"


def test_sentences_name_the_alert_its_labels_and_url() -> None:
    a = alert(rollout="checkout", severity="page", service="payments")
    assert hold_reason(a, RECEIVED) == "alert HighErrorRate firing since 12:03 UTC (severity=page)"
    target = Target("checkout", AlertAction.ROLLBACK, True, "page")
    assert audit_reason(a, target, RECEIVED) == (
        "alert HighErrorRate firing since 12:03 UTC (rollout=checkout, service=payments, "
        "severity=page): rollback by mapping page; http://prometheus.example:9090/graph?g0.expr=x"
    )
    # Another day than the one it came in: the date too.
    earlier = replace(a, starts_at=datetime(2026, 12, 3, 23, 59, tzinfo=UTC))
    assert "since 2026-12-03 23:59 UTC" in hold_reason(earlier, RECEIVED)


def test_an_alert_with_many_labels_is_cut_short_in_the_reason() -> None:
    many = alert(**{f"l{i:02}": "x" for i in range(30)})
    target = Target("checkout", AlertAction.HOLD, True, "m")
    assert "and 10 more" in audit_reason(many, target, RECEIVED)


def test_a_mapping_file() -> None:
    mappings = parse_mappings(
        """
mappings:
  - name: pages roll back
    match: {severity: page}
    rollouts_by: rollout
    action: rollback
    immediate: false
  - rollouts_by: labels
    plan_labels: [service]
    action: hold
  - rollouts_by: flag
"""
    )
    assert mappings == (
        AlertMapping(
            RolloutsBy.ROLLOUT,
            AlertAction.ROLLBACK,
            match=(("severity", "page"),),
            immediate=False,
            name="pages roll back",
        ),
        AlertMapping(RolloutsBy.LABELS, AlertAction.HOLD, plan_labels=("service",)),
        AlertMapping(RolloutsBy.FLAG),
    )


BAD_FILES = {
    "unknown field": (
        "mappings:\n  - rollouts_by: rollout\n    acton: hold\n",
        ["mappings[0].acton (line 3): unknown field 'acton' (did you mean 'action'?)"],
    ),
    "bad choices": (
        "mappings:\n  - rollouts_by: label\n    action: rollbak\n",
        [
            "mappings[0].rollouts_by (line 2): 'label' is not one of: rollout, flag, labels",
            "mappings[0].action (line 3): 'rollbak' is not one of: hold, rollback, abort",
        ],
    ),
    "labels without plan_labels, plan_labels elsewhere, immediate on a hold": (
        "mappings:\n  - rollouts_by: labels\n  - rollouts_by: flag\n    plan_labels: [a]\n"
        "  - {rollouts_by: rollout, action: hold, immediate: true}\n",
        [
            "mappings[0].plan_labels (line 2): rollouts_by: labels needs plan_labels: the "
            "label names an alert and a plan must agree on, e.g. [service]",
            "mappings[1].plan_labels (line 4): only for rollouts_by: labels, not flag",
            "mappings[2].immediate (line 5): only for action: rollback",
        ],
    ),
    "no mappings key": ("rules: []\n", ["rules (line 1): unknown field 'rules' (known: mappings)"]),
    "empty list": (
        "mappings: []\n",
        ["mappings (line 1): list at least one mapping, or leave the file out"],
    ),
    "empty file": ("\n", ["mappings (line 1): the file is empty: list mappings"]),
    "YAML syntax": ("mappings: [\n", None),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_mapping_file_names_every_problem(case: str) -> None:
    text, expected = BAD_FILES[case]
    with pytest.raises(AlertMappingError) as caught:
        parse_mappings(text)
    problems = [str(p) for p in caught.value.problems]
    if expected is None:
        assert len(problems) == 1 and "YAML syntax error" in problems[0]
    else:
        assert problems[: len(expected)] == expected
