"""An immutable set of flags at one revision: what the server and the SDK evaluate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from flags.evaluate import evaluate
from flags.model import ErrorCode, Evaluation, EvaluationContext, Flag, Reason


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    flags: Mapping[str, Flag] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def empty(cls) -> Snapshot:
        """A snapshot with no flags, before the first load."""
        return cls(revision=0)

    @property
    def etag(self) -> str:
        """A strong HTTP entity tag: the revision changes whenever any flag does."""
        return f'"r{self.revision}"'

    def evaluate(self, key: str, context: EvaluationContext) -> Evaluation:
        """Evaluate one flag; an unknown key is an ``ERROR`` answer, not an exception."""
        flag = self.flags.get(key)
        if flag is None:
            return Evaluation(
                key,
                None,
                None,
                Reason.ERROR,
                ErrorCode.FLAG_NOT_FOUND,
                f"flag {key!r} not found",
            )
        return evaluate(flag, context)

    def evaluate_all(self, context: EvaluationContext) -> list[Evaluation]:
        """Evaluate every flag, in key order."""
        flags = self.flags
        return [evaluate(flags[key], context) for key in sorted(flags)]
