"""The flag model: what a flag is, independent of where it is stored or served.

Everything here is a frozen dataclass so a snapshot can be shared between threads
without copying. Validation happens at the edge (the API, plan files); these
classes trust what they receive, except for the invariants checked in
``__post_init__`` that would otherwise make evaluation ambiguous.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class FlagType(enum.StrEnum):
    BOOLEAN = "boolean"
    STRING = "string"
    NUMBER = "number"
    OBJECT = "object"


class Operator(enum.StrEnum):
    EQ = "eq"
    NEQ = "neq"
    IN = "in"
    NOT_IN = "not_in"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    CONTAINS = "contains"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"


class Reason(enum.StrEnum):
    """OpenFeature's resolution reasons: OpenFeature clients parse these names."""

    STATIC = "STATIC"
    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DEFAULT = "DEFAULT"
    DISABLED = "DISABLED"
    ERROR = "ERROR"


class ErrorCode(enum.StrEnum):
    """OpenFeature's error codes."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    PARSE_ERROR = "PARSE_ERROR"
    # Only an SDK says this: it has no snapshot yet (controller unreachable, no bootstrap).
    PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
    GENERAL = "GENERAL"


@dataclass(frozen=True, slots=True)
class Condition:
    """One attribute test, e.g. ``region in [us-west-1]``.

    ``attribute`` names a context attribute; ``targetingKey`` addresses the key itself.
    A missing attribute never matches, except for ``neq`` and ``not_in``, which do not
    match either: absence is not evidence.
    """

    attribute: str
    op: Operator
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class SplitArm:
    variant: str
    weight: int  # in hundredths of a percent: 0..10000, arms of one split sum to 10000


@dataclass(frozen=True, slots=True)
class Rule:
    """An ordered targeting rule: all conditions must hold, then either a fixed variant
    (``TARGETING_MATCH``) or a percentage split by bucket (``SPLIT``).

    Exactly one of ``variant`` and ``split`` is set.
    """

    conditions: tuple[Condition, ...] = ()
    variant: str | None = None
    split: tuple[SplitArm, ...] = ()

    def __post_init__(self) -> None:
        if (self.variant is None) == (not self.split):
            raise ValueError("a rule has either a variant or a split, not both or neither")


@dataclass(frozen=True, slots=True)
class RolloutServing:
    """What a rollout currently serves for the flag it drives.

    Users in ``regions`` get ``on_variant`` (TARGETING_MATCH); otherwise a user gets
    ``on_variant`` when ``bucket < percent * 100`` (SPLIT). ``percent`` is a float with
    0.01 resolution (1.5 means 1.5 %). ``shadow`` is dual-write: reported, not evaluated.
    """

    rollout: str
    status: str
    stage: str
    step: int  # zero-based index in the plan, -1 when pending/aborted
    percent: float
    regions: frozenset[str]
    shadow: bool
    on_variant: str
    off_variant: str


@dataclass(frozen=True, slots=True)
class Flag:
    key: str
    type: FlagType
    variants: Mapping[str, Any]
    default_variant: str
    enabled: bool = True
    rules: tuple[Rule, ...] = ()
    salt: str | None = None  # None: the flag key
    description: str = ""
    rollout: RolloutServing | None = None
    version: int = 0
    # Evaluation's hot path: a flag has few distinct answers, so each is built once and
    # shared (Evaluation is frozen). Not an init field, so ``replace`` starts it afresh.
    _answers: dict[tuple[str, Reason], Evaluation] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.default_variant not in self.variants:
            raise ValueError(f"default variant {self.default_variant!r} is not a variant")

    @property
    def bucketing_salt(self) -> str:
        return self.key if self.salt is None else self.salt


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    targeting_key: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The answer for one flag and one context. Never an exception: on error, the
    default with reason ``ERROR`` (or ``DEFAULT`` with an error code, for a missing
    targeting key on a split)."""

    key: str
    value: Any
    variant: str | None
    reason: Reason
    error_code: ErrorCode | None = None
    error_message: str | None = None
    rollout: RolloutServing | None = None
    flag_version: int = 0
