"""Problems with a plan: each with its path (``steps[3].percent``) and, for YAML, its line.

A ``Report`` collects them while a plan is read, so a rejected plan lists everything
wrong with it rather than stopping at the first problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Path = tuple[str | int, ...]  # int: a list index


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plan: where (``gates[1].rollback_above``), what, which line."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "plan"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{where}: {self.message}"


class PlanError(ValueError):
    """A plan was rejected; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class Report:
    """The problems found so far, and the YAML line of each path (empty for decoded JSON).

    With ``limits`` off (a plan read back from storage) a crossed limit is no problem:
    a plan stored before the limits existed must still load, to be shown, fixed or aborted.
    """

    def __init__(self, lines: dict[Path, int], *, limits: bool = True) -> None:
        self.lines = lines
        self.limits = limits
        self.problems: list[Problem] = []

    def add(self, path: Path, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(render(path), message, line or self._line(path)))

    def limit(self, path: Path, message: str) -> bool:
        """A limit crossed: a problem (``True``), unless limits are off."""
        if self.limits:
            self.add(path, message)
        return self.limits

    def _line(self, path: Path) -> int | None:
        # A missing field has no line of its own: point at the mapping that lacks it.
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def render(path: Path) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else f".{key}" if out else key
    return out


def kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__} value"


def show(value: object) -> str:
    """A value as quoted in a message, cut short: a body may hold anything. A list or a
    mapping is named by its kind: its repr may be huge, or nest deeper than the stack."""
    if isinstance(value, str):
        text = repr(value[:61])
    elif value is None or isinstance(value, bool | int | float):
        try:
            text = repr(value)
        except ValueError:  # an int of more than 4,300 digits
            return "a number too long to show"
    else:
        return kind(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
