"""Flag evaluation: one flag, one context, one answer. Pure, and never raises.

This is the reference evaluator: it reads the flag afresh on every call, so it is the
oracle that ``flags.compiled`` (what snapshots actually run) is tested against. The
answer builders below are shared by both, so both hand out the same answer objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flags.bucketing import bucket, is_in, pick_arm
from flags.model import (
    Condition,
    ErrorCode,
    Evaluation,
    EvaluationContext,
    Flag,
    Operator,
    Reason,
    RolloutServing,
    Rule,
)

TARGETING_KEY = "targetingKey"
REGION = "region"
_KEY_MISSING = "a percentage split needs a targeting key"


def evaluate(flag: Flag, context: EvaluationContext) -> Evaluation:
    """The variant ``flag`` serves to ``context``."""
    # Written to be read, in the decision order of PRODUCT.md: snapshots evaluate with
    # flags.compiled, which must answer exactly as this does.
    try:
        if not flag.enabled:
            return answer(flag, flag.default_variant, Reason.DISABLED)
        for rule in flag.rules:
            if _rule_applies(rule, context):
                return _serve_rule(flag, rule, context.targeting_key)
        rollout = flag.rollout
        if rollout is not None and rollout.step != -1:
            return _serve_rollout(flag, rollout, context)
        reason = Reason.DEFAULT if flag.rules or rollout is not None else Reason.STATIC
        return answer(flag, flag.default_variant, reason)
    except Exception as exc:  # a bad flag or context must not fail the request
        return failed(flag, exc)


def _serve_rule(flag: Flag, rule: Rule, targeting_key: str | None) -> Evaluation:
    if rule.variant is not None:
        return answer(flag, rule.variant, Reason.TARGETING_MATCH)
    if not targeting_key:
        return key_missing(flag)
    variant = pick_arm(bucket(flag.bucketing_salt, targeting_key), rule.split)
    return answer(flag, variant, Reason.SPLIT)


def _serve_rollout(flag: Flag, rollout: RolloutServing, context: EvaluationContext) -> Evaluation:
    if rollout.regions:
        region = context.attributes.get(REGION)
        # frozenset membership hashes: an unhashable attribute must not raise.
        if isinstance(region, str) and region in rollout.regions:
            return answer(flag, rollout.on_variant, Reason.TARGETING_MATCH)
    percent = rollout.percent
    if percent >= 100:
        return answer(flag, rollout.on_variant, Reason.TARGETING_MATCH)
    if percent <= 0:
        return answer(flag, rollout.off_variant, Reason.TARGETING_MATCH)
    key = context.targeting_key
    if not key:
        return key_missing(flag)
    if is_in(bucket(flag.bucketing_salt, key), percent):
        return answer(flag, rollout.on_variant, Reason.SPLIT)
    return answer(flag, rollout.off_variant, Reason.SPLIT)


def _rule_applies(rule: Rule, context: EvaluationContext) -> bool:
    # Loops, not all()/any(): a generator per rule is a needless allocation on the hot path.
    for condition in rule.conditions:  # noqa: SIM110
        if not _matches(condition, context):
            return False
    return True


def _matches(condition: Condition, context: EvaluationContext) -> bool:
    if condition.attribute == TARGETING_KEY:
        actual = context.targeting_key
    else:
        actual = context.attributes.get(condition.attribute)
    # Absence is not evidence: a missing attribute fails even neq and not_in.
    if actual is None:
        return False
    return OPERATORS[condition.op](actual, condition.values)


def _same(actual: Any, expected: Any) -> bool:
    # Python has True == 1; a flag author writing 1 does not mean a boolean attribute.
    return actual == expected and isinstance(actual, bool) == isinstance(expected, bool)


def _is_member(actual: Any, values: tuple[Any, ...]) -> bool:
    for value in values:  # noqa: SIM110
        if _same(actual, value):
            return True
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric(compare: Callable[[Any, Any], bool]) -> Callable[[Any, tuple[Any, ...]], bool]:
    def test(actual: Any, values: tuple[Any, ...]) -> bool:
        expected = values[0]
        return _is_number(actual) and _is_number(expected) and compare(actual, expected)

    return test


def _textual(
    compare: Callable[[str, str], bool],
) -> Callable[[Any, tuple[Any, ...]], bool]:
    def test(actual: Any, values: tuple[Any, ...]) -> bool:
        if not isinstance(actual, str):
            return False
        return any(isinstance(value, str) and compare(actual, value) for value in values)

    return test


OPERATORS: dict[Operator, Callable[[Any, tuple[Any, ...]], bool]] = {
    Operator.EQ: lambda actual, values: _same(actual, values[0]),
    Operator.NEQ: lambda actual, values: not _same(actual, values[0]),
    Operator.IN: _is_member,
    Operator.NOT_IN: lambda actual, values: not _is_member(actual, values),
    Operator.STARTS_WITH: _textual(str.startswith),
    Operator.ENDS_WITH: _textual(str.endswith),
    Operator.CONTAINS: _textual(str.__contains__),
    Operator.GT: _numeric(lambda a, b: a > b),
    Operator.GTE: _numeric(lambda a, b: a >= b),
    Operator.LT: _numeric(lambda a, b: a < b),
    Operator.LTE: _numeric(lambda a, b: a <= b),
}


def answer(flag: Flag, variant: str, reason: Reason) -> Evaluation:
    """The flag's answer ``variant`` for ``reason``, built once per flag and shared."""
    answers = flag._answers
    cache_key = (variant, reason)
    answer = answers.get(cache_key)
    if answer is None:
        # Constructing a frozen dataclass costs more than the hash; answers are immutable.
        answer = Evaluation(
            flag.key,
            flag.variants[variant],
            variant,
            reason,
            None,
            None,
            flag.rollout,
            flag.version,
        )
        answers[cache_key] = answer
    return answer


def key_missing(flag: Flag) -> Evaluation:
    """The safe default for a split without a targeting key."""
    variant = flag.default_variant
    return Evaluation(
        flag.key,
        flag.variants[variant],
        variant,
        Reason.DEFAULT,
        ErrorCode.TARGETING_KEY_MISSING,
        _KEY_MISSING,
        flag.rollout,
        flag.version,
    )


def failed(flag: Flag, exc: Exception) -> Evaluation:
    """The default with reason ``ERROR``: what a fault inside evaluation answers."""
    try:
        value = flag.variants[flag.default_variant]
    except Exception:  # the variants themselves may be what failed
        value = None
    return Evaluation(
        flag.key,
        value,
        flag.default_variant,
        Reason.ERROR,
        ErrorCode.GENERAL,
        f"{type(exc).__name__}: {exc}",
        flag.rollout,
        flag.version,
    )
