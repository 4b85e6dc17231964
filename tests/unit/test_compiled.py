"""Compiled evaluators answer exactly as the reference evaluator, for any flag and context."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from flags.bucketing import BUCKETS, bucket, hash_limit
from flags.compiled import compile_flag
from flags.evaluate import evaluate
from flags.model import (
    Condition,
    ErrorCode,
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

VARIANTS = {"old": False, "new": True, "safe": None}
NAMES = sorted(VARIANTS)
ATTRIBUTE_NAMES = ["region", "plan", "age", "targetingKey"]
REGIONS = ["us-west-1", "us-east-1", "eu-west-1"]

scalars = st.none() | st.booleans() | st.integers(-3, 30) | st.floats() | st.text(max_size=6)
attribute_values = scalars | st.sampled_from(REGIONS) | st.lists(scalars, max_size=2)
conditions = st.builds(
    Condition,
    attribute=st.sampled_from(ATTRIBUTE_NAMES),
    op=st.sampled_from(list(Operator)),
    values=st.lists(scalars | st.sampled_from(REGIONS), min_size=1, max_size=3).map(tuple),
)


@st.composite
def splits(draw: st.DrawFn) -> tuple[SplitArm, ...]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3))
    weights = draw(st.lists(st.integers(0, BUCKETS), min_size=len(names), max_size=len(names)))
    if draw(st.booleans()):  # well formed: the weights sum to 10000
        weights = [*weights[:-1], max(0, BUCKETS - sum(weights[:-1]))]
    return tuple(SplitArm(n, w) for n, w in zip(names, weights, strict=True))


rules = st.builds(
    Rule,
    conditions=st.lists(conditions, max_size=2).map(tuple),
    variant=st.none(),
    split=splits(),
) | st.builds(
    Rule,
    conditions=st.lists(conditions, max_size=2).map(tuple),
    variant=st.sampled_from(NAMES),
)
percents = st.sampled_from([0.0, 0.004, 0.005, 1.0, 5.0, 50.0, 99.995, 100.0, 120.0, -1.0]) | (
    st.floats(allow_nan=True, allow_infinity=True)
)
rollouts = st.builds(
    RolloutServing,
    rollout=st.just("r"),
    status=st.sampled_from(["running", "pending"]),
    stage=st.sampled_from(["canary", "regional"]),
    step=st.integers(-1, 3),
    percent=percents,
    regions=st.frozensets(st.sampled_from(REGIONS), max_size=2),
    shadow=st.booleans(),
    on_variant=st.sampled_from(NAMES),
    off_variant=st.sampled_from(NAMES),
)
flags = st.builds(
    Flag,
    key=st.sampled_from(["memory-layer", "f"]),
    type=st.just(FlagType.BOOLEAN),
    variants=st.just(VARIANTS),
    default_variant=st.sampled_from(NAMES),
    enabled=st.booleans(),
    rules=st.lists(rules, max_size=3).map(tuple),
    salt=st.none() | st.text(max_size=6),
    rollout=st.none() | rollouts,
    version=st.integers(0, 5),
)
# Keys of the wrong type too: the evaluators are typed, but an SDK caller may not be.
targeting_keys = st.none() | st.text(max_size=12) | st.integers() | st.binary(max_size=4)
attribute_maps = st.none() | st.dictionaries(
    st.sampled_from(ATTRIBUTE_NAMES), attribute_values, max_size=4
)


def reference(flag: Flag, key: Any, attributes: Mapping[str, Any] | None) -> Any:
    return evaluate(flag, EvaluationContext(key, {} if attributes is None else attributes))


@settings(max_examples=1500)
@given(flag=flags, key=targeting_keys, attributes=attribute_maps)
@example(  # a rollout at 5 % for a user inside it
    flag=Flag(
        "f",
        FlagType.BOOLEAN,
        VARIANTS,
        "old",
        rollout=RolloutServing("r", "running", "canary", 2, 5.0, frozenset(), True, "new", "old"),
    ),
    key="user-4",
    attributes=None,
)
def test_compiled_flag_answers_as_the_reference(
    flag: Flag, key: Any, attributes: Mapping[str, Any] | None
) -> None:
    expected = reference(flag, key, attributes)
    assert compile_flag(flag)(key, attributes) == expected
    snapshot = Snapshot(revision=1, flags={flag.key: flag})
    assert snapshot.evaluate_key(flag.key, key, attributes) == expected
    context = EvaluationContext(key, {} if attributes is None else attributes)
    assert snapshot.evaluate(flag.key, context) == expected
    assert snapshot.evaluate_all(context) == [expected]


def rollout_flag(percent: float, regions: frozenset[str] = frozenset()) -> Flag:
    serving = RolloutServing("r", "running", "canary", 2, percent, regions, True, "new", "old")
    return Flag("memory-layer", FlagType.BOOLEAN, VARIANTS, "old", rollout=serving)


def test_hash_limit_is_exactly_the_bucket_boundary() -> None:
    # Every percentage a flag can have: the last hash below the limit is in, the limit
    # itself is out, so comparing raw hashes moves no user across the boundary.
    for units in range(BUCKETS + 1):
        limit = hash_limit(units)
        assert 0 <= limit <= 2**32
        if limit > 0:
            assert ((limit - 1) * BUCKETS) >> 32 < units
        if limit < 2**32:
            assert (limit * BUCKETS) >> 32 >= units


@given(h=st.integers(0, 2**32 - 1), units=st.integers(0, BUCKETS))
def test_hash_below_limit_iff_bucket_below_units(h: int, units: int) -> None:
    assert (h < hash_limit(units)) == (((h * BUCKETS) >> 32) < units)


def test_five_percent_rollout_puts_the_users_by_bucket() -> None:
    evaluator = compile_flag(rollout_flag(5))
    users = [f"user-{i}" for i in range(5_000)]
    got = [evaluator(u, None).value for u in users]
    assert got == [bucket("memory-layer", u) < 500 for u in users]
    assert 200 < sum(got) < 300  # about 5 %


def test_each_user_comes_in_exactly_at_their_bucket() -> None:
    # The percentages at a user's own edge: out at bucket/100 %, in one hundredth later.
    for i in range(300):
        user = f"user-{i}"
        edge = bucket("memory-layer", user)
        if edge > 0:
            assert compile_flag(rollout_flag(edge / 100))(user, None).value is False, user
        assert compile_flag(rollout_flag((edge + 1) / 100))(user, None).value is True, user


def test_answers_are_shared_objects_not_built_per_call() -> None:
    evaluator = compile_flag(rollout_flag(50))
    answers = {id(evaluator(f"user-{i}", None)) for i in range(200)}
    assert len(answers) == 2  # one "on" answer and one "off" answer, whatever the user


def test_missing_key_on_a_rollout_is_the_safe_default() -> None:
    answer = compile_flag(rollout_flag(5))(None, None)
    assert (answer.value, answer.reason, answer.error_code) == (
        False,
        Reason.DEFAULT,
        ErrorCode.TARGETING_KEY_MISSING,
    )


def test_released_region_is_in_whatever_the_bucket() -> None:
    evaluator = compile_flag(rollout_flag(0.01, frozenset({"us-west-1"})))
    answers = {evaluator(f"u{i}", {"region": "us-west-1"}).reason for i in range(100)}
    assert answers == {Reason.TARGETING_MATCH}
    assert evaluator("u1", {"region": ["us-west-1"]}).reason is Reason.SPLIT  # unhashable


class ExplodingVariants(Mapping[str, Any]):
    """Variants whose 'new' value cannot be read: a stand-in for any internal fault."""

    def __getitem__(self, name: str) -> Any:
        if name == "new":
            raise RuntimeError("corrupt variant")
        return VARIANTS[name]

    def __iter__(self) -> Iterator[str]:
        return iter(VARIANTS)

    def __len__(self) -> int:
        return len(VARIANTS)


def test_a_flag_that_cannot_be_compiled_still_answers_as_the_reference() -> None:
    flag = replace(rollout_flag(100), variants=ExplodingVariants())
    answer = compile_flag(flag)("u1", None)
    assert answer == reference(flag, "u1", None)
    assert (answer.reason, answer.error_code) == (Reason.ERROR, ErrorCode.GENERAL)
    assert answer.error_message is not None and "corrupt variant" in answer.error_message


def test_a_key_of_the_wrong_type_is_an_error_answer_not_an_exception() -> None:
    answer = compile_flag(rollout_flag(5))(12345, None)  # type: ignore[arg-type]
    assert (answer.reason, answer.error_code, answer.value) == (
        Reason.ERROR,
        ErrorCode.GENERAL,
        False,
    )
