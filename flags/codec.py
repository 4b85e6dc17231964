"""JSON-compatible dicts to and from the flag model: API bodies, database columns and
the SDK snapshot.

Parsing reports every problem it finds as ``(path, message)``, with paths such as
``rules[2].when[0].op`` or ``variants.on`` naming the place in the body, so a person
can fix a body in one pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeGuard

from flags.bucketing import BUCKETS
from flags.model import (
    Condition,
    Flag,
    FlagType,
    Operator,
    RolloutServing,
    Rule,
    SplitArm,
)
from flags.snapshot import Snapshot

Problems = list[tuple[str, str]]

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
# Path segments with a meaning of their own: clients and proxies rewrite
# /api/v1/flags/.. before it reaches us, so such a flag could never be addressed.
DOT_KEYS = frozenset({".", ".."})
# Nesting depth inside a variant or condition value: enough for any real object.
MAX_VALUE_DEPTH = 32
FLAG_FIELDS = frozenset(
    {"key", "type", "variants", "default_variant", "enabled", "salt", "description", "rules"}
)
RULE_FIELDS = frozenset({"when", "variant", "split"})
CONDITION_FIELDS = frozenset({"attribute", "op", "values"})
NUMERIC_OPS = frozenset({Operator.GT, Operator.GTE, Operator.LT, Operator.LTE})
TEXT_OPS = frozenset({Operator.STARTS_WITH, Operator.ENDS_WITH, Operator.CONTAINS})
SINGLE_VALUED_OPS = NUMERIC_OPS | {Operator.EQ, Operator.NEQ}
SERVER_FIELDS = frozenset({"version", "rollout"})
SNAPSHOT_FIELDS = frozenset({"revision", "flags"})
_MISSING: Any = object()
# StrEnum members hash and compare as their values, so these hold plain strings too.
_FLAG_TYPES = frozenset(FlagType)
_OPERATORS = frozenset(Operator)


class FlagDefinitionError(ValueError):
    """A flag or snapshot body is malformed; ``problems`` holds every (path, message)."""

    def __init__(self, problems: Problems) -> None:
        super().__init__("; ".join(f"{path or '(body)'}: {message}" for path, message in problems))
        self.problems = problems


# --- flags ---------------------------------------------------------------------------


def flag_to_dict(flag: Flag) -> dict[str, Any]:
    """The flag's definition, without the server-owned ``rollout`` and ``version``."""
    return {
        "key": flag.key,
        "type": flag.type.value,
        "variants": dict(flag.variants),
        "default_variant": flag.default_variant,
        "enabled": flag.enabled,
        "salt": flag.salt,
        "description": flag.description,
        "rules": [_rule_to_dict(rule) for rule in flag.rules],
    }


def flag_from_dict(data: object, *, key: str | None = None) -> Flag:
    """Parse a flag definition; ``key``, when given, is the key the request addressed."""
    problems: Problems = []
    flag = _parse_flag(data, key, problems)
    if flag is None or problems:
        raise FlagDefinitionError(problems)
    return flag


def _rule_to_dict(rule: Rule) -> dict[str, Any]:
    when = [
        {"attribute": c.attribute, "op": c.op.value, "values": list(c.values)}
        for c in rule.conditions
    ]
    if rule.variant is not None:
        return {"when": when, "variant": rule.variant}
    return {
        "when": when,
        "split": {arm.variant: _units_to_percent(arm.weight) for arm in rule.split},
    }


def _units_to_percent(units: int) -> int | float:
    # Whole percents come back as integers, so a body reads back as it was written.
    return units // 100 if units % 100 == 0 else units / 100


def _parse_flag(data: object, url_key: str | None, problems: Problems) -> Flag | None:
    body = _object(data, "", problems)
    if body is None:
        return None
    _unknown_fields(body, FLAG_FIELDS, "", problems)
    key = _flag_key(body.get("key"), url_key, problems)
    flag_type = _flag_type(body.get("type"), problems)
    variants = _variants(body.get("variants"), flag_type, problems)
    default = _variant_ref(body.get("default_variant"), "default_variant", variants, problems)
    enabled = _take(body, "enabled", "", _is(bool), "a boolean", problems, True)
    salt = _take(body, "salt", "", _is(str | None), "a string or null", problems, None)
    description = _take(body, "description", "", _is(str), "a string", problems, "")
    rules = _rules(body.get("rules", []), variants, problems)
    if problems or flag_type is None or variants is None:
        return None
    return Flag(key, flag_type, variants, default, enabled, rules, salt, description)


