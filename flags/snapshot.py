"""An immutable set of flags at one revision: what the server and the SDK evaluate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from flags.compiled import Evaluator, compile_flag
from flags.model import ErrorCode, Evaluation, EvaluationContext, Flag, Reason


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    flags: Mapping[str, Flag] = field(default_factory=lambda: MappingProxyType({}))
    # Keys of stored flags that could not be read, with why: they are left out of
    # every bulk answer, and asking for one alone is an ``ERROR`` answer (the caller's
    # default), so one bad flag never breaks the answers of the others.
    unreadable: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Built once from ``flags`` (see flags.compiled); not init fields, so ``replace``
    # compiles afresh. ``flags`` must not be changed after the snapshot is built.
    _evaluators: dict[str, Evaluator] = field(init=False, repr=False, compare=False)
    _in_key_order: tuple[Evaluator, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        evaluators = {key: compile_flag(flag) for key, flag in self.flags.items()}
        object.__setattr__(self, "_evaluators", evaluators)
        object.__setattr__(self, "_in_key_order", tuple(evaluators[k] for k in sorted(evaluators)))

    @classmethod
    def empty(cls) -> Snapshot:
        """A snapshot with no flags, before the first load."""
        return cls(revision=0)

    @property
    def evaluators(self) -> Mapping[str, Evaluator]:
        """Each flag's compiled evaluator, by key: for callers (the SDK's per-request
        path) that cannot spare a method call. Read-only."""
        return self._evaluators

    @property
    def etag(self) -> str:
        """A strong HTTP entity tag: the revision changes whenever any flag does."""
        return f'"r{self.revision}"'

    def evaluate(self, key: str, context: EvaluationContext) -> Evaluation:
        """Evaluate one flag; an unknown key is an ``ERROR`` answer, not an exception."""
        try:
            evaluator = self._evaluators[key]
        except KeyError:
            return self._missing(key)
        return evaluator(context.targeting_key, context.attributes)

    def evaluate_key(
        self,
        key: str,
        targeting_key: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Evaluation:
        """``evaluate`` without building a context: the fastest way to ask."""
        try:
            evaluator = self._evaluators[key]
        except KeyError:
            return self._missing(key)
        return evaluator(targeting_key, attributes)

    def evaluate_all(self, context: EvaluationContext) -> list[Evaluation]:
        """Evaluate every flag, in key order."""
        key, attributes = context.targeting_key, context.attributes
        return [evaluator(key, attributes) for evaluator in self._in_key_order]

    def _missing(self, key: str) -> Evaluation:
        if key not in self.unreadable:
            return _not_found(key)
        message = f"flag {key!r} has an unreadable stored definition: the caller's default"
        return Evaluation(key, None, None, Reason.ERROR, ErrorCode.PARSE_ERROR, message)


def _not_found(key: str) -> Evaluation:
    return Evaluation(
        key, None, None, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} not found"
    )
