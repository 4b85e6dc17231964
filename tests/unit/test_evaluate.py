"""Evaluation: every branch of the decision order, as a named case table."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flags.bucketing import bucket
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

SALT = "memory-layer"
IN_KEY = "user-4"  # bucket 80: in at 1 % and above
OUT_KEY = "user-0"  # bucket 9362: out below 93.63 %
VARIANTS = {"old": "v1", "new": "v2", "safe": "v0"}
ON_FIVE_PERCENT = (SplitArm("new", 500), SplitArm("old", 9500))


def test_fixture_keys_sit_where_the_cases_assume() -> None:
    assert bucket(SALT, IN_KEY) == 80
    assert bucket(SALT, OUT_KEY) == 9362


def make_flag(*rules: Rule, rollout: RolloutServing | None = None, enabled: bool = True) -> Flag:
    return Flag(
        key="memory-layer",
        type=FlagType.STRING,
        variants=VARIANTS,
        default_variant="safe",
        enabled=enabled,
        rules=rules,
        rollout=rollout,
        version=7,
    )


def when(attribute: str, op: Operator, *values: Any, variant: str = "new") -> Rule:
    return Rule(conditions=(Condition(attribute, op, values),), variant=variant)


def serving(
    percent: float, *, step: int = 2, regions: frozenset[str] = frozenset()
) -> RolloutServing:
    return RolloutServing(
        rollout="memory-layer",
        status="running" if step >= 0 else "pending",
        stage="canary",
        step=step,
        percent=percent,
        regions=regions,
        shadow=True,
        on_variant="new",
        off_variant="old",
    )


def ctx(key: str | None = IN_KEY, **attributes: Any) -> EvaluationContext:
    return EvaluationContext(targeting_key=key, attributes=attributes)


@dataclass(frozen=True)
class Case:
    flag: Flag
    context: EvaluationContext
    variant: str
    reason: Reason
    error_code: ErrorCode | None = None


REGION_IN = when("region", Operator.IN, "us-west-1", "us-east-1")
SPLIT_RULE = Rule(split=ON_FIVE_PERCENT)
MATCH_ALL = Rule(variant="new")
WEST = frozenset({"us-west-1"})

OPERATOR_CASES = {
    "eq matches": (when("plan", Operator.EQ, "pro"), ctx(plan="pro"), True),
    "eq other value": (when("plan", Operator.EQ, "pro"), ctx(plan="free"), False),
    "eq string is not number": (when("age", Operator.EQ, 5), ctx(age="5"), False),
    "eq bool is not one": (when("beta", Operator.EQ, 1), ctx(beta=True), False),
    "eq int equals float": (when("age", Operator.EQ, 5), ctx(age=5.0), True),
    "neq matches": (when("plan", Operator.NEQ, "pro"), ctx(plan="free"), True),
    "neq same value": (when("plan", Operator.NEQ, "pro"), ctx(plan="pro"), False),
    "neq missing attribute": (when("plan", Operator.NEQ, "pro"), ctx(), False),
    "in matches": (REGION_IN, ctx(region="us-east-1"), True),
    "in not listed": (REGION_IN, ctx(region="eu-west-1"), False),
    "in missing attribute": (REGION_IN, ctx(), False),
    "not_in matches": (
        when("region", Operator.NOT_IN, "eu-west-1"),
        ctx(region="us-west-1"),
        True,
    ),
    "not_in listed": (
        when("region", Operator.NOT_IN, "eu-west-1"),
        ctx(region="eu-west-1"),
        False,
    ),
    "not_in missing attribute": (when("region", Operator.NOT_IN, "eu-west-1"), ctx(), False),
    "starts_with matches any": (
        when("email", Operator.STARTS_WITH, "qa-", "test-"),
        ctx(email="test-7@x.io"),
        True,
    ),
    "starts_with no prefix": (
        when("email", Operator.STARTS_WITH, "qa-"),
        ctx(email="ann@x.io"),
        False,
    ),
    "starts_with non-string": (when("age", Operator.STARTS_WITH, "4"), ctx(age=42), False),
    "ends_with matches": (
        when("email", Operator.ENDS_WITH, "@corp.io"),
        ctx(email="a@corp.io"),
        True,
    ),
    "ends_with other suffix": (
        when("email", Operator.ENDS_WITH, "@corp.io"),
        ctx(email="a@x.io"),
        False,
    ),
    "contains matches": (when("ua", Operator.CONTAINS, "Firefox"), ctx(ua="Mozilla Firefox"), True),
    "contains absent": (when("ua", Operator.CONTAINS, "Firefox"), ctx(ua="Chrome"), False),
    "contains non-string": (when("tags", Operator.CONTAINS, "a"), ctx(tags=["a"]), False),
    "gt matches": (when("age", Operator.GT, 18), ctx(age=19), True),
    "gt boundary": (when("age", Operator.GT, 18), ctx(age=18), False),
    "gte boundary": (when("age", Operator.GTE, 18), ctx(age=18), True),
    "gte below": (when("age", Operator.GTE, 18), ctx(age=17.5), False),
    "lt matches": (when("age", Operator.LT, 18), ctx(age=17), True),
    "lt boundary": (when("age", Operator.LT, 18), ctx(age=18), False),
    "lte boundary": (when("age", Operator.LTE, 18), ctx(age=18), True),
    "lte above": (when("age", Operator.LTE, 18), ctx(age=18.01), False),
    "gt numeric string": (when("age", Operator.GT, 18), ctx(age="30"), False),
    "gt bool": (when("age", Operator.GT, 0), ctx(age=True), False),
    "gt non-numeric rule value": (when("age", Operator.GT, "x"), ctx(age=3), False),
    "lt missing attribute": (when("age", Operator.LT, 18), ctx(), False),
    "targetingKey addresses the key": (when("targetingKey", Operator.EQ, IN_KEY), ctx(), True),
    "targetingKey missing": (when("targetingKey", Operator.EQ, IN_KEY), ctx(key=None), False),
    "all conditions must hold": (
        Rule(
            conditions=(
                Condition("region", Operator.EQ, ("us-west-1",)),
                Condition("plan", Operator.EQ, ("pro",)),
            ),
            variant="new",
        ),
        ctx(region="us-west-1", plan="free"),
        False,
    ),
}


def operator_case(rule: Rule, context: EvaluationContext, matches: bool) -> Case:
    if matches:
        return Case(make_flag(rule), context, "new", Reason.TARGETING_MATCH)
    return Case(make_flag(rule), context, "safe", Reason.DEFAULT)


CASES: dict[str, Case] = {
    "no rules, no rollout: static": Case(make_flag(), ctx(), "safe", Reason.STATIC),
    "rules, none match: default": Case(make_flag(REGION_IN), ctx(), "safe", Reason.DEFAULT),
    "disabled beats a matching rule": Case(
        make_flag(MATCH_ALL, enabled=False), ctx(), "safe", Reason.DISABLED
    ),
    "disabled beats a full rollout": Case(
        make_flag(rollout=serving(100), enabled=False), ctx(), "safe", Reason.DISABLED
    ),
    **{name: operator_case(*case) for name, case in OPERATOR_CASES.items()},
    "split rule, key in": Case(make_flag(SPLIT_RULE), ctx(IN_KEY), "new", Reason.SPLIT),
    "split rule, key out": Case(make_flag(SPLIT_RULE), ctx(OUT_KEY), "old", Reason.SPLIT),
    "split rule, no key": Case(
        make_flag(SPLIT_RULE), ctx(None), "safe", Reason.DEFAULT, ErrorCode.TARGETING_KEY_MISSING
    ),
    "split rule, empty key": Case(
        make_flag(SPLIT_RULE), ctx(""), "safe", Reason.DEFAULT, ErrorCode.TARGETING_KEY_MISSING
    ),
    "split rule without key stops before later rules": Case(
        make_flag(SPLIT_RULE, MATCH_ALL),
        ctx(None),
        "safe",
        Reason.DEFAULT,
        ErrorCode.TARGETING_KEY_MISSING,
    ),
    "first matching rule wins": Case(
        make_flag(when("region", Operator.EQ, "us-west-1", variant="old"), REGION_IN),
        ctx(region="us-west-1"),
        "old",
        Reason.TARGETING_MATCH,
    ),
    "later rule applies when earlier does not": Case(
        make_flag(when("plan", Operator.EQ, "pro", variant="old"), REGION_IN),
        ctx(region="us-west-1"),
        "new",
        Reason.TARGETING_MATCH,
    ),
    "rule beats the rollout": Case(
        make_flag(when("plan", Operator.EQ, "internal", variant="old"), rollout=serving(100)),
        ctx(plan="internal"),
        "old",
        Reason.TARGETING_MATCH,
    ),
    "rollout pending: default": Case(
        make_flag(rollout=serving(50, step=-1)), ctx(IN_KEY), "safe", Reason.DEFAULT
    ),
    "rollout shadow at 0 %: old side": Case(
        make_flag(rollout=serving(0, step=0)), ctx(IN_KEY), "old", Reason.TARGETING_MATCH
    ),
    "rollout canary, user in": Case(
        make_flag(rollout=serving(1)), ctx(IN_KEY), "new", Reason.SPLIT
    ),
    "rollout canary, user out": Case(
        make_flag(rollout=serving(5)), ctx(OUT_KEY), "old", Reason.SPLIT
    ),
    "rollout canary, no key": Case(
        make_flag(rollout=serving(5)),
        ctx(None),
        "safe",
        Reason.DEFAULT,
        ErrorCode.TARGETING_KEY_MISSING,
    ),
    "rollout region released": Case(
        make_flag(rollout=serving(50, regions=WEST)),
        ctx(OUT_KEY, region="us-west-1"),
        "new",
        Reason.TARGETING_MATCH,
    ),
    "rollout region released, no key needed": Case(
        make_flag(rollout=serving(50, regions=WEST)),
        ctx(None, region="us-west-1"),
        "new",
        Reason.TARGETING_MATCH,
    ),
    "rollout other region falls back to percent, out": Case(
        make_flag(rollout=serving(50, regions=WEST)),
        ctx(OUT_KEY, region="eu-west-1"),
        "old",
        Reason.SPLIT,
    ),
    "rollout other region falls back to percent, in": Case(
        make_flag(rollout=serving(50, regions=WEST)),
        ctx(IN_KEY, region="eu-west-1"),
        "new",
        Reason.SPLIT,
    ),
    "rollout unhashable region falls back to percent": Case(
        make_flag(rollout=serving(50, regions=WEST)),
        ctx(OUT_KEY, region=["us-west-1"]),
        "old",
        Reason.SPLIT,
    ),
    "rollout full: everyone, no key needed": Case(
        make_flag(rollout=serving(100)), ctx(None), "new", Reason.TARGETING_MATCH
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_evaluation_case(case: Case) -> None:
    answer = evaluate(case.flag, case.context)
    assert (answer.variant, answer.reason, answer.error_code) == (
        case.variant,
        case.reason,
        case.error_code,
    )
    assert answer.value == VARIANTS[case.variant]
    assert answer.key == "memory-layer"
    assert answer.flag_version == 7
    assert answer.rollout is case.flag.rollout


def test_rollout_percent_is_monotonic_for_one_user() -> None:
    user = ctx("user-31")  # bucket 188
    served = [evaluate(make_flag(rollout=serving(p)), user).variant for p in (1, 2, 5, 10)]
    assert served == ["old", "new", "new", "new"]


def test_flags_sharing_a_salt_share_their_users() -> None:
    other = replace(make_flag(rollout=serving(5)), key="search-ranking", salt=SALT)
    own_salt = replace(other, salt=None)
    users = [ctx(f"user-{i}") for i in range(2000)]
    first = [evaluate(make_flag(rollout=serving(5)), u).variant for u in users]
    assert [evaluate(other, u).variant for u in users] == first
    assert [evaluate(own_salt, u).variant for u in users] != first


def test_new_version_reports_its_own_version() -> None:
    flag = make_flag()
    evaluate(flag, ctx())
    assert evaluate(replace(flag, version=8), ctx()).flag_version == 8


class ExplodingVariants(Mapping[str, Any]):
    """Variants whose 'new' value cannot be read: a stand-in for any internal fault."""

    def __getitem__(self, name: str) -> Any:
        if name == "new":
            raise RuntimeError("corrupt variant")
        return VARIANTS[name]

    def __contains__(self, name: object) -> bool:
        return name in VARIANTS

    def __iter__(self) -> Iterator[str]:
        return iter(VARIANTS)

    def __len__(self) -> int:
        return len(VARIANTS)


def test_internal_fault_becomes_error_with_default_value() -> None:
    flag = replace(make_flag(MATCH_ALL), variants=ExplodingVariants())
    answer = evaluate(flag, ctx())
    assert answer.reason is Reason.ERROR
    assert answer.error_code is ErrorCode.GENERAL
    assert (answer.variant, answer.value) == ("safe", "v0")
    assert answer.error_message is not None
    assert "corrupt variant" in answer.error_message


def test_fault_in_the_default_itself_gives_no_value() -> None:
    flag = replace(make_flag(), variants=ExplodingVariants(), default_variant="new")
    answer = evaluate(flag, ctx())
    assert (answer.reason, answer.value) == (Reason.ERROR, None)


# --- properties ------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
ATTRIBUTES = st.dictionaries(
    st.sampled_from(["region", "plan", "age", "email", "targetingKey"]), JSON_VALUES, max_size=5
)
RICH_FLAG = make_flag(
    *(
        when(attr, op, value)
        for attr, op, value in [
            ("plan", Operator.EQ, "pro"),
            ("plan", Operator.NEQ, "pro"),
            ("region", Operator.NOT_IN, "eu-west-1"),
            ("email", Operator.ENDS_WITH, "@corp.io"),
            ("email", Operator.CONTAINS, "qa"),
            ("age", Operator.GTE, 18),
            ("age", Operator.LT, 0.5),
        ]
    ),
    SPLIT_RULE,
    rollout=serving(25, regions=WEST),
)
NO_MATCH_FLAG = make_flag(when("region", Operator.IN, "nowhere"), rollout=serving(25, regions=WEST))


@given(key=st.none() | st.text(max_size=20), attributes=ATTRIBUTES)
def test_evaluation_never_errors_on_arbitrary_context(
    key: str | None, attributes: dict[str, Any]
) -> None:
    for flag in (RICH_FLAG, NO_MATCH_FLAG):
        answer = evaluate(flag, EvaluationContext(key, attributes))
        assert answer.reason is not Reason.ERROR
        assert answer.value == VARIANTS[answer.variant or ""]


@given(key=st.none() | st.text(max_size=20), attributes=ATTRIBUTES)
def test_evaluation_is_deterministic(key: str | None, attributes: dict[str, Any]) -> None:
    context = EvaluationContext(key, attributes)
    fresh = replace(NO_MATCH_FLAG)  # an equal flag with nothing remembered
    assert evaluate(NO_MATCH_FLAG, context) == evaluate(fresh, context)
    assert evaluate(RICH_FLAG, context) == evaluate(RICH_FLAG, context)


# --- snapshot ----------------------------------------------------------------------------

SNAPSHOT = Snapshot(
    revision=12,
    flags={
        "zeta": replace(make_flag(), key="zeta"),
        "alpha": replace(make_flag(MATCH_ALL), key="alpha"),
    },
)


def test_snapshot_evaluates_a_flag_by_key() -> None:
    answer = SNAPSHOT.evaluate("alpha", ctx())
    assert (answer.key, answer.variant, answer.reason) == ("alpha", "new", Reason.TARGETING_MATCH)


def test_snapshot_unknown_flag_is_an_error_answer() -> None:
    assert SNAPSHOT.evaluate("nope", ctx()) == Evaluation(
        key="nope",
        value=None,
        variant=None,
        reason=Reason.ERROR,
        error_code=ErrorCode.FLAG_NOT_FOUND,
        error_message="flag 'nope' not found",
    )


def test_snapshot_evaluates_all_in_key_order() -> None:
    assert [e.key for e in SNAPSHOT.evaluate_all(ctx())] == ["alpha", "zeta"]


def test_snapshot_etag_is_a_quoted_revision() -> None:
    assert SNAPSHOT.etag == '"r12"'
    assert replace(SNAPSHOT, revision=13).etag != SNAPSHOT.etag


def test_empty_snapshot_has_no_flags() -> None:
    empty = Snapshot.empty()
    assert empty.evaluate_all(ctx()) == []
    assert empty.evaluate("any", ctx()).error_code is ErrorCode.FLAG_NOT_FOUND