def _flag_key(value: object, url_key: str | None, problems: Problems) -> str:
    if value is None and url_key is None:
        problems.append(("key", "is required"))
        return ""
    if value is None:
        value = url_key
    elif url_key is not None and value != url_key:
        problems.append(("key", f"{value!r} does not match the flag addressed, {url_key!r}"))
    if not isinstance(value, str) or not KEY_PATTERN.fullmatch(value):
        problems.append(("key", "must be 1 to 128 characters of A-Z a-z 0-9 _ . -"))
        return ""
    if value in DOT_KEYS:
        problems.append(("key", "must not be '.' or '..' (they are not addressable in a URL)"))
        return ""
    return value


def _flag_type(value: object, problems: Problems) -> FlagType | None:
    if isinstance(value, str) and value in _FLAG_TYPES:
        return FlagType(value)
    problems.append(("type", f"must be one of {', '.join(FlagType)}"))
    return None


def _variants(
    value: object, flag_type: FlagType | None, problems: Problems
) -> dict[str, Any] | None:
    if not isinstance(value, Mapping) or not value:
        problems.append(("variants", "must be a non-empty object of variant names to values"))
        return None
    for name, variant_value in value.items():
        path = f"variants.{name}"
        if not isinstance(name, str) or not name:
            problems.append((path, "a variant name must be a non-empty string"))
        elif flag_type is not None and not _fits_type(variant_value, flag_type):
            problems.append((path, f"must be {_TYPE_WORDS[flag_type]} for a {flag_type} flag"))
        else:
            _check_value(variant_value, path, problems)
    return dict(value)


def _check_value(value: object, path: str, problems: Problems) -> None:
    """Report the first NaN, Infinity or too deep nesting inside ``value``: JSON has no
    such numbers (PostgreSQL refuses to store them, every answer holding one would
    fail to render), and a deep value breaks whoever renders or parses it next."""
    problem = _value_problem(value)
    if problem is not None:
        problems.append((path + problem[0], problem[1]))


def _value_problem(value: object) -> tuple[str, str] | None:
    # Iterative, so a deeply nested value cannot exhaust the stack.
    pending: list[tuple[str, int, object]] = [("", 0, value)]
    while pending:
        path, depth, item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return path, "must not be NaN or Infinity (JSON has no such numbers)"
        if depth > MAX_VALUE_DEPTH:
            return path, f"nested more than {MAX_VALUE_DEPTH} deep"
        if isinstance(item, Mapping):
            pending.extend((f"{path}.{name}", depth + 1, v) for name, v in item.items())
        elif isinstance(item, list | tuple):
            pending.extend((f"{path}[{i}]", depth + 1, v) for i, v in enumerate(item))
    return None


_TYPE_WORDS = {
    FlagType.BOOLEAN: "true or false",
    FlagType.STRING: "a string",
    FlagType.NUMBER: "a finite number",
    FlagType.OBJECT: "an object",
}


def _fits_type(value: object, flag_type: FlagType) -> bool:
    if flag_type is FlagType.BOOLEAN:
        return isinstance(value, bool)
    if flag_type is FlagType.STRING:
        return isinstance(value, str)
    if flag_type is FlagType.NUMBER:
        return _is_number(value) and _is_finite(value)
    return isinstance(value, Mapping)


def _is_finite(value: float) -> bool:
    # An integer too large for a float (10**400 in JSON) is not a number a flag can
    # serve: SDKs read numbers as doubles.
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _variant_ref(
    value: object, path: str, variants: Mapping[str, Any] | None, problems: Problems
) -> str:
    if not isinstance(value, str) or not value:
        problems.append((path, "must name a variant"))
        return ""
    # Without parsable variants every reference would be reported again: noise.
    if variants is not None and value not in variants:
        problems.append((path, f"{value!r} is not one of the variants"))
    return value


def _rules(
    value: object, variants: Mapping[str, Any] | None, problems: Problems
) -> tuple[Rule, ...]:
    if not isinstance(value, list):
        problems.append(("rules", "must be a list"))
        return ()
    parsed = (_rule(item, f"rules[{i}]", variants, problems) for i, item in enumerate(value))
    return tuple(rule for rule in parsed if rule is not None)


def _rule(
    value: object, path: str, variants: Mapping[str, Any] | None, problems: Problems
) -> Rule | None:
    body = _object(value, path, problems)
    if body is None:
        return None
    _unknown_fields(body, RULE_FIELDS, path, problems)
    conditions = _conditions(body.get("when", []), f"{path}.when", problems)
    if ("variant" in body) == ("split" in body):
        problems.append((path, "needs exactly one of 'variant' and 'split'"))
        return None
    if "variant" in body:
        return Rule(
            conditions, variant=_variant_ref(body["variant"], f"{path}.variant", variants, problems)
        )
    split = _split(body["split"], f"{path}.split", variants, problems)
    return Rule(conditions, split=split) if split else None


def _conditions(value: object, path: str, problems: Problems) -> tuple[Condition, ...]:
    if not isinstance(value, list):
        problems.append((path, "must be a list of conditions"))
        return ()
    parsed = (_condition(item, f"{path}[{i}]", problems) for i, item in enumerate(value))
    return tuple(condition for condition in parsed if condition is not None)


