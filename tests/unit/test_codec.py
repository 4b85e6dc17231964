"""The dict codec: round trips, and every problem in a bad body reported by path."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from flags.codec import (
    FlagDefinitionError,
    flag_from_dict,
    flag_to_dict,
    serving_from_dict,
    serving_to_dict,
    snapshot_from_dict,
    snapshot_to_dict,
)
from flags.evaluate import evaluate
from flags.model import (
    Condition,
    ErrorCode,
    Evaluation,
    EvaluationContext,
    Flag,
    FlagType,
    Operator,
    Reason,
    RolloutServing,
    Rule,
    SplitArm,
)
from flags.snapshot import Snapshot
from flags.wire import evaluation_to_dict


def checkout_body() -> dict[str, Any]:
    return {
        "key": "checkout",
        "type": "boolean",
        "variants": {"off": False, "on": True},
        "default_variant": "off",
        "enabled": True,
        "salt": None,
        "description": "",
        "rules": [
            {
                "when": [{"attribute": "region", "op": "in", "values": ["us-west-1"]}],
                "variant": "on",
            },
            {"when": [], "split": {"on": 5, "off": 95}},
        ],
    }


SERVING = RolloutServing(
    rollout="checkout-v2",
    status="running",
    stage="regional",
    step=7,
    percent=50.0,
    regions=frozenset({"us-west-1", "eu-west-1"}),
    shadow=True,
    on_variant="on",
    off_variant="off",
)


def problems_of(data: object, **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(FlagDefinitionError) as raised:
        flag_from_dict(data, **kwargs)
    return raised.value.problems


def paths_of(data: object, **kwargs: Any) -> list[str]:
    return [path for path, _ in problems_of(data, **kwargs)]


def test_body_parses_into_the_model() -> None:
    flag = flag_from_dict(checkout_body())
    assert flag == Flag(
        key="checkout",
        type=FlagType.BOOLEAN,
        variants={"off": False, "on": True},
        default_variant="off",
        rules=(
            Rule(conditions=(Condition("region", Operator.IN, ("us-west-1",)),), variant="on"),
            Rule(split=(SplitArm("on", 500), SplitArm("off", 9500))),
        ),
    )


def test_flag_round_trips_through_json() -> None:
    body = checkout_body()
    body["rules"][1]["split"] = {"on": 0.25, "off": 99.75}
    body["salt"] = "checkout-2024"
    flag = flag_from_dict(body)
    assert flag.rules[1].split == (SplitArm("on", 25), SplitArm("off", 9975))
    written = json.loads(json.dumps(flag_to_dict(flag)))
    assert written == body
    assert flag_from_dict(written) == flag


@pytest.mark.parametrize(
    ("flag_type", "variants"),
    [
        ("string", {"old": "v1", "new": "v2"}),
        ("number", {"low": 1, "high": 2.5}),
        ("object", {"a": {"color": "red"}, "b": {}}),
    ],
)
def test_every_type_round_trips(flag_type: str, variants: dict[str, Any]) -> None:
    first = next(iter(variants))
    body = {"key": "k", "type": flag_type, "variants": variants, "default_variant": first}
    flag = flag_from_dict(body)
    assert flag.type == FlagType(flag_type)
    assert flag_from_dict(flag_to_dict(flag)) == flag


def test_optional_fields_take_their_defaults() -> None:
    flag = flag_from_dict(
        {"type": "boolean", "variants": {"off": False}, "default_variant": "off"}, key="k"
    )
    assert (flag.key, flag.enabled, flag.salt, flag.description, flag.rules) == (
        "k",
        True,
        None,
        "",
        (),
    )


def test_key_from_the_request_must_agree_with_the_body() -> None:
    assert problems_of(checkout_body(), key="payments") == [
        ("key", "'checkout' does not match the flag addressed, 'payments'")
    ]
    assert flag_from_dict(checkout_body(), key="checkout").key == "checkout"


def test_a_bad_body_reports_every_problem_with_its_path() -> None:
    body = {
        "key": "check out",
        "type": "boolean",
        "variants": {"off": False, "on": "yes"},
        "default_variant": "maybe",
        "enabled": "true",
        "colour": "blue",
        "rules": [
            {"when": [{"attribute": "region", "op": "like", "values": ["us"]}], "variant": "on"},
            {"when": [{"attribute": "age", "op": "gt", "values": [18, 21]}], "variant": "nope"},
            {"when": [{"attribute": "age", "op": "lt", "values": ["ten"]}], "variant": "on"},
            {"when": [{"attribute": "region", "op": "in", "values": []}], "variant": "on"},
            {"split": {"on": 5, "off": 90}},
            {"split": {"on": 5.005, "off": 94.995}},
            {"variant": "on", "split": {"on": 100}},
            {"variant": "on", "weight": 3},
        ],
    }
    assert problems_of(body) == [
        ("colour", "unknown field"),
        ("key", "must be 1 to 128 characters of A-Z a-z 0-9 _ . -"),
        ("variants.on", "must be true or false for a boolean flag"),
        ("default_variant", "'maybe' is not one of the variants"),
        ("enabled", "must be a boolean"),
        (
            "rules[0].when[0].op",
            "must be one of eq, neq, in, not_in, starts_with, ends_with, contains,"
            " gt, gte, lt, lte",
        ),
        ("rules[1].when[0].values", "'gt' takes exactly one value"),
        ("rules[1].variant", "'nope' is not one of the variants"),
        ("rules[2].when[0].values[0]", "must be a number for 'lt'"),
        ("rules[3].when[0].values", "must be a non-empty list"),
        ("rules[4].split", "must sum to 100 (sums to 95)"),
        ("rules[5].split.on", "must be a multiple of 0.01"),
        ("rules[5].split.off", "must be a multiple of 0.01"),
        ("rules[6]", "needs exactly one of 'variant' and 'split'"),
        ("rules[7].weight", "unknown field"),
    ]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"key": ""}, "key"),
        ({"key": "x" * 129}, "key"),
        ({"type": "json"}, "type"),
        ({"variants": {}}, "variants"),
        ({"variants": []}, "variants"),
        ({"variants": {"off": False, "on": 1}}, "variants.on"),
        ({"salt": 5}, "salt"),
        ({"description": None}, "description"),
        ({"rules": {"0": {}}}, "rules"),
        ({"rules": ["on"]}, "rules[0]"),
        ({"rules": [{"when": {}, "variant": "on"}]}, "rules[0].when"),
        (
            {"rules": [{"when": [{"op": "eq", "values": [1]}], "variant": "on"}]},
            "rules[0].when[0].attribute",
        ),
        ({"rules": [{"split": {"on": 101, "off": -1}}]}, "rules[0].split.on"),
        ({"rules": [{"split": {"on": True, "off": 100}}]}, "rules[0].split.on"),
        ({"rules": [{"split": {}}]}, "rules[0].split"),
        (
            {
                "rules": [
                    {"when": [{"attribute": "e", "op": "contains", "values": [3]}], "variant": "on"}
                ]
            },
            "rules[0].when[0].values[0]",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_each_malformed_field_is_reported_at_its_path(change: dict[str, Any], path: str) -> None:
    assert path in paths_of({**checkout_body(), **change})


@pytest.mark.parametrize(
    ("flag_type", "bad_value"),
    [("boolean", 0), ("string", 1), ("number", True), ("number", float("nan")), ("object", [])],
)
def test_variant_values_must_match_the_type(flag_type: str, bad_value: object) -> None:
    body = {"key": "k", "type": flag_type, "variants": {"v": bad_value}, "default_variant": "v"}
    assert paths_of(body) == ["variants.v"]


def test_body_that_is_not_an_object_is_one_problem() -> None:
    assert problems_of(["checkout"]) == [("", "must be an object")]


def test_missing_key_without_a_request_key_is_required() -> None:
    body = checkout_body()
    del body["key"]
    assert problems_of(body) == [("key", "is required")]


def test_error_message_lists_the_problems() -> None:
    with pytest.raises(FlagDefinitionError, match=r"type: must be one of"):
        flag_from_dict({**checkout_body(), "type": "json"})


def test_serving_round_trips_with_sorted_regions() -> None:
    written = serving_to_dict(SERVING)
    assert written["regions"] == ["eu-west-1", "us-west-1"]
    assert serving_from_dict(json.loads(json.dumps(written))) == SERVING


def test_serving_reports_bad_fields() -> None:
    with pytest.raises(FlagDefinitionError) as raised:
        serving_from_dict({**serving_to_dict(SERVING), "percent": "50", "regions": "us"})
    assert [path for path, _ in raised.value.problems] == ["percent", "regions"]


def test_snapshot_round_trips_with_rollout_and_version() -> None:
    checkout = replace(flag_from_dict(checkout_body()), rollout=SERVING, version=4)
    plain = flag_from_dict({**checkout_body(), "key": "banner", "rules": []})
    snapshot = Snapshot(revision=31, flags={"checkout": checkout, "banner": plain})
    written = json.loads(json.dumps(snapshot_to_dict(snapshot)))
    assert list(written["flags"]) == ["banner", "checkout"]
    assert written["flags"]["checkout"]["version"] == 4
    assert snapshot_from_dict(written) == snapshot


def test_snapshot_problems_name_the_flag() -> None:
    snapshot = Snapshot(revision=1, flags={"checkout": flag_from_dict(checkout_body())})
    written = snapshot_to_dict(snapshot)
    written["flags"]["checkout"]["version"] = -1
    written["flags"]["checkout"]["default_variant"] = "maybe"
    written["flags"]["checkout"]["rollout"] = {**serving_to_dict(SERVING), "shadow": "yes"}
    with pytest.raises(FlagDefinitionError) as raised:
        snapshot_from_dict(written)
    assert [path for path, _ in raised.value.problems] == [
        "flags.checkout.default_variant",
        "flags.checkout.version",
        "flags.checkout.rollout.shadow",
    ]


def test_evaluation_answer_with_rollout() -> None:
    flag = replace(flag_from_dict({**checkout_body(), "rules": []}), rollout=SERVING, version=4)
    answer = evaluate(flag, EvaluationContext("user-1", {"region": "us-west-1"}))
    assert evaluation_to_dict(answer) == {
        "key": "checkout",
        "value": True,
        "variant": "on",
        "reason": "TARGETING_MATCH",
        "flagVersion": 4,
        "rollout": {
            "name": "checkout-v2",
            "status": "running",
            "stage": "regional",
            "step": 7,
            "percent": 50.0,
            "regions": ["eu-west-1", "us-west-1"],
            "shadow": True,
        },
    }


def test_evaluation_answer_with_error_has_no_rollout() -> None:
    answer = Evaluation(
        key="nope",
        value=None,
        variant=None,
        reason=Reason.ERROR,
        error_code=ErrorCode.FLAG_NOT_FOUND,
        error_message="flag 'nope' not found",
    )
    assert evaluation_to_dict(answer) == {
        "key": "nope",
        "value": None,
        "variant": None,
        "reason": "ERROR",
        "errorCode": "FLAG_NOT_FOUND",
        "errorMessage": "flag 'nope' not found",
        "flagVersion": 0,
    }


def _object_flag(value: object) -> dict[str, Any]:
    return {"key": "k", "type": "object", "variants": {"v": value}, "default_variant": "v"}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"x": float("nan")}, "variants.v.x"),
        ({"list": [1, 2, {"y": float("inf")}]}, "variants.v.list[2].y"),
        ({"neg": [float("-inf")]}, "variants.v.neg[0]"),
    ],
)
def test_non_finite_numbers_anywhere_in_a_variant_are_refused(value: object, path: str) -> None:
    problems = problems_of(_object_flag(value))
    assert [p for p, _ in problems] == [path]
    assert "NaN or Infinity" in problems[0][1]


@pytest.mark.parametrize(("op", "value"), [("gt", float("nan")), ("in", [float("inf")])])
def test_non_finite_numbers_in_rule_values_are_refused(op: str, value: object) -> None:
    rule = {"when": [{"attribute": "n", "op": op, "values": [value]}], "variant": "on"}
    assert "rules[0].when[0].values[0]" in " ".join(paths_of({**checkout_body(), "rules": [rule]}))


def test_variant_values_nested_too_deep_are_refused_without_recursion() -> None:
    assert flag_from_dict(_object_flag(_nested(30))).variants["v"] == _nested(30)
    problems = problems_of(_object_flag(_nested(50_000)))
    assert len(problems) == 1
    assert problems[0][0].startswith("variants.v.a.a")
    assert "nested more than" in problems[0][1]


@pytest.mark.parametrize("key", [".", ".."])
def test_dot_keys_are_refused_from_the_body_and_the_path(key: str) -> None:
    body = {**checkout_body(), "key": key}
    assert paths_of(body) == ["key"]
    del body["key"]
    assert paths_of(body, key=key) == ["key"]
    assert flag_from_dict({**checkout_body(), "key": "a.b"}).key == "a.b"


def test_snapshot_answers_an_unreadable_flag_as_an_error_and_leaves_it_out_of_bulk() -> None:
    good = flag_from_dict(checkout_body())
    snapshot = Snapshot(revision=3, flags={"checkout": good}, unreadable={"bad": "wrong type"})
    answer = snapshot.evaluate_key("bad", "user-1")
    assert (answer.reason, answer.error_code, answer.value) == (
        Reason.ERROR,
        ErrorCode.PARSE_ERROR,
        None,
    )
    assert snapshot.evaluate_key("missing").error_code is ErrorCode.FLAG_NOT_FOUND
    assert [e.key for e in snapshot.evaluate_all(EvaluationContext("user-1"))] == ["checkout"]
    assert list(snapshot_to_dict(snapshot)["flags"]) == ["checkout"]
