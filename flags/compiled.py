"""Flags compiled for evaluation: each flag becomes one closure specialised to its shape.

A snapshot compiles its flags once, when it is built; evaluating is then a dict lookup
and one call. Whatever can be decided ahead is: the answer objects (prebuilt, shared,
immutable), the salt, and for a percentage rollout the hash limit, so a rollout flag
costs one string concatenation, one MurmurHash3 and one comparison per user.

``flags.evaluate.evaluate`` stays the reference: every compiled evaluator must answer
exactly as it does (a Hypothesis property in ``tests/unit/test_compiled.py``). A flag
whose answers cannot even be built (a corrupt variant) is left to the reference, which
turns the fault into an ``ERROR`` answer at evaluation time, as it always has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import mmh3

from flags.bucketing import bucket, hash_limit, percent_to_units, pick_arm
from flags.evaluate import (
    OPERATORS,
    REGION,
    TARGETING_KEY,
    answer,
    evaluate,
    failed,
    key_missing,
)
from flags.model import Evaluation, EvaluationContext, Flag, Reason, RolloutServing, Rule

# (targeting key, attributes or None) -> the answer. Never raises.
Evaluator = Callable[[str | None, Mapping[str, Any] | None], Evaluation]
# A compiled rule: the answer when it applies, else None. May raise (the caller catches).
_RuleEvaluator = Callable[[str | None, Mapping[str, Any]], Evaluation | None]
_Test = Callable[[Any, tuple[Any, ...]], bool]

NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})


def compile_flag(flag: Flag) -> Evaluator:
    """An evaluator that answers for ``flag`` exactly as ``evaluate`` does."""
    try:
        return _compile(flag)
    except Exception:
        return _reference(flag)


def _reference(flag: Flag) -> Evaluator:
    def evaluate_reference(
        targeting_key: str | None, attributes: Mapping[str, Any] | None
    ) -> Evaluation:
        context = EvaluationContext(
            targeting_key, NO_ATTRIBUTES if attributes is None else attributes
        )
        return evaluate(flag, context)

    return evaluate_reference


def _compile(flag: Flag) -> Evaluator:
    if not flag.enabled:
        return _constant(answer(flag, flag.default_variant, Reason.DISABLED))
    rollout = flag.rollout
    if rollout is not None and rollout.step != -1:
        tail = _compile_rollout(flag, rollout)
    else:
        reason = Reason.DEFAULT if flag.rules or rollout is not None else Reason.STATIC
        tail = _constant(answer(flag, flag.default_variant, reason))
    if not flag.rules:
        return tail
    return _with_rules(flag, tuple(_compile_rule(flag, rule) for rule in flag.rules), tail)


def _constant(fixed: Evaluation) -> Evaluator:
    def constant(targeting_key: str | None, attributes: Mapping[str, Any] | None) -> Evaluation:
        return fixed

    return constant


def _compile_rollout(flag: Flag, rollout: RolloutServing) -> Evaluator:
    regions = rollout.regions
    region_match = answer(flag, rollout.on_variant, Reason.TARGETING_MATCH)
    percent = rollout.percent
    if percent >= 100:
        everyone: Evaluation | None = region_match
    elif percent <= 0:
        everyone = answer(flag, rollout.off_variant, Reason.TARGETING_MATCH)
    else:
        everyone = None
    if everyone is not None:
        if not regions:
            return _constant(everyone)
        return _regional(flag, regions, region_match, everyone)
    split = _percent_split(flag, rollout)
    return split if not regions else _regional_split(flag, regions, region_match, split)


def _percent_split(flag: Flag, rollout: RolloutServing) -> Evaluator:
    on = answer(flag, rollout.on_variant, Reason.SPLIT)
    off = answer(flag, rollout.off_variant, Reason.SPLIT)
    missing = key_missing(flag)
    salt = flag.bucketing_salt
    limit = hash_limit(percent_to_units(rollout.percent))
    murmur = mmh3.hash

    # The hot path of the whole product: locals only, no call but the hash.
    def percent_split(
        targeting_key: str | None, attributes: Mapping[str, Any] | None
    ) -> Evaluation:
        try:
            if not targeting_key:
                return missing
            return on if murmur(salt + targeting_key, 0, False) < limit else off
        except Exception as exc:  # a key of the wrong type must not fail the request
            return failed(flag, exc)

    return percent_split


def _regional(
    flag: Flag, regions: frozenset[str], released: Evaluation, otherwise: Evaluation
) -> Evaluator:
    def regional(targeting_key: str | None, attributes: Mapping[str, Any] | None) -> Evaluation:
        try:
            if attributes is not None:
                region = attributes.get(REGION)
                # frozenset membership hashes: an unhashable attribute must not raise.
                if isinstance(region, str) and region in regions:
                    return released
            return otherwise
        except Exception as exc:
            return failed(flag, exc)

    return regional


def _regional_split(
    flag: Flag, regions: frozenset[str], released: Evaluation, split: Evaluator
) -> Evaluator:
    def regional_split(
        targeting_key: str | None, attributes: Mapping[str, Any] | None
    ) -> Evaluation:
        try:
            if attributes is not None:
                region = attributes.get(REGION)
                if isinstance(region, str) and region in regions:
                    return released
        except Exception as exc:
            return failed(flag, exc)
        return split(targeting_key, attributes)

    return regional_split


def _with_rules(flag: Flag, rules: tuple[_RuleEvaluator, ...], tail: Evaluator) -> Evaluator:
    def with_rules(targeting_key: str | None, attributes: Mapping[str, Any] | None) -> Evaluation:
        try:
            present = NO_ATTRIBUTES if attributes is None else attributes
            for rule in rules:
                matched = rule(targeting_key, present)
                if matched is not None:
                    return matched
        except Exception as exc:
            return failed(flag, exc)
        return tail(targeting_key, attributes)

    return with_rules


def _compile_rule(flag: Flag, rule: Rule) -> _RuleEvaluator:
    conditions = tuple(
        (c.attribute == TARGETING_KEY, c.attribute, OPERATORS[c.op], c.values)
        for c in rule.conditions
    )
    serve = _rule_outcome(flag, rule)

    def applies(targeting_key: str | None, attributes: Mapping[str, Any]) -> Evaluation | None:
        for is_key, attribute, test, values in conditions:
            actual = targeting_key if is_key else attributes.get(attribute)
            # Absence is not evidence: a missing attribute fails even neq and not_in.
            if actual is None or not test(actual, values):
                return None
        return serve(targeting_key)

    return applies


def _rule_outcome(flag: Flag, rule: Rule) -> Callable[[str | None], Evaluation]:
    if rule.variant is not None:
        fixed = answer(flag, rule.variant, Reason.TARGETING_MATCH)
        return lambda _key: fixed
    arms = rule.split
    by_variant = {arm.variant: answer(flag, arm.variant, Reason.SPLIT) for arm in arms}
    # pick_arm falls back to the last arm on a malformed split; make sure it is built.
    by_variant.setdefault(arms[-1].variant, answer(flag, arms[-1].variant, Reason.SPLIT))
    missing = key_missing(flag)
    salt = flag.bucketing_salt

    def split(targeting_key: str | None) -> Evaluation:
        if not targeting_key:
            return missing
        return by_variant[pick_arm(bucket(salt, targeting_key), arms)]

    return split