def _condition(value: object, path: str, problems: Problems) -> Condition | None:
    body = _object(value, path, problems)
    if body is None:
        return None
    _unknown_fields(body, CONDITION_FIELDS, path, problems)
    attribute = _take(body, "attribute", path, _is_name, "a non-empty string", problems)
    op = _operator(body.get("op"), f"{path}.op", problems)
    values = _condition_values(body.get("values"), op, f"{path}.values", problems)
    if not _is_name(attribute) or op is None or values is None:
        return None
    return Condition(attribute, op, values)


def _operator(value: object, path: str, problems: Problems) -> Operator | None:
    if isinstance(value, str) and value in _OPERATORS:
        return Operator(value)
    problems.append((path, f"must be one of {', '.join(Operator)}"))
    return None


def _condition_values(
    value: object, op: Operator | None, path: str, problems: Problems
) -> tuple[Any, ...] | None:
    if not isinstance(value, list) or not value:
        problems.append((path, "must be a non-empty list"))
        return None
    if op in SINGLE_VALUED_OPS and len(value) != 1:
        problems.append((path, f"'{op}' takes exactly one value"))
    fits, expected = _VALUE_KINDS.get(op, (_any, ""))
    for i, item in enumerate(value):
        if not fits(item):
            problems.append((f"{path}[{i}]", f"must be {expected} for '{op}'"))
        else:
            _check_value(item, f"{path}[{i}]", problems)
    return tuple(value)


def _any(value: object) -> bool:
    return True


def _split(
    value: object, path: str, variants: Mapping[str, Any] | None, problems: Problems
) -> tuple[SplitArm, ...]:
    if not isinstance(value, Mapping) or not value:
        problems.append((path, "must be a non-empty object of variant names to percents"))
        return ()
    arms = tuple(
        SplitArm(
            _variant_ref(name, f"{path}.{name}", variants, problems),
            _percent_units(percent, f"{path}.{name}", problems),
        )
        for name, percent in value.items()
    )
    total = sum(arm.weight for arm in arms)
    if total != BUCKETS:
        problems.append((path, f"must sum to 100 (sums to {_units_to_percent(total)})"))
    return arms


def _percent_units(value: object, path: str, problems: Problems) -> int:
    if not _is_number(value) or not 0 <= value <= 100:
        problems.append((path, "must be a percent from 0 to 100"))
        return 0
    units = value * 100
    if abs(units - round(units)) > 1e-6:
        problems.append((path, "must be a multiple of 0.01"))
    return round(units)


# --- rollout overlay and snapshot (server to SDK) ---------------------------------------


def serving_to_dict(serving: RolloutServing) -> dict[str, Any]:
    """What a rollout serves, with ``regions`` sorted so equal overlays serialize equally."""
    return {
        "rollout": serving.rollout,
        "status": serving.status,
        "stage": serving.stage,
        "step": serving.step,
        "percent": serving.percent,
        "regions": sorted(serving.regions),
        "shadow": serving.shadow,
        "on_variant": serving.on_variant,
        "off_variant": serving.off_variant,
    }


def serving_from_dict(data: object) -> RolloutServing:
    """Parse a rollout overlay written by ``serving_to_dict``."""
    problems: Problems = []
    serving = _parse_serving(data, "", problems)
    if serving is None or problems:
        raise FlagDefinitionError(problems)
    return serving


def _parse_serving(data: object, path: str, problems: Problems) -> RolloutServing | None:
    body = _object(data, path, problems)
    if body is None:
        return None
    _unknown_fields(body, frozenset(_SERVING_FIELDS), path, problems)
    values = {
        name: _take(body, name, path, fits, expected, problems)
        for name, (fits, expected) in _SERVING_FIELDS.items()
    }
    if problems:
        return None
    values["percent"] = float(values["percent"])
    values["regions"] = frozenset(values["regions"])
    return RolloutServing(**values)


def snapshot_to_dict(snapshot: Snapshot) -> dict[str, Any]:
    """The whole snapshot for the SDK, each flag with its version and rollout overlay."""
    return {
        "revision": snapshot.revision,
        "flags": {key: _served_flag_to_dict(snapshot.flags[key]) for key in sorted(snapshot.flags)},
    }


def snapshot_from_dict(data: object, *, lenient: bool = False) -> Snapshot:
    """Parse a snapshot written by ``snapshot_to_dict``.

    Strict by default (the admin API: a typo is an error). ``lenient`` is for an SDK
    reading a newer server's snapshot: fields it does not know are ignored, and a flag
    it cannot parse (a new operator, a new type) is left out, so it answers as unknown
    (the caller's default) instead of failing the whole snapshot.
    """
    problems: Problems = []
    body = _object(data, "", problems)
    if body is None:
        raise FlagDefinitionError(problems)
    if lenient:
        body = _known_snapshot_fields(body)
    _unknown_fields(body, SNAPSHOT_FIELDS, "", problems)
    revision = _take(body, "revision", "", _is_count, "a non-negative integer", problems)
    flag_problems: Problems = []
    flags = _served_flags(body.get("flags"), flag_problems, skip_bad=lenient)
    problems.extend(flag_problems)
    if problems:
        raise FlagDefinitionError(problems)
    return Snapshot(revision=revision, flags=flags)


def _known_snapshot_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``body`` without the fields this version does not know, at every level."""
    known = _known(body, SNAPSHOT_FIELDS)
    flags = known.get("flags")
    if isinstance(flags, Mapping):
        known["flags"] = {key: _known_flag_fields(flag) for key, flag in flags.items()}
    return known


def _known_flag_fields(flag: object) -> object:
    if not isinstance(flag, Mapping):
        return flag
    known = _known(flag, FLAG_FIELDS | SERVER_FIELDS)
    if isinstance(known.get("rollout"), Mapping):
        known["rollout"] = _known(known["rollout"], frozenset(_SERVING_FIELDS))
    rules = known.get("rules")
    if isinstance(rules, list):
        known["rules"] = [_known_rule_fields(rule) for rule in rules]
    return known


def _known_rule_fields(rule: object) -> object:
    if not isinstance(rule, Mapping):
        return rule
    known = _known(rule, RULE_FIELDS)
    when = known.get("when")
    if isinstance(when, list):
        known["when"] = [_known(c, CONDITION_FIELDS) if isinstance(c, Mapping) else c for c in when]
    return known


def _known(body: Mapping[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    return {name: value for name, value in body.items() if name in fields}


def _served_flag_to_dict(flag: Flag) -> dict[str, Any]:
    rollout = None if flag.rollout is None else serving_to_dict(flag.rollout)
    return {**flag_to_dict(flag), "version": flag.version, "rollout": rollout}


def _served_flags(value: object, problems: Problems, *, skip_bad: bool) -> dict[str, Flag]:
    if not isinstance(value, Mapping):
        problems.append(("flags", "must be an object of flag keys to flags"))
        return {}
    flags = {}
    for key, item in value.items():
        own: Problems = []
        flag = _served_flag(item, f"flags.{key}", str(key), own)
        if flag is not None and not own:
            flags[key] = flag
        elif not skip_bad:
            problems.extend(own)
    return flags


def _served_flag(value: object, path: str, key: str, problems: Problems) -> Flag | None:
    body = _object(value, path, problems)
    if body is None:
        return None
    definition = {name: item for name, item in body.items() if name not in SERVER_FIELDS}
    own: Problems = []
    flag = _parse_flag(definition, key, own)
    problems.extend((_join(path, p), message) for p, message in own)
    version = _take(body, "version", path, _is_count, "a non-negative integer", problems, 0)
    rollout = body.get("rollout")
    serving = None if rollout is None else _parse_serving(rollout, f"{path}.rollout", problems)
    if flag is None or not _is_count(version) or (rollout is not None and serving is None):
        return None
    return replace(flag, version=version, rollout=serving)


# --- shared checks -------------------------------------------------------------------


def _object(value: object, path: str, problems: Problems) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    problems.append((path, "must be an object"))
    return None


def _unknown_fields(
    body: Mapping[str, Any], known: frozenset[str], path: str, problems: Problems
) -> None:
    for name in body:
        if name not in known:
            problems.append((_join(path, str(name)), "unknown field"))


def _take(
    body: Mapping[str, Any],
    name: str,
    path: str,
    fits: Callable[[Any], bool],
    expected: str,
    problems: Problems,
    default: Any = _MISSING,
) -> Any:
    value = body.get(name, default)
    if value is _MISSING:
        problems.append((_join(path, name), "is required"))
    elif not fits(value):
        problems.append((_join(path, name), f"must be {expected}"))
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is(kind: Any) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, kind)


def _is_name(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


_VALUE_KINDS: dict[Operator | None, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(NUMERIC_OPS, (_is_number, "a number")),
    **dict.fromkeys(TEXT_OPS, (_is(str), "a string")),
}

_SERVING_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "rollout": (_is_name, "a non-empty string"),
    "status": (_is_name, "a non-empty string"),
    "stage": (_is_name, "a non-empty string"),
    "step": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1, "a step index"),
    "percent": (lambda v: _is_number(v) and 0 <= v <= 100, "a percent from 0 to 100"),
    "regions": (_is_string_list, "a list of strings"),
    "shadow": (_is(bool), "a boolean"),
    "on_variant": (_is_name, "a non-empty string"),
    "off_variant": (_is_name, "a non-empty string"),
}
